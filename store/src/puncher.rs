//! The background puncher: the bodies of letters that are done with (accepted letters
//! once processed, bodies of commits that did not land) are punched out of their
//! segments a moment later on a thread of its own, adjacent ones together.
//!
//! A punch takes the segment's inode lock, which appending a letter also needs, and
//! holds it while the file system frees the blocks: one punch per processed letter
//! kept the pipeline waiting on that lock for a third of its time at 4 KiB letters.
//! Gathered for [`GATHER`], the ranges of letters processed one after another are
//! mostly adjacent and go in one punch. Whatever is pending when the store closes is
//! punched before it does; a crash leaves it to the start-up sweep.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::bodies::Extent;
use crate::locks::lock;

/// How long the puncher gathers ranges before it punches them.
const GATHER: Duration = Duration::from_millis(20);

/// How often a caller waiting for the punches checks that the thread still runs.
const SETTLE_CHECK: Duration = Duration::from_millis(100);

/// The puncher thread and what it is given.
#[derive(Debug)]
pub(crate) struct Puncher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// What the callers and the thread share.
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Rung when ranges are added, when the store closes and after each punch.
    changed: Condvar,
}

/// The ranges waiting, and whether the thread is punching or must end.
#[derive(Debug, Default)]
struct State {
    pending: Vec<Extent>,
    punching: bool,
    stop: bool,
}

impl Shared {
    /// The state, consistent even if a holder panicked.
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Waits for `changed`.
    fn wait<'a>(&self, state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed
            .wait(state)
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Puncher {
    /// Starts the thread; `punch` punches the ranges it is given (and logs a failure).
    pub(crate) fn start(punch: impl Fn(Vec<Extent>) + Send + 'static) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("puncher".into())
            .spawn(move || run(&worker, punch))?;
        Ok(Puncher {
            shared,
            thread: Some(thread),
        })
    }

    /// Punches `extents` within moments.
    pub(crate) fn punch_soon(&self, extents: &[Extent]) {
        if extents.is_empty() {
            return;
        }
        self.shared.lock().pending.extend_from_slice(extents);
        self.shared.changed.notify_all();
    }

    /// Waits until every range given so far is punched (or the thread has ended: a
    /// panic leaves its ranges to the start-up sweep).
    pub(crate) fn settle(&self) {
        let ended = || self.thread.as_ref().is_none_or(JoinHandle::is_finished);
        let mut state = self.shared.lock();
        while (!state.pending.is_empty() || state.punching) && !ended() {
            state = self
                .shared
                .changed
                .wait_timeout(state, SETTLE_CHECK)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Drop for Puncher {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            // A panic in `punch` leaves its ranges to the start-up sweep.
            let _ = thread.join();
        }
    }
}

/// The thread: gathers ranges, punches them, until told to stop with none left.
fn run(shared: &Shared, punch: impl Fn(Vec<Extent>)) {
    let mut state = shared.lock();
    loop {
        while state.pending.is_empty() && !state.stop {
            state = shared.wait(state);
        }
        if state.pending.is_empty() {
            return;
        }
        if !state.stop {
            drop(state);
            std::thread::sleep(GATHER);
            state = shared.lock();
        }
        let batch = std::mem::take(&mut state.pending);
        state.punching = true;
        drop(state);
        punch(batch);
        state = shared.lock();
        state.punching = false;
        shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_for_the_punches_ends_when_the_thread_has_ended() {
        let extent: Extent = serde_json::from_str(r#"{"segment":0,"offset":0,"len":1}"#).unwrap();
        let puncher = Puncher::start(|_| panic!("the punch panicked")).unwrap();
        puncher.punch_soon(&[extent]);
        // Returns once the thread is gone, its range left to the start-up sweep.
        puncher.settle();
        assert!(puncher.thread.as_ref().unwrap().is_finished());
    }
}
