//! Rate limits of the basic tier (no enrolment): so many uploads per install ID and
//! per client IP address in a fixed window; beyond that, 429 with `Retry-After`.

use std::time::{Duration, Instant};

use super::Problem;
use super::client::ClientAddr;
use super::limiter::{Limiter, RateLimit};

/// The basic tier's limits and their counters.
pub struct RateLimits {
    installs: Limiter,
    ips: Limiter,
}

impl RateLimits {
    /// At most `per_install` uploads per install ID and `per_ip` per client address in
    /// each `window`.
    pub fn new(per_install: u32, per_ip: u32, window: Duration) -> Self {
        let limit = |max| Limiter::new(RateLimit { max, window });
        RateLimits {
            installs: limit(per_install),
            ips: limit(per_ip),
        }
    }

    /// Counts an upload from `client` (by [`ClientAddr::limit_key`]; no address known:
    /// one shared counter).
    pub(crate) fn ip(&self, client: Option<ClientAddr>) -> Result<(), Problem> {
        let key = client.map_or_else(String::new, ClientAddr::limit_key);
        self.ips
            .attempt(&key, Instant::now())
            .map_err(|wait| limited(wait, "from this address"))
    }

    /// Counts an upload by `install_id`.
    pub(crate) fn install(&self, install_id: &str) -> Result<(), Problem> {
        self.installs
            .attempt(install_id, Instant::now())
            .map_err(|wait| limited(wait, "from this app installation"))
    }
}

/// 429 with `Retry-After`.
fn limited(wait: Duration, from: &str) -> Problem {
    Problem::too_many(format!("too many uploads {from}; try again later"), wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_and_addresses_are_limited_apart() {
        let limits = RateLimits::new(1, 2, Duration::from_secs(60));
        let client = Some(ClientAddr([127, 0, 0, 1].into()));
        assert!(limits.install("a").is_ok());
        let over = limits.install("a").unwrap_err();
        assert_eq!(over.status, 429);
        assert!(over.retry_after.is_some_and(|s| s > 50 && s <= 60));
        assert!(limits.install("b").is_ok());
        assert!(limits.ip(client).is_ok());
        assert!(limits.ip(client).is_ok());
        assert_eq!(limits.ip(client).unwrap_err().status, 429);
        assert!(limits.ip(None).is_ok());
    }
}
