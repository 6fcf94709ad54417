//! The member's settings: `/v1/settings` (app communication, which decides whether
//! the insurer's letters reach the Postfach) and `/v1/smarthealth` (activation with the
//! current terms, storage used against the quota, and letters refused over quota).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kvgate_store::{Kvnr, QuotaRefusal, SMARTHEALTH_MIN_AGE, Smarthealth, now};
use serde::{Deserialize, Serialize};

use super::membership::still_insured;
use super::routes::{RawBody, blocking, json_body};
use super::{ApiState, Problem, auth};

/// The smarthealth rules the operator configured.
#[derive(Debug, Clone)]
pub struct SmarthealthRules {
    /// The terms version a member must accept to activate smarthealth.
    pub terms_version: String,
    /// Octets each member's smarthealth inbox may hold.
    pub quota: u64,
}

/// The member's settings, as read and written.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Whether the insurer's letters go to the Postfach (else by post).
    app_communication: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivateRequest {
    terms_version: String,
}

/// A letter refused over quota, as the app shows it.
#[derive(Serialize)]
struct RefusalView {
    at: String,
    sender_id: String,
    size: u64,
    used_bytes: u64,
    quota_bytes: u64,
    reason: &'static str,
}

impl From<QuotaRefusal> for RefusalView {
    fn from(r: QuotaRefusal) -> Self {
        RefusalView {
            at: r.at.to_rfc3339(),
            sender_id: r.sender_id,
            size: r.size,
            used_bytes: r.used,
            quota_bytes: r.quota,
            reason: "the smarthealth storage was full (552 5.2.2); the sender was told to send it another way",
        }
    }
}

/// The member's smarthealth record, as the app shows it.
#[derive(Serialize)]
struct SmarthealthView {
    active: bool,
    accepted_terms_version: Option<String>,
    current_terms_version: String,
    activated_at: Option<String>,
    quota_bytes: u64,
    used_bytes: u64,
    refused: Vec<RefusalView>,
}

impl SmarthealthView {
    fn new(record: Smarthealth, rules: &SmarthealthRules) -> Self {
        SmarthealthView {
            active: record.active,
            accepted_terms_version: record.terms_version,
            current_terms_version: rules.terms_version.clone(),
            activated_at: record.activated_at.map(|t| t.to_rfc3339()),
            quota_bytes: rules.quota,
            used_bytes: record.used,
            refused: record.refusals.into_iter().map(RefusalView::from).collect(),
        }
    }
}

/// `GET /v1/settings`.
pub(crate) async fn get(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let member = blocking(&state, move |store| store.member(&device.kvnr))
        .await?
        .ok_or_else(|| Problem::not_found("member"))?;
    let settings = Settings {
        app_communication: member.app_communication,
    };
    Ok(axum::Json(settings).into_response())
}

/// `PUT /v1/settings`: turns app communication on or off.
pub(crate) async fn put(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let wanted: Settings = json_body(body, "{\"app_communication\": true|false}")?;
    let on = wanted.app_communication;
    let member = blocking(&state, move |store| {
        store.set_app_communication(&device.kvnr, on)
    })
    .await?
    .ok_or_else(|| Problem::not_found("member"))?;
    let settings = Settings {
        app_communication: member.app_communication,
    };
    Ok(axum::Json(settings).into_response())
}

/// The member's smarthealth record as the API shows it.
async fn view(state: &ApiState, kvnr: Kvnr) -> Result<Response, Problem> {
    let record = blocking(state, move |store| store.smarthealth(&kvnr))
        .await?
        .ok_or_else(|| Problem::not_found("member"))?;
    Ok(axum::Json(SmarthealthView::new(record, &state.smarthealth)).into_response())
}

/// `GET /v1/smarthealth`: activation, quota used and letters refused over quota.
pub(crate) async fn show(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    view(&state, device.kvnr).await
}

/// `POST /v1/smarthealth/activate`: opens the member's smarthealth record, for a
/// member aged 18 or over with a recovery key, who accepts the current terms.
pub(crate) async fn activate(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let request: ActivateRequest = json_body(body, "{\"terms_version\": \"…\"}")?;
    let current = state.smarthealth.terms_version.clone();
    if request.terms_version != current {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "terms-not-current",
            "Terms not current",
            format!("the current smarthealth terms are version {current}; show and accept them"),
        ));
    }
    let kvnr = device.kvnr.clone();
    let (member, recovery) = blocking(&state, move |store| {
        Ok((store.member(&kvnr)?, store.recovery_key(&kvnr)?))
    })
    .await?;
    let member = member.ok_or_else(|| Problem::not_found("member"))?;
    let at = now();
    still_insured(&member, at, "opening smarthealth")?;
    let birth_date = member.birth_date.ok_or_else(|| {
        Problem::new(
            StatusCode::FORBIDDEN,
            "birth-date-unknown",
            "Birth date unknown",
            "the insurer has no date of birth for this member; smarthealth is for members aged 18 or over",
        )
    })?;
    if birth_date.age_at(at) < SMARTHEALTH_MIN_AGE {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "smarthealth-minor",
            "Too young for smarthealth",
            "smarthealth is for members aged 18 or over; nobody opens it for someone else",
        ));
    }
    if recovery.is_none() {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "recovery-key-required",
            "Recovery key required",
            "register a recovery key (PUT /v1/keys/recovery) first, so the health record stays readable after a device change",
        ));
    }
    let kvnr = device.kvnr.clone();
    blocking(&state, move |store| {
        store.activate_smarthealth(&kvnr, &current, at)
    })
    .await?;
    view(&state, device.kvnr).await
}
