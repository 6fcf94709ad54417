//! Submissions, the pipeline's queue, and the tracking events of each submission.

use std::sync::Arc;

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::Store;
use crate::db::{ATTEMPTS, QUEUE, SPOOLED, SUBMISSIONS, get, put};
use crate::error::StoreError;
use crate::events::{Event, EventKind, append_events};
use crate::ids::{MessageId, TrackingId};
use crate::kvnr::Kvnr;
use crate::mailbox::Mailbox;
use crate::messages::{NewMessage, file};
use crate::outbound::{Outbound, enqueue};
use crate::time::Timestamp;

/// One recipient of a submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The member.
    pub kvnr: Kvnr,
    /// The inbox named by the address (`<KVNR>@<inbox>.<domain>`); `None` when the
    /// address named none (`<KVNR>@<domain>`): the gateway decides it from the letter
    /// once it is verified.
    pub mailbox: Option<Mailbox>,
    /// The address as given in `RCPT TO`.
    pub address: String,
    /// `NOTIFY=` as given (RFC 3461), upper case; `None` means the default.
    #[serde(default)]
    pub notify: Option<String>,
    /// `ORCPT=` as given: `addr-type;address`.
    #[serde(default)]
    pub orcpt: Option<String>,
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
    /// Set aside because processing it failed abnormally (see the `quarantined`
    /// event); its letter is kept, as received, until an operator releases or drops it.
    Quarantined,
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
    /// `RET=` as given (RFC 3461): `FULL` or `HDRS`.
    #[serde(default)]
    pub ret: Option<String>,
    /// `ENVID=` as given, xtext-decoded.
    #[serde(default)]
    pub envid: Option<String>,
}

/// Loads a submission inside `tx`, or fails with `NotFound`.
pub(crate) fn load(tx: &WriteTransaction, id: &TrackingId) -> Result<Submission, StoreError> {
    get(&tx.open_table(SUBMISSIONS)?, id.as_str())?.ok_or(StoreError::NotFound("submission"))
}

/// Where an accepted submission goes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handoff {
    /// Straight to a pipeline worker: the accepting commit also counts its first
    /// processing attempt (as [`Store::begin_attempts`] does for queued ones).
    Worker,
    /// Onto the queue only, for the pipeline to pick up (and count) later.
    Queue,
}

impl Store {
    /// Records a spooled submission, queues it for the pipeline and appends its
    /// `accepted` event, in one grouped durable commit; a `letter` kept in the store
    /// rather than in a spool file of its own (a small one) commits with it. Only after
    /// this returns may the sender be told 250.
    pub fn accept_submission(
        &self,
        submission: &Submission,
        letter: Option<Vec<u8>>,
        handoff: Handoff,
    ) -> Result<(), StoreError> {
        let submission = submission.clone();
        self.write_grouped(move |tx| {
            let id = &submission.tracking_id;
            let mut submissions = tx.open_table(SUBMISSIONS)?;
            if submissions.get(id.as_str())?.is_some() {
                return Err(StoreError::Exists("submission"));
            }
            put(&mut submissions, id.as_str(), &submission)?;
            put(&mut tx.open_table(QUEUE)?, id.as_str(), &())?;
            if let Some(letter) = &letter {
                tx.open_table(SPOOLED)?
                    .insert(id.as_str(), letter.as_slice())?;
            }
            if handoff == Handoff::Worker {
                put(&mut tx.open_table(ATTEMPTS)?, id.as_str(), &1u32)?;
            }
            let events = submission
                .recipients
                .iter()
                .map(|r| Event::new(EventKind::Accepted).recipient(&r.address))
                .collect();
            append_events(tx, id, events)
        })
    }

    /// A letter accepted with [`Store::accept_submission`] into the store, until its
    /// submission is finished.
    pub fn spooled_letter(&self, id: &TrackingId) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|tx| {
            let spooled = tx.open_table(SPOOLED)?;
            Ok(spooled
                .get(id.as_str())?
                .map(|letter| letter.value().to_vec()))
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

    /// Appends events about a waiting submission together with the reports they owe
    /// its sender (e.g. a delay notification), in one commit.
    pub fn record_and_report(
        &self,
        id: &TrackingId,
        events: Vec<Event>,
        reports: Vec<Outbound>,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            load(tx, id)?;
            for report in &reports {
                enqueue(tx, report)?;
            }
            append_events(tx, id, events)
        })
    }

    /// Ends a submission's processing: sets its final state, appends the closing
    /// events, queues the reports it owes its sender and takes it off the pipeline's
    /// queue (and drops its letter if the store kept it), in one commit. Fails with
    /// `NotFound` if it is no longer queued (it was finished meanwhile, e.g. expired),
    /// so a submission ends exactly once.
    pub fn finish_submission(
        &self,
        id: &TrackingId,
        state: SubmissionState,
        events: Vec<Event>,
        reports: Vec<Outbound>,
    ) -> Result<(), StoreError> {
        let id = id.clone();
        self.write_grouped(move |tx| finish(tx, &id, state, events.clone(), &reports))
    }

    /// Files the encrypted letter for each recipient (each with its events, as
    /// [`Store::file_message`] does) and ends the submission (as
    /// [`Store::finish_submission`]), all in one commit; the letters' bodies are
    /// written before.
    pub fn deliver_submission(
        &self,
        id: &TrackingId,
        filings: Vec<(NewMessage, Vec<Event>)>,
        state: SubmissionState,
        events: Vec<Event>,
        reports: Vec<Outbound>,
    ) -> Result<(), StoreError> {
        let id = id.clone();
        let filings = filings
            .into_iter()
            .map(|(message, events)| Ok((MessageId::generate()?, message, events)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let filings = Arc::new(filings);
        let batch = filings.clone();
        let letters: Vec<(&MessageId, &[u8])> = filings
            .iter()
            .map(|(message_id, message, _)| (message_id, message.ciphertext.as_slice()))
            .collect();
        self.commit_with_bodies(&letters, |extents| {
            let filed = self.write_grouped(move |tx| {
                let mut filed = Vec::with_capacity(batch.len());
                for ((message_id, message, events), body) in batch.iter().zip(&extents) {
                    filed.push(file(tx, message_id, *body, message, events.clone())?);
                }
                finish(tx, &id, state, events.clone(), &reports)?;
                Ok(filed)
            })?;
            Ok(((), filed))
        })
    }
}

/// Sets a submission's final state, appends its closing events, queues its reports and
/// takes it off the pipeline's queue (dropping a letter the store kept, unless it is
/// quarantined), inside `tx`.
pub(crate) fn finish(
    tx: &WriteTransaction,
    id: &TrackingId,
    state: SubmissionState,
    events: Vec<Event>,
    reports: &[Outbound],
) -> Result<(), StoreError> {
    let mut submission = load(tx, id)?;
    if tx.open_table(QUEUE)?.remove(id.as_str())?.is_none() {
        return Err(StoreError::NotFound("queued submission"));
    }
    submission.state = state;
    put(&mut tx.open_table(SUBMISSIONS)?, id.as_str(), &submission)?;
    tx.open_table(ATTEMPTS)?.remove(id.as_str())?;
    if state != SubmissionState::Quarantined {
        tx.open_table(SPOOLED)?.remove(id.as_str())?;
    }
    for report in reports {
        enqueue(tx, report)?;
    }
    append_events(tx, id, events)
}
