//! The operators' HTTPS endpoint: tracking histories (with their hash-chain check),
//! the outbound queue, and metrics in the Prometheus text format, for monitoring and
//! support tools.
//!
//! It is a separate listener (bind it to a management network or loopback) and takes
//! one bearer token, compared by its SHA-256 in constant time.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kvgate_store::{Store, Timestamp, TrackingId, now, verify_chain};
use sha2::{Digest, Sha256};

use super::param::Param;
use super::{Problem, with_store};
use crate::smtp::Counters;

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The durable state.
    pub store: Arc<Store>,
    /// SHA-256 of the operators' bearer token.
    pub token_sha256: [u8; 32],
    /// The SMTP server's counters.
    pub smtp: Arc<Counters>,
}

/// The admin routes: `GET /admin/v1/tracking/{id}`, `GET /admin/v1/queue`,
/// `GET /admin/v1/metrics`.
pub fn admin_router(state: AdminState) -> Router {
    Router::new()
        .route("/admin/v1/tracking/{id}", get(tracking))
        .route("/admin/v1/queue", get(queue))
        .route("/admin/v1/metrics", get(metrics))
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

/// A sample's labels in the Prometheus text format: `{name="value",…}`, each value
/// escaped (backslash, double quote, line feed).
fn labels(pairs: &[(&str, &str)]) -> String {
    let pairs: Vec<String> = pairs
        .iter()
        .map(|(name, value)| {
            let value = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{name}=\"{value}\"")
        })
        .collect();
    format!("{{{}}}", pairs.join(","))
}

/// What waits, in the store's own words, for [`metrics`].
struct Backlog {
    queued: usize,
    quarantined: usize,
    outbound: usize,
    oldest_outbound: Option<Timestamp>,
}

/// The gateway's counters and backlogs in the Prometheus text format (0.0.4): what
/// was accepted and how it ended since the start, why recipients failed, the SMTP
/// sessions and refusals, and what waits now.
async fn metrics(State(state): State<AdminState>, headers: HeaderMap) -> Result<Response, Problem> {
    authorize(&state, &headers)?;
    let store = state.store.clone();
    let backlog = with_store(store, |store| {
        let outbound = store.outbound()?;
        Ok(Backlog {
            queued: store.queued()?.len(),
            quarantined: store.quarantined()?.len(),
            oldest_outbound: outbound.iter().map(|entry| entry.created_at).min(),
            outbound: outbound.len(),
        })
    })
    .await?;
    let counts = state.store.activity();
    let smtp = state.smtp.snapshot();
    let oldest = backlog.oldest_outbound.map_or(0, |created| {
        now().as_millis().saturating_sub(created.as_millis()) / 1000
    });
    let one = |value: u64| vec![(String::new(), value)];
    let mut text = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>| {
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            text.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    family(
        "kvgate_submissions_accepted_total",
        "counter",
        "Letters accepted (250 after DATA) since the gateway started.",
        one(counts.accepted),
    );
    family(
        "kvgate_submissions_ended_total",
        "counter",
        "Submissions that reached a final state since the gateway started.",
        [
            ("delivered", counts.delivered),
            ("failed", counts.failed),
            ("quarantined", counts.quarantined),
        ]
        .into_iter()
        .map(|(state, count)| (labels(&[("state", state)]), count))
        .collect(),
    );
    family(
        "kvgate_recipient_failures_total",
        "counter",
        "Recipients a letter failed for since the gateway started, by reason code.",
        counts
            .failures
            .iter()
            .map(|(reason, count)| (labels(&[("reason", reason)]), *count))
            .collect(),
    );
    family(
        "kvgate_smtp_sessions_total",
        "counter",
        "SMTP sessions accepted since the gateway started, by listener.",
        vec![
            (labels(&[("listener", "smtp")]), smtp.starttls_sessions),
            (labels(&[("listener", "smtps")]), smtp.implicit_tls_sessions),
        ],
    );
    family(
        "kvgate_smtp_open_sessions",
        "gauge",
        "SMTP sessions running now.",
        one(smtp.open_sessions),
    );
    family(
        "kvgate_smtp_turned_away_total",
        "counter",
        "SMTP connections closed at once for want of room since the gateway started.",
        one(smtp.turned_away),
    );
    family(
        "kvgate_smtp_refusals_total",
        "counter",
        "SMTP replies of class 4 or 5 since the gateway started, by code and enhanced status.",
        smtp.refusals
            .iter()
            .map(|(code, status, count)| {
                let code = code.to_string();
                (labels(&[("code", &code), ("status", status)]), *count)
            })
            .collect(),
    );
    family(
        "kvgate_queued_submissions",
        "gauge",
        "Letters accepted and waiting to be processed.",
        one(backlog.queued as u64),
    );
    family(
        "kvgate_quarantined_submissions",
        "gauge",
        "Letters set aside in the quarantine, waiting for an operator.",
        one(backlog.quarantined as u64),
    );
    family(
        "kvgate_outbound_messages",
        "gauge",
        "Reports and uploads waiting for the relay.",
        one(backlog.outbound as u64),
    );
    family(
        "kvgate_outbound_oldest_seconds",
        "gauge",
        "Age of the oldest message waiting for the relay (0 when none waits).",
        one(oldest),
    );
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::labels;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            labels(&[("code", "550"), ("reason", "a\"b\\c\nd")]),
            r#"{code="550",reason="a\"b\\c\nd"}"#
        );
    }
}
