//! `/v1/devices`: the member's enrolled devices — list, rename, remove.
//!
//! A removed device's key stops receiving letters at once (the next letter filed is
//! not encrypted to it) and its token stops working. Adding a device is enrolment with
//! a new code.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kvgate_store::{Device, DeviceId};
use serde::{Deserialize, Serialize};

use super::param::Param;
use super::routes::{RawBody, blocking, json_body, no_content_if};
use super::{ApiState, Problem, auth};

/// A device as the API shows it.
#[derive(Serialize)]
struct DeviceView {
    id: String,
    name: String,
    key_fingerprint: String,
    enrolled_at: String,
    /// Whether this is the device that asked.
    current: bool,
}

impl DeviceView {
    fn new(device: Device, asking: &DeviceId) -> Self {
        DeviceView {
            current: device.id == *asking,
            id: device.id.to_string(),
            name: device.name,
            key_fingerprint: device.key_fingerprint,
            enrolled_at: device.enrolled_at.to_rfc3339(),
        }
    }
}

#[derive(Serialize)]
struct DeviceList {
    devices: Vec<DeviceView>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenameRequest {
    name: String,
}

/// A device name as given by the member: trimmed, 1 to 100 characters.
pub(crate) fn device_name(raw: &str) -> Result<String, Problem> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-device-name",
            "Invalid device name",
            "a device name must have 1 to 100 characters",
        ));
    }
    Ok(name.to_owned())
}

fn device_id(raw: &str) -> Result<DeviceId, Problem> {
    raw.parse().map_err(|_| Problem::not_found("device"))
}

/// `GET /v1/devices`: the member's devices, oldest first.
pub(crate) async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let kvnr = device.kvnr.clone();
    let devices = blocking(&state, move |store| store.devices(&kvnr)).await?;
    let list = DeviceList {
        devices: devices
            .into_iter()
            .map(|d| DeviceView::new(d, &device.id))
            .collect(),
    };
    Ok(axum::Json(list).into_response())
}

/// `PATCH /v1/devices/{id}`: gives one of the member's devices a new name.
pub(crate) async fn rename(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Param(id): Param,
    body: RawBody,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let id = device_id(&id)?;
    let request: RenameRequest = json_body(body, "{\"name\": \"…\"}")?;
    let name = device_name(&request.name)?;
    let kvnr = device.kvnr.clone();
    let renamed = blocking(&state, move |store| store.rename_device(&kvnr, &id, &name))
        .await?
        .ok_or_else(|| Problem::not_found("device"))?;
    Ok(axum::Json(DeviceView::new(renamed, &device.id)).into_response())
}

/// `DELETE /v1/devices/{id}`: removes one of the member's devices, its key and its
/// token (the asking device may remove itself).
pub(crate) async fn remove(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Param(id): Param,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let id = device_id(&id)?;
    let removed = blocking(&state, move |store| store.remove_device(&device.kvnr, &id)).await?;
    no_content_if(removed, "device")
}
