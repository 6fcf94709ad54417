//! Bearer-token authentication of a member's device.

use axum::http::{HeaderMap, header};
use kvgate_store::Device;

use super::{ApiState, Problem};

/// The device behind the request's `Authorization: Bearer` token.
pub async fn device(state: &ApiState, headers: &HeaderMap) -> Result<Device, Problem> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
        .ok_or_else(|| {
            Problem::unauthorized("send the device token as Authorization: Bearer <token>")
        })?;
    let store = state.store.clone();
    let found = tokio::task::spawn_blocking(move || store.device_for_token(&token))
        .await
        .map_err(|e| Problem::internal(&e))??;
    found.ok_or_else(|| {
        Problem::unauthorized("the device token is not valid (device removed or never enrolled)")
    })
}
