//! Members' inboxes: OpenPGP ciphertext (in body segments, see `bodies`) plus routing
//! metadata.

use std::sync::Arc;

use crate::db::Tx;
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use crate::Store;
use crate::bodies::{Extent, Reread};
use crate::db::{FILED, INBOX, MEMBERS, MESSAGES, USAGE, get, put};
use crate::error::StoreError;
use crate::events::{Event, EventKind, append_events};
use crate::group::Lane;
use crate::ids::{MessageId, ThreadId, TrackingId};
use crate::inbox::inbox_key;
use crate::kvnr::Kvnr;
use crate::mailbox::Mailbox;
use crate::outbound::{Outbound, enqueue};
use crate::settings::{count_usage, used};
use crate::submissions::load;
use crate::threads::touch;
use crate::time::{Timestamp, now};

/// What is known in clear about a filed message: routing metadata only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageMeta {
    /// The message's ID in the inbox.
    pub id: MessageId,
    /// The member whose inbox it is in.
    pub kvnr: Kvnr,
    /// Which inbox.
    pub mailbox: Mailbox,
    /// The submission it came from.
    pub tracking_id: TrackingId,
    /// The recipient address it was submitted to.
    pub address: String,
    /// The sender that submitted it.
    pub sender_id: String,
    /// When it was filed.
    pub received_at: Timestamp,
    /// Size of the message a member fetches, in octets (see [`Ciphertext`]).
    pub size: u64,
    /// Whether the member's app has fetched it.
    pub fetched: bool,
    /// Whether the member marked it read.
    pub read: bool,
    /// The report to send when the member marks it read (a disposition notification
    /// the sender asked for), until then.
    #[serde(default)]
    pub on_read: Option<Outbound>,
    /// The messenger thread it belongs to, if any.
    #[serde(default)]
    pub thread: Option<ThreadId>,
    /// The letter's Message-ID (without angle brackets), for replies to it.
    #[serde(default)]
    pub message_id: Option<String>,
    /// Where its ciphertext is.
    pub(crate) body: Extent,
}

/// A letter's ciphertext: the octets stored, and the size of the message a member
/// fetches from them (the gateway may store a message more compactly than it serves
/// it: OpenPGP binary, armored when fetched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ciphertext {
    /// The octets written to the body segments.
    pub stored: Vec<u8>,
    /// Octets of the message served from them.
    pub size: u64,
}

/// A message to file: the encrypted letter for one recipient of a submission.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The submission it comes from.
    pub tracking_id: TrackingId,
    /// The member.
    pub kvnr: Kvnr,
    /// The inbox.
    pub mailbox: Mailbox,
    /// The recipient address it was submitted to.
    pub address: String,
    /// The PGP/MIME ciphertext.
    pub ciphertext: Ciphertext,
    /// The report to queue when the member marks it read, if the sender asked for one.
    pub on_read: Option<Outbound>,
    /// The member's messenger thread it answers, if any.
    pub thread: Option<ThreadId>,
    /// The letter's Message-ID (without angle brackets), if it has one.
    pub message_id: Option<String>,
    /// The most octets the inbox may hold with this letter filed, if it is bounded:
    /// checked in the commit that files it, so letters filed at once cannot together
    /// pass it ([`StoreError::Full`] if it would).
    pub quota: Option<u64>,
}

impl Store {
    /// Files an encrypted letter in a member's inbox together with its `delivered` event
    /// (and any `events` before it), in one commit; its body is written before.
    /// Filing the same recipient of the same submission again (after a crash) returns
    /// the first message's ID and changes nothing.
    pub fn file_message(
        &self,
        message: NewMessage,
        events: Vec<Event>,
    ) -> Result<MessageId, StoreError> {
        let id = MessageId::generate()?;
        let message = Arc::new(message);
        let filing = message.clone();
        let letters = [(id.as_str(), message.ciphertext.stored.as_slice())];
        self.commit_with_bodies((MESSAGES, Reread::Seldom), &letters, |extents, durable| {
            let new = id.clone();
            // One extent per letter written.
            let body = extents[0];
            let filed = self.write_grouped_after(Lane::Processing, durable, move |tx| {
                file(tx, &new, body, &filing, events.clone())
            })?;
            let key = filed.as_str().to_owned();
            Ok((filed, vec![key]))
        })
    }

    /// One of the member's messages: its metadata and ciphertext as stored. Another member's
    /// message is `None`, exactly as a missing one (and so is one deleted while its body
    /// was read). The first fetch is recorded as a `fetched` tracking event.
    pub fn fetch_message(
        &self,
        kvnr: &Kvnr,
        id: &MessageId,
    ) -> Result<Option<(MessageMeta, Vec<u8>)>, StoreError> {
        let Some(meta) = self.message_meta(kvnr, id)? else {
            return Ok(None);
        };
        let found = self.body(&meta)?.map(|body| (meta, body));
        if let Some((meta, _)) = &found
            && !meta.fetched
        {
            self.update_message(kvnr, id, EventKind::Fetched, |m| {
                m.fetched = true;
                None
            })?;
        }
        Ok(found)
    }

