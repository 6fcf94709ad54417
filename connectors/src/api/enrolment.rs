//! `POST /v1/enroll`: a device joins a member with a single-use enrolment code.
//!
//! Every device, the first and every later one (a device change), needs its own code:
//! the member is identified again each time. Attempts are rate-limited per client
//! address (an IPv6 client by its /64) and per device key (429 with `Retry-After`);
//! codes expire and wrong tries void them (see the store's `credentials`).

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kvgate_store::now;
use serde::{Deserialize, Serialize};

use super::client::ClientAddr;
use super::credentials::{Security, TokenView};
use super::devices::device_name;
use super::keys::checked_key;
use super::routes::{RawBody, blocking, json_body, parse_kvnr};
use super::{ApiState, Problem};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollRequest {
    kvnr: String,
    code: String,
    device_name: String,
    public_key: String,
}

#[derive(Serialize)]
struct EnrollResponse {
    device_id: String,
    #[serde(flatten)]
    token: TokenView,
}

/// Enrols a device: checks the KVNR, the name and the key, then consumes the code.
pub(crate) async fn enroll(
    State(state): State<ApiState>,
    client: Option<Extension<ClientAddr>>,
    body: RawBody,
) -> Result<Response, Problem> {
    if let Some(Extension(client)) = client {
        Security::enrolment_attempt(&state.security.enrolment_per_ip, &client.limit_key())?;
    }
    let request: EnrollRequest = json_body(
        body,
        "{\"kvnr\", \"code\", \"device_name\", \"public_key\"}",
    )?;
    let kvnr = parse_kvnr(&request.kvnr)?;
    let name = device_name(&request.device_name)?;
    let key = checked_key(&state, &request.public_key)?;
    Security::enrolment_attempt(&state.security.enrolment_per_device, &key.fingerprint)?;
    let code = request.code;
    let policy = state.security.credentials;
    let enrolled = blocking(&state, move |store| {
        store.enroll(
            &kvnr,
            &code,
            &name,
            &key.fingerprint,
            &key.armored,
            now(),
            &policy,
        )
    })
    .await?
    .ok_or_else(|| {
        Problem::new(
            StatusCode::FORBIDDEN,
            "enrollment-code-invalid",
            "Enrolment code not valid",
            "the enrolment code is wrong, expired, already used, voided by too many wrong tries, or issued for another KVNR",
        )
    })?;
    let body = EnrollResponse {
        device_id: enrolled.device.id.to_string(),
        token: TokenView {
            token: enrolled.token,
            expires_at: enrolled.expires_at.to_rfc3339(),
        },
    };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}
