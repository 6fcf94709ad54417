//! The messenger and replies: `POST /v1/threads` begins a conversation with the
//! insurer, `POST /v1/threads/{id}/messages` continues one, `POST
//! /v1/messages/{id}/reply` answers a Postfach letter (threaded with `In-Reply-To`),
//! `GET /v1/threads` and `GET /v1/threads/{id}` show them. Each message is sent to the
//! back office like an upload (with its thread ID) and copied to `sent`; the back
//! office's answers (`In-Reply-To` one of them) are filed into the thread.
//!
//! A message is `multipart/form-data`: `text` (1 to 10000 characters) and up to 5
//! `file`s (PDF, JPEG, PNG or HEIC, told by the content; together within the
//! configured document size limit).

use axum::extract::State;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kvgate_store::{Kvnr, Mailbox, MessageMeta, Thread, ThreadId, UploadKind};
use serde::Serialize;
use zeroize::Zeroizing;

use super::documents::{invalid, malformed, read_field, read_multipart, read_text};
use super::messages::{MessageSummary, message_id};
use super::outgoing::{self, InThread, Origin, Outgoing};
use super::param::Param;
use super::routes::blocking;
use super::{ApiState, Problem, auth, sniff};

/// The longest message text, in characters.
const MAX_TEXT: usize = 10_000;
/// The most attachments of one message.
const MAX_FILES: usize = 5;

/// A message as the member wrote it.
struct MessageForm {
    text: Zeroizing<String>,
    files: Vec<(&'static str, Zeroizing<Vec<u8>>)>,
}

/// Reads the message form: `text` once, `file` up to [`MAX_FILES`] times, together
/// within `max_size` octets.
async fn read_message(multipart: &mut Multipart, max_size: usize) -> Result<MessageForm, Problem> {
    let mut text = None;
    let mut files = Vec::new();
    let mut left = max_size;
    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        match field.name().unwrap_or_default() {
            "text" if text.is_none() => {
                text = Some(read_text(field, "text", 4 * MAX_TEXT).await?);
            }
            "text" => return Err(malformed("the field text is given twice")),
            "file" if files.len() < MAX_FILES => {
                let too_large = Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "attachments-too-large",
                    "Attachments too large",
                    format!("a message's attachments may have at most {max_size} octets together"),
                );
                let content = read_field(field, left, too_large).await?;
                left -= content.len();
                let content_type = sniff::document_type(&content).ok_or_else(|| {
                    Problem::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "unsupported-document-type",
                        "Unsupported document",
                        "an attachment's content is not a PDF, JPEG, PNG or HEIC image (its name does not matter)",
                    )
                })?;
                files.push((content_type, content));
            }
            "file" => {
                return Err(invalid(
                    "too-many-attachments",
                    "Too many attachments",
                    format!("a message may have at most {MAX_FILES} attachments"),
                ));
            }
            other => {
                return Err(malformed(format!(
                    "unknown field {other:?} (expected text, file)"
                )));
            }
        }
    }
    let text = text.filter(|t| !t.trim().is_empty()).ok_or_else(|| {
        invalid(
            "missing-field",
            "Form field missing",
            "the field text is required",
        )
    })?;
    if text.chars().count() > MAX_TEXT {
        return Err(invalid(
            "text-too-long",
            "Text too long",
            format!("a message may have at most {MAX_TEXT} characters"),
        ));
    }
    Ok(MessageForm { text, files })
}

#[derive(Serialize)]
struct Sent {
    tracking_id: String,
    thread_id: String,
}

