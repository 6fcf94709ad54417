//! The one path by which anything the app sends reaches the insurer's back office:
//! sealed in memory (signed by the gateway, encrypted to the back office, plus a copy
//! for the member's `sent` mailbox encrypted to their keys), then queued durably with
//! its record and tracking event before a tracking ID is answered.

use std::sync::Arc;

use axum::http::StatusCode;
use kvgate_store::{
    BasicUpload, Cap, Ciphertext, Kvnr, MessageId, Outbound, OutboundId, Sending, ThreadId,
    ThreadRef, TrackingId, Upload, UploadKind, now,
};
use zeroize::Zeroizing;

use super::routes::blocking;
use super::{ApiState, Problem};

/// The `purpose` of an upload in the outbound queue: its payload is the sealed message,
/// sent as it is.
pub const UPLOAD_PURPOSE: &str = "upload";

/// Something for the back office, before sealing.
#[derive(Debug)]
pub struct Document<'a> {
    /// Its tracking ID.
    pub tracking_id: &'a TrackingId,
    /// The sending member; `None` for the basic tier (no enrolment, no `sent` copy).
    pub uploader: Option<&'a Kvnr>,
    /// Whether it is a document or a request.
    pub kind: UploadKind,
    /// The member or person it concerns.
    pub concerns: &'a Kvnr,
    /// The document type or request type.
    pub document_type: &'a str,
    /// The member's note, if any.
    pub note: Option<&'a str>,
    /// Further details of a request (a JSON object), if any.
    pub details: Option<&'a serde_json::Value>,
    /// A message's text, if it is one.
    pub text: Option<&'a str>,
    /// The documents, each with the media type found in its content (none for a
    /// request).
    pub files: &'a [(&'static str, Zeroizing<Vec<u8>>)],
    /// The messenger thread it belongs to, if any.
    pub thread: Option<&'a ThreadId>,
    /// The Message-ID it replies to (without angle brackets), if any.
    pub in_reply_to: Option<&'a str>,
}

/// A sealed upload, ready for the outbound queue.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// The envelope sender.
    pub mail_from: String,
    /// The back office's address.
    pub rcpt_to: String,
    /// The whole message (7-bit: its content is S/MIME in base64).
    pub message: String,
    /// Its Message-ID, without angle brackets (what the back office answers to).
    pub message_id: String,
    /// The same content as PGP/MIME to the sending member's keys, for their `sent`
    /// mailbox; `None` without a sending member (or without keys).
    pub sent_copy: Option<Ciphertext>,
}

/// Seals what the app sends for the back office. The gateway implements it with its
/// S/MIME identity, the configured back-office certificate and the member's OpenPGP
/// keys; connectors stay free of CMS and OpenPGP.
pub trait Sealer: Send + Sync + 'static {
    /// The message the back office gets and the member's copy; on failure, a
    /// sentence that says why.
    fn seal(&self, document: &Document<'_>) -> Result<Sealed, String>;
}

/// How uploads are handled; without it the API refuses them.
#[derive(Clone)]
pub struct Uploads {
    /// Seals each document for the back office.
    pub sealer: Arc<dyn Sealer>,
    /// The largest document accepted, in octets.
    pub max_size: usize,
}

/// Who sends.
pub(crate) enum Origin {
    /// An enrolled member.
    Member(Kvnr),
    /// The basic tier: an app install, by its device-generated ID.
    Basic(String),
}

/// Where a messenger message goes.
pub(crate) struct InThread {
    /// The thread (new or existing).
    pub thread: ThreadId,
    /// The letter a new thread answers, if any.
    pub origin: Option<MessageId>,
    /// The Message-ID it replies to, if any.
    pub in_reply_to: Option<String>,
}

