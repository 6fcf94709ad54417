//! The watchdog of accepted letters: a letter that waits in the pipeline's queue
//! longer than `queue.delay_warning_secs` (held for maintenance, or retried after
//! transient failures) is recorded as `delayed` and its sender gets a delay DSN, once;
//! after `queue.lifetime_secs` it is given up: `expired`, and a failure DSN.

use std::sync::Arc;
use std::time::Duration;

use kvgate_store::{
    Event, EventKind, Outbound, Spool, Store, StoreError, Submission, SubmissionState, TrackingId,
    now,
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

    /// Acts on one waiting submission if it has waited too long.
    fn check(&self, id: &TrackingId) -> Result<(), Transient> {
        let Some(submission) = self.store.submission(id)? else {
            return Ok(());
        };
        let waited = Duration::from_millis(
            now()
                .as_millis()
                .saturating_sub(submission.received_at.as_millis()),
        );
        if waited > Duration::from_secs(self.policy.lifetime_secs) {
            self.expire(&submission, waited)
        } else if waited > Duration::from_secs(self.policy.delay_warning_secs)
            && !self
                .store
                .events(id)?
                .iter()
                .any(|e| e.kind == EventKind::Delayed)
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
        let (received, _) = received(&self.store, &self.spool, &submission.tracking_id)?;
        let reports = Dsn::queue_for(&self.hostname, submission, &Original::of(&received), &fates)?;
        Ok((events, reports))
    }
}
