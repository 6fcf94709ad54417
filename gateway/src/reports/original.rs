//! What receipts keep of a message as received, once the message itself is handed on
//! to be unwrapped: a large letter is then held by the unwrapping alone.
//!
//! A receipt waits in the outbound queue (the store) until the relay takes it, and the
//! store's free pages keep its bytes after that; so receipts carry nothing of a letter
//! that is readable and personal. The header block returned keeps only the fields that
//! identify the message and its form ([`RETURNED_FIELDS`]): not its subject, nor the
//! names in its address fields. `RET=FULL` returns the whole message only where its
//! content is encrypted (S/MIME enveloped data), with the same header fields; a letter
//! that came in readable is returned as those header fields.

use std::path::PathBuf;

use base64::Engine;

use super::{Mdn, ReportError, Returned};

/// The largest message a failure DSN returns whole for `RET=FULL`; a larger one is
/// returned as its headers (as Postfix's `bounce_size_limit` does), so the outbound
/// queue never carries a letter-sized payload.
pub const RETURN_FULL_MAX: usize = 1024 * 1024;

/// The header fields of the original a receipt returns (compared without regard to
/// case): what identifies the message, its threading and its form.
const RETURNED_FIELDS: [&str; 8] = [
    "message-id",
    "date",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
];

/// The most octets of header fields a receipt returns; a header block made of more
/// (or a message with no empty line, all of it "headers") is cut at a field's end.
const RETURNED_HEADERS_MAX: usize = 16 * 1024;

/// The parts of a received message that DSNs and MDNs may need.
pub struct Original {
    /// The returnable fields of its header block ([`RETURNED_FIELDS`]).
    headers: String,
    /// Where its body starts (after the empty line), if it is encrypted: only then is
    /// it returned whole.
    encrypted_body: Option<usize>,
    /// The message itself, or what is kept of a large one.
    kept: Kept,
}

/// What is kept beyond the headers.
enum Kept {
    /// The whole message, up to [`RETURN_FULL_MAX`].
    Whole(Vec<u8>),
    /// Only the `Received-content-MIC` of a larger one, computed at once.
    Mic(String),
    /// A larger one that stays in its spool file while reports are made: its MIC is
    /// read from there if a disposition notification asks for it (most letters do
    /// not, and hashing a large letter costs as much as a pass over it).
    Spooled(PathBuf),
}

impl Original {
    /// Keeps what reports need of `received`.
    pub fn of(received: &[u8]) -> Self {
        Self::keeping(received, || Kept::Mic(Mdn::mic_of(received)))
    }

    /// Keeps what reports need of `received`, which is also in the spool file `file`
    /// until the reports are made.
    pub fn of_spooled(received: &[u8], file: PathBuf) -> Self {
        Self::keeping(received, || Kept::Spooled(file))
    }

    /// The headers of `received` and the message itself, or `large` of a large one.
    fn keeping(received: &[u8], large: impl FnOnce() -> Kept) -> Self {
        let blank = received.windows(4).position(|w| w == b"\r\n\r\n");
        let end = blank.map_or(received.len(), |p| p + 2);
        let block = String::from_utf8_lossy(&received[..end]);
        let headers = returnable(&block);
        Original {
            encrypted_body: blank.filter(|_| encrypted(&headers)).map(|p| p + 4),
            headers,
            kept: if received.len() <= RETURN_FULL_MAX {
                Kept::Whole(received.to_vec())
            } else {
                large()
            },
        }
    }

    /// What a DSN returns: if `full` is asked for and the message is encrypted and was
    /// kept whole, its returnable header fields and its body (the ciphertext); else
    /// those header fields alone.
    pub fn returned(&self, full: bool) -> Returned {
        match (&self.kept, self.encrypted_body) {
            (Kept::Whole(whole), Some(body)) if full => {
                let mut message = Vec::with_capacity(self.headers.len() + 2 + whole.len());
                message.extend_from_slice(self.headers.as_bytes());
                message.extend_from_slice(b"\r\n");
                message.extend_from_slice(whole.get(body..).unwrap_or_default());
                Returned::Full(base64::engine::general_purpose::STANDARD.encode(message))
            }
            _ => Returned::Headers(self.headers.clone()),
        }
    }

