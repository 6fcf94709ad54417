//! Reading a member's inboxes page by page, and deleting letters from them.

use crate::Store;
use crate::db::{FILED, INBOX, MESSAGES, get};
use crate::error::StoreError;
use crate::events::{Event, EventKind, append_events};
use crate::ids::MessageId;
use crate::kvnr::Kvnr;
use crate::mailbox::Mailbox;
use crate::messages::{MessageMeta, filed_key};
use crate::settings::count_usage;
use crate::time::Timestamp;

/// Which of a member's messages to list.
#[derive(Debug, Clone)]
pub struct PageQuery {
    /// The inboxes to list (merged in message-ID order, which is filing order).
    pub mailboxes: Vec<Mailbox>,
    /// Only messages after this one (the previous page's `next`).
    pub after: Option<MessageId>,
    /// Only messages filed after this time.
    pub since: Option<Timestamp>,
    /// At most this many messages.
    pub limit: usize,
}

/// One page of a member's messages.
#[derive(Debug, Clone)]
pub struct Page {
    /// The messages, oldest first.
    pub messages: Vec<MessageMeta>,
    /// Where the next page starts, if there are more messages.
    pub next: Option<MessageId>,
}

/// The index key of a message in a member's inbox.
pub(crate) fn inbox_key(kvnr: &Kvnr, mailbox: Mailbox, id: &MessageId) -> String {
    format!("{kvnr}/{mailbox}/{id}")
}

impl Store {
    /// A page of the member's messages in the queried inboxes, oldest first.
    pub fn page_messages(&self, kvnr: &Kvnr, query: &PageQuery) -> Result<Page, StoreError> {
        self.read(|tx| {
            let inbox = tx.open_table(INBOX)?;
            let messages = tx.open_table(MESSAGES)?;
            let mut found = Vec::new();
            for &mailbox in &query.mailboxes {
                let prefix = format!("{kvnr}/{mailbox}/");
                let start = match &query.after {
                    Some(after) => inbox_key(kvnr, mailbox, after),
                    None => prefix.clone(),
                };
                let mut taken = 0;
                for entry in inbox.range(start.as_str()..)? {
                    let (key, _) = entry?;
                    let Some(id) = key.value().strip_prefix(&prefix) else {
                        break;
                    };
                    if query.after.as_ref().is_some_and(|a| a.as_str() == id) {
                        continue;
                    }
                    let Some(meta) = get::<MessageMeta>(&messages, id)? else {
                        continue;
                    };
                    if query.since.is_some_and(|since| meta.received_at <= since) {
                        continue;
                    }
                    found.push(meta);
                    taken += 1;
                    if taken > query.limit {
                        break;
                    }
                }
            }
            found.sort_by(|a, b| a.id.cmp(&b.id));
            let more = found.len() > query.limit;
            found.truncate(query.limit);
            let next = if more {
                found.last().map(|m| m.id.clone())
            } else {
                None
            };
            Ok(Page {
                messages: found,
                next,
            })
        })
    }

