//! `/v1/family`: the family members a member registered (KVNR and name), for whom
//! documents may be uploaded. Nothing says whether a KVNR belongs to anyone insured.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kvgate_store::{FamilyMember, FamilyRefusal, MAX_FAMILY, now};
use serde::{Deserialize, Serialize};

use super::param::Param;
use super::routes::{RawBody, blocking, json_body, no_content_if, parse_kvnr};
use super::{ApiState, Problem, auth};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddRequest {
    kvnr: String,
    name: String,
}

/// A family member as the API shows it.
#[derive(Serialize)]
struct FamilyView {
    kvnr: String,
    name: String,
    added_at: String,
}

impl From<FamilyMember> for FamilyView {
    fn from(m: FamilyMember) -> Self {
        FamilyView {
            kvnr: m.kvnr.to_string(),
            name: m.name,
            added_at: m.added_at.to_rfc3339(),
        }
    }
}

#[derive(Serialize)]
struct FamilyList {
    family: Vec<FamilyView>,
}

/// `GET /v1/family`: the member's family members, by KVNR.
pub(crate) async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let family = blocking(&state, move |store| store.family(&device.kvnr)).await?;
    let list = FamilyList {
        family: family.into_iter().map(FamilyView::from).collect(),
    };
    Ok(axum::Json(list).into_response())
}

/// `POST /v1/family`: registers a family member (checksum-valid KVNR, a name of 1 to
/// 200 characters, not the member themself).
pub(crate) async fn add(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let request: AddRequest = json_body(body, "{\"kvnr\", \"name\"}")?;
    let kvnr = parse_kvnr(request.kvnr.trim())?;
    let name = request.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-name",
            "Invalid name",
            "a family member's name must have 1 to 200 characters",
        ));
    }
    if kvnr == device.kvnr {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "family-is-self",
            "Own KVNR",
            "this is the member's own KVNR; family members are other people",
        ));
    }
    let member = FamilyMember {
        kvnr,
        name,
        added_at: now(),
    };
    let record = member.clone();
    let added = blocking(&state, move |store| {
        store.add_family_member(&device.kvnr, &record)
    })
    .await?;
    match added {
        Ok(()) => Ok((StatusCode::CREATED, axum::Json(FamilyView::from(member))).into_response()),
        Err(FamilyRefusal::Exists) => Err(Problem::new(
            StatusCode::CONFLICT,
            "family-member-exists",
            "Already registered",
            "a family member with this KVNR is already registered",
        )),
        Err(FamilyRefusal::Full) => Err(Problem::new(
            StatusCode::CONFLICT,
            "family-full",
            "Too many family members",
            format!("a member may register at most {MAX_FAMILY} family members"),
        )),
    }
}

/// `DELETE /v1/family/{kvnr}`: removes a family member.
pub(crate) async fn remove(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Param(kvnr): Param,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let kvnr = parse_kvnr(&kvnr)?;
    let removed = blocking(&state, move |store| {
        store.remove_family_member(&device.kvnr, &kvnr)
    })
    .await?;
    no_content_if(removed, "family member")
}
