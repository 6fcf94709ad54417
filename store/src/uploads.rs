//! What members send to the insurer's back office from the app (document uploads and
//! requests): what was sent, by whom, and its tracking history, which only the sending
//! member may see. The app's basic tier sends without enrolment; its uploads are
//! tracked for the install ID that sent them only.
//!
//! Each is queued as a sealed outbound message (signed by the gateway, encrypted to
//! the back office; the store does not know what it says) together with its record,
//! its `accepted` event and, for a member, a copy in their `sent` mailbox (ciphertext
//! to their keys), in one commit: a tracking ID handed out means it is durably queued.

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use crate::Store;
use crate::bodies::{Extent, Reread};
use crate::db::{
    BASIC_UPLOADS, EVENTS, MEMBERS, MESSAGES, SUBMISSIONS, Tx, UPLOADS, get, put, scan, secret_hash,
};
use crate::error::StoreError;
use crate::events::{Event, EventKind, append_events};
use crate::ids::{MessageId, TrackingId};
use crate::kvnr::Kvnr;
use crate::mailbox::Mailbox;
use crate::messages::{Ciphertext, MessageMeta, store_message};
use crate::outbound::{Outbound, enqueue};
use crate::submissions::Submission;
use crate::threads::{ThreadRef, record_sent};
use crate::time::Timestamp;

/// What a member sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadKind {
    /// A document (invoice, sick note, …).
    #[default]
    Document,
    /// A request to the insurer (certificate, replacement card, health data).
    Request,
    /// A messenger message or a reply to a letter.
    Message,
}

/// One thing a member sent to the back office: metadata only, never its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    /// The tracking ID the member got.
    pub tracking_id: TrackingId,
    /// The sending member.
    pub kvnr: Kvnr,
    /// Whether it is a document or a request.
    #[serde(default)]
    pub kind: UploadKind,
    /// The member the document or request concerns (the sender or another person).
    pub concerns: Kvnr,
    /// The document type (`invoice`, `sick-note`, …) or request type.
    pub document_type: String,
    /// The media type found in the content (`application/pdf`, `image/png`, …); empty
    /// for a request.
    pub content_type: String,
    /// Size of the document in octets (0 for a request).
    pub size: u64,
    /// When it was queued.
    pub uploaded_at: Timestamp,
}

/// One thing a member sends, as queued by [`Store::queue_upload`].
#[derive(Debug, Clone, Copy)]
pub struct Sending<'a> {
    /// Its record.
    pub upload: &'a Upload,
    /// The sealed message for the back office.
    pub message: &'a Outbound,
    /// The member's copy for `sent` (ciphertext to their keys), if any.
    pub sent_copy: Option<&'a Ciphertext>,
    /// A limit it must stay within, if any.
    pub cap: Option<Cap>,
    /// The messenger thread it belongs to, if any.
    pub thread: Option<&'a ThreadRef>,
}

/// A limit on how many uploads of one kind and type a member may send since a time
/// (e.g. replacement cards per calendar year).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    /// Only uploads from this time on count.
    pub since: Timestamp,
    /// How many may be sent in that time.
    pub max: usize,
}

/// An upload of the app's basic tier: sent without enrolment for a KVNR, tracked for
/// the install ID that sent it (stored hashed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasicUpload {
    /// The tracking ID the app got.
    pub tracking_id: TrackingId,
    /// SHA-256 of the device-generated install ID.
    install: String,
    /// The document type.
    pub document_type: String,
    /// The media type found in the content.
    pub content_type: String,
    /// Size of the document in octets.
    pub size: u64,
    /// When it was queued.
    pub uploaded_at: Timestamp,
}

impl BasicUpload {
    /// The record of a basic-tier upload sent by `install_id`.
    pub fn new(
        tracking_id: TrackingId,
        install_id: &str,
        document_type: String,
        content_type: String,
        size: u64,
        uploaded_at: Timestamp,
    ) -> Self {
        BasicUpload {
            tracking_id,
            install: secret_hash(install_id),
            document_type,
            content_type,
            size,
            uploaded_at,
        }
    }
}

fn upload_key(kvnr: &Kvnr, id: &TrackingId) -> String {
    format!("{kvnr}/{id}")
}

/// Queues `message` with its `accepted` event inside `tx`.
fn enqueue_accepted(tx: &Tx<'_>, message: &Outbound) -> Result<(), StoreError> {
    enqueue(tx, message)?;
    let event = Event::new(EventKind::Accepted)
        .recipient(&message.rcpt_to)
        .detail("queued for the insurer's back office");
    append_events(tx, &message.tracking_id, vec![event])
}

