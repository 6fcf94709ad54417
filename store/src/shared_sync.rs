//! Shared fsyncs: concurrent writers that each need their writes made durable share
//! one fsync instead of queueing one each.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::locks::lock;

/// One file's (or directory's) fsyncs, shared. Each request takes a ticket; an fsync
/// started after a ticket was taken covers it (the writes before the ticket were done
/// by then), so a request that waited behind such an fsync needs none of its own.
///
/// Once an fsync fails, every later request fails too: after a failed fsync Linux may
/// mark the unwritten pages clean, so a later fsync could succeed without having
/// written them.
#[derive(Debug, Default)]
pub(crate) struct SharedSync {
    /// Tickets handed out so far.
    requested: AtomicU64,
    /// Every ticket up to this one is covered by a finished fsync. Held during an
    /// fsync, so that a request waits for the one running.
    synced: Mutex<u64>,
    /// An fsync failed (read without waiting for a running fsync).
    failed: AtomicBool,
}

impl SharedSync {
    /// A ticket for the writes finished before this call.
    pub(crate) fn ticket(&self) -> u64 {
        self.requested.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Makes the writes `ticket` stands for durable with `fsync`, unless an fsync that
    /// started after it was taken has already done so (blocking).
    pub(crate) fn wait(
        &self,
        ticket: u64,
        fsync: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<()> {
        // The state stays consistent even if a holder panicked.
        let mut synced = lock(&self.synced);
        if self.failed() {
            return Err(io::Error::other(
                "an earlier fsync of this file failed; its writes may be lost",
            ));
        }
        if *synced >= ticket {
            return Ok(());
        }
        let covers = self.requested.load(Ordering::SeqCst);
        if let Err(error) = fsync() {
            self.failed.store(true, Ordering::SeqCst);
            return Err(error);
        }
        *synced = covers;
        Ok(())
    }

    /// Makes every write finished before this call durable (see [`Self::wait`]).
    pub(crate) fn sync(&self, fsync: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        self.wait(self.ticket(), fsync)
    }

    /// Whether an fsync failed (nothing written since will be made durable); does not
    /// wait for a running fsync.
    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }
}

/// A directory whose entries are made durable on request, with shared fsyncs.
#[derive(Debug)]
pub(crate) struct DirSync {
    dir: PathBuf,
    shared: SharedSync,
}

impl DirSync {
    /// Shared fsyncs of `dir`.
    pub(crate) fn new(dir: &Path) -> Self {
        DirSync {
            dir: dir.to_owned(),
            shared: SharedSync::default(),
        }
    }

    /// Makes the entries of every file created in the directory so far durable
    /// (blocking).
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.shared.sync(|| File::open(&self.dir)?.sync_all())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_fsync_covers_every_ticket_taken_before_it_started() {
        let shared = SharedSync::default();
        let (first, second) = (shared.ticket(), shared.ticket());
        let mut fsyncs = 0;
        for ticket in [second, first] {
            shared
                .wait(ticket, || {
                    fsyncs += 1;
                    Ok(())
                })
                .unwrap();
        }
        assert_eq!(fsyncs, 1);
        let third = shared.ticket();
        shared
            .wait(third, || Err(io::Error::other("disk gone")))
            .unwrap_err();
        assert!(shared.failed());
        // A later fsync might succeed without having written what the failed one lost.
        let error = shared.sync(|| Ok(())).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("an earlier fsync of this file failed")
        );
    }
}
