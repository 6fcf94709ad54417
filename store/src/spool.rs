//! The spool: accepted letters exactly as received, one file per submission, until the
//! pipeline has filed them.
//!
//! A spool file is fsynced, and so is the spool directory (for the file's directory
//! entry), before the submission is committed to the database; only then is the sender
//! told 250. Writes are buffered, and concurrent sessions share directory fsyncs: one
//! covers every file created before it started. A file without a queued submission is
//! a letter that was never acknowledged or is already filed, and [`Spool::sweep`]
//! removes it.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::Mutex;

use crate::ids::TrackingId;

/// How much of a letter is gathered in memory before it is written to its file.
const WRITE_BUFFER: usize = 256 * 1024;

/// The spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    sync: Arc<DirSync>,
}

/// A spool file being written.
#[derive(Debug)]
pub struct SpoolFile {
    id: TrackingId,
    path: PathBuf,
    dir: PathBuf,
    sync: Arc<DirSync>,
    file: BufWriter<File>,
    written: u64,
}

/// Shared fsyncs of the spool directory. Each request takes a ticket; an fsync started
/// after a ticket was taken covers it (the file's entry existed by then), so a request
/// that waited behind such an fsync needs none of its own.
#[derive(Debug, Default)]
struct DirSync {
    /// Tickets handed out so far.
    requested: AtomicU64,
    /// Every ticket up to this one is covered by a finished fsync.
    synced: Mutex<u64>,
}

impl DirSync {
    /// Makes the entries of every file created so far in `dir` durable.
    async fn sync(&self, dir: &Path) -> io::Result<()> {
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut synced = self.synced.lock().await;
        if *synced >= ticket {
            return Ok(());
        }
        let covers = self.requested.load(Ordering::SeqCst);
        File::open(dir).await?.sync_all().await?;
        *synced = covers;
        Ok(())
    }
}

impl Spool {
    /// Opens (and creates, mode 0700) the spool directory.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(Spool {
            dir: dir.to_owned(),
            sync: Arc::default(),
        })
    }

    /// Where the letter with this tracking ID is spooled.
    pub fn path(&self, id: &TrackingId) -> PathBuf {
        self.dir.join(id.as_str())
    }

    /// Creates the spool file for a new submission (mode 0600; never overwrites).
    pub async fn create(&self, id: &TrackingId) -> io::Result<SpoolFile> {
        let path = self.path(id);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        options.mode(0o600);
        let file = options.open(&path).await?;
        Ok(SpoolFile {
            id: id.clone(),
            path,
            dir: self.dir.clone(),
            sync: self.sync.clone(),
            file: BufWriter::with_capacity(WRITE_BUFFER, file),
            written: 0,
        })
    }

    /// Reads a spooled letter (blocking).
    pub fn read(&self, id: &TrackingId) -> io::Result<Vec<u8>> {
        std::fs::read(self.path(id))
    }

    /// Removes a spooled letter once it is filed (or failed) (blocking). A file that
    /// is already gone is not an error. The removal is not fsynced: a file a crash
    /// brings back belongs to no queued submission, and [`Spool::sweep`] removes it.
    pub fn remove(&self, id: &TrackingId) -> io::Result<()> {
        match std::fs::remove_file(self.path(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes every spool file that is not in `keep`: letters whose sender was never
    /// told 250 (a crash between fsync and commit), or whose processing finished just
    /// before a crash. Returns how many were removed.
    pub fn sweep(&self, keep: &HashSet<TrackingId>) -> io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let keep_it = name
                .to_str()
                .and_then(|n| n.parse::<TrackingId>().ok())
                .is_some_and(|id| keep.contains(&id));
            if !keep_it {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        if removed > 0 {
            std::fs::File::open(&self.dir)?.sync_all()?;
        }
        Ok(removed)
    }
}

impl SpoolFile {
    /// The tracking ID the file belongs to.
    pub fn id(&self) -> &TrackingId {
        &self.id
    }

    /// Octets written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes the file to disk and makes its directory entry durable.
    pub async fn commit(mut self) -> io::Result<(TrackingId, u64)> {
        self.file.flush().await?;
        self.file.get_mut().sync_all().await?;
        self.sync.sync(&self.dir).await?;
        Ok((self.id, self.written))
    }

    /// Throws the partial file away.
    pub async fn discard(self) -> io::Result<()> {
        drop(self.file);
        match tokio::fs::remove_file(&self.path).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

impl AsyncWrite for SpoolFile {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.file).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.written += n as u64;
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commit_keeps_and_sweep_removes_unacknowledged_files() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let kept = TrackingId::generate().unwrap();
        let mut file = spool.create(&kept).await.unwrap();
        file.write_all(b"letter").await.unwrap();
        assert_eq!(file.commit().await.unwrap().1, 6);
        let orphan = TrackingId::generate().unwrap();
        spool.create(&orphan).await.unwrap().commit().await.unwrap();
        assert!(spool.create(&kept).await.is_err(), "never overwrites");
        let removed = spool.sweep(&HashSet::from([kept.clone()])).unwrap();
        assert_eq!(removed, 1);
        assert_eq!(spool.read(&kept).unwrap(), b"letter");
        spool.remove(&kept).unwrap();
        spool.remove(&kept).unwrap();
    }
}
