//! Shared fsyncs of a directory: concurrent writers that each need their new file's
//! entry made durable share one directory fsync instead of queueing one each.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// A directory whose entries are made durable on request. Each request takes a ticket;
/// an fsync started after a ticket was taken covers it (the file's entry existed by
/// then), so a request that waited behind such an fsync needs none of its own.
#[derive(Debug)]
pub(crate) struct DirSync {
    dir: PathBuf,
    /// Tickets handed out so far.
    requested: AtomicU64,
    /// Every ticket up to this one is covered by a finished fsync.
    synced: Mutex<u64>,
}

impl DirSync {
    /// Shared fsyncs of `dir`.
    pub(crate) fn new(dir: &Path) -> Self {
        DirSync {
            dir: dir.to_owned(),
            requested: AtomicU64::new(0),
            synced: Mutex::new(0),
        }
    }

    /// Makes the entries of every file created in the directory so far durable
    /// (blocking).
    pub(crate) fn sync(&self) -> io::Result<()> {
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        // The counter stays consistent even if a holder panicked.
        let mut synced = self.synced.lock().unwrap_or_else(PoisonError::into_inner);
        if *synced >= ticket {
            return Ok(());
        }
        let covers = self.requested.load(Ordering::SeqCst);
        File::open(&self.dir)?.sync_all()?;
        *synced = covers;
        Ok(())
    }
}
