//! Group commit: concurrent writers share one durable redb commit.
//!
//! Each caller queues its change, with the letter bodies it must find durable first. If
//! no batch is being committed, the caller leads: it takes every change queued so far,
//! makes their bodies durable (one fsync of a segment for the lot), applies them in
//! one write transaction and commits it (one fsync for the lot). Otherwise it waits on
//! its own channel, which wakes it only for its own turn: its change is settled (it was
//! in a batch), or it is the first caller still waiting when a batch ends and leads the
//! next one. Nobody else is woken (a condition variable woke every waiter at every
//! batch's end, most of them to wait again), and the next leader is told before the
//! settled callers are, so the next batch does not wait for their wake-ups. A caller
//! returns only after the commit that holds its change is durable. If the batch fails
//! as a whole, each change is retried alone and settled as soon as it is committed, so
//! one change's failure (a duplicate, a missing record) is never another's, and a
//! change whose caller is told it was abandoned was not committed.
//!
//! Accepting a letter commits in a lane of its own ([`Lane`]): the SMTP client waits
//! for that commit before it hears 250, and in one queue with the pipeline's filings it
//! waited for their body segment's fsync and their larger transactions too. Each lane
//! batches and fsyncs its own bodies; redb's single writer takes the two lanes'
//! transactions in turn.

use std::sync::Mutex;
use std::sync::mpsc::{SyncSender, sync_channel};

use redb::Database;

use crate::bodies::Durable;
use crate::db::Tx;
use crate::error::StoreError;
use crate::locks::lock;

/// What a waiting caller is told: that it leads the next batch, or its change's outcome.
enum Turn<T> {
    Lead,
    Settled(Result<T, StoreError>),
}

/// One queued change and the caller waiting for its outcome.
trait Job: Send {
    /// What must be durable before the change is committed.
    fn durable(&self) -> &Durable;
    /// Applies the change inside `tx`; may run again in a fresh transaction.
    fn apply(&mut self, tx: &Tx<'_>) -> Result<(), StoreError>;
    /// Hands the outcome to the waiting caller once the transaction is settled.
    fn settle(self: Box<Self>, outcome: Result<(), StoreError>);
    /// Tells the waiting caller to lead the next batch; false if it is gone.
    fn lead(&self) -> bool;
}

/// A change with what it needs durable first, its last result and the channel its
/// caller waits on.
struct Call<T, F> {
    durable: Durable,
    change: F,
    value: Option<T>,
    reply: SyncSender<Turn<T>>,
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
        let _ = reply.send(Turn::Settled(result));
    }

    fn lead(&self) -> bool {
        // The channel holds one message and a queued call has been sent none (a call
        // is told to lead at most once, and settled only after it left the queue).
        self.reply.try_send(Turn::Lead).is_ok()
    }
}

/// The changes waiting for a commit, and whether a batch is being committed (or its
/// next leader has been told and is on its way).
#[derive(Default)]
struct Queue {
    waiting: Vec<Box<dyn Job>>,
    leading: bool,
}

/// Which queue a grouped change commits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// Accepting submissions: an SMTP client waits for these.
    Accepting,
    /// Everything else: filing, finishing, quarantining.
    Processing,
}

/// Group commit of one database.
#[derive(Default)]
pub(crate) struct Group {
    queue: Mutex<Queue>,
}

/// Ends a batch, even one whose leader panicked: the first caller still waiting leads
/// the next one, or, with nobody waiting, the next caller to come.
struct Leading<'a>(&'a Group);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        let mut queue = lock(&self.0.queue);
        while let Some(first) = queue.waiting.first() {
            if first.lead() {
                return;
            }
            // Its caller is gone (it cannot be while it waits); drop its change.
            queue.waiting.remove(0);
        }
        queue.leading = false;
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
        let (reply, turn) = sync_channel(1);
        let leads = {
            let mut queue = lock(&self.queue);
            queue.waiting.push(Box::new(Call {
                durable,
                change,
                value: None,
                reply,
            }));
            !std::mem::replace(&mut queue.leading, true)
        };
        if !leads {
            match turn.recv() {
                Ok(Turn::Settled(result)) => return result,
                Ok(Turn::Lead) => {}
                // Dropped unsettled: its batch's leader panicked.
                Err(_) => return Err(StoreError::Abandoned),
            }
        }
        // Our change is still queued (it was not settled), so the batch holds it.
        let leading = Leading(self);
        let batch = std::mem::take(&mut lock(&self.queue).waiting);
        let committed = run(db, batch);
        // The next batch starts before this one's callers are woken, one by one.
        drop(leading);
        for job in committed {
            job.settle(Ok(()));
        }
        match turn.try_recv() {
            Ok(Turn::Settled(result)) => result,
            Ok(Turn::Lead) | Err(_) => Err(StoreError::Abandoned),
        }
    }
}

