//! Message disposition notifications (RFC 8098): sent once, when the member marks a
//! letter read, if the letter asked for one with `Disposition-Notification-To` and
//! that address is the envelope sender (§2.1), and the member did not decline.

use base64::Engine;
use kvgate_store::Outbound;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::letter::header_safe;

/// A disposition notification: the letter was displayed to the member. Its
/// disposition is `manual-action/MDN-sent-manually` (RFC 8098 §3.2.6): the member marks
/// the letter read in the app, which asks them whether the sender may be told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mdn {
    /// This gateway's host name.
    pub reporting_ua: String,
    /// `ORCPT` as the sender gave it (`addr-type;address`).
    pub original_recipient: Option<String>,
    /// The member's address the letter was submitted to.
    pub final_recipient: String,
    /// The letter's own `Message-ID`, with angle brackets.
    pub original_message_id: Option<String>,
    /// Base64 SHA-256 of the message exactly as the gateway received it.
    pub received_mic: String,
}

impl Mdn {
    /// The `Received-content-MIC` value of a received message.
    pub fn mic_of(received: &[u8]) -> String {
        mic(Sha256::digest(received))
    }

    /// [`Mdn::mic_of`] the message `reader` reads (a spooled letter), a piece at a time.
    pub fn mic_read(mut reader: impl std::io::Read) -> std::io::Result<String> {
        let mut hash = Sha256::new();
        std::io::copy(&mut reader, &mut hash)?;
        Ok(mic(hash.finalize()))
    }

    /// Subject, content type and body of the report entity.
    pub(super) fn render(&self, entry: &Outbound) -> (String, String, Vec<u8>) {
        let boundary = super::boundary(entry, "report");
        let subject = format!(
            "Disposition notification (displayed) for {}",
            entry.tracking_id
        );
        let mut out = format!(
            "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
             This is the kvgate gateway. Your letter with tracking ID {} to {} was \
             displayed to the member in the app.\r\n\
             This confirms that it was shown; it does not say that it was read or understood.\r\n\
             --{boundary}\r\nContent-Type: message/disposition-notification\r\n\r\n\
             Reporting-UA: {}; kvgate\r\n",
            entry.tracking_id,
            header_safe(&self.final_recipient),
            header_safe(&self.reporting_ua),
        );
        if let Some(original) = &self.original_recipient {
            out.push_str(&format!(
                "Original-Recipient: {}\r\n",
                header_safe(original)
            ));
        }
        out.push_str(&format!(
            "Final-Recipient: rfc822; {}\r\n",
            header_safe(&self.final_recipient)
        ));
        if let Some(id) = &self.original_message_id {
            out.push_str(&format!("Original-Message-ID: {}\r\n", header_safe(id)));
        }
        out.push_str(&format!(
            "Disposition: manual-action/MDN-sent-manually; displayed\r\n\
             Received-content-MIC: {}, sha256\r\n\
             X-Kvgate-Tracking-Id: {}\r\n\
             --{boundary}--\r\n",
            self.received_mic, entry.tracking_id
        ));
        (
            subject,
            format!(
                "multipart/report; report-type=disposition-notification;\r\n boundary=\"{boundary}\""
            ),
            out.into_bytes(),
        )
    }
}

/// A SHA-256 digest as a MIC: base64.
fn mic(digest: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::STANDARD.encode(digest)
}
