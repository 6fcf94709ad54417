//! `GET /v1/tracking/{id}`: the tracking history of one of the member's own uploads,
//! or of a letter addressed to the member (only the events about the member's own
//! addresses and the letter as a whole). Any other tracking ID is 404, whether it
//! exists or not.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use kvgate_store::{Event, TrackingId};
use serde::Serialize;

use super::param::Param;
use super::routes::blocking;
use super::{ApiState, Problem, auth};

#[derive(Serialize)]
struct EventView {
    seq: u32,
    at: String,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

impl From<Event> for EventView {
    fn from(e: Event) -> Self {
        EventView {
            seq: e.seq,
            at: e.at.to_rfc3339(),
            kind: e.kind.as_str(),
            reason: e.reason,
            detail: e.detail,
        }
    }
}

#[derive(Serialize)]
struct Trail {
    tracking_id: String,
    /// The latest event's kind.
    state: &'static str,
    events: Vec<EventView>,
}

/// `GET /v1/tracking/{id}`: the events of a submission the member may follow.
pub(crate) async fn show(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Param(id): Param,
) -> Result<Response, Problem> {
    let device = auth::device(&state, &headers).await?;
    let id: TrackingId = id.parse().map_err(|_| Problem::not_found("submission"))?;
    let tracking_id = id.to_string();
    let events = blocking(&state, move |store| {
        store.member_tracking(&device.kvnr, &id)
    })
    .await?
    .ok_or_else(|| Problem::not_found("submission"))?;
    Ok(trail(tracking_id, events))
}

/// The tracking trail of `tracking_id` as the API shows it.
pub(crate) fn trail(tracking_id: String, events: Vec<Event>) -> Response {
    let trail = Trail {
        tracking_id,
        state: events.last().map_or("accepted", |e| e.kind.as_str()),
        events: events.into_iter().map(EventView::from).collect(),
    };
    axum::Json(trail).into_response()
}