    /// The `Received-content-MIC` of the message (RFC 8098 §3.2.12).
    pub fn mic(&self) -> Result<String, ReportError> {
        Ok(match &self.kept {
            Kept::Whole(whole) => Mdn::mic_of(whole),
            Kept::Mic(mic) => mic.clone(),
            Kept::Spooled(file) => Mdn::mic_read(std::fs::File::open(file)?)?,
        })
    }
}

/// The fields of `block` a receipt may return ([`RETURNED_FIELDS`]), each with its
/// folded lines, in their order, up to [`RETURNED_HEADERS_MAX`] octets.
fn returnable(block: &str) -> String {
    let mut out = String::new();
    // Where the field being copied starts in `out`, if it is kept.
    let mut field: Option<usize> = None;
    for line in block.split_inclusive("\r\n") {
        if !line.starts_with([' ', '\t']) {
            let name = line.split_once(':').map_or("", |(name, _)| name.trim());
            let kept = RETURNED_FIELDS
                .iter()
                .any(|returned| returned.eq_ignore_ascii_case(name));
            field = kept.then_some(out.len());
        }
        let Some(start) = field else { continue };
        if out.len() + line.len() + 2 > RETURNED_HEADERS_MAX {
            // The field does not fit whole: it and everything after it stay out.
            out.truncate(start);
            break;
        }
        out.push_str(line);
        if !line.ends_with("\r\n") {
            out.push_str("\r\n");
        }
    }
    out
}

/// Whether a header block says its message is S/MIME enveloped (or authenticated
/// enveloped) data: content nobody but the gateway can read.
fn encrypted(headers: &str) -> bool {
    let unfolded = headers.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded.split("\r\n").any(|field| {
        let Some((name, value)) = field.split_once(':') else {
            return false;
        };
        let value = value.to_ascii_lowercase();
        name.trim().eq_ignore_ascii_case("content-type")
            && value.contains("pkcs7-mime")
            && value.contains("enveloped-data")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn returned(received: &str, full: bool) -> Returned {
        Original::of(received.as_bytes()).returned(full)
    }

    fn full(message: &str) -> Returned {
        Returned::Full(base64::engine::general_purpose::STANDARD.encode(message))
    }

    const ENVELOPED: &str =
        "Content-Type: application/pkcs7-mime;\r\n smime-type=enveloped-data; name=smime.p7m\r\n";

    #[test]
    fn only_identifying_fields_are_returned() {
        let received = format!(
            "From: Praxis Dr. Meier <praxis@meier.test>\r\nTo: Hans Mueller <A123456780@smarthealth.kvgate.test>\r\nSubject: Befund\r\n Hans Mueller\r\nMessage-ID: <m.1@meier.test>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n{ENVELOPED}\r\nMIIB...ciphertext\r\n"
        );
        let kept = format!(
            "Message-ID: <m.1@meier.test>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n{ENVELOPED}"
        );
        assert_eq!(returned(&received, false), Returned::Headers(kept.clone()));
        // RET=FULL: the ciphertext with the same fields.
        assert_eq!(
            returned(&received, true),
            full(&format!("{kept}\r\nMIIB...ciphertext\r\n"))
        );
    }

    #[test]
    fn a_readable_letter_is_never_returned_whole() {
        let plain = "Subject: Diagnose\r\nContent-Type: text/plain\r\n\r\nBefund\r\n";
        let headers = Returned::Headers("Content-Type: text/plain\r\n".into());
        assert_eq!(returned(plain, true), headers);
        let signed = "Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n\r\nMII\r\n";
        assert!(matches!(returned(signed, true), Returned::Headers(_)));
    }

    #[test]
    fn the_returned_fields_are_bounded() {
        // No empty line: the whole message is its "header block".
        let mut received = String::from("Message-ID: <a@b>\r\nReferences: <r@b>\r\n");
        for i in 0..5_000 {
            received.push_str(&format!(" <r{i}@b>\r\n"));
        }
        let Returned::Headers(headers) = returned(&received, true) else {
            panic!("headers expected")
        };
        assert_eq!(headers, "Message-ID: <a@b>\r\n");
        let many = "Content-Type: x\r\n".repeat(5_000);
        let Returned::Headers(headers) = returned(&many, false) else {
            panic!("headers expected")
        };
        assert!(headers.len() <= RETURNED_HEADERS_MAX && headers.len() > 16_000);
        assert!(headers.ends_with("Content-Type: x\r\n"));
    }
}
