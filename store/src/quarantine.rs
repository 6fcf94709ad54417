//! Poison letters: processing attempts that did not end normally (a panic, the gateway
//! stopping while they ran) are counted durably, and a letter that cannot be processed
//! is set aside in the quarantine, kept as received, until an operator releases or
//! drops it.

use redb::ReadableTable;

use crate::db::Tx;
use serde::{Deserialize, Serialize};

use crate::Store;
use crate::bodies::Extent;
use crate::db::{ATTEMPTS, QUARANTINE, QUEUE, SUBMISSIONS, get, put, scan};
use crate::error::StoreError;
use crate::events::{Event, EventKind, append_events};
use crate::ids::TrackingId;
use crate::kvnr::Kvnr;
use crate::outbound::Outbound;
use crate::submissions::{SubmissionState, finish, load, take_spooled};
use crate::time::{Timestamp, now};

/// Why a submission is in quarantine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    /// The submission.
    pub tracking_id: TrackingId,
    /// A stable reason code, e.g. `processing-timeout`.
    pub reason: String,
    /// What happened, for the operator (never letter content).
    pub detail: String,
    /// Attempts that had ended abnormally when it was quarantined.
    pub attempts: u32,
    /// When it was quarantined.
    pub at: Timestamp,
}

impl Store {
    /// Counts an attempt that ended abnormally (a panic, or the gateway stopping
    /// while it ran) for each submission of `ids` that is still queued, in one commit.
    /// Returns the abnormal ends counted so far, this one included, for each of `ids`
    /// (`None` where it is no longer queued).
    pub fn count_failed_attempts(
        &self,
        ids: &[TrackingId],
    ) -> Result<Vec<Option<u32>>, StoreError> {
        let ids = ids.to_vec();
        self.write_grouped(move |tx| {
            let queue = tx.open_table(QUEUE)?;
            let mut attempts = tx.open_table(ATTEMPTS)?;
            let mut counts = Vec::with_capacity(ids.len());
            for id in &ids {
                if queue.get(id.as_str())?.is_none() {
                    counts.push(None);
                    continue;
                }
                let count = get::<u32>(&attempts, id.as_str())?.unwrap_or(0) + 1;
                put(&mut attempts, id.as_str(), &count)?;
                counts.push(Some(count));
            }
            Ok(counts)
        })
    }

    /// The attempts at each of `ids` that ended abnormally so far (0 for none).
    pub fn failed_attempts(&self, ids: &[TrackingId]) -> Result<Vec<u32>, StoreError> {
        self.read(|tx| {
            let attempts = tx.open_table(ATTEMPTS)?;
            ids.iter()
                .map(|id| Ok(get::<u32>(&attempts, id.as_str())?.unwrap_or(0)))
                .collect()
        })
    }

    /// Quarantines a queued submission with its event and the reports it owes its
    /// sender, keeping its letter, in one commit. Fails with `NotFound` if it is no
    /// longer queued, so a submission ends exactly once.
    pub fn quarantine(
        &self,
        entry: Quarantined,
        events: Vec<Event>,
        reports: Vec<Outbound>,
    ) -> Result<(), StoreError> {
        self.write_grouped(move |tx| {
            let id = entry.tracking_id.clone();
            // A quarantined submission keeps its letter: nothing to punch.
            finish(
                tx,
                &id,
                SubmissionState::Quarantined,
                events.clone(),
                &reports,
            )?;
            put(&mut tx.open_table(QUARANTINE)?, id.as_str(), &entry)
        })?;
        self.activity.ended(SubmissionState::Quarantined, 1);
        Ok(())
    }

    /// The quarantined submissions, oldest tracking ID first.
    pub fn quarantined(&self) -> Result<Vec<Quarantined>, StoreError> {
        self.read(|tx| scan(&tx.open_table(QUARANTINE)?, ""))
    }

    /// Puts a quarantined submission back on the pipeline's queue with no attempts
    /// counted, recording who released it and that it was released; `false` if it is
    /// not quarantined.
    pub fn release(&self, id: &TrackingId, by: &str) -> Result<bool, StoreError> {
        self.write(|tx| {
            let event = Event::new(EventKind::Released).detail(format!("released by {by}"));
            let left = leave(tx, id, SubmissionState::Accepted, event)?;
            if left {
                put(&mut tx.open_table(QUEUE)?, id.as_str(), &())?;
                let mut submission = load(tx, id)?;
                submission.released = true;
                put(&mut tx.open_table(SUBMISSIONS)?, id.as_str(), &submission)?;
            }
            Ok(left)
        })
    }

    /// Drops a quarantined submission: it ends `failed`, its letter is deleted from
    /// the store (the caller removes a spool file), and a `dropped` event records who
    /// did it; `false` if it is not quarantined.
    pub fn drop_quarantined(&self, id: &TrackingId, by: &str) -> Result<bool, StoreError> {
        let (left, spooled) = self.write(|tx| {
            let event = Event::new(EventKind::Dropped).detail(format!("dropped by {by}"));
            let left = leave(tx, id, SubmissionState::Failed, event)?;
            let spooled = if left { take_spooled(tx, id)? } else { None };
            Ok((left, spooled))
        })?;
        self.bodies.discard_soon(spooled.as_slice());
        if left {
            self.remove_spool_files(std::slice::from_ref(id));
            self.activity.ended(SubmissionState::Failed, 1);
        }
        Ok(left)
    }
}

