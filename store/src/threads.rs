//! Messenger threads between a member and the insurer. A thread holds no content of
//! its own: its messages are the member's inbox messages (ciphertext) that carry its
//! ID, those the member sent (copies in `sent`) and the back office's answers. An
//! answer finds its thread by the Message-ID it replies to (`In-Reply-To`), which is
//! recorded for the member when their message is queued.

use crate::db::Tx;
use serde::{Deserialize, Serialize};

use crate::Store;
use crate::db::{INBOX, MESSAGES, THREAD_REFS, THREADS, get, put, scan};
use crate::error::StoreError;
use crate::ids::{MessageId, ThreadId};
use crate::kvnr::Kvnr;
use crate::messages::MessageMeta;
use crate::time::Timestamp;

/// One thread: routing metadata only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thread {
    /// Its ID.
    pub id: ThreadId,
    /// The member it belongs to.
    pub kvnr: Kvnr,
    /// The Postfach letter it answers, if it began as a reply.
    pub origin: Option<MessageId>,
    /// When it began.
    pub created_at: Timestamp,
    /// When its latest message was sent or filed.
    pub updated_at: Timestamp,
}

/// A member's message in a thread as it is queued: the thread and the Message-ID the
/// back office will answer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadRef {
    /// The thread (created with the message if it is new).
    pub thread: ThreadId,
    /// The letter a new thread answers, if any.
    pub origin: Option<MessageId>,
    /// The Message-ID of the member's message, without angle brackets.
    pub message_id: String,
}

fn thread_key(kvnr: &Kvnr, id: &ThreadId) -> String {
    format!("{kvnr}/{id}")
}

fn ref_key(kvnr: &Kvnr, message_id: &str) -> String {
    format!("{kvnr}/{message_id}")
}

/// Records the member's message of `reference` at `at` inside `tx`: the thread (new or
/// touched) and the Message-ID answers will refer to.
pub(crate) fn record_sent(
    tx: &Tx<'_>,
    kvnr: &Kvnr,
    reference: &ThreadRef,
    at: Timestamp,
) -> Result<(), StoreError> {
    let mut threads = tx.open_table(THREADS)?;
    let key = thread_key(kvnr, &reference.thread);
    let thread = match get::<Thread>(&threads, &key)? {
        Some(thread) => Thread {
            updated_at: at,
            ..thread
        },
        None => Thread {
            id: reference.thread.clone(),
            kvnr: kvnr.clone(),
            origin: reference.origin.clone(),
            created_at: at,
            updated_at: at,
        },
    };
    put(&mut threads, &key, &thread)?;
    put(
        &mut tx.open_table(THREAD_REFS)?,
        &ref_key(kvnr, &reference.message_id),
        &reference.thread,
    )
}

/// Marks the member's thread `id` as updated at `at` inside `tx`.
pub(crate) fn touch(
    tx: &Tx<'_>,
    kvnr: &Kvnr,
    id: &ThreadId,
    at: Timestamp,
) -> Result<(), StoreError> {
    let mut threads = tx.open_table(THREADS)?;
    let key = thread_key(kvnr, id);
    if let Some(thread) = get::<Thread>(&threads, &key)? {
        put(
            &mut threads,
            &key,
            &Thread {
                updated_at: at,
                ..thread
            },
        )?;
    }
    Ok(())
}

impl Store {
    /// The member's threads, oldest first.
    pub fn threads(&self, kvnr: &Kvnr) -> Result<Vec<Thread>, StoreError> {
        self.read(|tx| scan(&tx.open_table(THREADS)?, &format!("{kvnr}/")))
    }

    /// One of the member's threads with its messages (those still in the member's
    /// mailboxes), oldest first; `None` for another member's or no thread.
    pub fn thread(
        &self,
        kvnr: &Kvnr,
        id: &ThreadId,
    ) -> Result<Option<(Thread, Vec<MessageMeta>)>, StoreError> {
        self.read(|tx| {
            let Some(thread) = get::<Thread>(&tx.open_table(THREADS)?, &thread_key(kvnr, id))?
            else {
                return Ok(None);
            };
            let ids: Vec<MessageId> = scan(&tx.open_table(INBOX)?, &format!("{kvnr}/"))?;
            let messages = tx.open_table(MESSAGES)?;
            let mut found = Vec::new();
            for message in ids {
                if let Some(meta) = get::<MessageMeta>(&messages, message.as_str())?
                    && meta.thread.as_ref() == Some(id)
                {
                    found.push(meta);
                }
            }
            found.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(Some((thread, found)))
        })
    }

    /// The member's thread that a letter replying to `message_ids` (its In-Reply-To
    /// and References, without angle brackets) belongs to, if any.
    pub fn thread_for_reply(
        &self,
        kvnr: &Kvnr,
        message_ids: &[String],
    ) -> Result<Option<ThreadId>, StoreError> {
        self.read(|tx| {
            let refs = tx.open_table(THREAD_REFS)?;
            for id in message_ids {
                if let Some(thread) = get::<ThreadId>(&refs, &ref_key(kvnr, id))? {
                    return Ok(Some(thread));
                }
            }
            Ok(None)
        })
    }

    /// One of the member's messages' metadata, without recording a fetch; `None` for
    /// another member's or no message.
    pub fn message_meta(
        &self,
        kvnr: &Kvnr,
        id: &MessageId,
    ) -> Result<Option<MessageMeta>, StoreError> {
        self.read(|tx| {
            let meta = get::<MessageMeta>(&tx.open_table(MESSAGES)?, id.as_str())?;
            Ok(meta.filter(|m| m.kvnr == *kvnr))
        })
    }
}
