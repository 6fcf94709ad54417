//! The outbound queue: mail the gateway itself sends (delivery and disposition
//! reports, later members' uploads), kept until the relay has said 250.
//!
//! The store does not know what a queued message says: `payload` is whatever the
//! gateway needs to render it when it sends. Payloads are kept apart from the entries,
//! so listing the queue (every pass of the sender, `kvgate queue list`) never loads
//! them; [`Store::outbound_payload`] reads one when it is sent. An entry leaves the
//! queue only with an outcome (sent, dropped, expired), committed together with its
//! tracking event.
//!
//! While an entry is being handed to the relay (an [`OutboundAttempt`]), an operator's
//! drop or retry cannot take effect at once: the relay may be accepting it that very
//! moment. The request is kept and honoured when the attempt ends, so the history
//! says what happened: a letter the relay took is `reported`, never `dropped`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redb::ReadableTable;

use crate::db::Tx;
use serde::{Deserialize, Serialize};

use crate::Store;
use crate::db::{OUTBOUND, OUTBOUND_PAYLOADS, get, put, scan};
use crate::error::StoreError;
use crate::events::{Event, append_events};
use crate::ids::{OutboundId, TrackingId};
use crate::time::Timestamp;

/// One message waiting to be handed to the relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbound {
    /// The queue entry.
    pub id: OutboundId,
    /// The submission it reports on.
    pub tracking_id: TrackingId,
    /// What it is, for people and events (`dsn`, `mdn`).
    pub purpose: String,
    /// The envelope sender; empty for the null reverse path `<>` of reports.
    pub mail_from: String,
    /// The one envelope recipient.
    pub rcpt_to: String,
    /// What the gateway renders the message from (opaque to the store). Empty in the
    /// entries the queue listings return; see [`Store::outbound_payload`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub payload: String,
    /// When it was queued.
    pub created_at: Timestamp,
    /// Not to be tried before this.
    pub next_attempt_at: Timestamp,
    /// Attempts made so far.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Whether the wait has already been reported as a delay.
    #[serde(default)]
    pub delay_reported: bool,
}

/// The entries this process is handing to the relay, with what an operator asked of
/// each meanwhile. Only one process has the store open, so this is the whole truth.
#[derive(Default)]
pub(crate) struct Attempts(Mutex<HashMap<OutboundId, Asked>>);

impl Attempts {
    fn lock(&self) -> MutexGuard<'_, HashMap<OutboundId, Asked>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What an operator asked of an entry while it was being sent.
#[derive(Default)]
struct Asked {
    /// Drop it, with this event, unless the relay takes it.
    drop: Option<Event>,
    /// Make the next attempt at once should this one fail.
    retry: bool,
}

/// What became of an operator's request for a queued entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRequest {
    /// Done.
    Done,
    /// The entry is being handed to the relay: the request is honoured when that
    /// attempt ends (a drop only if the relay did not take it).
    AtAttemptEnd,
    /// No such entry is queued.
    NotQueued,
}

/// One attempt of this process at handing an entry to the relay, begun with
/// [`Store::begin_outbound_attempt`]; it ends with [`Self::settle`], [`Self::defer`] or
/// when dropped (the entry stays queued as it was).
pub struct OutboundAttempt {
    store: Arc<Store>,
    id: OutboundId,
}

impl OutboundAttempt {
    /// Ends the attempt with its outcome (sent, refused, expired): the entry leaves the
    /// queue with `outcome` as its event, whatever an operator asked meanwhile. Returns
    /// false if it was not queued.
    pub fn settle(self, outcome: Event) -> Result<bool, StoreError> {
        let mut attempts = self.store.attempts.lock();
        attempts.remove(&self.id);
        let settled = self.store.settle_outbound(&self.id, outcome);
        drop(attempts);
        settled
    }

    /// Ends the attempt failed for now: the entry waits until `next_attempt_at` (see
    /// [`Store::defer_outbound`]), or leaves the queue with the operator's event if
    /// they dropped it meanwhile, or is due at `now` if they asked for a retry.
    pub fn defer(
        self,
        next_attempt_at: Timestamp,
        now: Timestamp,
        error: &str,
        delay: Option<Event>,
    ) -> Result<bool, StoreError> {
        let mut attempts = self.store.attempts.lock();
        let asked = attempts.remove(&self.id).unwrap_or_default();
        let ended = match asked.drop {
            Some(dropped) => self.store.settle_outbound(&self.id, dropped),
            None => {
                let next = if asked.retry { now } else { next_attempt_at };
                self.store.defer_outbound(&self.id, next, error, delay)
            }
        };
        drop(attempts);
        ended
    }
}

impl Drop for OutboundAttempt {
    fn drop(&mut self) {
        self.store.attempts.lock().remove(&self.id);
    }
}

