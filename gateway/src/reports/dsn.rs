//! Delivery status notifications (RFC 3464): `multipart/report;
//! report-type=delivery-status` with a sentence for people, the machine-readable
//! status per recipient, and what the sender sent (headers or, for `RET=FULL`, the
//! whole message as received — ciphertext, never what the gateway decrypted).

use base64::Engine;
use kvgate_store::{Event, EventKind, Outbound, Recipient, Submission, Timestamp, now};
use serde::{Deserialize, Serialize};

use super::{Original, Report, ReportError};
use crate::letter::{header_safe, rfc5322_date};

/// The fate of one recipient of a submission, as a DSN reports it.
pub struct Fate<'a> {
    /// The recipient.
    pub recipient: &'a Recipient,
    /// What happened.
    pub action: Action,
    /// The enhanced status code.
    pub status: &'static str,
    /// The reason code and sentence, for failures and delays.
    pub reason: Option<(String, String)>,
}

impl<'a> Fate<'a> {
    /// One outcome for every recipient of `submission`: the tracking events that
    /// record it and the fates a DSN reports.
    pub fn everyone(
        submission: &'a Submission,
        outcome: (Action, EventKind),
        reason: &str,
        sentence: &str,
    ) -> (Vec<Event>, Vec<Fate<'a>>) {
        submission
            .recipients
            .iter()
            .map(|recipient| Fate::one(recipient, outcome, (reason, status_for(reason)), sentence))
            .unzip()
    }

    /// The outcome of one recipient, refused or set aside for `reason` with the
    /// enhanced `status`: its tracking event and the fate a DSN reports.
    pub fn one(
        recipient: &'a Recipient,
        (action, kind): (Action, EventKind),
        (reason, status): (&str, &'static str),
        sentence: &str,
    ) -> (Event, Fate<'a>) {
        let event = Event::new(kind)
            .recipient(&recipient.address)
            .reason(reason)
            .detail(sentence);
        let fate = Fate {
            recipient,
            action,
            status,
            reason: Some((reason.to_owned(), sentence.to_owned())),
        };
        (event, fate)
    }
}

/// The enhanced status (RFC 3463) a DSN reports for a refusal reason.
pub fn status_for(reason: &str) -> &'static str {
    match reason {
        "malformed"
        | "not-smime"
        | "too-deep"
        | "earztbrief-profile"
        | "processing-failed"
        | "processing-timeout"
        | "processing-crashed"
        | "unexpected-content-type" => "5.6.0",
        "bad-signature"
        | "content-confusion"
        | "untrusted-signer"
        | "signer-expired"
        | "signer-revoked"
        | "signer-usage"
        | "critical-extension"
        | "revocation-no-source" => "5.7.7",
        "not-encrypted" | "not-signed" | "not-for-gateway" | "decryption-failed"
        | "weak-algorithm" | "signer-weak-key" => "5.7.5",
        // RFC 3463 "cryptographic algorithm not supported": EnvelopedData is not taken.
        "unauthenticated-encryption" => "5.7.6",
        "no-member-key" => "5.1.1",
        "queue-lifetime" => "5.4.7",
        "waiting" => "4.4.7",
        _ => "5.7.1",
    }
}

/// Whether `NOTIFY` (RFC 3461 §4.1; default FAILURE,DELAY) asks for a report on `action`.
fn wants(notify: Option<&str>, action: Action) -> bool {
    let word = match action {
        Action::Failed => "FAILURE",
        Action::Delivered => "SUCCESS",
        Action::Delayed => "DELAY",
    };
    match notify {
        None => action != Action::Delivered,
        Some(list) => list.split(',').any(|w| w.trim().eq_ignore_ascii_case(word)),
    }
}

/// What happened to a recipient (RFC 3464 §2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Not delivered, and will not be.
    Failed,
    /// Filed in the member's inbox.
    Delivered,
    /// Not yet delivered; still being tried.
    Delayed,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delivered => "delivered",
            Action::Delayed => "delayed",
        }
    }
}

/// One recipient's part of a DSN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DsnRecipient {
    /// `ORCPT` as the sender gave it (`addr-type;address`).
    pub original: Option<String>,
    /// The address as given in `RCPT TO`.
    pub address: String,
    /// What happened.
    pub action: Action,
    /// The enhanced status code, e.g. `5.7.1`.
    pub status: String,
    /// The reason code (e.g. `signer-mismatch`) and sentence, for failures.
    pub reason: Option<(String, String)>,
}

/// What of the original message is returned (`RET`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Returned {
    /// Its header block (`RET=HDRS`, the default).
    Headers(String),
    /// All of it, base64 in the payload (`RET=FULL`).
    Full(String),
}

