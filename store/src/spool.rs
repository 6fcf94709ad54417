//! The spool: accepted letters exactly as received, until the pipeline has filed them.
//!
//! A letter of at most [`INLINE_MAX`] octets gets no file: it is held in memory and
//! committed to the store with its submission. A larger one goes to its file; the file
//! is fsynced, and so is the spool directory (for the file's directory entry), before
//! the submission is committed to the database. Only then is the sender told 250.
//! Writes are buffered, and concurrent sessions share directory fsyncs: one
//! covers every file created before it started. A file without a queued submission is
//! a letter that was never acknowledged or is already filed, and [`Spool::sweep`]
//! removes it.

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use tokio::task::JoinHandle;
use zeroize::Zeroize;

use crate::ids::TrackingId;
use crate::shared_sync::DirSync;

/// How much of a letter is gathered in memory before it is written to its file.
const WRITE_BUFFER: usize = 256 * 1024;

/// The largest letter kept in the store instead of a file of its own: one that fits in
/// the write buffer a file would get, so it takes no more memory than a file would.
pub const INLINE_MAX: usize = WRITE_BUFFER;

/// The spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    sync: Arc<DirSync>,
}

/// A letter being spooled: in memory while small, then in its file. One that is
/// dropped without [`SpoolFile::commit`] (refused, failed, or its session cancelled)
/// takes its file with it.
#[derive(Debug)]
pub struct SpoolFile {
    id: TrackingId,
    path: PathBuf,
    sync: Arc<DirSync>,
    body: Body,
    written: u64,
    /// What a letter must look like to be kept, judged on its first [`INLINE_MAX`]
    /// octets (see [`SpoolFile::keep_only_if`]).
    gate: Option<Gate>,
}

/// Whether a letter, by its first octets, may be kept: `Err` says why not.
pub type Gate = fn(&[u8]) -> Result<(), &'static str>;

/// Where a letter being spooled is.
#[derive(Debug)]
enum Body {
    /// Small so far: held in memory.
    Memory(Vec<u8>),
    /// Its file is being created and given what was held.
    Opening(JoinHandle<io::Result<std::fs::File>>),
    /// In its file.
    File(Writer),
    /// Refused by its gate (for the reason given) before it left memory: what follows
    /// is counted, not kept.
    Refused(&'static str),
    /// Handed on (committed) or thrown away: nothing left to clean up.
    Released,
}

/// A spool file's writes: octets are gathered into one buffer while the one before is
/// written by a blocking thread, so each octet is copied once on its way to the file
/// and a session waits for the disk only when it is a whole buffer ahead of it.
#[derive(Debug)]
struct Writer {
    file: Arc<std::fs::File>,
    /// Octets not yet handed to a write, at most [`WRITE_BUFFER`].
    gathered: Vec<u8>,
    /// The write under way; it hands its buffer back to be gathered into again.
    writing: Option<JoinHandle<io::Result<Vec<u8>>>>,
    /// A buffer handed back, empty.
    spare: Vec<u8>,
}

impl Writer {
    fn new(file: std::fs::File) -> Self {
        Writer {
            file: Arc::new(file),
            gathered: Vec::with_capacity(WRITE_BUFFER),
            writing: None,
            spare: Vec::new(),
        }
    }

    /// Takes as much of `buf` as fits, handing a full buffer to a write first.
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.gathered.len() == WRITE_BUFFER {
            std::task::ready!(self.poll_written(cx))?;
            self.start_write();
        }
        let n = buf.len().min(WRITE_BUFFER - self.gathered.len());
        self.gathered.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    /// Writes everything gathered, and waits until it is written.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_written(cx))?;
        if self.gathered.is_empty() {
            return Poll::Ready(Ok(()));
        }
        self.start_write();
        self.poll_written(cx)
    }