/// Queues `entry` inside `tx`.
pub(crate) fn enqueue(tx: &Tx<'_>, entry: &Outbound) -> Result<(), StoreError> {
    let mut table = tx.open_table(OUTBOUND)?;
    if table.get(entry.id.as_str())?.is_some() {
        return Err(StoreError::Exists("outbound message"));
    }
    tx.open_table(OUTBOUND_PAYLOADS)?
        .insert(entry.id.as_str(), entry.payload.as_bytes())?;
    let listed = Outbound {
        payload: String::new(),
        ..entry.clone()
    };
    put(&mut table, entry.id.as_str(), &listed)
}

impl Store {
    /// Every queued outbound message, oldest first, without payloads.
    pub fn outbound(&self) -> Result<Vec<Outbound>, StoreError> {
        self.read(|tx| scan(&tx.open_table(OUTBOUND)?, ""))
    }

    /// The payload of a queued outbound message; `None` once it has left the queue.
    pub fn outbound_payload(&self, id: &OutboundId) -> Result<Option<String>, StoreError> {
        self.read(|tx| {
            let table = tx.open_table(OUTBOUND_PAYLOADS)?;
            let payload = table.get(id.as_str())?;
            Ok(payload.map(|p| String::from_utf8_lossy(p.value()).into_owned()))
        })
    }

    /// One queued outbound message, without its payload.
    pub fn outbound_entry(&self, id: &OutboundId) -> Result<Option<Outbound>, StoreError> {
        self.read(|tx| get(&tx.open_table(OUTBOUND)?, id.as_str()))
    }

    /// Marks `id` as being handed to the relay by this process until the returned
    /// attempt ends; operators' drops and retries wait for its end meanwhile. `None`
    /// if an attempt at it has begun already.
    pub fn begin_outbound_attempt(self: &Arc<Self>, id: &OutboundId) -> Option<OutboundAttempt> {
        let mut attempts = self.attempts.lock();
        if attempts.contains_key(id) {
            return None;
        }
        attempts.insert(id.clone(), Asked::default());
        Some(OutboundAttempt {
            store: self.clone(),
            id: id.clone(),
        })
    }

    /// Whether an attempt of this process at `id` has begun and not ended.
    pub fn is_being_sent(&self, id: &OutboundId) -> bool {
        self.attempts.lock().contains_key(id)
    }

    /// Takes an entry off the queue unsent (`kvgate queue drop`), with `event` in its
    /// submission's history; one being sent is dropped when that attempt ends, unless
    /// the relay took it.
    pub fn drop_outbound(&self, id: &OutboundId, event: Event) -> Result<QueueRequest, StoreError> {
        let mut attempts = self.attempts.lock();
        if let Some(asked) = attempts.get_mut(id) {
            asked.drop = Some(event);
            return Ok(QueueRequest::AtAttemptEnd);
        }
        let settled = self.settle_outbound(id, event)?;
        drop(attempts);
        Ok(if settled {
            QueueRequest::Done
        } else {
            QueueRequest::NotQueued
        })
    }

