//! Reports the gateway owes senders: delivery status notifications (RFC 3464) and
//! message disposition notifications (RFC 8098), S/MIME-signed by the gateway.
//!
//! A report is decided where its event happens (the pipeline, the member marking a
//! letter read) and queued in the same commit as a [`Report`] description; the
//! outbound worker renders and signs it when it sends. Reports never carry plaintext
//! the gateway decrypted: at most what the sender itself sent (ciphertext).

mod dsn;
mod mdn;
mod original;
mod signed;

use kvgate_store::{Outbound, OutboundId, StoreError, Timestamp, TrackingId};
use serde::{Deserialize, Serialize};

pub use dsn::{Action, Dsn, DsnRecipient, Fate, Returned, status_for};
pub use mdn::Mdn;
pub use original::Original;
pub use signed::ReportSigner;

/// What a queued report says, stored as the outbound entry's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Report {
    /// A delivery status notification.
    Dsn(Dsn),
    /// A message disposition notification.
    Mdn(Mdn),
}

/// A report could not be queued or rendered.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The store failed (e.g. no random ID).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The payload is not a report this version understands.
    #[error("the queued report cannot be read: {0}")]
    Payload(#[from] serde_json::Error),
    /// Signing failed (OpenSSL's message).
    #[error("signing the report failed: {0}")]
    Sign(String),
    /// The letter as received could not be read back (for its MIC).
    #[error("reading the received letter failed: {0}")]
    Io(#[from] std::io::Error),
}

/// What every rendered report needs from the installation.
pub struct Context<'a> {
    /// The mail domain (for Message-IDs and the postmaster address).
    pub domain: &'a str,
    /// The signing certificate and key.
    pub signer: &'a ReportSigner,
}

impl Report {
    /// The `purpose` shown in the queue and in tracking.
    fn purpose(&self) -> &'static str {
        match self {
            Report::Dsn(_) => "dsn",
            Report::Mdn(_) => "mdn",
        }
    }

    /// A queue entry that sends this report to `rcpt_to` with the null reverse path
    /// (reports are never answered with reports).
    pub fn queue_entry(
        &self,
        tracking_id: &TrackingId,
        rcpt_to: &str,
        at: Timestamp,
    ) -> Result<Outbound, ReportError> {
        Ok(Outbound {
            id: OutboundId::generate()?,
            tracking_id: tracking_id.clone(),
            purpose: self.purpose().to_owned(),
            mail_from: String::new(),
            rcpt_to: rcpt_to.to_owned(),
            payload: serde_json::to_string(self)?,
            created_at: at,
            next_attempt_at: at,
            attempts: 0,
            last_error: None,
            delay_reported: false,
        })
    }

    /// Renders a queued entry, whose payload is `payload`, as the signed message to
    /// hand to the relay.
    pub fn render(
        entry: &Outbound,
        payload: &str,
        context: &Context<'_>,
    ) -> Result<Vec<u8>, ReportError> {
        let report: Report = serde_json::from_str(payload)?;
        let (subject, content_type, body) = match &report {
            Report::Dsn(dsn) => dsn.render(entry),
            Report::Mdn(mdn) => mdn.render(entry),
        };
        let from = match &report {
            Report::Dsn(_) => format!("Mail Delivery System <postmaster@{}>", context.domain),
            Report::Mdn(mdn) => format!("<{}>", crate::letter::header_safe(&mdn.final_recipient)),
        };
        let headers = format!(
            "From: {from}\r\n\
             To: <{to}>\r\n\
             Subject: {subject}\r\n\
             Date: {date}\r\n\
             Message-ID: <{purpose}.{id}@{domain}>\r\n\
             Auto-Submitted: auto-replied\r\n\
             X-Kvgate-Tracking-Id: {tracking}\r\n\
             MIME-Version: 1.0\r\n",
            to = crate::letter::header_safe(&entry.rcpt_to),
            date = crate::letter::rfc5322_date(entry.created_at),
            purpose = entry.purpose,
            id = entry.id,
            domain = context.domain,
            tracking = entry.tracking_id,
        );
        let mut entity = format!("Content-Type: {content_type}\r\n\r\n").into_bytes();
        entity.extend_from_slice(&body);
        context.signer.sign(headers.as_bytes(), &entity)
    }
}

/// A MIME boundary for one part of a report: derived from the entry's ID, which the
/// parts (addresses, codes, base64) cannot contain after the `=_` prefix.
fn boundary(entry: &Outbound, part: &str) -> String {
    format!("=_kvgate_{part}_{}", entry.id)
}
