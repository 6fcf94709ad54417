//! Problem details (RFC 9457) for every refusal.

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
    /// Seconds after which the client may try again (`Retry-After`), if it says so.
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

    /// The same problem with a `Retry-After` of `secs` seconds.
    pub fn retry_after(self, secs: u64) -> Self {
        Problem {
            retry_after: Some(secs),
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
        Problem::internal(&e)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after;
        let mut response = (status, axum::Json(self)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
