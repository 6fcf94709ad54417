//! The routes of the member API.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kvgate_store::{Kvnr, Mailbox, MessageId, MessageMeta, Store, StoreError};
use serde::{Deserialize, Serialize};

use super::{ApiState, Problem, auth};

/// The OpenAPI document describing these routes.
const OPENAPI: &str = include_str!("openapi.json");

/// The member API's routes over `state`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/enroll", post(enroll))
        .route("/v1/messages", get(list_messages))
        .route("/v1/messages/{id}", get(fetch_message))
        .route("/v1/messages/{id}/read", post(mark_read))
        .fallback(|| async {
            Problem::new(
                StatusCode::NOT_FOUND,
                "no-such-route",
                "Not found",
                "there is no such endpoint; see /v1/openapi.json",
            )
        })
        .with_state(state)
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Runs a blocking store operation off the async threads.
async fn blocking<T: Send + 'static>(
    state: &ApiState,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Problem> {
    super::with_store(state.store.clone(), f).await
}

#[derive(Deserialize)]
struct EnrollRequest {
    kvnr: String,
    code: String,
    device_name: String,
    public_key: String,
}

#[derive(Serialize)]
struct EnrollResponse {
    device_id: String,
    token: String,
}

async fn enroll(State(state): State<ApiState>, body: Bytes) -> Result<Response, Problem> {
    let request: EnrollRequest = serde_json::from_slice(&body).map_err(|e| {
        Problem::bad_request(format!(
            "the enrolment request is not valid JSON of the documented shape: {e}"
        ))
    })?;
    let kvnr = Kvnr::parse(&request.kvnr).map_err(|e| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-kvnr",
            "Invalid KVNR",
            e.to_string(),
        )
    })?;
    let name = request.device_name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-device-name",
            "Invalid device name",
            "device_name must have 1 to 100 characters",
        ));
    }
    let key = state
        .keys
        .check(request.public_key.as_bytes())
        .map_err(|why| {
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-public-key",
                "Unusable OpenPGP key",
                why,
            )
        })?;
    let code = request.code;
    let enrolled = blocking(&state, move |store| {
        match store.enroll(&kvnr, &code, &name, &key.fingerprint, &key.armored) {
            Err(StoreError::NotFound(_)) => Ok(None),
            other => other.map(Some),
        }
    })
    .await?
    .ok_or_else(|| {
        Problem::new(
            StatusCode::FORBIDDEN,
            "enrollment-code-invalid",
            "Enrolment code not valid",
            "the enrolment code is wrong, already used, or issued for another KVNR",
        )
    })?;
    let body = EnrollResponse {
        device_id: enrolled.device.id.to_string(),
        token: enrolled.token,
    };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    mailbox: Option<String>,
}

#[derive(Serialize)]
struct MessageSummary {
    id: String,
    tracking_id: String,
    mailbox: Mailbox,
    received_at: String,
    size: u64,
    read: bool,
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
        }
    }
}

#[derive(Serialize)]
struct MessageList {
    messages: Vec<MessageSummary>,
}

async fn list_messages(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let mailboxes = match query.mailbox.as_deref() {
        None => Mailbox::ALL.to_vec(),
        Some(name) => vec![
            name.parse::<Mailbox>()
                .map_err(|e| Problem::bad_request(e.to_string()))?,
        ],
    };
    let kvnr = device.kvnr;
    let mut messages = blocking(&state, move |store| {
        let mut all = Vec::new();
        for mailbox in mailboxes {
            all.extend(store.list_messages(&kvnr, mailbox)?);
        }
        Ok(all)
    })
    .await?;
    messages.sort_by(|a, b| a.id.cmp(&b.id));
    let list = MessageList {
        messages: messages.into_iter().map(MessageSummary::from).collect(),
    };
    Ok(axum::Json(list).into_response())
}

fn message_id(raw: &str) -> Result<MessageId, Problem> {
    raw.parse().map_err(|_| Problem::not_found("message"))
}

async fn fetch_message(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let id = message_id(&id)?;
    let found = blocking(&state, move |store| store.fetch_message(&device.kvnr, &id)).await?;
    let (_, body) = found.ok_or_else(|| Problem::not_found("message"))?;
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("message/rfc822"),
    );
    Ok(response)
}

/// The optional body of `POST /v1/messages/{id}/read`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadRequest {
    /// Whether the sender may get the disposition notification it asked for.
    #[serde(default = "yes")]
    receipt: bool,
}

fn yes() -> bool {
    true
}

async fn mark_read(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let id = message_id(&id)?;
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        ReadRequest { receipt: true }
    } else {
        serde_json::from_slice::<ReadRequest>(&body).map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-request",
                "Invalid request",
                format!("the body must be {{\"receipt\": true|false}} or empty: {e}"),
            )
        })?
    };
    let found = blocking(&state, move |store| {
        store.mark_read(&device.kvnr, &id, request.receipt)
    })
    .await?;
    if !found {
        return Err(Problem::not_found("message"));
    }
    state.outbound.notify_one();
    Ok(StatusCode::NO_CONTENT.into_response())
}