    /// Takes an entry off the queue with its outcome (sent, dropped, expired) recorded
    /// in the submission's history, in one commit. Returns false if it was not queued.
    pub(crate) fn settle_outbound(
        &self,
        id: &OutboundId,
        outcome: Event,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let Some(entry) = tx
                .open_table(OUTBOUND)?
                .remove(id.as_str())?
                .map(|v| serde_json::from_slice::<Outbound>(v.value()))
                .transpose()?
            else {
                return Ok(false);
            };
            tx.open_table(OUTBOUND_PAYLOADS)?.remove(id.as_str())?;
            append_events(tx, &entry.tracking_id, vec![outcome])?;
            Ok(true)
        })
    }

    /// Records a failed attempt: the entry waits until `next_attempt_at`. `delay`, if
    /// given, is recorded as the submission's `delayed` event (once per entry).
    fn defer_outbound(
        &self,
        id: &OutboundId,
        next_attempt_at: Timestamp,
        error: &str,
        delay: Option<Event>,
    ) -> Result<bool, StoreError> {
        self.update_outbound(id, |entry| {
            entry.attempts += 1;
            entry.next_attempt_at = next_attempt_at;
            entry.last_error = Some(error.to_owned());
            match delay {
                Some(event) if !entry.delay_reported => {
                    entry.delay_reported = true;
                    vec![event]
                }
                _ => Vec::new(),
            }
        })
    }

    /// Makes an entry due at `now` (`kvgate queue retry`); for one being sent, the
    /// next attempt is made at once should this one fail.
    pub fn retry_outbound(
        &self,
        id: &OutboundId,
        now: Timestamp,
    ) -> Result<QueueRequest, StoreError> {
        let mut attempts = self.attempts.lock();
        if let Some(asked) = attempts.get_mut(id) {
            asked.retry = true;
            return Ok(QueueRequest::AtAttemptEnd);
        }
        let retried = self.update_outbound(id, |entry| {
            entry.next_attempt_at = now;
            Vec::new()
        })?;
        drop(attempts);
        Ok(if retried {
            QueueRequest::Done
        } else {
            QueueRequest::NotQueued
        })
    }

    /// Applies `change` to a queued entry and appends the events it returns. Returns
    /// false if the entry is not queued.
    fn update_outbound(
        &self,
        id: &OutboundId,
        change: impl FnOnce(&mut Outbound) -> Vec<Event>,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let mut table = tx.open_table(OUTBOUND)?;
            let Some(mut entry) = get::<Outbound>(&table, id.as_str())? else {
                return Ok(false);
            };
            let events = change(&mut entry);
            put(&mut table, id.as_str(), &entry)?;
            drop(table);
            append_events(tx, &entry.tracking_id, events)?;
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventKind;
    use crate::time::now;

    /// A store with one queued report, and the report's ID.
    fn queued() -> (tempfile::TempDir, Arc<Store>, Outbound) {
        let (dir, store) = crate::testing::open();
        let entry = Outbound {
            id: OutboundId::generate().unwrap(),
            tracking_id: TrackingId::generate().unwrap(),
            purpose: "dsn".into(),
            mail_from: String::new(),
            rcpt_to: "praxis@example.test".into(),
            payload: "rendered later".into(),
            created_at: now(),
            next_attempt_at: now(),
            attempts: 0,
            last_error: None,
            delay_reported: false,
        };
        store.write(|tx| enqueue(tx, &entry)).unwrap();
        (dir, Arc::new(store), entry)
    }

    fn kinds(store: &Store, entry: &Outbound) -> Vec<EventKind> {
        let events = store.events(&entry.tracking_id).unwrap();
        events.into_iter().map(|event| event.kind).collect()
    }

    fn dropped() -> Event {
        Event::new(EventKind::Failed).reason("dropped-by-operator")
    }

    #[test]
    fn a_report_the_relay_took_while_it_was_being_dropped_is_reported_not_dropped() {
        let (_dir, store, entry) = queued();
        let attempt = store.begin_outbound_attempt(&entry.id).unwrap();
        assert_eq!(
            store.drop_outbound(&entry.id, dropped()).unwrap(),
            QueueRequest::AtAttemptEnd
        );
        assert_eq!(store.outbound().unwrap().len(), 1);
        assert!(attempt.settle(Event::new(EventKind::Reported)).unwrap());
        assert!(store.outbound().unwrap().is_empty());
        assert_eq!(kinds(&store, &entry), [EventKind::Reported]);
    }

    #[test]
    fn a_drop_during_a_failed_attempt_takes_the_report_off_the_queue_when_it_ends() {
        let (_dir, store, entry) = queued();
        let attempt = store.begin_outbound_attempt(&entry.id).unwrap();
        store.drop_outbound(&entry.id, dropped()).unwrap();
        let later = Timestamp(now().as_millis() + 60_000);
        assert!(
            attempt
                .defer(later, now(), "connection refused", None)
                .unwrap()
        );
        assert!(store.outbound().unwrap().is_empty());
        assert_eq!(kinds(&store, &entry), [EventKind::Failed]);
        assert_eq!(
            store.drop_outbound(&entry.id, dropped()).unwrap(),
            QueueRequest::NotQueued
        );
    }

    #[test]
    fn a_retry_during_a_failed_attempt_makes_the_next_one_due_at_once() {
        let (_dir, store, entry) = queued();
        let attempt = store.begin_outbound_attempt(&entry.id).unwrap();
        let at = now();
        assert_eq!(
            store.retry_outbound(&entry.id, at).unwrap(),
            QueueRequest::AtAttemptEnd
        );
        let later = Timestamp(at.as_millis() + 60_000);
        assert!(
            attempt
                .defer(later, at, "connection refused", None)
                .unwrap()
        );
        let [waiting] = &store.outbound().unwrap()[..] else {
            panic!("one entry stays queued");
        };
        assert_eq!(waiting.next_attempt_at, at);
        assert_eq!(waiting.attempts, 1);

        // Without a retry asked for, the attempt's own wait holds.
        let attempt = store.begin_outbound_attempt(&entry.id).unwrap();
        assert!(
            attempt
                .defer(later, at, "connection refused", None)
                .unwrap()
        );
        assert_eq!(store.outbound().unwrap()[0].next_attempt_at, later);
    }

    #[test]
    fn an_attempt_that_ends_without_an_outcome_lets_requests_act_at_once() {
        let (_dir, store, entry) = queued();
        drop(store.begin_outbound_attempt(&entry.id));
        assert!(!store.is_being_sent(&entry.id));
        assert_eq!(
            store.drop_outbound(&entry.id, dropped()).unwrap(),
            QueueRequest::Done
        );
        assert_eq!(kinds(&store, &entry), [EventKind::Failed]);
    }
}
