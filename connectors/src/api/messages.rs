//! `/v1/messages`: the member's inboxes — list page by page, wait for new letters,
//! fetch ciphertext, mark read, delete.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kvgate_store::{Kvnr, Mailbox, MessageId, MessageMeta, Page, PageQuery, Timestamp};
use serde::{Deserialize, Serialize};

use super::param::Param;
use super::routes::{RawBody, blocking, body_bytes, no_content_if, parse_json};
use super::{ApiState, Problem, auth};

/// How many messages a page has unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 50;
/// The largest page.
const MAX_LIMIT: usize = 200;
/// How long `wait` waits unless `timeout` says otherwise.
const DEFAULT_WAIT: u64 = 25;
/// The longest `wait`, in seconds.
const MAX_WAIT: u64 = 60;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    mailbox: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
    since: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WaitQuery {
    since: String,
    mailbox: Option<String>,
    timeout: Option<u64>,
}

/// One message as lists show it.
#[derive(Serialize)]
pub(crate) struct MessageSummary {
    id: String,
    tracking_id: String,
    mailbox: Mailbox,
    received_at: String,
    size: u64,
    read: bool,
    /// The messenger thread it belongs to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    thread_id: Option<String>,
}

impl From<MessageMeta> for MessageSummary {
    fn from(m: MessageMeta) -> Self {
        MessageSummary {
            id: m.id.to_string(),
            tracking_id: m.tracking_id.to_string(),
            mailbox: m.mailbox,
            received_at: m.received_at.to_rfc3339(),
            size: m.size,
            read: m.read,
            thread_id: m.thread.map(|t| t.to_string()),
        }
    }
}

#[derive(Serialize)]
struct MessageList {
    messages: Vec<MessageSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

impl From<Page> for MessageList {
    fn from(page: Page) -> Self {
        MessageList {
            messages: page
                .messages
                .into_iter()
                .map(MessageSummary::from)
                .collect(),
            next_cursor: page.next.map(|id| id.to_string()),
        }
    }
}

/// A 400 for a query parameter that is not what the document says.
fn bad_parameter(name: &str, detail: impl std::fmt::Display) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-parameter",
        "Invalid query parameter",
        format!("{name}: {detail}"),
    )
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, Problem> {
    query
        .map(|Query(q)| q)
        .map_err(|e| bad_parameter("query", e.body_text()))
}

fn mailboxes(name: Option<&str>) -> Result<Vec<Mailbox>, Problem> {
    match name {
        None => Ok(Mailbox::ALL.to_vec()),
        Some(name) => Ok(vec![name.parse().map_err(|e| bad_parameter("mailbox", e))?]),
    }
}

fn since(raw: Option<&str>) -> Result<Option<Timestamp>, Problem> {
    raw.map(|s| {
        s.parse()
            .map_err(|_| bad_parameter("since", "must be an RFC 3339 date-time"))
    })
    .transpose()
}

/// Runs a page query for the member.
async fn page(state: &ApiState, kvnr: &Kvnr, query: PageQuery) -> Result<Page, Problem> {
    let kvnr = kvnr.clone();
    blocking(state, move |store| store.page_messages(&kvnr, &query)).await
}

/// `GET /v1/messages`: a page of the member's messages, oldest first.
pub(crate) async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
    raw: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let q = query(raw)?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(bad_parameter("limit", format!("must be 1 to {MAX_LIMIT}")));
    }
    let after = q
        .cursor
        .map(|c| c.parse::<MessageId>())
        .transpose()
        .map_err(|_| bad_parameter("cursor", "is not a cursor this API returned"))?;
    let query = PageQuery {
        mailboxes: mailboxes(q.mailbox.as_deref())?,
        after,
        since: since(q.since.as_deref())?,
        limit,
    };
    let found = page(&state, &device.kvnr, query).await?;
    Ok(axum::Json(MessageList::from(found)).into_response())
}

/// `GET /v1/messages/wait`: the member's messages filed after `since`, answered as soon
/// as there is one, or empty after `timeout` seconds.
pub(crate) async fn wait(
    State(state): State<ApiState>,
    headers: HeaderMap,
    raw: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let q = query(raw)?;
    let timeout = q.timeout.unwrap_or(DEFAULT_WAIT);
    if timeout > MAX_WAIT {
        return Err(bad_parameter(
            "timeout",
            format!("must be 0 to {MAX_WAIT} seconds"),
        ));
    }
    let query = PageQuery {
        mailboxes: mailboxes(q.mailbox.as_deref())?,
        after: None,
        since: since(Some(&q.since))?,
        limit: MAX_LIMIT,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let mut bell = state.filed.subscribe();
    loop {
        // Mark the bell seen before looking, so a filing after the look rings again.
        bell.borrow_and_update();
        let found = page(&state, &device.kvnr, query.clone()).await?;
        if !found.messages.is_empty() {
            return Ok(axum::Json(MessageList::from(found)).into_response());
        }
        match tokio::time::timeout_at(deadline, bell.changed()).await {
            Ok(Ok(())) => continue,
            // Timed out, or the gateway is shutting down: nothing new.
            Ok(Err(_)) | Err(_) => {
                return Ok(axum::Json(MessageList::from(found)).into_response());
            }
        }
    }
}

/// A message ID from the path; 404 if it cannot be one.
pub(crate) fn message_id(raw: &str) -> Result<MessageId, Problem> {
    raw.parse().map_err(|_| Problem::not_found("message"))
}

/// `GET /v1/messages/{id}`: one message as PGP/MIME ciphertext.
pub(crate) async fn fetch(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Param(id): Param,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let id = message_id(&id)?;
    let letters = state.letters.clone();
    let found = blocking(&state, move |store| {
        let found = store.fetch_message(&device.kvnr, &id)?;
        Ok(found.map(|(_, stored)| letters.read(stored)))
    })
    .await?;
    let letter = found
        .ok_or_else(|| Problem::not_found("message"))?
        .map_err(|error| Problem::internal(&error))?;
    let pieces = letter
        .pieces
        .map(|piece| Ok::<_, Infallible>(Bytes::from(piece)));
    let mut response = Body::from_stream(futures_util::stream::iter(pieces)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("message/rfc822"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(letter.len));
    Ok(response)
}

/// `DELETE /v1/messages/{id}`: removes the message from disk for good.
pub(crate) async fn delete(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Param(id): Param,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let id = message_id(&id)?;
    let deleted = blocking(&state, move |store| store.delete_message(&device.kvnr, &id)).await?;
    no_content_if(deleted, "message")
}

/// The optional body of `POST /v1/messages/{id}/read`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadRequest {
    /// Whether the sender may get the disposition notification it asked for.
    #[serde(default = "yes")]
    receipt: bool,
}

fn yes() -> bool {
    true
}

/// `POST /v1/messages/{id}/read`: marks the message read; sends the disposition
/// notification the sender asked for unless the body declines it.
pub(crate) async fn mark_read(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Param(id): Param,
    body: RawBody,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let id = message_id(&id)?;
    let body = body_bytes(body)?;
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        ReadRequest { receipt: true }
    } else {
        parse_json::<ReadRequest>(&body, "{\"receipt\": true|false} or empty")?
    };
    let found = blocking(&state, move |store| {
        store.mark_read(&device.kvnr, &id, request.receipt)
    })
    .await?;
    state.outbound.notify_one();
    no_content_if(found, "message")
}
