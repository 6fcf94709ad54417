//! In-memory rate limits: at most so many attempts per key in a fixed window.
//!
//! Kept in the serving process only (a restart forgets them); enough to make guessing
//! slow, while the store's own limits (wrong enrolment codes) make it fail for good.

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

/// Entries kept before windows that ended are swept out.
const SWEEP_AT: usize = 10_000;

/// Counts attempts per key (an IP address, a device key) against a [`RateLimit`].
#[derive(Debug)]
pub struct Limiter {
    limit: RateLimit,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Limiter {
    /// A limiter enforcing `limit`.
    pub fn new(limit: RateLimit) -> Self {
        Limiter {
            limit,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one attempt of `key` at `now`; `Err(wait)` if the key is over its limit,
    /// with how long until its window ends.
    pub fn attempt(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let window = self.limit.window;
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= SWEEP_AT {
            windows.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let entry = windows.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= window {
            *entry = (now, 0);
        }
        if entry.1 >= self.limit.max {
            return Err(window.saturating_sub(now.duration_since(entry.0)));
        }
        entry.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_over_its_limit_waits_for_the_next_window_and_others_do_not() {
        let limiter = Limiter::new(RateLimit {
            max: 2,
            window: Duration::from_secs(60),
        });
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
}
