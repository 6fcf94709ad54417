//! What the SMTP server has done since it started, for the operators' metrics:
//! sessions by listener, clients turned away for want of room, and the refusals it
//! answered with, by reply code and enhanced status. Kept in memory only.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::reply::Reply;

/// The server's counters, shared by its sessions.
#[derive(Debug, Default)]
pub struct Counters {
    starttls_sessions: AtomicU64,
    implicit_tls_sessions: AtomicU64,
    open_sessions: AtomicU64,
    turned_away: AtomicU64,
    /// Replies of class 4 or 5, by code and enhanced status (empty when none).
    refusals: Mutex<BTreeMap<(u16, String), u64>>,
}

/// A session counted as open while it is held (see [`Counters::session_started`]).
pub(super) struct OpenSession(Arc<Counters>);

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.0.open_sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmtpCounts {
    /// Sessions accepted on the STARTTLS port.
    pub starttls_sessions: u64,
    /// Sessions accepted on the implicit-TLS port.
    pub implicit_tls_sessions: u64,
    /// Sessions running now.
    pub open_sessions: u64,
    /// Connections closed at once because the server or the client's address had no
    /// room.
    pub turned_away: u64,
    /// Replies of class 4 or 5 sent: code, enhanced status (empty when the reply had
    /// none) and how many, in that order.
    pub refusals: Vec<(u16, String, u64)>,
}

impl Counters {
    /// A session was accepted (`implicit_tls`: on the implicit-TLS port); it counts as
    /// open until the returned guard is dropped, however the session ends.
    pub(super) fn session_started(self: &Arc<Self>, implicit_tls: bool) -> OpenSession {
        let port = match implicit_tls {
            true => &self.implicit_tls_sessions,
            false => &self.starttls_sessions,
        };
        port.fetch_add(1, Ordering::Relaxed);
        self.open_sessions.fetch_add(1, Ordering::Relaxed);
        OpenSession(Arc::clone(self))
    }

    /// A connection was turned away for want of room.
    pub(super) fn turned_away(&self) {
        self.turned_away.fetch_add(1, Ordering::Relaxed);
    }

    /// `reply` is being sent: counted if it refuses (class 4 or 5).
    pub(super) fn replied(&self, reply: &Reply) {
        if reply.code < 400 {
            return;
        }
        let status = reply.status.map(|s| s.to_string()).unwrap_or_default();
        let mut refusals = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        *refusals.entry((reply.code, status)).or_default() += 1;
    }

    /// What was counted so far.
    pub fn snapshot(&self) -> SmtpCounts {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        SmtpCounts {
            starttls_sessions: read(&self.starttls_sessions),
            implicit_tls_sessions: read(&self.implicit_tls_sessions),
            open_sessions: read(&self.open_sessions),
            turned_away: read(&self.turned_away),
            refusals: self
                .refusals
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|((code, status), count)| (*code, status.clone(), *count))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_open_while_held_and_refusals_counted_by_code_and_status() {
        let counters = Arc::new(Counters::default());
        let first = counters.session_started(true);
        let second = counters.session_started(false);
        drop(first);
        counters.replied(&Reply::new(250, (2, 0, 0), "OK"));
        for _ in 0..2 {
            counters.replied(&Reply::new(550, (5, 1, 1), "no such member"));
        }
        counters.replied(&Reply::new(421, (4, 3, 2), "shutting down"));
        counters.turned_away();
        let counts = counters.snapshot();
        assert_eq!(
            counts,
            SmtpCounts {
                starttls_sessions: 1,
                implicit_tls_sessions: 1,
                open_sessions: 1,
                turned_away: 1,
                refusals: vec![(421, "4.3.2".to_owned(), 1), (550, "5.1.1".to_owned(), 2)],
            }
        );
        drop(second);
        assert_eq!(counters.snapshot().open_sessions, 0);
    }
}