    /// Marks one of the member's messages read (once; a `read` tracking event records
    /// it). If the sender asked for a disposition notification and `receipt` is true,
    /// it is queued in the same commit; either way it is never offered again. Returns
    /// false if the member has no such message.
    pub fn mark_read(
        &self,
        kvnr: &Kvnr,
        id: &MessageId,
        receipt: bool,
    ) -> Result<bool, StoreError> {
        self.update_message(kvnr, id, EventKind::Read, |m| {
            if m.read {
                return None;
            }
            m.read = true;
            let at = now();
            m.on_read.take().filter(|_| receipt).map(|report| Outbound {
                created_at: at,
                next_attempt_at: at,
                ..report
            })
        })
    }

    /// Applies `change` to a message of the member and records `kind` if the change
    /// altered it; queues the report `change` returns. Returns false if the member has
    /// no such message.
    fn update_message(
        &self,
        kvnr: &Kvnr,
        id: &MessageId,
        kind: EventKind,
        change: impl FnOnce(&mut MessageMeta) -> Option<Outbound>,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let mut messages = tx.open_table(MESSAGES)?;
            let Some(mut meta) = get::<MessageMeta>(&messages, id.as_str())? else {
                return Ok(false);
            };
            if meta.kvnr != *kvnr {
                return Ok(false);
            }
            let before = meta.clone();
            let report = change(&mut meta);
            if meta != before {
                put(&mut messages, id.as_str(), &meta)?;
                drop(messages);
                if let Some(report) = &report {
                    enqueue(tx, report)?;
                }
                let event = Event::new(kind).recipient(&meta.address);
                append_events(tx, &meta.tracking_id, vec![event])?;
            }
            Ok(true)
        })
    }
}

/// The key under which a submission's filing for one recipient is recorded.
pub(crate) fn filed_key(tracking_id: &TrackingId, kvnr: &Kvnr, mailbox: Mailbox) -> String {
    format!("{tracking_id}/{kvnr}/{mailbox}")
}

/// Files `message` (its ciphertext written at `body`) under the new ID `id` with its
/// `delivered` event (after `events`) inside `tx`, unless this recipient of this
/// submission was filed before; returns the ID the message is filed under.
pub(crate) fn file(
    tx: &Tx<'_>,
    id: &MessageId,
    body: Extent,
    message: &NewMessage,
    mut events: Vec<Event>,
) -> Result<MessageId, StoreError> {
    let filed_key = filed_key(&message.tracking_id, &message.kvnr, message.mailbox);
    let mut filed = tx.open_table(FILED)?;
    if let Some(existing) = get::<MessageId>(&filed, &filed_key)? {
        return Ok(existing);
    }
    // The member's account may have been cancelled or deleted while the letter was
    // encrypted: nothing is filed for a member who is gone (the letter is tried again
    // and fails as addressed to an unknown member).
    if tx
        .open_table(MEMBERS)?
        .get(message.kvnr.as_str())?
        .is_none()
    {
        return Err(StoreError::NotFound("member"));
    }
    if let Some(quota) = message.quota {
        let used = used(&tx.open_table(USAGE)?, &message.kvnr, message.mailbox)?;
        if used.saturating_add(message.ciphertext.size) > quota {
            return Err(StoreError::Full("inbox"));
        }
    }
    let submission = load(tx, &message.tracking_id)?;
    let meta = MessageMeta {
        id: id.clone(),
        kvnr: message.kvnr.clone(),
        mailbox: message.mailbox,
        tracking_id: message.tracking_id.clone(),
        address: message.address.clone(),
        sender_id: submission.sender_id,
        received_at: now(),
        size: message.ciphertext.size,
        fetched: false,
        read: false,
        on_read: message.on_read.clone(),
        thread: message.thread.clone(),
        message_id: message.message_id.clone(),
        body,
    };
    put(&mut filed, &filed_key, id)?;
    store_message(tx, &meta)?;
    if let Some(thread) = &meta.thread {
        touch(tx, &meta.kvnr, thread, meta.received_at)?;
    }
    events.push(Event::new(EventKind::Delivered).recipient(&message.address));
    append_events(tx, &message.tracking_id, events)?;
    Ok(id.clone())
}

/// Writes a message's metadata and inbox index entry inside `tx` (its body is written
/// before the commit).
pub(crate) fn store_message(tx: &Tx<'_>, meta: &MessageMeta) -> Result<(), StoreError> {
    put(&mut tx.open_table(MESSAGES)?, meta.id.as_str(), meta)?;
    count_usage(tx, meta, true)?;
    put(
        &mut tx.open_table(INBOX)?,
        &inbox_key(&meta.kvnr, meta.mailbox, &meta.id),
        &meta.id,
    )
}