impl Store {
    /// Queues what a member sends for the back office: its record, its outbound
    /// message, its `accepted` event, the member's copy in `sent` and its thread, in one
    /// commit. With a cap, nothing is queued (and false returned) if the member has
    /// already sent `cap.max` uploads of this kind and type since `cap.since`.
    pub fn queue_upload(&self, sending: Sending<'_>) -> Result<bool, StoreError> {
        let copy_id = sending
            .sent_copy
            .map(|_| MessageId::generate())
            .transpose()?;
        let letters: Vec<(&str, &[u8])> = copy_id
            .iter()
            .map(MessageId::as_str)
            .zip(sending.sent_copy.map(|copy| copy.stored.as_slice()))
            .collect();
        self.commit_with_bodies((MESSAGES, Reread::Seldom), &letters, |extents, durable| {
            durable.wait()?;
            let copy = copy_id.clone().zip(extents.first().copied());
            let queued = self.queue_records(&sending, copy)?;
            let recorded = letters
                .iter()
                .filter(|_| queued)
                .map(|(key, _)| (*key).to_owned())
                .collect();
            Ok((queued, recorded))
        })
    }

    /// The commit of [`Store::queue_upload`]; `copy` names the member's copy in `sent`
    /// and where its body was written before.
    fn queue_records(
        &self,
        sending: &Sending<'_>,
        copy: Option<(MessageId, Extent)>,
    ) -> Result<bool, StoreError> {
        let Sending {
            upload,
            message,
            sent_copy,
            cap,
            thread,
        } = *sending;
        self.write(|tx| {
            // The account may have been cancelled while the upload was sealed.
            if tx.open_table(MEMBERS)?.get(upload.kvnr.as_str())?.is_none() {
                return Err(StoreError::NotFound("member"));
            }
            let mut uploads = tx.open_table(UPLOADS)?;
            let key = upload_key(&upload.kvnr, &upload.tracking_id);
            if get::<Upload>(&uploads, &key)?.is_some() {
                return Err(StoreError::Exists("upload"));
            }
            if let Some(cap) = cap {
                let earlier: Vec<Upload> = scan(&uploads, &format!("{}/", upload.kvnr))?;
                let counted = earlier
                    .iter()
                    .filter(|u| u.kind == upload.kind && u.document_type == upload.document_type)
                    .filter(|u| u.uploaded_at >= cap.since)
                    .count();
                if counted >= cap.max {
                    return Ok(false);
                }
            }
            put(&mut uploads, &key, upload)?;
            drop(uploads);
            if let Some(thread) = thread {
                record_sent(tx, &upload.kvnr, thread, upload.uploaded_at)?;
            }
            if let (Some((id, body)), Some(ciphertext)) = (copy, sent_copy) {
                let meta = MessageMeta {
                    id,
                    kvnr: upload.kvnr.clone(),
                    mailbox: Mailbox::Sent,
                    tracking_id: upload.tracking_id.clone(),
                    address: message.rcpt_to.clone(),
                    sender_id: upload.kvnr.to_string(),
                    received_at: upload.uploaded_at,
                    size: ciphertext.size,
                    fetched: false,
                    read: true,
                    on_read: None,
                    thread: thread.map(|t| t.thread.clone()),
                    message_id: thread.map(|t| t.message_id.clone()),
                    body,
                };
                store_message(tx, &meta)?;
            }
            enqueue_accepted(tx, message)?;
            Ok(true)
        })
    }

