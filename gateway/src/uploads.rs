//! Sealing members' uploads for the insurer's back office: the document and its
//! metadata as a MIME message, S/MIME-signed by the gateway and encrypted to the back
//! office's certificate. Only the sealed form is ever stored (in the outbound queue).

use std::path::Path;

use base64::Engine;
use kvgate_connectors::api::{Document, Sealed, Sealer};
use zeroize::Zeroizing;

use crate::config::BackOffice;
use crate::letter::{header_safe, rfc5322_date};

/// Seals uploads with the gateway's S/MIME identity for the configured back office.
pub struct BackOfficeSealer {
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
        (cert, key): (&Path, &Path),
        recipient_cert: &Path,
        back_office: &BackOffice,
        domain: &str,
    ) -> std::io::Result<Self> {
        Ok(BackOfficeSealer {
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

/// `bytes` in base64 lines of 76 characters, each ending CRLF.
fn base64_lines(bytes: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 38 + 2);
    for line in encoded.as_bytes().chunks(76) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push_str("\r\n");
    }
    out
}

/// The entity the back office reads once decrypted: the metadata as JSON, then the
/// document. Both parts are base64, so the boundary (with `_`) cannot occur in them.
fn inner_entity(document: &Document<'_>) -> Result<Vec<u8>, String> {
    let metadata = serde_json::json!({
        "tracking_id": document.tracking_id.as_str(),
        "uploader": document.uploader.as_str(),
        "kvnr": document.concerns.as_str(),
        "type": document.document_type,
        "note": document.note,
        "content_type": document.content_type,
        "size": document.content.len(),
    });
    let metadata = serde_json::to_vec(&metadata).map_err(|e| e.to_string())?;
    let boundary = format!("=_kvgate_upload_{}", document.tracking_id);
    let name = format!("document.{}", extension(document.content_type));
    Ok(format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\n\
         Content-Type: application/json; charset=utf-8\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n\
         {metadata}\
         --{boundary}\r\n\
         Content-Type: {content_type}; name=\"{name}\"\r\n\
         Content-Disposition: attachment; filename=\"{name}\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n\
         {content}\
         --{boundary}--\r\n",
        metadata = base64_lines(&metadata),
        content_type = document.content_type,
        content = base64_lines(document.content),
    )
    .into_bytes())
}

impl Sealer for BackOfficeSealer {
    fn seal(&self, document: &Document<'_>) -> Result<Sealed, String> {
        let inner = Zeroizing::new(inner_entity(document)?);
        let signed = Zeroizing::new(
            kvgate_certs::compose::sign(&inner, &self.signer_cert, &self.signer_key)
                .map_err(|e| format!("signing the upload failed: {e}"))?,
        );
        let encrypted = kvgate_certs::compose::encrypt(&signed, &self.recipient_cert)
            .map_err(|e| format!("encrypting the upload failed: {e}"))?;
        let encrypted = String::from_utf8(encrypted)
            .map_err(|_| "the encrypted upload is not 7-bit text".to_owned())?;
        let id = document.tracking_id;
        let message = format!(
            "From: <{from}>\r\n\
             To: <{to}>\r\n\
             Subject: kvgate upload {id}\r\n\
             Date: {date}\r\n\
             Message-ID: <upload.{id}@{domain}>\r\n\
             X-Kvgate-Tracking-Id: {id}\r\n\
             {encrypted}",
            from = header_safe(&self.from),
            to = header_safe(&self.to),
            date = rfc5322_date(kvgate_store::now()),
            domain = self.domain,
        );
        Ok(Sealed {
            mail_from: self.from.clone(),
            rcpt_to: self.to.clone(),
            message,
        })
    }
}
