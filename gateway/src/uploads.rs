//! Sealing what members send from the app (uploads, requests) for the insurer's back
//! office: the metadata and any document as a MIME message, S/MIME-signed by the
//! gateway and encrypted to the back office's certificate; and the same message as
//! PGP/MIME to the sending member's keys, their copy in `sent`. Only these sealed
//! forms are ever stored (in the outbound queue and the member's mailbox).

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use kvgate_certs::SecretBytes;
use kvgate_certs::openpgp;
use kvgate_connectors::api::{Document, Sealed, Sealer};
use kvgate_store::{Ciphertext, Kvnr, Store, ThreadId, Timestamp, UploadKind};
use zeroize::Zeroizing;

use crate::config::BackOffice;
use crate::keycache::{KeyCache, member_keys};
use crate::letter::{header_safe, outer_headers, rfc5322_date};

/// Seals uploads with the gateway's S/MIME identity for the configured back office.
pub struct BackOfficeSealer {
    store: Arc<Store>,
    member_certs: KeyCache,
    signer_cert: Vec<u8>,
    signer_key: Zeroizing<Vec<u8>>,
    recipient_cert: Vec<u8>,
    from: String,
    to: String,
    domain: String,
}

impl BackOfficeSealer {
    /// Reads the gateway's signing certificate and key and the back office's
    /// certificate (all PEM).
    pub fn load(
        store: Arc<Store>,
        (cert, key): (&Path, &Path),
        recipient_cert: &Path,
        back_office: &BackOffice,
        domain: &str,
    ) -> std::io::Result<Self> {
        Ok(BackOfficeSealer {
            store,
            member_certs: KeyCache::default(),
            signer_cert: std::fs::read(cert)?,
            signer_key: Zeroizing::new(std::fs::read(key)?),
            recipient_cert: std::fs::read(recipient_cert)?,
            from: back_office
                .from
                .clone()
                .unwrap_or_else(|| format!("uploads@{domain}")),
            to: back_office.address.clone(),
            domain: domain.to_owned(),
        })
    }
}

/// The file name extension of a sniffed media type.
fn extension(content_type: &str) -> &'static str {
    match content_type {
        "application/pdf" => "pdf",
        "image/jpeg" => "jpg",
        "image/png" => "png",
        _ => "heic",
    }
}

/// Appends `bytes` to `out` in base64 lines of 76 characters, each ending CRLF, with
/// no copy of them anywhere else (the text may be a member's document).
fn push_base64_lines(out: &mut String, bytes: &[u8]) {
    let mut line = [0u8; 76];
    for chunk in bytes.chunks(57) {
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(chunk, &mut line)
            .unwrap_or(0);
        out.push_str(std::str::from_utf8(&line[..written]).unwrap_or_default());
        out.push_str("\r\n");
    }
    line.fill(0);
}

/// The length of `bytes` as [`push_base64_lines`] writes it.
fn base64_lines_len(bytes: &[u8]) -> usize {
    bytes.len().div_ceil(3) * 4 + bytes.len().div_ceil(57) * 2
}

/// What the upload is called in subjects and message IDs.
fn kind_name(kind: UploadKind) -> &'static str {
    match kind {
        UploadKind::Document => "upload",
        UploadKind::Request => "request",
        UploadKind::Message => "message",
    }
}

/// The entity the back office reads once decrypted: the metadata as JSON, the
/// message text if there is one, then the documents. Every part is base64, so the
/// boundary (with `_`) cannot occur in them.
fn inner_entity(document: &Document<'_>) -> Result<Vec<u8>, String> {
    let metadata = serde_json::json!({
        "tracking_id": document.tracking_id.as_str(),
        "kind": kind_name(document.kind),
        "uploader": document.uploader.map(Kvnr::as_str),
        "basic_tier": document.uploader.is_none(),
        "kvnr": document.concerns.as_str(),
        "type": document.document_type,
        "note": document.note,
        "details": document.details,
        "thread_id": document.thread.map(ThreadId::as_str),
        "content_type": document.files.first().map(|(t, _)| t),
        "size": document.files.iter().map(|(_, c)| c.len()).sum::<usize>(),
    });
    let metadata = Zeroizing::new(serde_json::to_vec(&metadata).map_err(|e| e.to_string())?);
    let boundary = format!("=_kvgate_upload_{}", document.tracking_id);
    let text = document.text.map(str::as_bytes);
    // Sized up front, so that it is never moved while it grows (a move would leave a
    // copy of the documents behind in freed memory), and wiped when dropped.
    let contents = std::iter::once(metadata.as_slice())
        .chain(text)
        .chain(document.files.iter().map(|(_, content)| content.as_slice()));
    let capacity = contents.map(|c| base64_lines_len(c) + 512).sum::<usize>() + 128;
    let mut entity = Zeroizing::new(String::with_capacity(capacity));
    entity.push_str(&format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\n\
         Content-Type: application/json; charset=utf-8\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n"
    ));
    push_base64_lines(&mut entity, &metadata);
    if let Some(text) = text {
        entity.push_str(&format!(
            "--{boundary}\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n"
        ));
        push_base64_lines(&mut entity, text);
    }
    for (n, (content_type, content)) in document.files.iter().enumerate() {
        let ext = extension(content_type);
        let name = match n {
            0 => format!("document.{ext}"),
            _ => format!("document-{}.{ext}", n + 1),
        };
        entity.push_str(&format!(
            "--{boundary}\r\n\
             Content-Type: {content_type}; name=\"{name}\"\r\n\
             Content-Disposition: attachment; filename=\"{name}\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n"
        ));
        push_base64_lines(&mut entity, content);
    }
    entity.push_str(&format!("--{boundary}--\r\n"));
    debug_assert!(
        entity.len() <= capacity,
        "the upload's entity outgrew its buffer"
    );
    // The buffer itself is handed on (no copy); the caller wipes it.
    Ok(std::mem::take(&mut *entity).into_bytes())
}