    /// Queues a sealed basic-tier upload with its record and `accepted` event, in one
    /// commit.
    pub fn queue_basic_upload(
        &self,
        upload: &BasicUpload,
        message: &Outbound,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut uploads = tx.open_table(BASIC_UPLOADS)?;
            let key = upload.tracking_id.as_str();
            if get::<BasicUpload>(&uploads, key)?.is_some() {
                return Err(StoreError::Exists("upload"));
            }
            put(&mut uploads, key, upload)?;
            drop(uploads);
            enqueue_accepted(tx, message)
        })
    }

    /// A basic-tier upload and its tracking history, if `install_id` sent it; `None`
    /// for any other tracking ID or install ID.
    pub fn basic_tracking(
        &self,
        id: &TrackingId,
        install_id: &str,
    ) -> Result<Option<(BasicUpload, Vec<Event>)>, StoreError> {
        self.read(|tx| {
            let Some(upload) = get::<BasicUpload>(&tx.open_table(BASIC_UPLOADS)?, id.as_str())?
            else {
                return Ok(None);
            };
            if upload.install != secret_hash(install_id) {
                return Ok(None);
            }
            let events = scan(&tx.open_table(EVENTS)?, &format!("{id}/"))?;
            Ok(Some((upload, events)))
        })
    }

    /// The member's uploads, oldest first, each with its latest tracking event.
    pub fn uploads(&self, kvnr: &Kvnr) -> Result<Vec<(Upload, Option<Event>)>, StoreError> {
        self.read(|tx| {
            let uploads: Vec<Upload> = scan(&tx.open_table(UPLOADS)?, &format!("{kvnr}/"))?;
            let events = tx.open_table(EVENTS)?;
            let mut out = Vec::with_capacity(uploads.len());
            for upload in uploads {
                let history: Vec<Event> = scan(&events, &format!("{}/", upload.tracking_id))?;
                out.push((upload, history.into_iter().last()));
            }
            Ok(out)
        })
    }

    /// The tracking history a member may see: all of an upload of theirs, or, for a
    /// letter addressed to them, the events about their own recipient addresses and
    /// those about the letter as a whole (never another recipient's). `None` for any
    /// other tracking ID.
    pub fn member_tracking(
        &self,
        kvnr: &Kvnr,
        id: &TrackingId,
    ) -> Result<Option<Vec<Event>>, StoreError> {
        self.read(|tx| {
            let events: Vec<Event> = scan(&tx.open_table(EVENTS)?, &format!("{id}/"))?;
            if get::<Upload>(&tx.open_table(UPLOADS)?, &upload_key(kvnr, id))?.is_some() {
                return Ok(Some(events));
            }
            let Some(submission) = get::<Submission>(&tx.open_table(SUBMISSIONS)?, id.as_str())?
            else {
                return Ok(None);
            };
            let own: Vec<&str> = submission
                .recipients
                .iter()
                .filter(|r| r.kvnr == *kvnr)
                .map(|r| r.address.as_str())
                .collect();
            if own.is_empty() {
                return Ok(None);
            }
            Ok(Some(
                events
                    .into_iter()
                    .filter(|e| e.recipient.as_deref().is_none_or(|r| own.contains(&r)))
                    .collect(),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::OutboundId;
    use crate::time::now;

    #[test]
    fn an_upload_is_queued_with_its_event_and_only_its_uploader_sees_it() {
        let (_dir, store) = crate::testing::open();
        let (alice, _) = crate::testing::member(&store, "A123456780");
        let (bob, _) = crate::testing::member(&store, "X110411319");
        let id = TrackingId::generate().unwrap();
        let upload = Upload {
            tracking_id: id.clone(),
            kvnr: alice.clone(),
            kind: UploadKind::Document,
            concerns: alice.clone(),
            document_type: "invoice".into(),
            content_type: "application/pdf".into(),
            size: 5,
            uploaded_at: now(),
        };
        let message = outbound(&id);
        let sending = Sending {
            upload: &upload,
            message: &message,
            sent_copy: None,
            cap: None,
            thread: None,
        };
        assert!(store.queue_upload(sending).unwrap());
        assert!(matches!(
            store.queue_upload(sending),
            Err(StoreError::Exists("upload"))
        ));
        let listed = Outbound {
            payload: String::new(),
            ..message.clone()
        };
        assert_eq!(store.outbound().unwrap(), [listed]);
        assert_eq!(
            store.outbound_payload(&message.id).unwrap().as_deref(),
            Some("sealed")
        );

        let events = store.member_tracking(&alice, &id).unwrap().unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::Accepted);
        assert_eq!(store.member_tracking(&bob, &id).unwrap(), None);

        store
            .settle_outbound(&message.id, Event::new(EventKind::Delivered))
            .unwrap();
        assert_eq!(store.outbound_payload(&message.id).unwrap(), None);
        let listed = store.uploads(&alice).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].1.as_ref().unwrap().kind, EventKind::Delivered);
        assert!(store.uploads(&bob).unwrap().is_empty());
        assert_eq!(store.verify_events(&id).unwrap(), Ok(()));
    }

    /// An outbound message for the upload `id`.
    fn outbound(id: &TrackingId) -> Outbound {
        Outbound {
            id: OutboundId::generate().unwrap(),
            tracking_id: id.clone(),
            purpose: "upload".into(),
            mail_from: "uploads@kvgate.test".into(),
            rcpt_to: "eingang@backoffice.test".into(),
            payload: "sealed".into(),
            created_at: now(),
            next_attempt_at: now(),
            attempts: 0,
            last_error: None,
            delay_reported: false,
        }
    }

    /// A request of `kind` by `kvnr` at `at`.
    fn request(kvnr: &Kvnr, document_type: &str, at: Timestamp) -> Upload {
        Upload {
            tracking_id: TrackingId::generate().unwrap(),
            kvnr: kvnr.clone(),
            kind: UploadKind::Request,
            concerns: kvnr.clone(),
            document_type: document_type.into(),
            content_type: String::new(),
            size: 0,
            uploaded_at: at,
        }
    }

    #[test]
    fn a_cap_counts_one_members_uploads_of_one_type_since_its_start() {
        let (dir, store) = crate::testing::open();
        let (alice, _) = crate::testing::member(&store, "A123456780");
        let (bob, _) = crate::testing::member(&store, "X110411319");
        let cap = Some(Cap {
            since: Timestamp(1_000),
            max: 2,
        });
        let copy = |upload: &Upload| format!("COPY-{}", upload.tracking_id);
        let send = |upload: &Upload| {
            store.queue_upload(Sending {
                upload,
                message: &outbound(&upload.tracking_id),
                sent_copy: Some(&crate::testing::ciphertext(copy(upload).as_bytes())),
                cap,
                thread: None,
            })
        };
        // Before the cap's start, and of another type: not counted.
        assert!(send(&request(&alice, "card", Timestamp(999))).unwrap());
        assert!(send(&request(&alice, "certificate", now())).unwrap());
        assert!(send(&request(&alice, "card", now())).unwrap());
        assert!(send(&request(&alice, "card", now())).unwrap());
        let refused = request(&alice, "card", now());
        assert!(!send(&refused).unwrap());
        assert_eq!(
            store.member_tracking(&alice, &refused.tracking_id).unwrap(),
            None
        );
        let bobs = request(&bob, "card", now());
        assert!(send(&bobs).unwrap());
        // The refused upload's sent copy left nothing behind.
        store.bodies.settle();
        let on_disk = crate::testing::bodies_on_disk(dir.path());
        assert!(!crate::testing::contains(
            &on_disk,
            copy(&refused).as_bytes()
        ));
        assert!(crate::testing::contains(&on_disk, copy(&bobs).as_bytes()));
    }

    #[test]
    fn a_sent_copy_and_its_thread_are_the_members_alone() {
        let (_dir, store) = crate::testing::open();
        let (alice, _) = crate::testing::member(&store, "A123456780");
        let (bob, _) = crate::testing::member(&store, "X110411319");
        let upload = Upload {
            kind: UploadKind::Message,
            ..request(&alice, "message", now())
        };
        let thread = ThreadRef {
            thread: crate::ThreadId::generate().unwrap(),
            origin: None,
            message_id: "message.1@kvgate.test".into(),
        };
        assert!(
            store
                .queue_upload(Sending {
                    upload: &upload,
                    message: &outbound(&upload.tracking_id),
                    sent_copy: Some(&crate::testing::ciphertext(b"PGP")),
                    cap: None,
                    thread: Some(&thread),
                })
                .unwrap()
        );
        let (found, messages) = store.thread(&alice, &thread.thread).unwrap().unwrap();
        assert_eq!(found.created_at, upload.uploaded_at);
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].mailbox, Mailbox::Sent);
        assert_eq!(messages[0].thread.as_ref(), Some(&thread.thread));
        let (_, body) = store
            .fetch_message(&alice, &messages[0].id)
            .unwrap()
            .unwrap();
        assert_eq!(body, b"PGP");
        let ids = ["other@x".to_owned(), thread.message_id.clone()];
        assert_eq!(
            store.thread_for_reply(&alice, &ids).unwrap(),
            Some(thread.thread.clone())
        );
        assert_eq!(store.thread_for_reply(&bob, &ids).unwrap(), None);
        assert_eq!(store.thread(&bob, &thread.thread).unwrap(), None);
        assert!(store.threads(&bob).unwrap().is_empty());
        assert_eq!(store.message_meta(&bob, &messages[0].id).unwrap(), None);
    }

    #[test]
    fn a_basic_upload_is_tracked_for_its_install_only() {
        let (_dir, store) = crate::testing::open();
        let id = TrackingId::generate().unwrap();
        let upload = BasicUpload::new(
            id.clone(),
            "install-aaaaaaaaaaaaaaaa",
            "sick-note".into(),
            "application/pdf".into(),
            10,
            now(),
        );
        store.queue_basic_upload(&upload, &outbound(&id)).unwrap();
        let (found, events) = store
            .basic_tracking(&id, "install-aaaaaaaaaaaaaaaa")
            .unwrap()
            .unwrap();
        assert_eq!(found, upload);
        assert_eq!(events.len(), 1);
        assert_eq!(
            store
                .basic_tracking(&id, "install-bbbbbbbbbbbbbbbb")
                .unwrap(),
            None
        );
        let other = TrackingId::generate().unwrap();
        assert_eq!(
            store
                .basic_tracking(&other, "install-aaaaaaaaaaaaaaaa")
                .unwrap(),
            None
        );
        assert!(matches!(
            store.queue_basic_upload(&upload, &outbound(&id)),
            Err(StoreError::Exists("upload"))
        ));
    }
}
