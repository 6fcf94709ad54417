//! The operators' HTTPS endpoint: tracking histories (with their hash-chain check)
//! and the outbound queue, for monitoring and support tools.
//!
//! It is a separate listener (bind it to a management network or loopback) and takes
//! one bearer token, compared by its SHA-256 in constant time.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kvgate_store::{Store, TrackingId, verify_chain};
use sha2::{Digest, Sha256};

use super::param::Param;
use super::{Problem, with_store};

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The durable state.
    pub store: Arc<Store>,
    /// SHA-256 of the operators' bearer token.
    pub token_sha256: [u8; 32],
}

/// The admin routes: `GET /admin/v1/tracking/{id}`, `GET /admin/v1/queue`.
pub fn admin_router(state: AdminState) -> Router {
    Router::new()
        .route("/admin/v1/tracking/{id}", get(tracking))
        .route("/admin/v1/queue", get(queue))
        .fallback(|| async { Problem::not_found("endpoint") })
        .with_state(state)
}

/// Checks the operator token.
fn authorize(state: &AdminState, headers: &HeaderMap) -> Result<(), Problem> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            Problem::unauthorized("send the operator token as Authorization: Bearer <token>")
        })?;
    let digest: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
    let differs = digest
        .iter()
        .zip(state.token_sha256.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if differs != 0 {
        return Err(Problem::unauthorized("the operator token is not valid"));
    }
    Ok(())
}

/// A submission, its events, and whether their hash chain is intact.
async fn tracking(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Param(id): Param,
) -> Result<Response, Problem> {
    authorize(&state, &headers)?;
    let id: TrackingId = id.parse().map_err(|_| Problem::not_found("submission"))?;
    let found = with_store(state.store.clone(), move |store| {
        Ok(match store.submission(&id)? {
            Some(submission) => Some((submission, store.events(&id)?)),
            None => None,
        })
    })
    .await?;
    let (submission, events) = found.ok_or_else(|| Problem::not_found("submission"))?;
    let chain = match verify_chain(&events) {
        Ok(()) => serde_json::json!({ "intact": true }),
        Err(broken) => serde_json::json!({
            "intact": false, "broken_at": broken.seq, "problem": broken.problem,
        }),
    };
    let body = serde_json::json!({ "submission": submission, "events": events, "chain": chain });
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

/// The outbound queue, without the payloads.
async fn queue(State(state): State<AdminState>, headers: HeaderMap) -> Result<Response, Problem> {
    authorize(&state, &headers)?;
    let entries = with_store(state.store.clone(), |store| store.outbound()).await?;
    let entries: Vec<_> = entries
        .into_iter()
        .map(|e| {
            serde_json::json!({
                "id": e.id, "tracking_id": e.tracking_id, "purpose": e.purpose,
                "rcpt_to": e.rcpt_to, "created_at": e.created_at.to_rfc3339(),
                "next_attempt_at": e.next_attempt_at.to_rfc3339(), "attempts": e.attempts,
                "last_error": e.last_error,
            })
        })
        .collect();
    Ok(axum::Json(serde_json::json!({ "queue": entries })).into_response())
}
