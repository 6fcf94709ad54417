//! Group commit: concurrent writers share one durable redb commit.
//!
//! Each caller queues its change, with the letter bodies it must find durable first. If
//! no batch is being committed, the caller leads: it takes every change queued so far,
//! makes their bodies durable (one fsync of a segment for the lot), applies them in
//! one write transaction and commits it (one fsync for the lot). Otherwise it waits until the running batch is
//! done, and then either finds its own change settled (it was in that batch) or leads
//! the next one. Waiting is on a condition variable, never on the leader's lock, so a
//! caller whose change is committed returns at once instead of queueing behind later
//! batches. A caller returns only after the commit that holds its change is durable. If
//! the batch fails as a whole, each change is retried alone, so one change's failure (a
//! duplicate, a missing record) is never another's.

use std::sync::mpsc::{SyncSender, TryRecvError, sync_channel};
use std::sync::{Condvar, Mutex, PoisonError};

use redb::Database;

use crate::bodies::Durable;
use crate::db::Tx;
use crate::error::StoreError;
use crate::locks::lock;

/// One queued change and the caller waiting for its outcome.
trait Job: Send {
    /// What must be durable before the change is committed.
    fn durable(&self) -> &Durable;
    /// Applies the change inside `tx`; may run again in a fresh transaction.
    fn apply(&mut self, tx: &Tx<'_>) -> Result<(), StoreError>;
    /// Hands the outcome to the waiting caller once the transaction is settled.
    fn settle(self: Box<Self>, outcome: Result<(), StoreError>);
}

/// A change with what it needs durable first, its last result and the channel its
/// caller waits on.
struct Call<T, F> {
    durable: Durable,
    change: F,
    value: Option<T>,
    reply: SyncSender<Result<T, StoreError>>,
}

impl<T, F> Job for Call<T, F>
where
    T: Send,
    F: FnMut(&Tx<'_>) -> Result<T, StoreError> + Send,
{
    fn durable(&self) -> &Durable {
        &self.durable
    }

    fn apply(&mut self, tx: &Tx<'_>) -> Result<(), StoreError> {
        self.value = Some((self.change)(tx)?);
        Ok(())
    }

    fn settle(self: Box<Self>, outcome: Result<(), StoreError>) {
        let Call { value, reply, .. } = *self;
        let result = outcome.and_then(|()| value.ok_or(StoreError::Abandoned));
        // The caller waits on the other end until it gets this; if it is gone there is
        // nobody left to tell.
        let _ = reply.send(result);
    }
}

/// The changes waiting for a commit, and whether a batch is being committed.
#[derive(Default)]
struct Queue {
    waiting: Vec<Box<dyn Job>>,
    leading: bool,
}

/// Group commit of one database: the queue, and a condition variable rung whenever a
/// batch is done.
#[derive(Default)]
pub(crate) struct Group {
    queue: Mutex<Queue>,
    done: Condvar,
}

/// Ends a batch, even one whose leader panicked: the next caller may lead.
struct Leading<'a>(&'a Group);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        lock(&self.0.queue).leading = false;
        self.0.done.notify_all();
    }
}

impl Group {
    /// Commits `change` durably in `db` once `durable` is, batched with whatever other
    /// callers queued meanwhile (blocking). `change` must be repeatable: it may run in
    /// a batch that fails and then again alone.
    pub(crate) fn commit<T, F>(
        &self,
        db: &Database,
        durable: Durable,
        change: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, outcome) = sync_channel(1);
        let mut queue = lock(&self.queue);
        queue.waiting.push(Box::new(Call {
            durable,
            change,
            value: None,
            reply,
        }));
        loop {
            match outcome.try_recv() {
                Ok(result) => return result,
                // Dropped unsettled: its batch's leader panicked.
                Err(TryRecvError::Disconnected) => return Err(StoreError::Abandoned),
                Err(TryRecvError::Empty) => {}
            }
            if queue.leading {
                queue = self
                    .done
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // Our change is still queued (it was not settled), so the batch holds it.
            let batch = std::mem::take(&mut queue.waiting);
            queue.leading = true;
            drop(queue);
            let leading = Leading(self);
            run(db, batch);
            drop(leading);
            queue = lock(&self.queue);
        }
    }
}

/// Commits a batch together, or each change alone if that fails, and settles them.
fn run(db: &Database, mut batch: Vec<Box<dyn Job>>) {
    if batch.len() > 1 && make_durable(&batch).is_ok() && apply_all(db, &mut batch).is_ok() {
        for job in batch {
            job.settle(Ok(()));
        }
        return;
    }
    for mut job in batch {
        let one = std::slice::from_mut(&mut job);
        let outcome = make_durable(one).and_then(|()| apply_all(db, one));
        job.settle(outcome);
    }
}

/// Makes what `jobs` need durable; each segment's fsync runs once, the others find
/// their bodies covered by it.
fn make_durable(jobs: &[Box<dyn Job>]) -> Result<(), StoreError> {
    for job in jobs {
        job.durable().wait()?;
    }
    Ok(())
}

/// Applies `jobs` in one write transaction and commits it; on error nothing is
/// committed (the transaction is dropped, which aborts it).
fn apply_all(db: &Database, jobs: &mut [Box<dyn Job>]) -> Result<(), StoreError> {
    let tx = db.begin_write()?;
    {
        // The tables stay open for the whole batch and close before the commit.
        let tables = Tx::new(&tx);
        for job in jobs.iter_mut() {
            job.apply(&tables)?;
        }
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::events::tests::submission;
    use crate::{Handoff, Store, StoreError, TrackingId};

    #[test]
    fn concurrent_changes_all_commit_and_a_failure_stays_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let first = TrackingId::generate().unwrap();
        store
            .accept_submission(&submission(&first), None, Handoff::Queue)
            .unwrap();
        let outcomes: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..16)
                .map(|i| {
                    let (store, first) = (&store, &first);
                    scope.spawn(move || {
                        let id = match i {
                            7 => first.clone(),
                            _ => TrackingId::generate().unwrap(),
                        };
                        (
                            id.clone(),
                            store.accept_submission(&submission(&id), None, Handoff::Queue),
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (i, (id, outcome)) in outcomes.iter().enumerate() {
            if i == 7 {
                assert!(matches!(outcome, Err(StoreError::Exists(_))), "{outcome:?}");
            } else {
                assert!(outcome.is_ok(), "{outcome:?}");
                assert!(store.submission(id).unwrap().is_some());
            }
        }
        assert_eq!(store.queued().unwrap().len(), 16);
    }
}