/// Commits a batch together and returns its changes, to be settled as committed; if
/// that fails, commits each change alone and settles it at once (so that a panic in a
/// later one abandons none that was committed), and returns none.
fn run(db: &Database, mut batch: Vec<Box<dyn Job>>) -> Vec<Box<dyn Job>> {
    if batch.len() > 1 && make_durable(&batch).is_ok() && apply_all(db, &mut batch).is_ok() {
        return batch;
    }
    for mut job in batch {
        let one = std::slice::from_mut(&mut job);
        let outcome = make_durable(one).and_then(|()| apply_all(db, one));
        job.settle(outcome);
    }
    Vec::new()
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
    use super::Lane;
    use crate::bodies::Durable;
    use crate::events::tests::submission;
    use crate::{Store, StoreError, TrackingId};

    #[test]
    fn both_lanes_commit_while_the_other_one_does() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let ids: Vec<TrackingId> = (0..16).map(|_| TrackingId::generate().unwrap()).collect();
        std::thread::scope(|scope| {
            for (i, id) in ids.iter().enumerate() {
                let store = &store;
                scope.spawn(move || {
                    store.accept_submission(&submission(id), None).unwrap();
                    if i % 2 == 0 {
                        // The processing lane, while others still accept.
                        let counted = store
                            .count_failed_attempts(std::slice::from_ref(id))
                            .unwrap();
                        assert_eq!(counted, [Some(1)]);
                    }
                });
            }
        });
        for id in &ids {
            assert!(store.submission(id).unwrap().is_some());
        }
        assert_eq!(store.queued().unwrap().len(), 16);
        let counted = store.failed_attempts(&ids).unwrap();
        let expected: Vec<u32> = (0..16).map(|i| u32::from(i % 2 == 0)).collect();
        assert_eq!(counted, expected);
    }

    #[test]
    fn concurrent_changes_all_commit_and_a_failure_stays_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let first = TrackingId::generate().unwrap();
        store.accept_submission(&submission(&first), None).unwrap();
        let outcomes: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..16)
                .map(|i| {
                    let (store, first) = (&store, &first);
                    scope.spawn(move || {
                        let id = match i {
                            7 => first.clone(),
                            _ => TrackingId::generate().unwrap(),
                        };
                        (id.clone(), store.accept_submission(&submission(&id), None))
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

    #[test]
    fn a_change_that_panics_abandons_its_batch_and_the_next_one_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let outcomes: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..16)
                .map(|i| {
                    let store = &store;
                    scope.spawn(move || {
                        if i == 5 {
                            store.write_grouped_after(
                                Lane::Accepting,
                                Durable::none(),
                                |_| -> Result<(), StoreError> {
                                    panic!("a change that fails hard")
                                },
                            )
                        } else {
                            let id = TrackingId::generate().unwrap();
                            store.accept_submission(&submission(&id), None)
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join()).collect()
        });
        // The panic reaches the leader of the batch that held the change (its own
        // caller or another); the other changes of that batch are abandoned.
        for (i, outcome) in outcomes.iter().enumerate() {
            match outcome {
                Err(_) | Ok(Err(StoreError::Abandoned)) => {}
                Ok(Ok(())) => assert_ne!(i, 5, "the panicking change was committed"),
                Ok(Err(e)) => panic!("{e:?}"),
            }
        }
        assert!(outcomes.iter().any(|outcome| outcome.is_err()));
        let committed = outcomes
            .iter()
            .filter(|outcome| matches!(outcome, Ok(Ok(()))))
            .count();
        assert_eq!(store.queued().unwrap().len(), committed);
        // Nobody is left leading a batch that ended in a panic.
        let id = TrackingId::generate().unwrap();
        store.accept_submission(&submission(&id), None).unwrap();
        assert!(store.submission(&id).unwrap().is_some());
    }

    #[test]
    fn an_abandoned_change_was_not_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        // Which changes share the failing one's batch depends on timing: try often.
        for _ in 0..8 {
            let outcomes: Vec<_> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..16)
                    .map(|i| {
                        let store = &store;
                        scope.spawn(move || {
                            let id = TrackingId::generate().unwrap();
                            let outcome = if i == 5 {
                                // Fails its batch, then panics when retried alone.
                                let mut tries = 0;
                                store.write_grouped_after(
                                    Lane::Accepting,
                                    Durable::none(),
                                    move |_| -> Result<(), StoreError> {
                                        tries += 1;
                                        match tries {
                                            1 => Err(StoreError::Exists("nothing")),
                                            _ => panic!("a change that fails hard"),
                                        }
                                    },
                                )
                            } else {
                                store.accept_submission(&submission(&id), None)
                            };
                            (i, id, outcome)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join()).collect()
            });
            for (i, id, outcome) in outcomes.into_iter().flatten() {
                let committed = store.submission(&id).unwrap().is_some();
                match outcome {
                    Ok(()) => assert!(
                        committed,
                        "caller {i} was told of a commit that is not there"
                    ),
                    Err(StoreError::Abandoned) => {
                        assert!(
                            !committed,
                            "caller {i} was told abandoned, but it committed"
                        )
                    }
                    Err(StoreError::Exists(_)) => assert_eq!(i, 5),
                    Err(e) => panic!("caller {i}: {e:?}"),
                }
            }
        }
    }
}
