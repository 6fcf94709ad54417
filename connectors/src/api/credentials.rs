//! Device credentials over the API: how long they live, how fast enrolment may be
//! tried, and `POST /v1/token/refresh`, which rotates a device's bearer token.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use kvgate_store::{CredentialPolicy, IssuedToken, now};
use serde::Serialize;

use super::limiter::Limiter;
use super::routes::blocking;
use super::{ApiState, Problem, auth};

/// Credential lifetimes and the enrolment rate limits.
#[derive(Clone)]
pub struct Security {
    /// Lifetimes of enrolment codes and tokens, and the wrong-code limit.
    pub credentials: CredentialPolicy,
    /// Enrolment attempts per client IP address.
    pub enrolment_per_ip: Arc<Limiter>,
    /// Enrolment attempts per device (the OpenPGP key it presents).
    pub enrolment_per_device: Arc<Limiter>,
}

impl Security {
    /// Counts one enrolment attempt under `key` of `limiter`; 429 if over the limit.
    pub(crate) fn enrolment_attempt(limiter: &Limiter, key: &str) -> Result<(), Problem> {
        limiter.attempt(key, Instant::now()).map_err(|wait| {
            Problem::too_many(
                "too many enrolment attempts; wait before trying again",
                wait,
            )
        })
    }
}

/// A bearer token as the API hands it out.
#[derive(Serialize)]
pub(crate) struct TokenView {
    /// The token for `Authorization: Bearer`.
    pub token: String,
    /// When it expires (RFC 3339).
    pub expires_at: String,
}

impl From<IssuedToken> for TokenView {
    fn from(issued: IssuedToken) -> Self {
        TokenView {
            token: issued.token,
            expires_at: issued.expires_at.to_rfc3339(),
        }
    }
}

/// `POST /v1/token/refresh`: a new token for the asking device; the presented one
/// stops working in the same commit.
pub(crate) async fn refresh(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let token = auth::presented_token(&headers)?;
    let policy = state.security.credentials;
    let refreshed = blocking(&state, move |store| {
        store.refresh_token(&token, now(), &policy)
    })
    .await?;
    match refreshed {
        Ok(issued) => Ok(axum::Json(TokenView::from(issued)).into_response()),
        Err(bearer) => Err(auth::refusal(&bearer)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::api::limiter::RateLimit;

    #[test]
    fn an_attempt_over_the_limit_is_429_with_retry_after() {
        let limiter = Limiter::new(RateLimit {
            max: 1,
            window: Duration::from_secs(60),
        });
        assert!(Security::enrolment_attempt(&limiter, "ip").is_ok());
        let problem = Security::enrolment_attempt(&limiter, "ip").unwrap_err();
        assert_eq!(problem.status, 429);
        assert_eq!(problem.kind, "urn:kvgate:problem:rate-limited");
        assert!(matches!(problem.retry_after, Some(1..=60)));
    }
}