/// Sends the member's message in `thread`; `201 {tracking_id, thread_id}`.
async fn send(
    state: &ApiState,
    kvnr: Kvnr,
    document_type: &str,
    form: MessageForm,
    thread: InThread,
) -> Result<Response, Problem> {
    let thread_id = thread.thread.to_string();
    let outgoing = Outgoing {
        from: Origin::Member(kvnr.clone()),
        kind: UploadKind::Message,
        concerns: kvnr,
        document_type: document_type.to_owned(),
        note: None,
        details: None,
        text: Some(form.text),
        files: form.files,
        cap: None,
        thread: Some(thread),
    };
    let tracking_id = outgoing::send(state, outgoing)
        .await?
        .ok_or_else(|| Problem::internal(&"an uncapped message was refused"))?;
    let body = Sent {
        tracking_id: tracking_id.to_string(),
        thread_id,
    };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

fn thread_id(raw: &str) -> Result<ThreadId, Problem> {
    raw.parse().map_err(|_| Problem::not_found("thread"))
}

/// The member's thread `id` with its messages; 404 for any other.
async fn thread_of(
    state: &ApiState,
    kvnr: &Kvnr,
    id: ThreadId,
) -> Result<(Thread, Vec<MessageMeta>), Problem> {
    let kvnr = kvnr.clone();
    blocking(state, move |store| store.thread(&kvnr, &id))
        .await?
        .ok_or_else(|| Problem::not_found("thread"))
}

/// `POST /v1/threads`: begins a conversation with the insurer.
pub(crate) async fn create(
    State(state): State<ApiState>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let form = read_multipart(&state, multipart, read_message).await?;
    let thread = InThread {
        thread: ThreadId::generate()?,
        origin: None,
        in_reply_to: None,
    };
    send(&state, device.kvnr, "message", form, thread).await
}

/// `POST /v1/threads/{id}/messages`: continues one of the member's conversations,
/// replying to its latest message.
pub(crate) async fn post(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Param(id): Param,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let (thread, messages) = thread_of(&state, &device.kvnr, thread_id(&id)?).await?;
    let form = read_multipart(&state, multipart, read_message).await?;
    let thread = InThread {
        thread: thread.id,
        origin: None,
        in_reply_to: messages.into_iter().rev().find_map(|m| m.message_id),
    };
    send(&state, device.kvnr, "message", form, thread).await
}

/// `POST /v1/messages/{id}/reply`: answers one of the member's Postfach letters, in
/// its thread if it has one, else in a new one.
pub(crate) async fn reply(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Param(id): Param,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let id = message_id(&id)?;
    let kvnr = device.kvnr.clone();
    let letter = blocking(&state, move |store| store.message_meta(&kvnr, &id))
        .await?
        .ok_or_else(|| Problem::not_found("message"))?;
    if letter.mailbox != Mailbox::Postfach {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "not-replyable",
            "Cannot reply",
            format!(
                "only letters in the Postfach can be answered; this one is in {}",
                letter.mailbox
            ),
        ));
    }
    let form = read_multipart(&state, multipart, read_message).await?;
    let thread = match letter.thread {
        Some(thread) => InThread {
            thread,
            origin: None,
            in_reply_to: letter.message_id,
        },
        None => InThread {
            thread: ThreadId::generate()?,
            origin: Some(letter.id),
            in_reply_to: letter.message_id,
        },
    };
    send(&state, device.kvnr, "reply", form, thread).await
}

#[derive(Serialize)]
struct ThreadView {
    id: String,
    created_at: String,
    updated_at: String,
    /// The Postfach letter it answers, if it began as a reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<String>,
    /// Its messages, oldest first (only in `GET /v1/threads/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<Vec<MessageSummary>>,
}

impl ThreadView {
    fn new(thread: Thread, messages: Option<Vec<MessageMeta>>) -> Self {
        ThreadView {
            id: thread.id.to_string(),
            created_at: thread.created_at.to_rfc3339(),
            updated_at: thread.updated_at.to_rfc3339(),
            origin: thread.origin.map(|o| o.to_string()),
            messages: messages.map(|m| m.into_iter().map(MessageSummary::from).collect()),
        }
    }
}

#[derive(Serialize)]
struct ThreadList {
    threads: Vec<ThreadView>,
}

/// `GET /v1/threads`: the member's conversations, oldest first.
pub(crate) async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let threads = blocking(&state, move |store| store.threads(&device.kvnr)).await?;
    let threads = threads
        .into_iter()
        .map(|t| ThreadView::new(t, None))
        .collect();
    Ok(axum::Json(ThreadList { threads }).into_response())
}

/// `GET /v1/threads/{id}`: one of the member's conversations with its messages.
pub(crate) async fn show(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Param(id): Param,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let (thread, messages) = thread_of(&state, &device.kvnr, thread_id(&id)?).await?;
    Ok(axum::Json(ThreadView::new(thread, Some(messages))).into_response())
}
