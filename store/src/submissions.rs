//! Submissions, the pipeline's queue, and the tracking events of each submission.

use std::sync::Arc;

use redb::ReadableTable;

use crate::db::Tx;
use serde::{Deserialize, Serialize};

use crate::Store;
use crate::activity::failure_reasons;
use crate::bodies::{Extent, Reread};
use crate::db::{ATTEMPTS, MESSAGES, QUEUE, SPOOLED, SPOOLED_AT, SUBMISSIONS, get, put};
use crate::error::StoreError;
use crate::events::{Event, EventKind, append_events};
use crate::group::Lane;
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
    /// Whether an operator released it from the quarantine, which had told its sender
    /// it failed: its delivery is then reported even where a success was not asked for.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub released: bool,
}

/// Loads a submission inside `tx`, or fails with `NotFound`.
pub(crate) fn load(tx: &Tx<'_>, id: &TrackingId) -> Result<Submission, StoreError> {
    get(&tx.open_table(SUBMISSIONS)?, id.as_str())?.ok_or(StoreError::NotFound("submission"))
}

impl Store {
    /// Records a spooled submission, queues it for the pipeline and appends its
    /// `accepted` event, in one grouped durable commit; a `letter` kept by the store
    /// rather than in a spool file of its own (a small one) is written to a body
    /// segment first and its place committed with it. Only after this returns may the
    /// sender be told 250.
    pub fn accept_submission(
        &self,
        submission: &Submission,
        letter: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let id = submission.tracking_id.clone();
        let letters: Vec<(&str, &[u8])> = letter
            .iter()
            .map(|bytes| (id.as_str(), bytes.as_slice()))
            .collect();
        let submission = submission.clone();
        self.commit_with_bodies((SPOOLED_AT, Reread::Soon), &letters, |extents, durable| {
            let spooled = extents.first().copied();
            self.write_grouped_after(Lane::Accepting, durable, move |tx| {
                let id = &submission.tracking_id;
                let mut submissions = tx.open_table(SUBMISSIONS)?;
                if submissions.get(id.as_str())?.is_some() {
                    return Err(StoreError::Exists("submission"));
                }
                put(&mut submissions, id.as_str(), &submission)?;
                put(&mut tx.open_table(QUEUE)?, id.as_str(), &())?;
                if let Some(extent) = &spooled {
                    put(&mut tx.open_table(SPOOLED_AT)?, id.as_str(), extent)?;
                }
                let events = submission
                    .recipients
                    .iter()
                    .map(|r| Event::new(EventKind::Accepted).recipient(&r.address))
                    .collect();
                append_events(tx, id, events)
            })?;
            Ok(((), extents.iter().map(|_| id.to_string()).collect()))
        })?;
        self.activity.accepted();
        Ok(())
    }

