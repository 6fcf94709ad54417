//! Logging an event that a flood repeats: the first occurrence, then at most one line
//! an interval, saying how many were not logged meanwhile.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// One kind of event, logged at most once per interval.
pub(crate) struct Throttle {
    every: Duration,
    state: Mutex<State>,
}

struct State {
    /// When an occurrence was last logged.
    logged: Option<Instant>,
    /// Occurrences since then, not logged.
    unlogged: u64,
}

impl Throttle {
    /// Logs at most once every `every`.
    pub(crate) const fn new(every: Duration) -> Self {
        Throttle {
            every,
            state: Mutex::new(State {
                logged: None,
                unlogged: 0,
            }),
        }
    }

    /// Counts one occurrence; `Some(n)` if this one is to be logged, `n` being how
    /// many occurred since the last logged one and were not.
    pub(crate) fn occur(&self) -> Option<u64> {
        self.occur_at(Instant::now())
    }

    fn occur_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state
            .logged
            .is_some_and(|logged| now.duration_since(logged) < self.every)
        {
            state.unlogged += 1;
            return None;
        }
        state.logged = Some(now);
        Some(std::mem::take(&mut state.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_one_line_an_interval_with_the_count_it_left_out() {
        let throttle = Throttle::new(Duration::from_secs(10));
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        assert_eq!(throttle.occur_at(at(0)), Some(0));
        assert_eq!(throttle.occur_at(at(1)), None);
        assert_eq!(throttle.occur_at(at(9)), None);
        assert_eq!(throttle.occur_at(at(10)), Some(2));
        assert_eq!(throttle.occur_at(at(30)), Some(0));
    }
}
