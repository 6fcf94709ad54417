//! What the store has seen since it was opened, for the operators' metrics: how many
//! submissions were accepted and how many ended, by how. Kept in memory only; a
//! monitoring system adds them up across restarts as it does with any counter.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::Store;
use crate::submissions::SubmissionState;

/// The counters, bumped after each commit that accepts or ends a submission.
#[derive(Default)]
pub(crate) struct Activity {
    accepted: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    quarantined: AtomicU64,
}

/// Submissions since the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActivityCounts {
    /// Accepted (the sender was told 250).
    pub accepted: u64,
    /// Filed for at least one recipient.
    pub delivered: u64,
    /// Failed for every recipient (refused, expired, dropped from the quarantine).
    pub failed: u64,
    /// Set aside in the quarantine.
    pub quarantined: u64,
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
            }
        );
        // What did not happen is not counted.
        assert!(!store.drop_quarantined(&id, "an operator").unwrap());
        assert_eq!(store.activity().failed, 1);
    }
}
