//! The watchdog of accepted letters: a letter that waits in the pipeline's queue
//! longer than `queue.delay_warning_secs` (held for maintenance, or retried after
//! transient failures) is recorded as `delayed` and its sender gets a delay DSN, once;
//! after `queue.lifetime_secs` it is given up: `expired`, and a failure DSN. A letter
//! released from the quarantine waits from its release. A letter whose bytes cannot be
//! read is given up all the same, its reports returning nothing of it.

use std::sync::Arc;
use std::time::Duration;

use kvgate_store::{
    Event, EventKind, Outbound, Spool, Store, StoreError, Submission, SubmissionState, Timestamp,
    TrackingId, now,
};
use tokio::sync::{Notify, watch};

use crate::config::QueuePolicy;
use crate::pipeline::{Transient, received};
use crate::reports::{Action, Dsn, Fate, Original};

/// The watchdog and what it needs.
pub struct Watchdog {
    store: Arc<Store>,
    spool: Spool,
    policy: QueuePolicy,
    hostname: String,
    outbound: Arc<Notify>,
}

impl Watchdog {
    /// A watchdog applying `policy`; `outbound` is notified when it queues reports.
    pub fn new(
        store: Arc<Store>,
        spool: Spool,
        policy: QueuePolicy,
        hostname: &str,
        outbound: Arc<Notify>,
    ) -> Self {
        Watchdog {
            store,
            spool,
            policy,
            hostname: hostname.to_owned(),
            outbound,
        }
    }

    /// Looks at the queue until `shutdown`, every tenth of the shorter limit (between
    /// one second and a minute).
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let shorter = self
            .policy
            .delay_warning_secs
            .min(self.policy.lifetime_secs);
        let every = Duration::from_secs(shorter / 10)
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            let this = self.clone();
            match tokio::task::spawn_blocking(move || this.look()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "watchdog cannot read the queue"),
                Err(e) => tracing::error!(error = %e, "watchdog task failed"),
            }
        }
    }

    /// One look at every queued submission (blocking).
    fn look(&self) -> Result<(), StoreError> {
        for id in self.store.queued()? {
            if let Err(e) = self.check(&id) {
                tracing::warn!(tracking = %id, error = %e, "watchdog could not act on a waiting letter");
            }
        }
        Ok(())
    }

    /// Acts on one waiting submission if it has waited too long: since it was
    /// received, or since it was last released from the quarantine.
    fn check(&self, id: &TrackingId) -> Result<(), Transient> {
        let Some(submission) = self.store.submission(id)? else {
            return Ok(());
        };
        let since = |at: Timestamp| Duration::from_millis(now().as_millis().saturating_sub(at.0));
        let shorter = self
            .policy
            .delay_warning_secs
            .min(self.policy.lifetime_secs);
        if since(submission.received_at) <= Duration::from_secs(shorter) {
            return Ok(());
        }
        let events = self.store.events(id)?;
        let waited = since(waiting_since(&submission, &events));
        if waited > Duration::from_secs(self.policy.lifetime_secs) {
            self.expire(&submission, waited)
        } else if waited > Duration::from_secs(self.policy.delay_warning_secs)
            && !events.iter().any(|e| e.kind == EventKind::Delayed)
        {
            self.warn(&submission, waited)
        } else {
            Ok(())
        }
    }

    /// Records the delay and queues the delay DSN, once.
    fn warn(&self, submission: &Submission, waited: Duration) -> Result<(), Transient> {
        let sentence = format!("waiting for {} s in the gateway's queue", waited.as_secs());
        let (events, reports) = self.report(
            submission,
            Action::Delayed,
            EventKind::Delayed,
            "waiting",
            &sentence,
        )?;
        self.store
            .record_and_report(&submission.tracking_id, events, reports)?;
        self.outbound.notify_one();
        tracing::warn!(tracking = %submission.tracking_id, waited = ?waited, "letter delayed");
        Ok(())
    }

    /// Gives the submission up: `expired`, a failure DSN, and its spool file removed.
    fn expire(&self, submission: &Submission, waited: Duration) -> Result<(), Transient> {
        let sentence = format!(
            "given up after {} s in the gateway's queue (queue.lifetime_secs)",
            waited.as_secs()
        );
        let (events, reports) = self.report(
            submission,
            Action::Failed,
            EventKind::Expired,
            "queue-lifetime",
            &sentence,
        )?;
        let id = &submission.tracking_id;
        self.store
            .finish_submission(id, SubmissionState::Failed, events, reports)?;
        self.spool.remove(id)?;
        self.outbound.notify_one();
        tracing::warn!(tracking = %id, "letter expired");
        Ok(())
    }

    /// The per-recipient events and the DSN for one outcome of a waiting submission.
    fn report(
        &self,
        submission: &Submission,
        action: Action,
        kind: EventKind,
        reason: &str,
        sentence: &str,
    ) -> Result<(Vec<Event>, Vec<Outbound>), Transient> {
        let (events, fates) = Fate::everyone(submission, (action, kind), reason, sentence);
        let id = &submission.tracking_id;
        // A letter that cannot be read is reported all the same (it must not wait
        // forever), returning nothing of it.
        let received = received(&self.store, &self.spool, id).map_or_else(
            |e| {
                tracing::warn!(tracking = %id, error = %e, "the letter as received cannot be read; its report returns nothing of it");
                Vec::new()
            },
            |(received, _)| received,
        );
        let reports = Dsn::queue_for(&self.hostname, submission, &Original::of(&received), &fates)?;
        Ok((events, reports))
    }
}

/// When a submission began to wait: when it was received, or when it was last
/// released from the quarantine (its time there is not held against it).
fn waiting_since(submission: &Submission, events: &[Event]) -> Timestamp {
    events
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::Released)
        .map_or(submission.received_at, |e| e.at)
}

#[cfg(test)]
mod tests {
    use kvgate_store::{Recipient, Submission, SubmissionState, TrackingId};

    use super::*;

    #[test]
    fn a_released_letter_waits_from_its_last_release() {
        let submission = Submission {
            tracking_id: TrackingId::generate().unwrap(),
            sender_id: "p".into(),
            mail_from: "p@p.test".into(),
            recipients: Vec::<Recipient>::new(),
            size: 1,
            received_at: Timestamp(1_000),
            state: SubmissionState::Accepted,
            ret: None,
            envid: None,
            released: false,
        };
        let at = |kind, ms| Event {
            at: Timestamp(ms),
            ..Event::new(kind)
        };
        assert_eq!(waiting_since(&submission, &[]), Timestamp(1_000));
        let events = [
            at(EventKind::Accepted, 1_000),
            at(EventKind::Quarantined, 2_000),
            at(EventKind::Released, 9_000),
            at(EventKind::Quarantined, 10_000),
            at(EventKind::Released, 50_000),
        ];
        assert_eq!(waiting_since(&submission, &events), Timestamp(50_000));
    }
}
