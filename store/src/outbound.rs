//! The outbound queue: mail the gateway itself sends (delivery and disposition
//! reports, later members' uploads), kept until the relay has said 250.
//!
//! The store does not know what a queued message says: `payload` is whatever the
//! gateway needs to render it when it sends. Payloads are kept apart from the entries,
//! so listing the queue (every pass of the sender, `kvgate queue list`) never loads
//! them; [`Store::outbound_payload`] reads one when it is sent. An entry leaves the
//! queue only with an outcome (sent, dropped, expired), committed together with its
//! tracking event.

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

    /// Takes an entry off the queue with its outcome (sent, dropped, expired) recorded
    /// in the submission's history, in one commit. Returns false if it was not queued
    /// (another process already settled it).
    pub fn settle_outbound(&self, id: &OutboundId, outcome: Event) -> Result<bool, StoreError> {
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
    pub fn defer_outbound(
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

    /// Makes an entry due now (`kvgate queue retry`).
    pub fn retry_outbound(&self, id: &OutboundId, now: Timestamp) -> Result<bool, StoreError> {
        self.update_outbound(id, |entry| {
            entry.next_attempt_at = now;
            Vec::new()
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