    /// Deletes one of the member's messages: its metadata and index entry go, together
    /// with a `deleted` tracking event, in one commit, and its body is punched out
    /// right after. A disposition notification still waiting for the member to read it
    /// is never sent. Returns false if the member has no such message.
    pub fn delete_message(&self, kvnr: &Kvnr, id: &MessageId) -> Result<bool, StoreError> {
        let deleted = self.write(|tx| {
            let mut messages = tx.open_table(MESSAGES)?;
            let Some(meta) = get::<MessageMeta>(&messages, id.as_str())? else {
                return Ok(None);
            };
            if meta.kvnr != *kvnr {
                return Ok(None);
            }
            messages.remove(id.as_str())?;
            tx.open_table(INBOX)?
                .remove(inbox_key(kvnr, meta.mailbox, id).as_str())?;
            count_usage(tx, &meta, false)?;
            // Its submission was finished in the commit that filed it: nothing files
            // it again, and the record would name the member after the letter is gone.
            tx.open_table(FILED)?
                .remove(filed_key(&meta.tracking_id, kvnr, meta.mailbox).as_str())?;
            let event = Event::new(EventKind::Deleted)
                .recipient(&meta.address)
                .detail("deleted by the member");
            append_events(tx, &meta.tracking_id, vec![event])?;
            Ok(Some(meta.body))
        })?;
        if let Some(body) = deleted {
            self.discard_bodies(&[body]);
        }
        Ok(deleted.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{bodies_on_disk, contains, file};

    fn ids(page: &Page) -> Vec<MessageId> {
        page.messages.iter().map(|m| m.id.clone()).collect()
    }

    #[test]
    fn pages_merge_inboxes_in_filing_order_and_deletion_removes_everything() {
        let (dir, store) = crate::testing::open();
        let (alice, _) = crate::testing::member(&store, "A123456780");
        let (bob, _) = crate::testing::member(&store, "X110411319");
        let mut filed = Vec::new();
        for (n, mailbox) in [Mailbox::Postfach, Mailbox::Smarthealth, Mailbox::Postfach]
            .into_iter()
            .enumerate()
        {
            filed.push(file(&store, &alice, mailbox, format!("PGP-{n}").as_bytes()));
            std::thread::sleep(std::time::Duration::from_millis(3));
        }
        let (bobs, _) = file(&store, &bob, Mailbox::Postfach, b"PGP-BOB");
        let all: Vec<MessageId> = filed.iter().map(|(id, _)| id.clone()).collect();

        let mut query = PageQuery {
            mailboxes: Mailbox::ALL.to_vec(),
            after: None,
            since: None,
            limit: 2,
        };
        let first = store.page_messages(&alice, &query).unwrap();
        assert_eq!(ids(&first), all[..2]);
        assert_eq!(first.next.as_ref(), Some(&all[1]));
        query.after = first.next;
        let second = store.page_messages(&alice, &query).unwrap();
        assert_eq!(ids(&second), all[2..]);
        assert_eq!(second.next, None);

        let first_time = store
            .page_messages(
                &alice,
                &PageQuery {
                    after: None,
                    limit: 10,
                    ..query.clone()
                },
            )
            .unwrap()
            .messages[0]
            .received_at;
        let since = PageQuery {
            mailboxes: vec![Mailbox::Postfach],
            after: None,
            since: Some(first_time),
            limit: 10,
        };
        assert_eq!(
            ids(&store.page_messages(&alice, &since).unwrap()),
            [all[2].clone()]
        );

        // Bob cannot delete Alice's letter; Alice can, and then it is gone.
        assert!(!store.delete_message(&bob, &all[0]).unwrap());
        assert!(store.delete_message(&alice, &all[0]).unwrap());
        assert!(!store.delete_message(&alice, &all[0]).unwrap());
        assert!(store.fetch_message(&alice, &all[0]).unwrap().is_none());
        let on_disk = bodies_on_disk(dir.path());
        assert!(!contains(&on_disk, b"PGP-0"));
        for kept in [&b"PGP-1"[..], b"PGP-2", b"PGP-BOB"] {
            assert!(contains(&on_disk, kept));
        }
        store
            .read(|tx| {
                assert!(tx.open_table(MESSAGES)?.get(all[0].as_str())?.is_none());
                Ok(())
            })
            .unwrap();
        let everything = PageQuery {
            mailboxes: Mailbox::ALL.to_vec(),
            after: None,
            since: None,
            limit: 10,
        };
        assert_eq!(
            ids(&store.page_messages(&alice, &everything).unwrap()),
            all[1..]
        );
        assert_eq!(
            ids(&store.page_messages(&bob, &everything).unwrap()),
            [bobs]
        );
        let events = store.events(&filed[0].1).unwrap();
        assert_eq!(events.last().unwrap().kind, EventKind::Deleted);
        assert_eq!(store.verify_events(&filed[0].1).unwrap(), Ok(()));
    }
}
