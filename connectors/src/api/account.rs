//! `DELETE /v1/account`: the member cancels the account, and everything kvgate holds
//! for the member is deleted irrecoverably once the member confirms with their own
//! KVNR (`GET /v1/export` first keeps a copy).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::routes::{RawBody, blocking, json_body};
use super::{ApiState, Problem, auth};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelRequest {
    confirm: String,
}

#[derive(Serialize)]
struct CancelResponse {
    deleted_letters: usize,
    deleted_uploads: usize,
}

/// `DELETE /v1/account`: cancels the account, deleting everything kvgate holds for
/// the member, once the body confirms it with the member's own KVNR.
pub(crate) async fn cancel(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let request: CancelRequest = json_body(body, "{\"confirm\": \"<your KVNR>\"}")?;
    if request.confirm.trim() != device.kvnr.as_str() {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "confirmation-mismatch",
            "Not confirmed",
            "to cancel, confirm with your own KVNR; export your data first (GET /v1/export)",
        ));
    }
    let kvnr = device.kvnr;
    let deleted = blocking(&state, move |store| {
        store.delete_account(&kvnr, "the member cancelled the account; deleted")
    })
    .await?
    .ok_or_else(|| Problem::not_found("account"))?;
    let answer = CancelResponse {
        deleted_letters: deleted.letters,
        deleted_uploads: deleted.uploads,
    };
    Ok(axum::Json(answer).into_response())
}
