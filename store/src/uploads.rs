//! Members' document uploads to the insurer's back office: what was sent, by whom,
//! and its tracking history, which only the uploading member may see.
//!
//! An upload is queued as a sealed outbound message (signed by the gateway, encrypted
//! to the back office; the store does not know what it says) together with its record
//! and its `accepted` event, in one commit: a tracking ID handed out means the upload
//! is durably queued.

use serde::{Deserialize, Serialize};

use crate::Store;
use crate::db::{EVENTS, SUBMISSIONS, UPLOADS, get, put, scan};
use crate::error::StoreError;
use crate::events::{Event, EventKind, append_events};
use crate::ids::TrackingId;
use crate::kvnr::Kvnr;
use crate::outbound::{Outbound, enqueue};
use crate::submissions::Submission;
use crate::time::Timestamp;

/// One document a member uploaded: metadata only, never the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    /// The tracking ID the member got.
    pub tracking_id: TrackingId,
    /// The uploading member.
    pub kvnr: Kvnr,
    /// The member the document concerns (the uploader or a family member).
    pub concerns: Kvnr,
    /// The document type the member chose (`invoice`, `sick-note`, …).
    pub document_type: String,
    /// The media type found in the content (`application/pdf`, `image/png`, …).
    pub content_type: String,
    /// Size of the document in octets.
    pub size: u64,
    /// When it was queued.
    pub uploaded_at: Timestamp,
}

fn upload_key(kvnr: &Kvnr, id: &TrackingId) -> String {
    format!("{kvnr}/{id}")
}

impl Store {
    /// Queues a sealed upload for the back office: its record, its outbound message and
    /// its `accepted` event, in one commit.
    pub fn queue_upload(&self, upload: &Upload, message: &Outbound) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut uploads = tx.open_table(UPLOADS)?;
            let key = upload_key(&upload.kvnr, &upload.tracking_id);
            if get::<Upload>(&uploads, &key)?.is_some() {
                return Err(StoreError::Exists("upload"));
            }
            put(&mut uploads, &key, upload)?;
            drop(uploads);
            enqueue(tx, message)?;
            let event = Event::new(EventKind::Accepted)
                .recipient(&message.rcpt_to)
                .detail("queued for the insurer's back office");
            append_events(tx, &upload.tracking_id, vec![event])
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
        let alice = Kvnr::parse("A123456780").unwrap();
        let bob = Kvnr::parse("X110411319").unwrap();
        let id = TrackingId::generate().unwrap();
        let upload = Upload {
            tracking_id: id.clone(),
            kvnr: alice.clone(),
            concerns: alice.clone(),
            document_type: "invoice".into(),
            content_type: "application/pdf".into(),
            size: 5,
            uploaded_at: now(),
        };
        let message = Outbound {
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
        };
        store.queue_upload(&upload, &message).unwrap();
        assert!(matches!(
            store.queue_upload(&upload, &message),
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
}
