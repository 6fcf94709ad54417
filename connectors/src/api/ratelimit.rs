//! Rate limits of the basic tier (no enrolment): so many uploads per install ID and
//! per client IP address in a fixed window; beyond that, 429 with `Retry-After`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use super::Problem;

/// The peer address of an API connection, attached to each request by the server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub IpAddr);

/// When the map of counters has this many entries, ended windows are dropped.
const PRUNE_AT: usize = 10_000;

/// Counters per key in fixed windows.
#[derive(Default)]
struct Windows {
    counts: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Windows {
    /// Counts one hit for `key`; `Err(wait)` if `limit` hits were already counted in
    /// the current window, which ends after `wait`.
    fn hit(&self, key: &str, limit: u32, window: Duration) -> Result<(), Duration> {
        let now = Instant::now();
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.len() >= PRUNE_AT {
            counts.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let (start, count) = counts.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(*start) >= window {
            *start = now;
            *count = 0;
        }
        if *count >= limit {
            return Err(window.saturating_sub(now.duration_since(*start)));
        }
        *count += 1;
        Ok(())
    }
}

/// The basic tier's limits and their counters.
pub struct RateLimits {
    per_install: u32,
    per_ip: u32,
    window: Duration,
    installs: Windows,
    ips: Windows,
}

impl RateLimits {
    /// At most `per_install` uploads per install ID and `per_ip` per client address in
    /// each `window`.
    pub fn new(per_install: u32, per_ip: u32, window: Duration) -> Self {
        RateLimits {
            per_install,
            per_ip,
            window,
            installs: Windows::default(),
            ips: Windows::default(),
        }
    }

    /// Counts an upload from `peer` (no address known: one shared counter).
    pub(crate) fn ip(&self, peer: Option<Peer>) -> Result<(), Problem> {
        let key = peer.map_or_else(String::new, |Peer(ip)| ip.to_string());
        self.ips
            .hit(&key, self.per_ip, self.window)
            .map_err(|wait| limited(wait, "from this address"))
    }

    /// Counts an upload by `install_id`.
    pub(crate) fn install(&self, install_id: &str) -> Result<(), Problem> {
        self.installs
            .hit(install_id, self.per_install, self.window)
            .map_err(|wait| limited(wait, "from this app installation"))
    }
}

/// 429 with `Retry-After`.
fn limited(wait: Duration, from: &str) -> Problem {
    let secs = wait.as_secs().max(1);
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "Too many uploads",
        format!("too many uploads {from}; try again in {secs} seconds"),
    )
    .retry_after(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_allows_its_limit_and_then_says_how_long_to_wait() {
        let windows = Windows::default();
        let window = Duration::from_secs(60);
        assert_eq!(windows.hit("a", 2, window), Ok(()));
        assert_eq!(windows.hit("a", 2, window), Ok(()));
        let wait = windows.hit("a", 2, window).unwrap_err();
        assert!(wait <= window && wait > Duration::from_secs(50));
        assert_eq!(windows.hit("b", 2, window), Ok(()));
        assert_eq!(windows.hit("c", 1, Duration::ZERO), Ok(()));
        assert_eq!(windows.hit("c", 1, Duration::ZERO), Ok(()));
    }
}
