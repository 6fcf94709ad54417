//! Poison letters never stop the pipeline: letters are processed on a pool of worker
//! threads under supervision.
//!
//! - Attempts that end abnormally are counted durably. A worker records the letter it
//!   processes in its slot of the running file ([`RunningFile`]); at start, the letters
//!   the slots name were running when the gateway stopped (an abort in a library, the
//!   kernel's OOM killer, `kill -9`), and each has that attempt counted. A letter that
//!   reaches `max_attempts` so is quarantined before it runs again. Letters that only
//!   waited for a worker are not counted. Newly accepted letters go straight to the
//!   workers ([`Intake`]); letters found on the queue (at start, released from
//!   quarantine, retried) are handed out by a scan every 30 seconds.
//! - A panic is caught on its worker and counted; the letter is retried until
//!   `max_attempts`, then quarantined with the panic message.
//! - A letter still running after `time_limit_secs` is quarantined at once and its
//!   worker abandoned (a thread cannot be stopped; a fresh worker takes its place, and
//!   the old one exits when its call returns; its result cannot land, since a
//!   submission ends exactly once).
//! - A transient failure (disk, an unreachable revocation responder) is not held
//!   against the letter: it is retried later.
//!
//! Quarantine keeps the letter as received and sends the sender a failure DSN;
//! `kvgate quarantine` lists, shows, releases and drops quarantined letters.

use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use kvgate_store::{StoreError, TrackingId};
use tokio::sync::watch;

use crate::config::PipelinePolicy;
use crate::pipeline::{Pipeline, Transient};
use crate::running::RunningFile;

/// How often the queue is looked at even without a wake-up (retries of transient
/// failures).
const RESCAN: Duration = Duration::from_secs(30);
/// How often running letters are checked against the time limit.
const TICK: Duration = Duration::from_secs(1);
/// How long shutdown waits for letters being processed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A letter handed to the workers, with its attempts that ended abnormally so far.
struct Job {
    id: TrackingId,
    attempts: u32,
}

/// A letter on a worker.
struct Running {
    since: Instant,
    worker: u64,
    attempts: u32,
}

/// What the workers share with the supervisor.
#[derive(Default)]
struct Board {
    /// Letters being accepted, to be handed over once committed: the queue scan
    /// leaves them alone.
    incoming: HashSet<TrackingId>,
    /// Letters waiting for a worker.
    waiting: VecDeque<Job>,
    /// Letters on a worker.
    running: HashMap<TrackingId, Running>,
    /// Workers given up on (their letter ran over the time limit).
    abandoned: HashSet<u64>,
    /// Set at shutdown: workers stop taking letters.
    closed: bool,
}

