//! What the store has seen since it was opened, for the operators' metrics: how many
//! submissions were accepted and how many ended, by how, and why recipients failed.
//! Kept in memory only; a monitoring system adds them up across restarts as it does
//! with any counter.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::Store;
use crate::events::{Event, EventKind};
use crate::submissions::SubmissionState;

/// The counters, bumped after each commit that accepts or ends a submission.
#[derive(Default)]
pub(crate) struct Activity {
    accepted: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    quarantined: AtomicU64,
    /// Recipients failed, by the reason code of their `failed` event.
    failures: Mutex<BTreeMap<String, u64>>,
}

/// Submissions since the store was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivityCounts {
    /// Accepted (the sender was told 250).
    pub accepted: u64,
    /// Filed for at least one recipient.
    pub delivered: u64,
    /// Failed for every recipient (refused, expired, dropped from the quarantine).
    pub failed: u64,
    /// Set aside in the quarantine.
    pub quarantined: u64,
    /// Recipients a letter failed for, by reason code (`not-signed`, `quota-full`…),
    /// in the order of the codes.
    pub failures: Vec<(String, u64)>,
}

impl Activity {
    /// One submission accepted.
    pub(crate) fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// `count` submissions reached `state`.
    pub(crate) fn ended(&self, state: SubmissionState, count: u64) {
        let counter = match state {
            SubmissionState::Accepted => return,
            SubmissionState::Delivered => &self.delivered,
            SubmissionState::Failed => &self.failed,
            SubmissionState::Quarantined => &self.quarantined,
        };
        counter.fetch_add(count, Ordering::Relaxed);
    }

    /// `failed` events with these reasons were committed (see [`failure_reasons`]).
    pub(crate) fn failed_for(&self, reasons: Vec<String>) {
        if reasons.is_empty() {
            return;
        }
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        for reason in reasons {
            *failures.entry(reason).or_default() += 1;
        }
    }
}

/// The reasons of the `failed` events among `events` (`unknown` for one without).
pub(crate) fn failure_reasons(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter(|event| event.kind == EventKind::Failed)
        .map(|event| event.reason.clone().unwrap_or_else(|| "unknown".to_owned()))
        .collect()
}

impl Store {
    /// How many submissions were accepted and ended since the store was opened.
    pub fn activity(&self) -> ActivityCounts {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let activity = &self.activity;
        ActivityCounts {
            accepted: read(&activity.accepted),
            delivered: read(&activity.delivered),
            failed: read(&activity.failed),
            quarantined: read(&activity.quarantined),
            failures: activity
                .failures
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|(reason, count)| (reason.clone(), *count))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::tests::submission;
    use crate::{Quarantined, TrackingId};

    #[test]
    fn each_submission_is_counted_when_accepted_and_at_each_end() {
        let (_dir, store) = crate::testing::open();
        let id = TrackingId::generate().unwrap();
        store
            .accept_submission(&submission(&id), Some(b"letter".to_vec()))
            .unwrap();
        let entry = Quarantined::new(id.clone(), "malformed", "d".into(), 1);
        store.quarantine(entry, Vec::new(), Vec::new()).unwrap();
        assert!(store.drop_quarantined(&id, "an operator").unwrap());
        assert_eq!(
            store.activity(),
            ActivityCounts {
                accepted: 1,
                delivered: 0,
                failed: 1,
                quarantined: 1,
                failures: Vec::new(),
            }
        );
        // What did not happen is not counted.
        assert!(!store.drop_quarantined(&id, "an operator").unwrap());
        assert_eq!(store.activity().failed, 1);
    }

    #[test]
    fn failed_recipients_are_counted_by_reason() {
        let (_dir, store) = crate::testing::open();
        let failed = |recipient: &str, reason: &str| {
            Event::new(EventKind::Failed)
                .recipient(recipient)
                .reason(reason)
        };
        for reasons in [&["not-signed", "not-signed"][..], &["quota-full"]] {
            let id = TrackingId::generate().unwrap();
            store
                .accept_submission(&submission(&id), Some(b"letter".to_vec()))
                .unwrap();
            let events = reasons.iter().map(|r| failed("a@b", r)).collect();
            store
                .finish_submission(&id, SubmissionState::Failed, events, Vec::new())
                .unwrap();
        }
        let counts = store.activity();
        assert_eq!(counts.failed, 2);
        assert_eq!(
            counts.failures,
            [("not-signed".to_owned(), 2), ("quota-full".to_owned(), 1)]
        );
    }
}