    /// A letter accepted with [`Store::accept_submission`] into the store, until its
    /// submission is finished.
    pub fn spooled_letter(&self, id: &TrackingId) -> Result<Option<Vec<u8>>, StoreError> {
        let (extent, legacy) = self.read(|tx| {
            let extent = get::<Extent>(&tx.open_table(SPOOLED_AT)?, id.as_str())?;
            let legacy = match extent {
                Some(_) => None,
                None => tx
                    .open_table(SPOOLED)?
                    .get(id.as_str())?
                    .map(|letter| letter.value().to_vec()),
            };
            Ok((extent, legacy))
        })?;
        let Some(extent) = extent else {
            return Ok(legacy);
        };
        let letter = self.bodies.read(&extent)?;
        // Punched only after the commit that drops its record: a record still there
        // means the letter was read whole.
        let still_there =
            self.read(|tx| Ok(tx.open_table(SPOOLED_AT)?.get(id.as_str())?.is_some()))?;
        Ok(letter.filter(|_| still_there))
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
    /// its sender (e.g. a delay notification), in one commit; `NotFound` if it no
    /// longer waits (it ended meanwhile).
    pub fn record_and_report(
        &self,
        id: &TrackingId,
        events: Vec<Event>,
        reports: Vec<Outbound>,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            load(tx, id)?;
            // Only while it waits: a letter that ended meanwhile is not delayed.
            if tx.open_table(QUEUE)?.get(id.as_str())?.is_none() {
                return Err(StoreError::NotFound("queued submission"));
            }
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
        let failures = failure_reasons(&events);
        let spooled =
            self.write_grouped(move |tx| finish(tx, &id, state, events.clone(), &reports))?;
        self.bodies.discard_soon(spooled.as_slice());
        self.activity.ended(state, 1);
        self.activity.failed_for(failures);
        Ok(())
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
        let failures = failure_reasons(&events);
        let filings = filings
            .into_iter()
            .map(|(message, events)| Ok((MessageId::generate()?, message, events)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let filings = Arc::new(filings);
        let batch = filings.clone();
        let letters: Vec<(&str, &[u8])> = filings
            .iter()
            .map(|(message_id, message, _)| {
                (message_id.as_str(), message.ciphertext.stored.as_slice())
            })
            .collect();
        let spooled =
            self.commit_with_bodies((MESSAGES, Reread::Seldom), &letters, |extents, durable| {
                let (filed, spooled) =
                    self.write_grouped_after(Lane::Processing, durable, move |tx| {
                        let mut filed = Vec::with_capacity(batch.len());
                        for ((message_id, message, events), body) in batch.iter().zip(&extents) {
                            let id = file(tx, message_id, *body, message, events.clone())?;
                            filed.push(id.as_str().to_owned());
                        }
                        let spooled = finish(tx, &id, state, events.clone(), &reports)?;
                        Ok((filed, spooled))
                    })?;
                Ok((spooled, filed))
            })?;
        self.bodies.discard_soon(spooled.as_slice());
        self.activity.ended(state, 1);
        self.activity.failed_for(failures);
        Ok(())
    }
}

/// Sets a submission's final state, appends its closing events, queues its reports and
/// takes it off the pipeline's queue (dropping a letter the store kept, unless it is
/// quarantined), inside `tx`. Returns where the dropped letter was, to be punched
/// once the transaction is committed.
pub(crate) fn finish(
    tx: &Tx<'_>,
    id: &TrackingId,
    state: SubmissionState,
    events: Vec<Event>,
    reports: &[Outbound],
) -> Result<Option<Extent>, StoreError> {
    let mut submission = load(tx, id)?;
    if tx.open_table(QUEUE)?.remove(id.as_str())?.is_none() {
        return Err(StoreError::NotFound("queued submission"));
    }
    submission.state = state;
    put(&mut tx.open_table(SUBMISSIONS)?, id.as_str(), &submission)?;
    tx.open_table(ATTEMPTS)?.remove(id.as_str())?;
    let spooled = match state {
        SubmissionState::Quarantined => None,
        _ => take_spooled(tx, id)?,
    };
    for report in reports {
        enqueue(tx, report)?;
    }
    append_events(tx, id, events)?;
    Ok(spooled)
}

/// Deletes the record of a letter the store kept for `id` inside `tx`; returns where
/// its bytes are, to be punched once the transaction is committed.
pub(crate) fn take_spooled(tx: &Tx<'_>, id: &TrackingId) -> Result<Option<Extent>, StoreError> {
    tx.open_table(SPOOLED)?.remove(id.as_str())?;
    let mut spooled = tx.open_table(SPOOLED_AT)?;
    let extent = get::<Extent>(&spooled, id.as_str())?;
    spooled.remove(id.as_str())?;
    Ok(extent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::tests::submission;
    use crate::testing::{self, bodies_on_disk, contains};

    const LETTER: &[u8] = b"Subject: SPOOLED-MARKER-4711\r\n\r\nencrypted part";

    #[test]
    fn a_small_letter_waits_in_a_segment_and_is_punched_when_processed() {
        let (dir, store) = testing::open();
        let database = || std::fs::read(dir.path().join("kvgate.redb")).unwrap();
        let id = TrackingId::generate().unwrap();
        store
            .accept_submission(&submission(&id), Some(LETTER.to_vec()))
            .unwrap();
        assert_eq!(store.spooled_letter(&id).unwrap().unwrap(), LETTER);
        assert!(contains(
            &bodies_on_disk(dir.path()),
            b"SPOOLED-MARKER-4711"
        ));
        assert!(!contains(&database(), b"SPOOLED-MARKER-4711"));
        // The start-up sweep keeps a letter that waits for the pipeline.
        assert_eq!(store.sweep_bodies().unwrap(), 0);
        assert_eq!(store.spooled_letter(&id).unwrap().unwrap(), LETTER);

        store
            .finish_submission(&id, SubmissionState::Failed, Vec::new(), Vec::new())
            .unwrap();
        assert_eq!(store.spooled_letter(&id).unwrap(), None);
        store.bodies.settle();
        assert!(!contains(
            &bodies_on_disk(dir.path()),
            b"SPOOLED-MARKER-4711"
        ));
        assert!(!contains(&database(), b"SPOOLED-MARKER-4711"));
    }

    #[test]
    fn a_letter_an_earlier_version_kept_in_the_database_is_still_read() {
        let (_dir, store) = testing::open();
        let id = TrackingId::generate().unwrap();
        store.accept_submission(&submission(&id), None).unwrap();
        store
            .write(|tx| {
                tx.open_table(SPOOLED)?.insert(id.as_str(), LETTER)?;
                Ok(())
            })
            .unwrap();
        assert_eq!(store.spooled_letter(&id).unwrap().unwrap(), LETTER);
        store
            .finish_submission(&id, SubmissionState::Failed, Vec::new(), Vec::new())
            .unwrap();
        assert_eq!(store.spooled_letter(&id).unwrap(), None);
    }
}