/// Drops, inside `tx`, every quarantined submission addressed to `kvnr` alone (the
/// member's account is being deleted), each `failed` with a `deleted` event saying
/// `reason`; returns the letters dropped and where those kept by the store are, to be
/// removed and punched after the commit. The sender was told when the letter was
/// quarantined.
pub(crate) fn drop_for_member(
    tx: &Tx<'_>,
    kvnr: &Kvnr,
    reason: &str,
) -> Result<(Vec<TrackingId>, Vec<Extent>), StoreError> {
    let ids: Vec<TrackingId> = scan::<Quarantined>(&tx.open_table(QUARANTINE)?, "")?
        .into_iter()
        .map(|entry| entry.tracking_id)
        .collect();
    let mut dropped = Vec::new();
    let mut extents = Vec::new();
    for id in ids {
        let submission = load(tx, &id)?;
        let theirs = !submission.recipients.is_empty()
            && submission.recipients.iter().all(|r| r.kvnr == *kvnr);
        if !theirs {
            continue;
        }
        let event = Event::new(EventKind::Deleted).detail(reason);
        if leave(tx, &id, SubmissionState::Failed, event)? {
            extents.extend(take_spooled(tx, &id)?);
            dropped.push(id);
        }
    }
    Ok((dropped, extents))
}

/// Takes `id` out of the quarantine inside `tx`, in `state` and with `event`;
/// `false` if it is not quarantined.
fn leave(
    tx: &Tx<'_>,
    id: &TrackingId,
    state: SubmissionState,
    event: Event,
) -> Result<bool, StoreError> {
    if tx.open_table(QUARANTINE)?.remove(id.as_str())?.is_none() {
        return Ok(false);
    }
    let mut submission = load(tx, id)?;
    submission.state = state;
    put(&mut tx.open_table(SUBMISSIONS)?, id.as_str(), &submission)?;
    append_events(tx, id, vec![event])?;
    Ok(true)
}

impl Quarantined {
    /// A quarantine entry for `tracking_id`, made now.
    pub fn new(tracking_id: TrackingId, reason: &str, detail: String, attempts: u32) -> Self {
        Quarantined {
            tracking_id,
            reason: reason.to_owned(),
            detail,
            attempts,
            at: now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::tests::submission;
    use crate::testing;

    #[test]
    fn failed_attempts_count_while_queued_and_quarantine_keeps_the_letter() {
        let (_dir, store) = testing::open();
        let id = TrackingId::generate().unwrap();
        store
            .accept_submission(&submission(&id), Some(b"letter".to_vec()))
            .unwrap();
        let other = TrackingId::generate().unwrap();
        let ids = [id.clone(), other.clone()];
        // Counted for queued letters only.
        assert_eq!(store.failed_attempts(&ids).unwrap(), vec![0, 0]);
        assert_eq!(
            store.count_failed_attempts(&ids).unwrap(),
            vec![Some(1), None]
        );
        assert_eq!(
            store.count_failed_attempts(&ids).unwrap(),
            vec![Some(2), None]
        );
        assert_eq!(store.failed_attempts(&ids).unwrap(), vec![2, 0]);

        let entry = Quarantined::new(id.clone(), "processing-crashed", "d".into(), 2);
        let event = Event::new(EventKind::Quarantined).reason("processing-crashed");
        store
            .quarantine(entry.clone(), vec![event], Vec::new())
            .unwrap();
        assert_eq!(store.quarantined().unwrap(), vec![entry.clone()]);
        assert!(store.queued().unwrap().is_empty());
        assert_eq!(store.spooled_letter(&id).unwrap().unwrap(), b"letter");
        let state = store.submission(&id).unwrap().unwrap().state;
        assert_eq!(state, SubmissionState::Quarantined);
        // Nothing more is recorded of it as waiting (a delay notice, say).
        assert!(matches!(
            store.record_and_report(&id, Vec::new(), Vec::new()),
            Err(StoreError::NotFound(_))
        ));
        // A submission ends once: no second quarantine, no finish.
        assert!(matches!(
            store.quarantine(entry, Vec::new(), Vec::new()),
            Err(StoreError::NotFound(_))
        ));

        // Released: queued again with no attempts counted.
        assert!(store.release(&id, "op").unwrap());
        assert!(!store.release(&id, "op").unwrap());
        assert_eq!(store.queued().unwrap(), vec![id.clone()]);
        assert_eq!(store.failed_attempts(&ids).unwrap(), vec![0, 0]);
        assert!(store.submission(&id).unwrap().unwrap().released);
        let entry = Quarantined::new(id.clone(), "malformed", "d".into(), 1);
        store.quarantine(entry, Vec::new(), Vec::new()).unwrap();

        // Dropped: failed, the letter gone.
        assert!(store.drop_quarantined(&id, "op").unwrap());
        assert!(!store.drop_quarantined(&id, "op").unwrap());
        assert!(store.quarantined().unwrap().is_empty());
        assert_eq!(store.spooled_letter(&id).unwrap(), None);
        let kinds: Vec<EventKind> = store.events(&id).unwrap().iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EventKind::Accepted,
                EventKind::Quarantined,
                EventKind::Released,
                EventKind::Dropped
            ]
        );
        let state = store.submission(&id).unwrap().unwrap().state;
        assert_eq!(state, SubmissionState::Failed);
    }
}
