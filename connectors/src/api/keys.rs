//! `/v1/keys`: the member's recovery key and client-encrypted key backup.
//!
//! The recovery key is an OpenPGP public key every letter is also encrypted to; its
//! secret, protected by the app, travels in the backup blob, which the gateway stores
//! without being able to read it. Restoring the backup on a new device makes old
//! letters readable there.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kvgate_store::MemberKey;
use serde::{Deserialize, Serialize};

use super::routes::{RawBody, blocking, json_body};
use super::{ApiState, CheckedKey, Problem, auth};

/// The largest key backup the gateway keeps, in octets.
const MAX_BACKUP: usize = 64 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecoveryRequest {
    public_key: String,
}

#[derive(Serialize)]
struct RecoveryView {
    fingerprint: String,
    public_key: String,
    added_at: String,
}

impl From<MemberKey> for RecoveryView {
    fn from(key: MemberKey) -> Self {
        RecoveryView {
            fingerprint: key.fingerprint,
            public_key: key.armored,
            added_at: key.added_at.to_rfc3339(),
        }
    }
}

/// The OpenPGP public key a member presents (a device's or the recovery key), checked;
/// 422 with the reason if it is unusable.
pub(crate) fn checked_key(state: &ApiState, armored: &str) -> Result<CheckedKey, Problem> {
    state.keys.check(armored.as_bytes()).map_err(|why| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-public-key",
            "Unusable OpenPGP key",
            why,
        )
    })
}

/// `PUT /v1/keys/recovery`: registers the member's recovery key (replacing the old
/// one); every letter filed from now on is also encrypted to it.
pub(crate) async fn put_recovery(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let request: RecoveryRequest = json_body(body, "{\"public_key\": \"<armored OpenPGP key>\"}")?;
    let key = checked_key(&state, &request.public_key)?;
    let stored = blocking(&state, move |store| {
        store.set_recovery_key(&device.kvnr, &key.fingerprint, &key.armored)
    })
    .await?;
    Ok(axum::Json(RecoveryView::from(stored)).into_response())
}

/// `GET /v1/keys/recovery`: the member's recovery key.
pub(crate) async fn get_recovery(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let key = blocking(&state, move |store| store.recovery_key(&device.kvnr))
        .await?
        .ok_or_else(|| no_such("recovery key"))?;
    Ok(axum::Json(RecoveryView::from(key)).into_response())
}

/// `PUT /v1/keys/backup`: stores the member's opaque key backup (at most 64 KiB),
/// replacing the old one.
pub(crate) async fn put_backup(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let blob = axum::body::to_bytes(body, MAX_BACKUP).await.map_err(|_| {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "backup-too-large",
            "Key backup too large",
            format!("a key backup may have at most {MAX_BACKUP} octets"),
        )
    })?;
    if blob.is_empty() {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "backup-empty",
            "Key backup empty",
            "the body must be the encrypted key backup; it was empty",
        ));
    }
    blocking(&state, move |store| {
        store.put_key_backup(&device.kvnr, &blob)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/keys/backup`: the member's key backup, as stored.
pub(crate) async fn get_backup(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let blob = blocking(&state, move |store| store.key_backup(&device.kvnr))
        .await?
        .ok_or_else(|| no_such("key backup"))?;
    let mut response = blob.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}

/// 404: the member has not stored this yet.
fn no_such(what: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "Not found",
        format!("no {what} is stored for this member"),
    )
}
