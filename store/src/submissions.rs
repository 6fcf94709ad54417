//! Submissions, the pipeline's queue, and the tracking events of each submission.

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::Store;
use crate::db::{EVENTS, QUEUE, SUBMISSIONS, get, put, scan};
use crate::error::StoreError;
use crate::ids::TrackingId;
use crate::kvnr::Kvnr;
use crate::mailbox::Mailbox;
use crate::time::{Timestamp, now};

/// One recipient of a submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The member.
    pub kvnr: Kvnr,
    /// The inbox named by the address.
    pub mailbox: Mailbox,
    /// The address as given in `RCPT TO`.
    pub address: String,
}

/// Where a submission stands as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubmissionState {
    /// Spooled and acknowledged; waiting for the pipeline.
    Accepted,
    /// Filed in every recipient's inbox.
    Delivered,
    /// Refused after acceptance; see the `failed` event for why.
    Failed,
}

/// One accepted submission: routing metadata only, never content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    /// The tracking ID given to the sender.
    pub tracking_id: TrackingId,
    /// The registered sender that submitted it.
    pub sender_id: String,
    /// The envelope sender (`MAIL FROM`).
    pub mail_from: String,
    /// The accepted recipients.
    pub recipients: Vec<Recipient>,
    /// Size of the spooled message in octets.
    pub size: u64,
    /// When it was accepted.
    pub received_at: Timestamp,
    /// Where it stands.
    pub state: SubmissionState,
}

/// What happened to a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// Spooled durably and acknowledged with 250.
    Accepted,
    /// Decrypted and the signature verified.
    Verified,
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
}

impl EventKind {
    /// The lowercase name, as shown by `kvgate track`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Accepted => "accepted",
            EventKind::Verified => "verified",
            EventKind::Encrypted => "encrypted",
            EventKind::Delivered => "delivered",
            EventKind::Fetched => "fetched",
            EventKind::Read => "read",
            EventKind::Failed => "failed",
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
}

/// Appends events to a submission's history inside `tx`, numbering them.
pub(crate) fn append_events(
    tx: &WriteTransaction,
    id: &TrackingId,
    events: Vec<Event>,
) -> Result<(), StoreError> {
    let mut table = tx.open_table(EVENTS)?;
    let prefix = format!("{id}/");
    // '0' is the character after '/': this range holds exactly this submission's events.
    let end = format!("{id}0");
    let mut seq = match table.range(prefix.as_str()..end.as_str())?.next_back() {
        Some(entry) => serde_json::from_slice::<Event>(entry?.1.value())?.seq,
        None => 0,
    };
    for mut event in events {
        seq += 1;
        event.seq = seq;
        put(&mut table, &format!("{prefix}{seq:08}"), &event)?;
    }
    Ok(())
}

/// Loads a submission inside `tx`, or fails with `NotFound`.
pub(crate) fn load(tx: &WriteTransaction, id: &TrackingId) -> Result<Submission, StoreError> {
    get(&tx.open_table(SUBMISSIONS)?, id.as_str())?.ok_or(StoreError::NotFound("submission"))
}

impl Store {
    /// Records a spooled submission, queues it for the pipeline and appends its
    /// `accepted` event, in one durable commit. Only after this returns may the sender
    /// be told 250.
    pub fn accept_submission(&self, submission: &Submission) -> Result<(), StoreError> {
        let id = &submission.tracking_id;
        self.write(|tx| {
            let mut submissions = tx.open_table(SUBMISSIONS)?;
            if submissions.get(id.as_str())?.is_some() {
                return Err(StoreError::Exists("submission"));
            }
            put(&mut submissions, id.as_str(), submission)?;
            put(&mut tx.open_table(QUEUE)?, id.as_str(), &())?;
            let events = submission
                .recipients
                .iter()
                .map(|r| Event::new(EventKind::Accepted).recipient(&r.address))
                .collect();
            append_events(tx, id, events)
        })
    }

    /// The submissions waiting for the pipeline, oldest first.
    pub fn queued(&self) -> Result<Vec<TrackingId>, StoreError> {
        self.read(|tx| {
            let queue = tx.open_table(QUEUE)?;
            let mut ids = Vec::new();
            for entry in queue.iter()? {
                let (key, _) = entry?;
                if let Ok(id) = key.value().parse() {
                    ids.push(id);
                }
            }
            Ok(ids)
        })
    }

    /// The submission with this tracking ID.
    pub fn submission(&self, id: &TrackingId) -> Result<Option<Submission>, StoreError> {
        self.read(|tx| get(&tx.open_table(SUBMISSIONS)?, id.as_str()))
    }

    /// The submission's events, in order.
    pub fn events(&self, id: &TrackingId) -> Result<Vec<Event>, StoreError> {
        self.read(|tx| scan(&tx.open_table(EVENTS)?, &format!("{id}/")))
    }

    /// Appends events to a submission's history.
    pub fn record(&self, id: &TrackingId, events: Vec<Event>) -> Result<(), StoreError> {
        self.write(|tx| {
            load(tx, id)?;
            append_events(tx, id, events)
        })
    }

    /// Ends a submission's processing: sets its final state, appends the closing
    /// events and takes it off the queue, in one commit.
    pub fn finish_submission(
        &self,
        id: &TrackingId,
        state: SubmissionState,
        events: Vec<Event>,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut submission = load(tx, id)?;
            submission.state = state;
            put(&mut tx.open_table(SUBMISSIONS)?, id.as_str(), &submission)?;
            tx.open_table(QUEUE)?.remove(id.as_str())?;
            append_events(tx, id, events)
        })
    }
}
