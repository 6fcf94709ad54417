//! Shared fsyncs: concurrent writers that each need their writes made durable share
//! one fsync instead of queueing one each.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// One file's (or directory's) fsyncs, shared. Each request takes a ticket; an fsync
/// started after a ticket was taken covers it (the writes before the ticket were done
/// by then), so a request that waited behind such an fsync needs none of its own.
#[derive(Debug, Default)]
pub(crate) struct SharedSync {
    /// Tickets handed out so far.
    requested: AtomicU64,
    /// Every ticket up to this one is covered by a finished fsync.
    synced: Mutex<u64>,
}

impl SharedSync {
    /// Makes every write finished before this call durable with `fsync`, unless an
    /// fsync that started after this call began has already done so (blocking).
    pub(crate) fn sync(&self, fsync: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        // The counter stays consistent even if a holder panicked.
        let mut synced = self.synced.lock().unwrap_or_else(PoisonError::into_inner);
        if *synced >= ticket {
            return Ok(());
        }
        let covers = self.requested.load(Ordering::SeqCst);
        fsync()?;
        *synced = covers;
        Ok(())
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