    /// Waits for the write under way, if any, and keeps its buffer.
    fn poll_written(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(writing) = &mut self.writing else {
            return Poll::Ready(Ok(()));
        };
        let result = std::task::ready!(Pin::new(writing).poll(cx));
        self.writing = None;
        let mut buffer = result.map_err(io::Error::other)??;
        buffer.clear();
        self.spare = buffer;
        Poll::Ready(Ok(()))
    }

    /// Hands what is gathered to a blocking thread to write (none may be under way).
    fn start_write(&mut self) {
        let spare = std::mem::take(&mut self.spare);
        let full = std::mem::replace(&mut self.gathered, spare);
        self.gathered.reserve(WRITE_BUFFER);
        let file = self.file.clone();
        self.writing = Some(tokio::task::spawn_blocking(move || {
            use std::io::Write;
            (&*file).write_all(&full)?;
            Ok(full)
        }));
    }
}

/// A letter made durable enough to be committed with its submission.
#[derive(Debug)]
pub struct Spooled {
    /// The tracking ID it was spooled under.
    pub id: TrackingId,
    /// Its size in octets.
    pub size: u64,
    /// The letter itself if it has no file and must be committed to the store.
    pub inline: Option<Vec<u8>>,
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
            sync: Arc::new(DirSync::new(dir)),
        })
    }

    /// Where the letter with this tracking ID is spooled.
    pub fn path(&self, id: &TrackingId) -> PathBuf {
        self.dir.join(id.as_str())
    }

    /// Starts spooling a new submission. Its file (mode 0600; never overwriting) is
    /// created only once the letter outgrows [`INLINE_MAX`].
    pub async fn create(&self, id: &TrackingId) -> io::Result<SpoolFile> {
        Ok(SpoolFile {
            id: id.clone(),
            path: self.path(id),
            sync: self.sync.clone(),
            body: Body::Memory(Vec::new()),
            written: 0,
            gate: None,
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

    /// Keeps the letter only if `gate` passes its first [`INLINE_MAX`] octets (or the
    /// whole letter, if shorter): one it refuses never gets a file, nor is it handed
    /// on to be committed (see [`SpoolFile::refused`]).
    pub fn keep_only_if(&mut self, gate: Gate) {
        self.gate = Some(gate);
    }

    /// Why the gate refused the letter, if it did, once it is complete: one still in
    /// memory is judged whole, once (a larger one was judged as it left memory).
    pub fn refused(&mut self) -> Option<&'static str> {
        if let (Body::Memory(held), Some(gate)) = (&mut self.body, self.gate.take())
            && let Err(why) = gate(held)
        {
            wipe(held);
            self.body = Body::Refused(why);
        }
        match self.body {
            Body::Refused(why) => Some(why),
            _ => None,
        }
    }

    /// A letter held in memory is handed back to be committed with its submission;
    /// a letter in its file is flushed to disk, and its directory entry made durable.
    /// If that fails, the file is removed.
    pub async fn commit(mut self) -> io::Result<Spooled> {
        if self.refused().is_some() {
            return Err(io::Error::other(
                "the letter was refused by its spool's gate",
            ));
        }
        if let Body::Memory(held) = &mut self.body {
            let inline = Some(std::mem::take(held));
            self.body = Body::Released;
            return Ok(Spooled {
                inline,
                id: self.id.clone(),
                size: self.written,
            });
        }
        // On an error `self` is dropped here, and its file with it.
        std::future::poll_fn(|cx| self.poll_flushed(cx)).await?;
        let Body::File(writer) = &self.body else {
            return Err(io::Error::other("the spool file is not open"));
        };
        let file = writer.file.clone();
        let sync = self.sync.clone();
        tokio::task::spawn_blocking(move || {
            file.sync_all()?;
            sync.sync()
        })
        .await
        .map_err(io::Error::other)??;
        self.body = Body::Released;
        Ok(Spooled {
            id: self.id.clone(),
            size: self.written,
            inline: None,
        })
    }

    /// Throws the partial letter away (as dropping it does, but waiting for the
    /// removal and reporting its failure).
    pub async fn discard(mut self) -> io::Result<()> {
        if let Body::Memory(_) | Body::Refused(_) | Body::Released = self.body {
            return Ok(());
        }
        // Wait until the file exists, lest it be created after its removal.
        let opened = std::future::poll_fn(|cx| self.poll_opened(cx)).await;
        self.body = Body::Released;
        match tokio::fs::remove_file(&self.path).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => opened,
        }
    }

    /// Moves a letter whose file is being created into that file once it exists.
    fn poll_opened(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Body::Opening(handle) = &mut self.body {
            let file = match Pin::new(handle).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(Ok(file))) => file,
                Poll::Ready(Ok(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            };
            self.body = Body::File(Writer::new(file));
        }
        Poll::Ready(Ok(()))
    }

    /// Waits until the file is open and everything written to it is in it.
    fn poll_flushed(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_opened(cx))?;
        match &mut self.body {
            Body::File(writer) => writer.poll_flush(cx),
            _ => Poll::Ready(Ok(())),
        }
    }
}

