//! `POST /v1/enroll`: a device joins a member with a single-use enrolment code.
//!
//! Every device, the first and every later one (a device change), needs its own code:
//! the member is identified again each time.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kvgate_store::StoreError;
use serde::{Deserialize, Serialize};

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
    token: String,
}

/// Enrols a device: checks the KVNR, the name and the key, then consumes the code.
pub(crate) async fn enroll(
    State(state): State<ApiState>,
    body: RawBody,
) -> Result<Response, Problem> {
    let request: EnrollRequest = json_body(
        body,
        "{\"kvnr\", \"code\", \"device_name\", \"public_key\"}",
    )?;
    let kvnr = parse_kvnr(&request.kvnr)?;
    let name = device_name(&request.device_name)?;
    let key = checked_key(&state, &request.public_key)?;
    let code = request.code;
    let enrolled = blocking(&state, move |store| {
        match store.enroll(&kvnr, &code, &name, &key.fingerprint, &key.armored) {
            Err(StoreError::NotFound(_)) => Ok(None),
            other => other.map(Some),
        }
    })
    .await?
    .ok_or_else(|| {
        Problem::new(
            StatusCode::FORBIDDEN,
            "enrollment-code-invalid",
            "Enrolment code not valid",
            "the enrolment code is wrong, already used, or issued for another KVNR",
        )
    })?;
    let body = EnrollResponse {
        device_id: enrolled.device.id.to_string(),
        token: enrolled.token,
    };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}