impl BackOfficeSealer {
    /// The header block of the message to the back office (CRLF line ends); a
    /// messenger message also names its thread and what it replies to.
    fn headers(
        &self,
        from: &str,
        document: &Document<'_>,
        message_id: &str,
        at: Timestamp,
    ) -> String {
        let mut headers = format!(
            "From: <{from}>\r\n\
             To: <{to}>\r\n\
             Subject: kvgate {kind} {id}\r\n\
             Date: {date}\r\n\
             Message-ID: <{message_id}>\r\n\
             X-Kvgate-Tracking-Id: {id}\r\n",
            from = header_safe(from),
            to = header_safe(&self.to),
            kind = kind_name(document.kind),
            id = document.tracking_id,
            date = rfc5322_date(at),
        );
        if let Some(thread) = document.thread {
            headers.push_str(&format!("X-Kvgate-Thread-Id: {thread}\r\n"));
        }
        if let Some(original) = document.in_reply_to {
            let original = header_safe(original);
            headers.push_str(&format!(
                "In-Reply-To: <{original}>\r\nReferences: <{original}>\r\n"
            ));
        }
        headers
    }

    /// The sending member's copy: the message as sent, encrypted to their active keys;
    /// `None` if they have none.
    fn sent_copy(
        &self,
        member: &Kvnr,
        document: &Document<'_>,
        message_id: &str,
        inner: &[u8],
    ) -> Result<Option<Ciphertext>, String> {
        let keys = member_keys(&self.store, member)
            .map_err(|e| format!("reading the member's keys failed: {e}"))?;
        if keys.is_empty() {
            return Ok(None);
        }
        let certs = self
            .member_certs
            .recipients(member, keys)
            .map_err(|e| format!("reading the member's keys failed: {e}"))?;
        let at = kvgate_store::now();
        let from = format!("{member}@{}", self.domain);
        let mut plaintext = SecretBytes::from(
            format!(
                "{}MIME-Version: 1.0\r\n",
                self.headers(&from, document, message_id, at)
            )
            .into_bytes(),
        );
        plaintext.extend_from_slice(inner);
        let headers = outer_headers(
            &from,
            &self.to,
            document.tracking_id,
            0,
            &self.domain,
            at,
            None,
        );
        let header_refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        openpgp::pgp_mime_to(&header_refs, &[plaintext.as_slice()], &certs)
            .map(|sealed| Some(crate::letter::ciphertext(sealed)))
            .map_err(|e| format!("encrypting the member's copy failed: {e}"))
    }
}

impl Sealer for BackOfficeSealer {
    fn seal(&self, document: &Document<'_>) -> Result<Sealed, String> {
        let inner = SecretBytes::from(inner_entity(document)?);
        let signed = SecretBytes::from(
            kvgate_certs::compose::sign(&inner, &self.signer_cert, &self.signer_key)
                .map_err(|e| format!("signing the upload failed: {e}"))?,
        );
        let encrypted = kvgate_certs::compose::encrypt(&signed, &self.recipient_cert)
            .map_err(|e| format!("encrypting the upload failed: {e}"))?;
        let encrypted = String::from_utf8(encrypted)
            .map_err(|_| "the encrypted upload is not 7-bit text".to_owned())?;
        let id = document.tracking_id;
        let kind = kind_name(document.kind);
        let message_id = format!("{kind}.{id}@{}", self.domain);
        let message = format!(
            "{}{encrypted}",
            self.headers(&self.from, document, &message_id, kvgate_store::now())
        );
        let sent_copy = match document.uploader {
            Some(member) => self.sent_copy(member, document, &message_id, &inner)?,
            None => None,
        };
        Ok(Sealed {
            mail_from: self.from.clone(),
            rcpt_to: self.to.clone(),
            message,
            message_id,
            sent_copy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_lines_are_76_characters_and_their_length_is_known_before() {
        for size in [0, 1, 2, 3, 56, 57, 58, 114, 1000, 4096] {
            let bytes: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
            let mut out = String::new();
            push_base64_lines(&mut out, &bytes);
            assert_eq!(out.len(), base64_lines_len(&bytes), "size {size}");
            let lines: Vec<&str> = out.split_terminator("\r\n").collect();
            assert!(lines.iter().all(|line| line.len() <= 76), "size {size}");
            assert!(lines.iter().rev().skip(1).all(|line| line.len() == 76));
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(lines.concat())
                .unwrap();
            assert_eq!(decoded, bytes);
        }
    }
}
