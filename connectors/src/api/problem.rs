//! Problem details (RFC 9457) for every refusal.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kvgate_store::StoreError;
use serde::Serialize;

/// An HTTP refusal with a stable problem type and a human sentence.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// A stable identifier of the kind of problem, e.g. `urn:kvgate:problem:invalid-kvnr`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// What exactly went wrong, for a person.
    pub detail: String,
    /// Seconds to wait before trying again (sent as `Retry-After`), if that helps.
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl Problem {
    /// A problem of type `urn:kvgate:problem:<slug>`.
    pub fn new(
        status: StatusCode,
        slug: &str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Problem {
            kind: format!("urn:kvgate:problem:{slug}"),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// 429: too many attempts; try again after `wait` (rounded up to whole seconds).
    pub fn too_many(detail: impl Into<String>, wait: Duration) -> Self {
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            detail,
        )
        .retry_after(wait)
    }

    /// 503: the server is busy with requests of this kind; try again after `wait`.
    pub fn busy(detail: impl Into<String>, wait: Duration) -> Self {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "Busy", detail).retry_after(wait)
    }

    /// The same problem with `Retry-After: wait` (rounded up to whole seconds, at
    /// least one).
    fn retry_after(self, wait: Duration) -> Self {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Problem {
            retry_after: Some(seconds.max(1)),
            ..self
        }
    }

    /// 404: nothing the caller may see is there.
    pub fn not_found(what: &str) -> Self {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("there is no {what} with this ID for this member"),
        )
    }

    /// 401: missing or unknown bearer token.
    pub fn unauthorized(detail: &str) -> Self {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail,
        )
    }

    /// 400: the request is malformed.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }

    /// 500: the server failed; the detail is logged, not sent.
    pub fn internal(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "member API request failed");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the gateway could not complete the request; try again later",
        )
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Exists("member key") => Problem::new(
                StatusCode::CONFLICT,
                "key-in-use",
                "Key already in use",
                "this OpenPGP key is already the key of one of the member's enrolled devices or their recovery key; each device and the recovery key need a key of their own",
            ),
            StoreError::NotFound("member") => {
                Problem::unauthorized("the member's account no longer exists")
            }
            other => Problem::internal(&other),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after;
        let mut response = (status, axum::Json(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