impl Drop for SpoolFile {
    /// Removes the file of a letter that was neither committed nor discarded. The
    /// unlink runs on the dropping thread (one metadata operation, and only on a
    /// failure path); a file still being created is removed by a task once it exists.
    /// Should even that not happen (the runtime ends first), [`Spool::sweep`] removes
    /// the file at the next start.
    fn drop(&mut self) {
        match std::mem::replace(&mut self.body, Body::Released) {
            Body::Memory(mut held) => wipe(&mut held),
            Body::Refused(_) | Body::Released => {}
            Body::File(writer) => {
                drop(writer);
                remove_abandoned(&self.path);
            }
            Body::Opening(handle) if handle.is_finished() => remove_abandoned(&self.path),
            Body::Opening(handle) => {
                let path = self.path.clone();
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        let _ = handle.await;
                        remove_abandoned(&path);
                    });
                }
            }
        }
    }
}

/// Overwrites a letter held in memory that is not kept: it may be readable.
fn wipe(held: &mut Vec<u8>) {
    held.zeroize();
}

/// Removes the spool file of a letter that was not committed (blocking); a file that
/// does not exist is fine, any other failure is logged.
fn remove_abandoned(path: &Path) {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove an uncommitted spool file");
        }
        _ => {}
    }
}

/// Creates the spool file at `path` (mode 0600; never overwriting) and writes `held`
/// to it (blocking).
fn create_with(path: &Path, held: &[u8]) -> io::Result<std::fs::File> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(held)?;
    Ok(file)
}

