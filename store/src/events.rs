//! Tracking events: the append-only, hash-chained history of each submission.
//!
//! Every event stores the SHA-256 of the event before it (`prev`) and its own hash
//! over its canonical JSON, so rewriting, reordering or removing an event in the
//! middle of a history breaks the chain, and [`Store::verify_events`] says where.

use redb::ReadableTable;

use crate::db::Tx;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Store;
use crate::db::{EVENTS, hex, put, scan};
use crate::error::StoreError;
use crate::ids::TrackingId;
use crate::time::{Timestamp, now};

/// The `prev` of a history's first event.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened to a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// Spooled durably and acknowledged with 250.
    Accepted,
    /// Decrypted and the signature verified.
    Verified,
    /// The inbox was chosen for an address that named none, and why (from the
    /// letter's `X-KIM-Dienstkennung` or the kind of sender).
    Routed,
    /// Re-encrypted to the member's keys.
    Encrypted,
    /// Filed in the member's inbox.
    Delivered,
    /// The member's app fetched it.
    Fetched,
    /// The member marked it read.
    Read,
    /// Refused after acceptance.
    Failed,
    /// Waiting longer than it should (e.g. the outbound relay is down).
    Delayed,
    /// Given up after the maximal queue lifetime.
    Expired,
    /// A delivery or disposition report went to the sender.
    Reported,
    /// The member deleted the letter: its ciphertext and metadata are gone.
    Deleted,
    /// Processing failed abnormally (it panicked, ran over its time limit, or kept
    /// failing): the letter is set aside for an operator.
    Quarantined,
    /// An operator put a quarantined letter back on the queue.
    Released,
    /// An operator dropped a quarantined letter: it is deleted.
    Dropped,
}

impl EventKind {
    /// The lowercase name, as shown by `kvgate track`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Accepted => "accepted",
            EventKind::Verified => "verified",
            EventKind::Routed => "routed",
            EventKind::Encrypted => "encrypted",
            EventKind::Delivered => "delivered",
            EventKind::Fetched => "fetched",
            EventKind::Read => "read",
            EventKind::Failed => "failed",
            EventKind::Delayed => "delayed",
            EventKind::Expired => "expired",
            EventKind::Reported => "reported",
            EventKind::Deleted => "deleted",
            EventKind::Quarantined => "quarantined",
            EventKind::Released => "released",
            EventKind::Dropped => "dropped",
        }
    }
}

/// One tracking event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the submission's history, from 1.
    pub seq: u32,
    /// When it happened.
    pub at: Timestamp,
    /// What happened.
    pub kind: EventKind,
    /// The recipient address it concerns, if it concerns one.
    pub recipient: Option<String>,
    /// A stable machine-readable reason code (e.g. `signer-mismatch`), for failures.
    pub reason: Option<String>,
    /// A human sentence (never letter content).
    pub detail: Option<String>,
    /// Hex SHA-256 of the previous event (zeros for the first).
    #[serde(default)]
    pub prev: String,
    /// Hex SHA-256 of this event's canonical JSON with `hash` empty.
    #[serde(default)]
    pub hash: String,
}

impl Event {
    /// An event of `kind` now, for no particular recipient.
    pub fn new(kind: EventKind) -> Self {
        Event {
            seq: 0,
            at: now(),
            kind,
            recipient: None,
            reason: None,
            detail: None,
            prev: String::new(),
            hash: String::new(),
        }
    }

    /// The same event for one recipient.
    pub fn recipient(mut self, address: &str) -> Self {
        self.recipient = Some(address.to_owned());
        self
    }

    /// The same event with a reason code.
    pub fn reason(mut self, reason: &str) -> Self {
        self.reason = Some(reason.to_owned());
        self
    }

    /// The same event with a human sentence.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The hash this event should carry: over its canonical JSON with `hash` empty.
    fn digest(&self) -> Result<String, StoreError> {
        let unhashed = Event {
            hash: String::new(),
            ..self.clone()
        };
        Ok(hex(&Sha256::digest(serde_json::to_vec(&unhashed)?)))
    }
}

/// Where a history's hash chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// The sequence number of the first event that does not fit.
    pub seq: u32,
    /// What is wrong with it.
    pub problem: &'static str,
}

/// Checks a history read from the store: numbered 1, 2, …; each `prev` the hash of
/// the event before; each hash its own.
pub fn verify_chain(events: &[Event]) -> Result<(), ChainBreak> {
    let mut prev = GENESIS.to_owned();
    for (index, event) in events.iter().enumerate() {
        let expected_seq = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let fail = |problem| {
            Err(ChainBreak {
                seq: event.seq,
                problem,
            })
        };
        if event.seq != expected_seq {
            return fail("an event is missing or out of order before it");
        }
        if event.prev != prev {
            return fail("it does not point to the event before it");
        }
        match event.digest() {
            Ok(hash) if hash == event.hash => {}
            _ => return fail("its content does not match its hash (it was changed)"),
        }
        prev = event.hash.clone();
    }
    Ok(())
}