/// A delivery status notification about one submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dsn {
    /// This gateway's host name.
    pub reporting_mta: String,
    /// `ENVID` as the sender gave it.
    pub envid: Option<String>,
    /// When the gateway accepted the submission.
    pub arrival: Timestamp,
    /// The recipients reported on.
    pub recipients: Vec<DsnRecipient>,
    /// What of the original is returned.
    pub returned: Returned,
}

impl Dsn {
    /// The queue entry of the DSN that `submission`'s sender asked for about these
    /// fates, if any recipient's `NOTIFY` asks for one (never for a null sender).
    /// `original` is what was kept of the message as received: the whole of it is
    /// returned only in a failure report with `RET=FULL` (RFC 3461 §4.3).
    pub fn queue_for(
        reporting_mta: &str,
        submission: &Submission,
        original: &Original,
        fates: &[Fate<'_>],
    ) -> Result<Vec<Outbound>, ReportError> {
        // A letter released from the quarantine was reported failed where failures
        // were asked for: its delivery is reported there too, to correct that.
        let corrects = |f: &Fate<'_>| {
            submission.released
                && f.action == Action::Delivered
                && wants(f.recipient.notify.as_deref(), Action::Failed)
        };
        let recipients: Vec<DsnRecipient> = fates
            .iter()
            .filter(|f| wants(f.recipient.notify.as_deref(), f.action) || corrects(f))
            .map(|f| DsnRecipient {
                original: f.recipient.orcpt.clone(),
                address: f.recipient.address.clone(),
                action: f.action,
                status: f.status.to_owned(),
                reason: f.reason.clone(),
            })
            .collect();
        if recipients.is_empty() || submission.mail_from.is_empty() {
            return Ok(Vec::new());
        }
        let failure = recipients.iter().any(|r| r.action == Action::Failed);
        let full = failure
            && submission
                .ret
                .as_deref()
                .is_some_and(|ret| ret.eq_ignore_ascii_case("FULL"));
        let returned = original.returned(full);
        let report = Report::Dsn(Dsn {
            reporting_mta: reporting_mta.to_owned(),
            envid: submission.envid.clone(),
            arrival: submission.received_at,
            recipients,
            returned,
        });
        Ok(vec![report.queue_entry(
            &submission.tracking_id,
            &submission.mail_from,
            now(),
        )?])
    }

    /// Subject, content type and body of the report entity.
    pub(super) fn render(&self, entry: &Outbound) -> (String, String, Vec<u8>) {
        let boundary = super::boundary(entry, "report");
        let worst = if self.recipients.iter().any(|r| r.action == Action::Failed) {
            "Failure"
        } else if self.recipients.iter().any(|r| r.action == Action::Delayed) {
            "Delay"
        } else {
            "Success"
        };
        let subject = format!(
            "Delivery Status Notification ({worst}) for {}",
            entry.tracking_id
        );
        let mut out = format!(
            "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n",
            self.sentence(entry)
        );
        out.push_str(&format!(
            "--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n\
             Reporting-MTA: dns; {}\r\n",
            header_safe(&self.reporting_mta)
        ));
        if let Some(envid) = &self.envid {
            out.push_str(&format!("Original-Envelope-Id: {}\r\n", header_safe(envid)));
        }
        out.push_str(&format!(
            "X-Kvgate-Tracking-Id: {}\r\nArrival-Date: {}\r\n",
            entry.tracking_id,
            rfc5322_date(self.arrival)
        ));
        for r in &self.recipients {
            out.push_str("\r\n");
            if let Some(original) = &r.original {
                out.push_str(&format!(
                    "Original-Recipient: {}\r\n",
                    header_safe(original)
                ));
            }
            out.push_str(&format!(
                "Final-Recipient: rfc822; {}\r\nAction: {}\r\nStatus: {}\r\n",
                header_safe(&r.address),
                r.action.as_str(),
                r.status
            ));
            if let Some((code, sentence)) = &r.reason {
                out.push_str(&format!(
                    "Diagnostic-Code: smtp; {} {} {}: {}\r\n",
                    smtp_code(&r.status),
                    r.status,
                    code,
                    header_safe(sentence)
                ));
            }
        }
        let mut body = out.into_bytes();
        match &self.returned {
            Returned::Headers(headers) => {
                body.extend_from_slice(
                    format!(
                        "\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n{headers}"
                    )
                    .as_bytes(),
                );
            }
            Returned::Full(encoded) => {
                body.extend_from_slice(
                    format!(
                        "\r\n--{boundary}\r\nContent-Type: message/rfc822\r\n\
                         Content-Transfer-Encoding: 8bit\r\n\r\n"
                    )
                    .as_bytes(),
                );
                let original = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .unwrap_or_default();
                body.extend_from_slice(&original);
            }
        }
        // The CRLF before a boundary belongs to the boundary (RFC 2046 §5.1.1): this one
        // keeps the returned text's own last line end.
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        (
            subject,
            format!("multipart/report; report-type=delivery-status;\r\n boundary=\"{boundary}\""),
            body,
        )
    }