impl AsyncWrite for SpoolFile {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Body::Refused(_) = this.body {
            this.written += buf.len() as u64;
            return Poll::Ready(Ok(buf.len()));
        }
        if let Body::Memory(held) = &mut this.body {
            if held.len() + buf.len() > INLINE_MAX {
                if let Some(Err(why)) = this.gate.map(|gate| gate(held)) {
                    wipe(held);
                    this.body = Body::Refused(why);
                    this.written += buf.len() as u64;
                    return Poll::Ready(Ok(buf.len()));
                }
                let mut held = std::mem::take(held);
                held.extend_from_slice(buf);
                let path = this.path.clone();
                this.body = Body::Opening(tokio::task::spawn_blocking(move || {
                    create_with(&path, &held)
                }));
            } else {
                held.extend_from_slice(buf);
            }
            this.written += buf.len() as u64;
            return Poll::Ready(Ok(buf.len()));
        }
        std::task::ready!(this.poll_opened(cx))?;
        match &mut this.body {
            Body::File(writer) => {
                let poll = writer.poll_write(cx, buf);
                if let Poll::Ready(Ok(n)) = poll {
                    this.written += n as u64;
                }
                poll
            }
            // Neither of the first two is left once the letter is out of memory and its
            // file is open; a refused one was answered above; a released letter takes no
            // more writes.
            Body::Memory(_) | Body::Opening(_) | Body::Refused(_) | Body::Released => {
                Poll::Ready(Err(io::Error::other("the spool file is not open")))
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flushed(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flushed(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Spools `letter` in pieces as the SMTP connector does, and commits it.
    async fn spool_letter(spool: &Spool, letter: &[u8]) -> (TrackingId, Spooled) {
        let id = TrackingId::generate().unwrap();
        let mut file = spool.create(&id).await.unwrap();
        for piece in letter.chunks(1000) {
            file.write_all(piece).await.unwrap();
        }
        (id, file.commit().await.unwrap())
    }

    #[tokio::test]
    async fn a_letter_its_gate_refuses_never_gets_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let starts_right = |head: &[u8]| match head.starts_with(b"S/MIME") {
            true => Ok(()),
            false => Err("plain"),
        };
        for (letter, kept) in [
            (b"S/MIME".repeat(INLINE_MAX), true),
            (b"PLAIN!".repeat(INLINE_MAX), false),
            (b"PLAIN!".to_vec(), false),
        ] {
            let id = TrackingId::generate().unwrap();
            let mut file = spool.create(&id).await.unwrap();
            file.keep_only_if(starts_right);
            for piece in letter.chunks(1000) {
                file.write_all(piece).await.unwrap();
            }
            file.flush().await.unwrap();
            assert_eq!(spool.path(&id).exists(), kept && letter.len() > INLINE_MAX);
            assert_eq!(file.refused(), (!kept).then_some("plain"));
            assert_eq!(file.written(), letter.len() as u64);
            assert_eq!(file.commit().await.is_ok(), kept);
        }
    }

    #[tokio::test]
    async fn small_letters_stay_in_memory_and_large_ones_get_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let (small, spooled) = spool_letter(&spool, b"letter").await;
        assert_eq!(spooled.inline.as_deref(), Some(&b"letter"[..]));
        assert!(!spool.path(&small).exists());

        let letter = vec![b'x'; INLINE_MAX + 1];
        let (kept, spooled) = spool_letter(&spool, &letter).await;
        assert_eq!((spooled.inline, spooled.size), (None, letter.len() as u64));
        assert_eq!(spool.read(&kept).unwrap(), letter);
        spool_letter(&spool, &letter).await;
        let removed = spool.sweep(&HashSet::from([kept.clone()])).unwrap();
        assert_eq!(removed, 1);
        spool.remove(&kept).unwrap();
        spool.remove(&kept).unwrap();

        let refused = TrackingId::generate().unwrap();
        let mut file = spool.create(&refused).await.unwrap();
        file.write_all(&letter).await.unwrap();
        file.discard().await.unwrap();
        assert!(!spool.path(&refused).exists());
    }

    #[tokio::test]
    async fn a_letter_of_many_buffers_is_written_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let letter: Vec<u8> = (0..3 * WRITE_BUFFER + 123)
            .map(|i| (i % 251) as u8)
            .collect();
        let (id, spooled) = spool_letter(&spool, &letter).await;
        assert_eq!((spooled.inline, spooled.size), (None, letter.len() as u64));
        assert!(spool.read(&id).unwrap() == letter);
    }

    #[tokio::test]
    async fn a_letter_dropped_without_commit_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let letter = vec![b'x'; INLINE_MAX + 1];

        // In its file: a second write waits until the file is open.
        let dropped = TrackingId::generate().unwrap();
        let mut file = spool.create(&dropped).await.unwrap();
        file.write_all(&letter).await.unwrap();
        file.write_all(b"more").await.unwrap();
        assert!(spool.path(&dropped).exists());
        drop(file);
        assert!(!spool.path(&dropped).exists());

        // Dropped while its file may still be being created: gone once created.
        let early = TrackingId::generate().unwrap();
        let mut file = spool.create(&early).await.unwrap();
        file.write_all(&letter).await.unwrap();
        drop(file);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while spool.path(&early).exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "spool file left behind"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }

        // Committed: the file stays, also after the letter is dropped.
        let (kept, spooled) = spool_letter(&spool, &letter).await;
        assert_eq!(spooled.inline, None);
        assert_eq!(spool.read(&kept).unwrap(), letter);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
