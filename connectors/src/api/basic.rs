//! The app's basic tier, without enrolment: `POST /v1/basic/documents` sends a
//! document for a KVNR (the upload form plus a device-generated `install_id`),
//! rate-limited per install ID and per client address; `GET /v1/basic/tracking/{id}`
//! shows its tracking to the install that sent it (`X-Install-Id` header), and is 404
//! for anyone else. Whether the KVNR belongs to a member is never looked at: every
//! valid KVNR gets the same answer, and the back office sorts it out.

use axum::Extension;
use axum::extract::State;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use kvgate_store::TrackingId;

use super::client::ClientAddr;
use super::documents::{checked, created, form};
use super::outgoing::{self, Origin};
use super::param::Param;
use super::routes::blocking;
use super::tracking::trail;
use super::{ApiState, Problem};

/// The header that carries the install ID when tracking.
const INSTALL_HEADER: &str = "x-install-id";

/// The install ID as the app sent it: 16 to 64 letters, digits, `-` or `_`.
fn install_id(raw: Option<&str>) -> Result<String, Problem> {
    let raw = raw.map(str::trim).unwrap_or_default();
    let valid = (16..=64).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-install-id",
            "Invalid install ID",
            "install_id must be the app's install ID: 16 to 64 letters, digits, - or _",
        ));
    }
    Ok(raw.to_owned())
}

/// `POST /v1/basic/documents`: checks, seals and queues one document for any valid
/// KVNR; `201 {tracking_id}`.
pub(crate) async fn upload(
    State(state): State<ApiState>,
    client: Option<Extension<ClientAddr>>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, Problem> {
    state.basic.ip(client.map(|Extension(c)| c))?;
    let form = form(&state, multipart, true).await?;
    let install = install_id(form.install_id.as_deref())?;
    let outgoing = checked(form, Origin::Basic(install.clone()), None)?;
    state.basic.install(&install)?;
    let tracking_id = outgoing::send(&state, outgoing)
        .await?
        .ok_or_else(|| Problem::internal(&"an uncapped upload was refused"))?;
    Ok(created(&tracking_id))
}

/// `GET /v1/basic/tracking/{id}`: the trail of a basic-tier upload, for the install
/// that sent it only.
pub(crate) async fn track(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Param(id): Param,
) -> Result<Response, Problem> {
    let install = headers
        .get(INSTALL_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let install = install_id(install.as_deref()).map_err(|_| Problem::not_found("upload"))?;
    let id: TrackingId = id.parse().map_err(|_| Problem::not_found("upload"))?;
    let (upload, events) = blocking(&state, move |store| store.basic_tracking(&id, &install))
        .await?
        .ok_or_else(|| Problem::not_found("upload"))?;
    Ok(trail(upload.tracking_id.to_string(), events))
}