/// Something to send, as checked by its route.
pub(crate) struct Outgoing {
    pub from: Origin,
    pub kind: UploadKind,
    pub concerns: Kvnr,
    pub document_type: String,
    pub note: Option<Zeroizing<String>>,
    pub details: Option<serde_json::Value>,
    pub text: Option<Zeroizing<String>>,
    pub files: Vec<(&'static str, Zeroizing<Vec<u8>>)>,
    /// At most so many of this kind and type (members only).
    pub cap: Option<Cap>,
    /// The messenger thread, for a message.
    pub thread: Option<InThread>,
}

/// The upload configuration, or 503 if no back office is configured.
pub(crate) fn uploads(state: &ApiState) -> Result<Uploads, Problem> {
    state.uploads.clone().ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "uploads-unavailable",
            "Uploads unavailable",
            "this gateway has no back office configured to send documents to",
        )
    })
}

/// Seals and queues `outgoing`; its tracking ID, or `None` if its cap was reached
/// (nothing was queued).
pub(crate) async fn send(
    state: &ApiState,
    outgoing: Outgoing,
) -> Result<Option<TrackingId>, Problem> {
    let uploads = uploads(state)?;
    let tracking_id = TrackingId::generate()?;
    let id = tracking_id.clone();
    // Signing and encrypting take a while: off the async threads.
    let (sealed, outgoing) = tokio::task::spawn_blocking(move || {
        let uploader = match &outgoing.from {
            Origin::Member(kvnr) => Some(kvnr),
            Origin::Basic(_) => None,
        };
        let document = Document {
            tracking_id: &id,
            uploader,
            kind: outgoing.kind,
            concerns: &outgoing.concerns,
            document_type: &outgoing.document_type,
            note: outgoing.note.as_ref().map(|note| note.as_str()),
            details: outgoing.details.as_ref(),
            text: outgoing.text.as_ref().map(|text| text.as_str()),
            files: &outgoing.files,
            thread: outgoing.thread.as_ref().map(|t| &t.thread),
            in_reply_to: outgoing
                .thread
                .as_ref()
                .and_then(|t| t.in_reply_to.as_deref()),
        };
        let sealed = uploads.sealer.seal(&document)?;
        Ok::<_, String>((sealed, outgoing))
    })
    .await
    .map_err(|e| Problem::internal(&e))?
    .map_err(|why| Problem::internal(&why))?;
    let at = now();
    let message = Outbound {
        id: OutboundId::generate()?,
        tracking_id: tracking_id.clone(),
        purpose: UPLOAD_PURPOSE.to_owned(),
        mail_from: sealed.mail_from,
        rcpt_to: sealed.rcpt_to,
        payload: sealed.message,
        created_at: at,
        next_attempt_at: at,
        attempts: 0,
        last_error: None,
        delay_reported: false,
    };
    let content_type = outgoing
        .files
        .first()
        .map_or_else(String::new, |(t, _)| (*t).to_owned());
    let size = outgoing.files.iter().map(|(_, c)| c.len() as u64).sum();
    let id = tracking_id.clone();
    let copied = sealed.sent_copy.is_some();
    let queued = match outgoing.from {
        Origin::Member(kvnr) => {
            let record = Upload {
                tracking_id: id,
                kvnr,
                kind: outgoing.kind,
                concerns: outgoing.concerns,
                document_type: outgoing.document_type,
                content_type,
                size,
                uploaded_at: at,
            };
            let copy = sealed.sent_copy;
            let cap = outgoing.cap;
            let thread = outgoing.thread.map(|t| ThreadRef {
                thread: t.thread,
                origin: t.origin,
                message_id: sealed.message_id,
            });
            blocking(state, move |store| {
                store.queue_upload(Sending {
                    upload: &record,
                    message: &message,
                    sent_copy: copy.as_ref(),
                    cap,
                    thread: thread.as_ref(),
                })
            })
            .await?
        }
        Origin::Basic(install_id) => {
            let record = BasicUpload::new(
                id,
                &install_id,
                outgoing.document_type,
                content_type,
                size,
                at,
            );
            blocking(state, move |store| {
                store.queue_basic_upload(&record, &message)
            })
            .await?;
            true
        }
    };
    if !queued {
        return Ok(None);
    }
    state.outbound.notify_one();
    if copied {
        // The copy in `sent` is new mail for `GET /v1/messages/wait`.
        state.filed.send_replace(());
    }
    Ok(Some(tracking_id))
}