/// Appends events to a submission's history inside `tx`, numbering and chaining them.
pub(crate) fn append_events(
    tx: &Tx<'_>,
    id: &TrackingId,
    events: Vec<Event>,
) -> Result<(), StoreError> {
    let mut table = tx.open_table(EVENTS)?;
    let prefix = format!("{id}/");
    // '0' is the character after '/': this range holds exactly this submission's events.
    let end = format!("{id}0");
    let (mut seq, mut prev) = match table.range(prefix.as_str()..end.as_str())?.next_back() {
        Some(entry) => {
            let last: Event = serde_json::from_slice(entry?.1.value())?;
            (last.seq, last.hash)
        }
        None => (0, GENESIS.to_owned()),
    };
    for mut event in events {
        seq += 1;
        event.seq = seq;
        event.prev = prev;
        event.hash = event.digest()?;
        prev = event.hash.clone();
        put(&mut table, &format!("{prefix}{seq:08}"), &event)?;
    }
    Ok(())
}

impl Store {
    /// The submission's events, in order.
    pub fn events(&self, id: &TrackingId) -> Result<Vec<Event>, StoreError> {
        self.read(|tx| scan(&tx.open_table(EVENTS)?, &format!("{id}/")))
    }

    /// Appends events to a submission's history.
    pub fn record(&self, id: &TrackingId, events: Vec<Event>) -> Result<(), StoreError> {
        self.write(|tx| {
            crate::submissions::load(tx, id)?;
            append_events(tx, id, events)
        })
    }

    /// Checks the hash chain of a submission's history.
    pub fn verify_events(&self, id: &TrackingId) -> Result<Result<(), ChainBreak>, StoreError> {
        Ok(verify_chain(&self.events(id)?))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::db::{EVENTS, put};
    use crate::kvnr::Kvnr;
    use crate::mailbox::Mailbox;
    use crate::submissions::{Recipient, Submission, SubmissionState};

    /// A one-recipient submission for tests.
    pub(crate) fn submission(id: &TrackingId) -> Submission {
        Submission {
            tracking_id: id.clone(),
            sender_id: "p1".into(),
            mail_from: "praxis@p1.test".into(),
            recipients: vec![Recipient {
                kvnr: Kvnr::parse("A123456780").unwrap(),
                mailbox: Some(Mailbox::Smarthealth),
                address: "A123456780@smarthealth.kvgate.test".into(),
                notify: None,
                orcpt: None,
            }],
            size: 10,
            received_at: now(),
            state: SubmissionState::Accepted,
            ret: None,
            envid: None,
            released: false,
        }
    }

    #[test]
    fn an_edited_event_breaks_the_chain_where_it_was_edited() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let id = TrackingId::generate().unwrap();
        store.accept_submission(&submission(&id), None).unwrap();
        store
            .record(&id, vec![Event::new(EventKind::Verified).detail("signed")])
            .unwrap();
        store
            .finish_submission(
                &id,
                SubmissionState::Failed,
                vec![Event::new(EventKind::Failed).reason("not-signed")],
                Vec::new(),
            )
            .unwrap();
        assert_eq!(store.verify_events(&id).unwrap(), Ok(()));

        // Rewrite history: the failure becomes a delivery, with its hash recomputed.
        let mut events = store.events(&id).unwrap();
        events[1].detail = Some("signed by someone else".into());
        events[2].kind = EventKind::Delivered;
        events[2].hash = events[2].digest().unwrap();
        store
            .write(|tx| {
                let mut table = tx.open_table(EVENTS)?;
                for event in &events[1..] {
                    put(&mut table, &format!("{id}/{:08}", event.seq), event)?;
                }
                Ok(())
            })
            .unwrap();
        let verdict = store.verify_events(&id).unwrap();
        assert_eq!(
            verdict,
            Err(ChainBreak {
                seq: 2,
                problem: "its content does not match its hash (it was changed)"
            })
        );
    }

    #[test]
    fn a_removed_event_breaks_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let id = TrackingId::generate().unwrap();
        store.accept_submission(&submission(&id), None).unwrap();
        store
            .record(
                &id,
                vec![
                    Event::new(EventKind::Verified),
                    Event::new(EventKind::Encrypted),
                ],
            )
            .unwrap();
        store
            .write(|tx| {
                tx.open_table(EVENTS)?
                    .remove(format!("{id}/00000002").as_str())?;
                Ok(())
            })
            .unwrap();
        assert_eq!(store.verify_events(&id).unwrap().unwrap_err().seq, 3,);
    }
}
