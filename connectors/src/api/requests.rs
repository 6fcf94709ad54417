//! `POST /v1/requests`: a member asks the insurer for something, queued to the back
//! office like an upload (and copied to `sent`) and tracked:
//!
//! - `insurance-certificate`, for the member or another person by KVNR; the answer for
//!   another person always goes by post, which the response says;
//! - `replacement-card`, the digital replacement insurance card: valid 14 days from
//!   the request, at most 4 per calendar year (the 5th is refused with the hotline);
//! - `health-data` for smarthealth (physician, dentist, medication data); the
//!   response says how far back the data reaches and how late billing data arrives.
//!
//! The back office answers with letters into the Postfach or smarthealth.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kvgate_store::{Cap, Kvnr, UploadKind, now};
use serde::{Deserialize, Serialize};

use super::documents::invalid;
use super::membership::still_insured;
use super::outgoing::{self, Origin, Outgoing};
use super::routes::{RawBody, blocking, json_body, parse_kvnr};
use super::{ApiState, Problem, auth};

/// How long a digital replacement insurance card is valid, in days from the request.
const CARD_VALID_DAYS: u64 = 14;
/// How many replacement cards a member may request per calendar year.
const CARDS_PER_YEAR: usize = 4;
/// The insurer's hotline, for members who need more replacement cards.
const HOTLINE: &str = "08000213213";

/// A category of health data for smarthealth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum Category {
    Physician,
    Dentist,
    Medication,
}

/// The request body.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
enum Request {
    InsuranceCertificate {
        /// Another person's KVNR; absent for the member.
        #[serde(default)]
        kvnr: Option<String>,
    },
    ReplacementCard {},
    HealthData {
        categories: Vec<Category>,
    },
}

/// What the member is told besides the tracking ID.
#[derive(Serialize)]
struct Accepted {
    tracking_id: String,
    #[serde(rename = "type")]
    request_type: &'static str,
    /// Where the answer arrives: `postfach`, `smarthealth` or `post`.
    answer_by: &'static str,
    /// For a replacement card: the end of its validity.
    #[serde(skip_serializing_if = "Option::is_none")]
    valid_until: Option<String>,
    /// What the member should know about the answer.
    notice: String,
}

/// A request as it will be sent, and what the member is told about its answer.
struct Plan {
    request_type: &'static str,
    concerns: Kvnr,
    details: Option<serde_json::Value>,
    cap: Option<Cap>,
    answer_by: &'static str,
    valid_until: Option<String>,
    notice: String,
}

impl Plan {
    /// A request of `request_type` about `concerns`, answered by `answer_by`.
    fn new(
        request_type: &'static str,
        concerns: Kvnr,
        answer_by: &'static str,
        notice: impl Into<String>,
    ) -> Self {
        Plan {
            request_type,
            concerns,
            details: None,
            cap: None,
            answer_by,
            valid_until: None,
            notice: notice.into(),
        }
    }
}

/// `POST /v1/requests`: checks, seals and queues one request; `201` with its tracking
/// ID and what the member should know about the answer.
pub(crate) async fn create(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let request: Request = json_body(
        body,
        "{\"type\": \"insurance-certificate\" | \"replacement-card\" | \"health-data\", …}",
    )?;
    let own = device.kvnr.clone();
    let at = now();
    let kvnr = own.clone();
    let member = blocking(&state, move |store| store.member(&kvnr))
        .await?
        .ok_or_else(|| Problem::unauthorized("the member's account no longer exists"))?;
    still_insured(&member, at, "a request to the insurer")?;
    let plan = match request {
        Request::InsuranceCertificate { kvnr } => {
            let concerns = kvnr.as_deref().map(|k| parse_kvnr(k.trim())).transpose()?;
            match concerns.filter(|k| *k != own) {
                Some(other) => Plan::new(
                    "insurance-certificate",
                    other,
                    "post",
                    "the insurance certificate for another person is always sent by post",
                ),
                None => Plan::new(
                    "insurance-certificate",
                    own.clone(),
                    "postfach",
                    "the insurance certificate arrives in your Postfach",
                ),
            }
        }
        Request::ReplacementCard {} => {
            let until = at.plus_days(CARD_VALID_DAYS).to_rfc3339();
            Plan {
                details: Some(serde_json::json!({ "valid_until": until })),
                cap: Some(Cap {
                    since: at.start_of_year(),
                    max: CARDS_PER_YEAR,
                }),
                valid_until: Some(until.clone()),
                ..Plan::new(
                    "replacement-card",
                    own.clone(),
                    "postfach",
                    format!(
                        "the digital replacement insurance card arrives in your Postfach and is valid until {until}"
                    ),
                )
            }
        }
        Request::HealthData { categories } => {
            if categories.is_empty() {
                return Err(invalid(
                    "missing-categories",
                    "No health data chosen",
                    "categories must name at least one of physician, dentist, medication",
                ));
            }
            let mut unique = categories.clone();
            unique.sort_by_key(|c| *c as u8);
            unique.dedup();
            if unique.len() != categories.len() {
                return Err(invalid(
                    "duplicate-categories",
                    "Category given twice",
                    "each of physician, dentist, medication may be named once",
                ));
            }
            if !member.smarthealth {
                return Err(Problem::new(
                    StatusCode::CONFLICT,
                    "smarthealth-not-active",
                    "smarthealth not activated",
                    "health data goes into smarthealth; activate smarthealth first",
                ));
            }
            Plan {
                details: Some(serde_json::json!({ "categories": unique })),
                ..Plan::new(
                    "health-data",
                    own.clone(),
                    "smarthealth",
                    "the data arrives in smarthealth: treatment data (physician, dentist) covers the last four years, medication data the last six; billing data reaches the insurer 6 to 9 months after the treatment, so the most recent months are missing",
                )
            }
        }
    };
    let outgoing = Outgoing {
        from: Origin::Member(own),
        kind: UploadKind::Request,
        concerns: plan.concerns,
        document_type: plan.request_type.to_owned(),
        note: None,
        details: plan.details,
        text: None,
        files: Vec::new(),
        cap: plan.cap,
        thread: None,
    };
    let tracking_id = outgoing::send(&state, outgoing).await?.ok_or_else(|| {
        Problem::new(
            StatusCode::CONFLICT,
            "replacement-card-limit",
            "Replacement card limit reached",
            format!(
                "at most {CARDS_PER_YEAR} digital replacement insurance cards can be requested per calendar year; please call the hotline {HOTLINE}"
            ),
        )
    })?;
    let accepted = Accepted {
        tracking_id: tracking_id.to_string(),
        request_type: plan.request_type,
        answer_by: plan.answer_by,
        valid_until: plan.valid_until,
        notice: plan.notice,
    };
    Ok((StatusCode::CREATED, axum::Json(accepted)).into_response())
}