    /// The part for people.
    fn sentence(&self, entry: &Outbound) -> String {
        let mut text = format!(
            "This is the kvgate gateway. About your letter with tracking ID {}:\r\n",
            entry.tracking_id
        );
        for r in &self.recipients {
            let line = match (r.action, &r.reason) {
                (Action::Delivered, _) => format!(
                    "\r\n- {}: delivered to the member's inbox, encrypted to their keys.",
                    r.address
                ),
                (Action::Delayed, Some((_, sentence))) => format!(
                    "\r\n- {}: not delivered yet ({sentence}); the gateway keeps trying.",
                    r.address
                ),
                (Action::Delayed, None) => format!(
                    "\r\n- {}: not delivered yet; the gateway keeps trying.",
                    r.address
                ),
                (Action::Failed, Some((code, sentence))) => {
                    format!("\r\n- {}: NOT delivered ({code}): {sentence}.", r.address)
                }
                (Action::Failed, None) => format!("\r\n- {}: NOT delivered.", r.address),
            };
            text.push_str(&line);
        }
        text.push_str("\r\n");
        text
    }
}

/// The basic SMTP reply code that goes with an enhanced status class.
fn smtp_code(status: &str) -> &'static str {
    match status.as_bytes().first() {
        Some(b'2') => "250",
        Some(b'4') => "450",
        _ => "550",
    }
}

#[cfg(test)]
mod tests {
    use kvgate_store::{Kvnr, Mailbox, SubmissionState, TrackingId};

    use super::*;
    use crate::reports::original::RETURN_FULL_MAX;

    fn submission(ret: &str) -> Submission {
        Submission {
            tracking_id: TrackingId::generate().unwrap(),
            sender_id: "p1".into(),
            mail_from: "praxis@p1.test".into(),
            recipients: vec![Recipient {
                kvnr: Kvnr::parse("A123456780").unwrap(),
                mailbox: Some(Mailbox::Smarthealth),
                address: "A123456780@smarthealth.kvgate.test".into(),
                notify: None,
                orcpt: None,
            }],
            size: 0,
            received_at: now(),
            state: SubmissionState::Accepted,
            ret: Some(ret.into()),
            envid: None,
            released: false,
        }
    }

    fn returned(submission: &Submission, received: &[u8]) -> Returned {
        let (_, fates) = Fate::everyone(
            submission,
            (Action::Failed, EventKind::Failed),
            "not-signed",
            "unsigned",
        );
        let entries =
            Dsn::queue_for("mx.test", submission, &Original::of(received), &fates).unwrap();
        match serde_json::from_str(&entries[0].payload).unwrap() {
            Report::Dsn(dsn) => dsn.returned,
            Report::Mdn(_) => panic!("a DSN was expected"),
        }
    }

    #[test]
    fn ret_full_returns_whole_encrypted_messages_only_up_to_the_limit() {
        let headers = "Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n";
        let small = format!("Subject: x\r\n{headers}\r\nMIIB\r\n");
        let full = submission("FULL");
        assert_eq!(
            returned(&full, small.as_bytes()),
            Returned::Full(
                base64::engine::general_purpose::STANDARD.encode(format!("{headers}\r\nMIIB\r\n"))
            )
        );
        let mut large = format!("Subject: x\r\n{headers}\r\n").into_bytes();
        large.resize(RETURN_FULL_MAX + 1, b'a');
        assert_eq!(returned(&full, &large), Returned::Headers(headers.into()));
        assert_eq!(
            returned(&submission("HDRS"), small.as_bytes()),
            Returned::Headers(headers.into())
        );
    }

    #[test]
    fn a_released_letters_delivery_corrects_the_failure_reported_before() {
        let mut letter = submission("HDRS");
        let reports = |s: &Submission| {
            let (_, fates) = Fate::everyone(
                s,
                (Action::Delivered, EventKind::Delivered),
                "delivered",
                "filed",
            );
            Dsn::queue_for(
                "mx.test",
                s,
                &Original::of(b"Subject: x\r\n\r\nx\r\n"),
                &fates,
            )
            .unwrap()
            .len()
        };
        // Success is not asked for by default...
        assert_eq!(reports(&letter), 0);
        // ... but after a release the failure told must be corrected.
        letter.released = true;
        assert_eq!(reports(&letter), 1);
        // Not where no failure was reported either.
        letter.recipients[0].notify = Some("NEVER".into());
        assert_eq!(reports(&letter), 0);
    }
}
