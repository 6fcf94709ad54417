//! What a member whose membership has ended may no longer ask for: after its end the
//! Postfach stays readable for three months and smarthealth for one (DESIGN, "Member
//! facts"), but requests to the insurer and a new smarthealth record are for insured
//! members.

use axum::http::StatusCode;
use kvgate_store::{Member, Timestamp};

use super::Problem;

/// 403 `membership-ended` if the membership of `member` ended at or before `at`;
/// `what` names what was asked for.
pub(crate) fn still_insured(member: &Member, at: Timestamp, what: &str) -> Result<(), Problem> {
    match member.ended_at {
        Some(ended) if ended <= at => {
            let day = ended.to_rfc3339();
            let day = day.get(..10).unwrap_or(&day);
            Err(Problem::new(
                StatusCode::FORBIDDEN,
                "membership-ended",
                "Membership ended",
                format!(
                    "the membership ended on {day}; {what} is for insured members (the Postfach stays readable for three months after the end, smarthealth for one)"
                ),
            ))
        }
        _ => Ok(()),
    }
}
