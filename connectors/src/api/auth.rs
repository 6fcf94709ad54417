//! Bearer-token authentication of a member's device.

use axum::http::{HeaderMap, StatusCode, header};
use kvgate_store::{Bearer, Device, now};

use super::{ApiState, Problem};

/// The token of the request's `Authorization: Bearer` header.
pub(crate) fn presented_token(headers: &HeaderMap) -> Result<String, Problem> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
        .ok_or_else(|| {
            Problem::unauthorized("send the device token as Authorization: Bearer <token>")
        })
}

/// The 401 for a token that is not valid: expired (refresh is too late; enrol again)
/// or unknown.
pub(crate) fn refusal(bearer: &Bearer) -> Problem {
    match bearer {
        Bearer::Expired => Problem::new(
            StatusCode::UNAUTHORIZED,
            "token-expired",
            "Token expired",
            "the device token has expired; enrol the device again with a new enrolment code",
        ),
        _ => Problem::unauthorized(
            "the device token is not valid (replaced by a refresh, device removed, or never enrolled)",
        ),
    }
}

/// The device behind the request's `Authorization: Bearer` token; the member's
/// access is recorded (to the day).
pub async fn device(state: &ApiState, headers: &HeaderMap) -> Result<Device, Problem> {
    let token = presented_token(headers)?;
    let store = state.store.clone();
    let found = tokio::task::spawn_blocking(move || {
        let at = now();
        let found = store.bearer(&token, at)?;
        if let Bearer::Valid { device, .. } = &found {
            // The retention rules count from the member's last access.
            store.record_access(&device.kvnr, at)?;
        }
        Ok::<_, kvgate_store::StoreError>(found)
    })
    .await
    .map_err(|e| Problem::internal(&e))??;
    match found {
        Bearer::Valid { device, .. } => Ok(device),
        other => Err(refusal(&other)),
    }
}
