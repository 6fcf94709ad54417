//! In-memory rate limits: at most so many attempts per key in a fixed window.
//!
//! Kept in the serving process only (a restart forgets them); enough to make guessing
//! slow, while the store's own limits (wrong enrolment codes) make it fail for good.
//!
//! The table of counters is bounded: counters whose window has ended are swept out at
//! least once a [`SWEEP_EVERY`] (and their keys start afresh anyway), and a table full
//! of live counters ([`MAX_KEYS`]) takes no new key until a sweep makes room: a key it
//! has never seen is refused (429 with the time to the next sweep). Refusing is the
//! safe side: forgetting a live counter to make room would let whoever fills the table
//! reset their own counters and guess on without limit, while refusing new keys only
//! delays newcomers for the rest of a window, and filling the table takes that many
//! distinct keys (addresses count by IPv6 /64) within one window.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many attempts one key may make per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Attempts allowed per window.
    pub max: u32,
    /// The window's length.
    pub window: Duration,
}

/// The most keys counted at once (about 100 octets each).
const MAX_KEYS: usize = 100_000;
/// How often counters whose window ended are swept out, at the least.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Counts attempts per key (a client address, a device key) against a [`RateLimit`].
#[derive(Debug)]
pub struct Limiter {
    limit: RateLimit,
    capacity: usize,
    table: Mutex<Table>,
}

/// The counters and when they are next swept.
#[derive(Debug)]
struct Table {
    /// Per key: when its window began and the attempts in it.
    windows: HashMap<String, (Instant, u32)>,
    /// When counters whose window ended are next swept out (`None`: at the next
    /// attempt); sweeps happen on attempts, so an idle limiter costs nothing.
    next_sweep: Option<Instant>,
}

impl Limiter {
    /// A limiter enforcing `limit` on at most [`MAX_KEYS`] keys at once.
    pub fn new(limit: RateLimit) -> Self {
        Limiter::with_capacity(limit, MAX_KEYS)
    }

    /// A limiter enforcing `limit` on at most `capacity` keys at once.
    fn with_capacity(limit: RateLimit, capacity: usize) -> Self {
        Limiter {
            limit,
            capacity,
            table: Mutex::new(Table {
                windows: HashMap::new(),
                next_sweep: None,
            }),
        }
    }

    /// Counts one attempt of `key` at `now`; `Err(wait)` if the key is over its limit,
    /// with how long until its window ends, or if the table is full of live counters
    /// and `key` is new, with how long until the next sweep.
    pub fn attempt(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let window = self.limit.window;
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let next_sweep = match table.next_sweep {
            Some(at) if now < at => at,
            _ => {
                table
                    .windows
                    .retain(|_, (start, _)| now.duration_since(*start) < window);
                let at = now + SWEEP_EVERY.min(window);
                table.next_sweep = Some(at);
                at
            }
        };
        if table.windows.len() >= self.capacity && !table.windows.contains_key(key) {
            return Err(next_sweep.saturating_duration_since(now));
        }
        let entry = table.windows.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= window {
            *entry = (now, 0);
        }
        if entry.1 >= self.limit.max {
            return Err(window.saturating_sub(now.duration_since(entry.0)));
        }
        entry.1 += 1;
        Ok(())
    }

    /// How many keys are counted now.
    #[cfg(test)]
    fn keys(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .windows
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(max: u32, secs: u64) -> RateLimit {
        RateLimit {
            max,
            window: Duration::from_secs(secs),
        }
    }

    #[test]
    fn a_key_over_its_limit_waits_for_the_next_window_and_others_do_not() {
        let limiter = Limiter::new(limit(2, 60));
        let t0 = Instant::now();
        assert_eq!(limiter.attempt("a", t0), Ok(()));
        assert_eq!(limiter.attempt("a", t0 + Duration::from_secs(1)), Ok(()));
        assert_eq!(
            limiter.attempt("a", t0 + Duration::from_secs(20)),
            Err(Duration::from_secs(40))
        );
        assert_eq!(limiter.attempt("b", t0 + Duration::from_secs(20)), Ok(()));
        assert_eq!(limiter.attempt("a", t0 + Duration::from_secs(60)), Ok(()));
    }

    #[test]
    fn counters_whose_window_ended_are_swept_out_regularly() {
        let limiter = Limiter::new(limit(5, 3600));
        let t0 = Instant::now();
        for key in ["a", "b", "c"] {
            assert_eq!(limiter.attempt(key, t0), Ok(()));
        }
        assert_eq!(limiter.keys(), 3);
        // An hour on, the next attempt sweeps the three out and counts itself.
        assert_eq!(limiter.attempt("d", t0 + Duration::from_secs(3600)), Ok(()));
        assert_eq!(limiter.keys(), 1);
    }

    #[test]
    fn a_table_full_of_live_counters_refuses_new_keys_until_a_sweep_makes_room() {
        let limiter = Limiter::with_capacity(limit(5, 600), 2);
        let t0 = Instant::now();
        assert_eq!(limiter.attempt("a", t0), Ok(()));
        assert_eq!(limiter.attempt("b", t0 + Duration::from_secs(1)), Ok(()));
        // Full: a new key waits for the next sweep (60 s after the first attempt),
        // keys already counted go on being counted.
        assert_eq!(
            limiter.attempt("c", t0 + Duration::from_secs(10)),
            Err(Duration::from_secs(50))
        );
        assert_eq!(limiter.attempt("a", t0 + Duration::from_secs(10)), Ok(()));
        assert_eq!(limiter.keys(), 2);
        // The sweep at 590 s finds both live, so "c" waits for the one after; their
        // windows end at 600 and 601 s, and the sweep at 650 s makes room.
        assert_eq!(
            limiter.attempt("c", t0 + Duration::from_secs(590)),
            Err(Duration::from_secs(60))
        );
        assert_eq!(
            limiter.attempt("c", t0 + Duration::from_secs(601)),
            Err(Duration::from_secs(49))
        );
        assert_eq!(limiter.attempt("c", t0 + Duration::from_secs(650)), Ok(()));
        assert_eq!(limiter.keys(), 1);
    }
}