/// The pool: the board, a condition variable for workers waiting for letters, and
/// one for shutdown waiting for the running ones.
#[derive(Default)]
struct Pool {
    board: Mutex<Board>,
    work: Condvar,
    drained: Condvar,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, Board> {
        // A worker panic is caught before it could poison the lock; if one did, the
        // board is still consistent (every change is a single insert or remove).
        self.board.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next letter for worker `me`, once there is one; `None` when the pool is
    /// closed.
    fn take(&self, me: u64) -> Option<Job> {
        let mut board = self.lock();
        loop {
            if board.closed {
                return None;
            }
            if let Some(job) = board.waiting.pop_front() {
                let running = Running {
                    since: Instant::now(),
                    worker: me,
                    attempts: job.attempts,
                };
                board.running.insert(job.id.clone(), running);
                return Some(job);
            }
            board = self
                .work
                .wait(board)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Puts `jobs` on the board and wakes a worker for each; false if the pool is
    /// closed (they stay queued for the next start).
    fn give(&self, jobs: Vec<Job>) -> bool {
        self.give_locked(&mut self.lock(), jobs)
    }

    /// [`Pool::give`] on a board already locked.
    fn give_locked(&self, board: &mut Board, jobs: Vec<Job>) -> bool {
        if board.closed {
            return false;
        }
        for job in jobs {
            board.waiting.push_back(job);
            self.work.notify_one();
        }
        true
    }

    /// Takes a letter that is no longer running off the board, telling shutdown.
    fn finished(&self, board: &mut Board, id: &TrackingId) {
        board.running.remove(id);
        if board.closed {
            self.drained.notify_all();
        }
    }

    /// Records that worker `me` is done with `id`; `false` if the worker was
    /// abandoned meanwhile (it must exit: another took its place).
    fn done(&self, id: &TrackingId, me: u64) -> bool {
        let mut board = self.lock();
        if board.abandoned.remove(&me) {
            return false;
        }
        self.finished(&mut board, id);
        true
    }
}

/// Hands newly accepted letters straight to the workers, past the queue.
#[derive(Clone, Default)]
pub struct Intake {
    pool: Arc<Pool>,
}

impl Intake {
    /// Announces that `id` is being accepted. Until the admission is handed over or
    /// dropped, the queue scan leaves the letter alone: it would hand out a letter
    /// whose acceptance has just committed a second time.
    pub fn admit(&self, id: &TrackingId) -> Admission {
        self.pool.lock().incoming.insert(id.clone());
        Admission {
            pool: self.pool.clone(),
            id: Some(id.clone()),
        }
    }
}

/// A letter being accepted. Dropped without being handed over, it is withdrawn (its
/// acceptance failed).
pub struct Admission {
    pool: Arc<Pool>,
    id: Option<TrackingId>,
}

impl Admission {
    /// Hands the accepted letter to the workers; false if the pipeline is shutting
    /// down (the letter stays queued for the next start).
    pub fn hand_over(mut self) -> bool {
        let Some(id) = self.id.take() else {
            return false;
        };
        let mut board = self.pool.lock();
        board.incoming.remove(&id);
        let job = Job { id, attempts: 0 };
        self.pool.give_locked(&mut board, vec![job])
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(id) = &self.id {
            self.pool.lock().incoming.remove(id);
        }
    }
}

/// Runs the pipeline's letters on worker threads, under supervision.
pub struct Supervisor {
    pipeline: Arc<Pipeline>,
    policy: PipelinePolicy,
    pool: Arc<Pool>,
    running: RunningFile,
    /// The ID the last worker got.
    last_worker: AtomicU64,
}

impl Supervisor {
    /// Supervises `pipeline` under `policy`, taking new letters from `intake` too;
    /// its workers record their letters in `running`.
    pub fn new(
        pipeline: Arc<Pipeline>,
        policy: PipelinePolicy,
        intake: &Intake,
        running: RunningFile,
    ) -> Self {
        Supervisor {
            pipeline,
            policy,
            pool: intake.pool.clone(),
            running,
            last_worker: AtomicU64::new(0),
        }
    }

    /// Counts an attempt against each of `crashed` (the letters running when the
    /// gateway last stopped), then works the queue until `shutdown`: at start (letters
    /// left by a crash) and every 30 seconds (released and retried letters); checks
    /// the time limit every second. New letters come through the [`Intake`].
    pub async fn run(
        self: Arc<Self>,
        crashed: Vec<TrackingId>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let this = self.clone();
        match tokio::task::spawn_blocking(move || this.count_crashed(&crashed)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot count the attempts the last stop ended")
            }
            Err(e) => {
                tracing::error!(error = %e, "counting the attempts the last stop ended failed")
            }
        }
        for _ in 0..self.pipeline.workers() {
            self.spawn_worker();
        }
        let mut rescan = tokio::time::interval(RESCAN);
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = rescan.tick() => self.dispatch().await,
                _ = tick.tick() => self.enforce_time_limit().await,
                _ = shutdown.changed() => break,
            }
        }
        let this = self.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || this.close()).await {
            tracing::error!(error = %e, "pipeline shutdown failed");
        }
    }

    /// Starts one worker thread.
    fn spawn_worker(self: &Arc<Self>) {
        let me = self.last_worker.fetch_add(1, Ordering::Relaxed) + 1;
        let this = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("pipeline-{me}"))
            .spawn(move || this.work(me));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a pipeline worker");
        }
    }

    /// Counts the attempt the gateway's last stop ended for each of `crashed` still
    /// queued, and quarantines those whose attempts are used up.
    fn count_crashed(&self, crashed: &[TrackingId]) -> Result<(), StoreError> {
        if crashed.is_empty() {
            return Ok(());
        }
        let counts = self.pipeline.store().count_failed_attempts(crashed)?;
        for (id, count) in crashed.iter().zip(counts) {
            let Some(attempts) = count else { continue };
            tracing::warn!(tracking = %id, attempts, "the gateway stopped while processing this letter");
            if attempts >= self.policy.max_attempts {
                let detail = format!(
                    "{attempts} attempts ended without a result (the gateway stopped while processing it)"
                );
                if let Err(e) = self.quarantine(id, "processing-crashed", detail, attempts) {
                    tracing::error!(tracking = %id, error = %e, "cannot quarantine");
                }
            }
        }
        Ok(())
    }

    /// A worker: processes letters until the pool closes or it is abandoned.
    fn work(&self, me: u64) {
        while let Some(job) = self.pool.take(me) {
            if let Err(e) = self.running.start(me, &job.id) {
                tracing::warn!(tracking = %job.id, error = %e, "cannot record the letter as running; a crash now would not be counted against it");
            }
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                self.pipeline.process(&job.id, job.attempts + 1)
            }));
            if !self.pool.done(&job.id, me) {
                tracing::warn!(tracking = %job.id, "an abandoned worker finished; it exits");
                return;
            }
            if let Err(e) = self.running.end(me) {
                tracing::warn!(tracking = %job.id, error = %e, "cannot record the letter as done");
            }
            let settled = match outcome {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => {
                    tracing::warn!(tracking = %job.id, error = %e, "processing failed; will retry");
                    Ok(())
                }
                // What the panic said stays out of the records and the DSN: it may
                // quote the letter (the panic hook logs where it happened).
                Err(_) => self.panicked(&job.id),
            };
            if let Err(e) = settled {
                tracing::error!(tracking = %job.id, error = %e, "cannot record the outcome of processing");
            }
        }
    }

    /// Hands the queued letters that no worker has to the workers.
    async fn dispatch(self: &Arc<Self>) {
        let this = self.clone();
        match tokio::task::spawn_blocking(move || this.dispatch_blocking()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "pipeline cannot read its queue"),
            Err(e) => tracing::error!(error = %e, "pipeline dispatch failed"),
        }
    }

    /// Counts a panic against `id` and quarantines it if its attempts are used up.
    fn panicked(&self, id: &TrackingId) -> Result<(), Transient> {
        let counted = self
            .pipeline
            .store()
            .count_failed_attempts(std::slice::from_ref(id))?;
        let Some(Some(attempts)) = counted.first().copied() else {
            return Ok(());
        };
        tracing::error!(tracking = %id, attempts, "processing panicked");
        if attempts < self.policy.max_attempts {
            return Ok(());
        }
        let detail = format!(
            "processing failed {attempts} times: the gateway hit a fault of its own (the operator's log says where)"
        );
        self.quarantine(id, "processing-failed", detail, attempts)
    }

    fn dispatch_blocking(&self) -> Result<(), StoreError> {
        let store = self.pipeline.store();
        let fresh: Vec<TrackingId> = {
            let queued = store.queued()?;
            let board = self.pool.lock();
            let waiting: HashSet<&TrackingId> = board.waiting.iter().map(|job| &job.id).collect();
            queued
                .into_iter()
                .filter(|id| {
                    !board.running.contains_key(id)
                        && !waiting.contains(id)
                        && !board.incoming.contains(id)
                })
                .collect()
        };
        if fresh.is_empty() {
            return Ok(());
        }
        let counts = store.failed_attempts(&fresh)?;
        let jobs = fresh
            .into_iter()
            .zip(counts)
            .map(|(id, attempts)| Job { id, attempts })
            .collect();
        self.pool.give(jobs);
        Ok(())
    }

    /// Quarantines every letter running longer than the time limit, and replaces
    /// its worker. The letter stays on the board as running until it is quarantined,
    /// so that it is not handed out again meanwhile.
    async fn enforce_time_limit(self: &Arc<Self>) {
        let limit = Duration::from_secs(self.policy.time_limit_secs);
        let overdue: Vec<(TrackingId, u64, u32)> = {
            let mut board = self.pool.lock();
            let overdue: Vec<(TrackingId, u64, u32)> = board
                .running
                .iter()
                .filter(|(_, r)| r.since.elapsed() > limit && !board.abandoned.contains(&r.worker))
                .map(|(id, r)| (id.clone(), r.worker, r.attempts + 1))
                .collect();
            overdue
                .into_iter()
                .map(|(id, worker, attempts)| {
                    board.abandoned.insert(worker);
                    (id, worker, attempts)
                })
                .collect()
        };
        for (id, worker, attempts) in overdue {
            // Its slot no longer names a letter running: the worker is given up on.
            if let Err(e) = self.running.end(worker) {
                tracing::warn!(tracking = %id, error = %e, "cannot record the letter as done");
            }
            tracing::error!(tracking = %id, limit_secs = limit.as_secs(), "processing ran over its time limit; quarantined");
            self.spawn_worker();
            let this = self.clone();
            let detail = format!(
                "processing took longer than the limit of {} s",
                limit.as_secs()
            );
            let letter = id.clone();
            let quarantined = tokio::task::spawn_blocking(move || {
                this.quarantine(&letter, "processing-timeout", detail, attempts)
            })
            .await;
            match quarantined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(tracking = %id, error = %e, "cannot quarantine"),
                Err(e) => tracing::error!(tracking = %id, error = %e, "quarantining failed"),
            }
            let mut board = self.pool.lock();
            self.pool.finished(&mut board, &id);
        }
    }

    /// Quarantines `id` unless it ended meanwhile.
    fn quarantine(
        &self,
        id: &TrackingId,
        reason: &'static str,
        detail: String,
        attempts: u32,
    ) -> Result<(), Transient> {
        match self.pipeline.quarantine(id, reason, &detail, attempts) {
            Err(Transient::Store(StoreError::NotFound(_))) => Ok(()),
            other => other,
        }
    }

    /// Stops taking letters (those waiting stay queued for the next start) and waits
    /// (a while) for the running ones.
    fn close(&self) {
        {
            let mut board = self.pool.lock();
            board.closed = true;
            self.pool.work.notify_all();
            board.waiting.clear();
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let mut board = self.pool.lock();
        while !board.running.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    running = board.running.len(),
                    "shutting down with letters in processing; they are retried at start"
                );
                return;
            }
            board = self
                .pool
                .drained
                .wait_timeout(board, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admitted_letter_waits_for_its_admission_and_is_handed_out_once() {
        let intake = Intake::default();
        let pool = &intake.pool;
        let id = TrackingId::generate().unwrap();
        let admission = intake.admit(&id);
        // Being accepted: the queue scan leaves it alone, no worker has it yet.
        assert!(pool.lock().incoming.contains(&id));
        assert!(pool.lock().waiting.is_empty());
        assert!(admission.hand_over());
        assert!(pool.lock().incoming.is_empty());
        let job = pool.take(1).unwrap();
        assert_eq!((job.id, job.attempts), (id.clone(), 0));
        assert!(pool.done(&id, 1));

        // Acceptance failed: withdrawn, nothing handed out.
        let refused = TrackingId::generate().unwrap();
        drop(intake.admit(&refused));
        assert!(pool.lock().incoming.is_empty());
        assert!(pool.lock().waiting.is_empty());

        // Shutting down: refused, so that the caller takes its attempt back.
        pool.lock().closed = true;
        assert!(!intake.admit(&refused).hand_over());
        assert!(pool.lock().waiting.is_empty());
        assert!(pool.take(2).is_none());
    }
}
