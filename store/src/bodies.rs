//! Letter bodies: filed letters' ciphertext, and small accepted letters until they
//! are processed, appended to segment files in `bodies/` beside the database file.
//!
//! redb does not clear the pages it frees, so a letter kept in the database would stay
//! readable in its file after deletion until the next compaction. In a segment, a
//! deleted letter's range is punched out of the file (its blocks go back to the file
//! system, as when a file is removed; where the file system cannot punch holes, zeros
//! are written over it), so its bytes leave the disk with the letter.
//!
//! Concurrent writers reserve ranges of the current segment and write them at once;
//! the group commit that records their letters (and ranges, [`Extent`]) makes the
//! segment durable first, with one fdatasync for its whole batch ([`Durable`]).
//! Ranges of letters done with are punched in the background ([`crate::puncher`]),
//! a member's deletion at once. A new segment (and its directory entry,
//! made durable at once) is needed only every [`SEGMENT_BYTES`], not for every letter:
//! a file per letter cost a file creation and a directory fsync per delivery, a fifth
//! of the server's time at 4 KiB letters. A range no record names (a crash between
//! write and commit, a failed commit, a punch that failed) is punched by the start-up
//! sweep, which also removes segments no record names. A waiting-letter segment that
//! is full, holds no more data and that no writer holds is removed by the puncher
//! while the server runs (a sparse file of 1 GiB each otherwise, which a backup that
//! ignores holes would copy as zeros).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use crate::Store;
use crate::db::{MESSAGES, Records, SPOOLED_AT};
use crate::error::StoreError;
use crate::locks::lock;
use crate::messages::MessageMeta;
use crate::puncher::Puncher;
use crate::shared_sync::SharedSync;

/// Size after which filed letters go to a new segment (a letter is never split, so a
/// segment ends with its last letter, however large).
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// The same for letters waiting to be processed: punched within moments, their
/// segments are mostly holes, and a larger size makes fewer files.
const WAITING_SEGMENT_BYTES: u64 = 1024 * 1024 * 1024;

/// Each body starts on a block of this size, so that punching one out frees whole
/// blocks and touches no other (a file per letter took as much room).
const BLOCK: u64 = 4096;

/// Whether bodies just written are read again soon (an accepted letter, by the
/// pipeline) or seldom (a filed letter, when the member fetches it). The two go to
/// segments of their own: appends to one file take turns on its inode lock, and
/// with one file for both the pipeline waited on it (a lane each: 2–18% more 4 KiB
/// letters delivered in six interleaved rounds). Only the latter are dropped from the
/// page cache once durable (see [`forget`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reread {
    /// Read again within moments.
    Soon,
    /// Read again seldom, if ever.
    Seldom,
}

impl Reread {
    /// The index of its lane.
    fn lane(self) -> usize {
        match self {
            Reread::Soon => 0,
            Reread::Seldom => 1,
        }
    }
}

/// Where a letter's body is: a range of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Extent {
    /// The segment's number (its file name in hex).
    segment: u64,
    /// Where the body starts in the segment.
    offset: u64,
    /// The body's length in octets.
    len: u64,
}

impl Extent {
    /// Where the blocks the body occupies end.
    fn end(&self) -> u64 {
        self.offset + self.len.next_multiple_of(BLOCK)
    }
}

/// The directory of body segments.
#[derive(Debug)]
pub(crate) struct Bodies {
    dir: PathBuf,
    /// Per lane ([`Reread`]), the segment being filled and where its reserved part
    /// ends; none until the lane's first letter after start (segments from before are
    /// only read and punched).
    tails: [Mutex<Option<Tail>>; 2],
    /// The number the next segment gets.
    next: Mutex<u64>,
    /// Per lane, the size after which its letters go to a new segment.
    segment_bytes: [u64; 2],
    /// Full waiting-letter segments, until they are emptied and removed.
    sealed: Arc<Mutex<Vec<Arc<Segment>>>>,
    puncher: Puncher,
}

/// A segment being filled and where its reserved part ends.
type Tail = (Arc<Segment>, u64);

/// Bodies just appended: where each went, and the fsync that makes them durable.
#[derive(Debug)]
pub(crate) struct Appended {
    /// Where each went, in order.
    pub(crate) extents: Vec<Extent>,
    /// What makes them durable.
    pub(crate) durable: Durable,
}

/// The fsync that makes appended bodies durable: their segment's, shared with every
/// body appended to it before (none for no bodies).
#[derive(Debug, Clone)]
pub(crate) struct Durable(Option<(Arc<Segment>, u64)>);

impl Durable {
    /// Nothing to make durable.
    pub(crate) fn none() -> Self {
        Durable(None)
    }

    /// Makes the bodies durable, sharing an fsync with concurrent callers (blocking).
    pub(crate) fn wait(&self) -> io::Result<()> {
        match &self.0 {
            Some((segment, ticket)) => segment.sync.wait(*ticket, || segment.file.sync_data()),
            None => Ok(()),
        }
    }

    /// Drops durable bodies at `extents` of this segment from the page cache.
    fn forget(&self, extents: &[Extent]) {
        if let Some((segment, _)) = &self.0 {
            for extent in extents {
                forget(&segment.file, extent);
            }
        }
    }
}

/// One open segment being appended to.
#[derive(Debug)]
struct Segment {
    number: u64,
    file: File,
    sync: SharedSync,
}

impl Bodies {
    /// Opens (and creates, mode 0700) the directory.
    pub(crate) fn open(dir: PathBuf) -> io::Result<Self> {
        Self::open_sized(dir, [WAITING_SEGMENT_BYTES, SEGMENT_BYTES])
    }

    /// [`Bodies::open`] with other segment sizes (per lane, see [`Reread`]).
    fn open_sized(dir: PathBuf, segment_bytes: [u64; 2]) -> io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let mut next = 0;
        for entry in std::fs::read_dir(&dir)? {
            if let Some(number) = segment_number(&entry?.file_name()) {
                next = next.max(number + 1);
            }
        }
        let punched = dir.clone();
        let sealed = Arc::new(Mutex::new(Vec::new()));
        let emptied = sealed.clone();
        let puncher = Puncher::start(move |extents| {
            punch_out(&punched, extents);
            remove_emptied(&punched, &emptied);
        })?;
        Ok(Bodies {
            dir,
            tails: Default::default(),
            next: Mutex::new(next),
            segment_bytes,
            sealed,
            puncher,
        })
    }

    /// The file of segment `number`.
    fn path(&self, number: u64) -> PathBuf {
        segment_path(&self.dir, number)
    }

    /// Appends `letters` to the current segment; returns where each went and the fsync
    /// that makes them durable. On failure, the ranges reserved for them are punched.
    pub(crate) fn append(&self, letters: &[&[u8]], reread: Reread) -> io::Result<Appended> {
        // Nothing to write (an upload without a copy for the member) needs no segment.
        if letters.is_empty() {
            return Ok(Appended {
                extents: Vec::new(),
                durable: Durable::none(),
            });
        }
        let total = letters
            .iter()
            .map(|bytes| (bytes.len() as u64).next_multiple_of(BLOCK))
            .sum();
        let (segment, start) = self.reserve(total, reread)?;
        let mut extents = Vec::with_capacity(letters.len());
        let mut offset = start;
        for bytes in letters {
            let extent = Extent {
                segment: segment.number,
                offset,
                len: bytes.len() as u64,
            };
            offset = extent.end();
            extents.push(extent);
        }
        let written = letters
            .iter()
            .zip(&extents)
            .try_for_each(|(bytes, extent)| segment.file.write_all_at(bytes, extent.offset));
        match written {
            Ok(()) => {
                let ticket = segment.sync.ticket();
                Ok(Appended {
                    extents,
                    durable: Durable(Some((segment, ticket))),
                })
            }
            Err(error) => {
                self.discard(&[Extent {
                    segment: segment.number,
                    offset: start,
                    len: total,
                }]);
                Err(error)
            }
        }
    }

    /// Reserves `len` octets (whole blocks) at the end of the lane's current segment,
    /// starting a new one when it is full (or none is open yet).
    fn reserve(&self, len: u64, reread: Reread) -> io::Result<(Arc<Segment>, u64)> {
        // The tail and the counter stay consistent even if a holder panicked.
        let mut tail = lock(&self.tails[reread.lane()]);
        let (segment, end) = match tail.take() {
            // A segment whose fsync failed takes no more letters.
            Some((segment, end))
                if end < self.segment_bytes[reread.lane()] && !segment.sync.failed() =>
            {
                (segment, end)
            }
            full => {
                if let (Some((segment, _)), Reread::Soon) = (full, reread) {
                    lock(&self.sealed).push(segment);
                }
                let mut next = lock(&self.next);
                (Arc::new(self.create(&mut next)?), 0)
            }
        };
        *tail = Some((segment.clone(), end + len));
        Ok((segment, end))
    }

    /// Creates the next segment (mode 0600; a number another process took is skipped)
    /// and makes its directory entry durable.
    fn create(&self, next: &mut u64) -> io::Result<Segment> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        loop {
            let number = *next;
            *next += 1;
            match options.open(self.path(number)) {
                Ok(file) => {
                    File::open(&self.dir)?.sync_all()?;
                    return Ok(Segment {
                        number,
                        file,
                        sync: SharedSync::default(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The body at `extent`; `None` if its segment is gone.
    pub(crate) fn read(&self, extent: &Extent) -> io::Result<Option<Vec<u8>>> {
        let file = match File::open(self.path(extent.segment)) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = usize::try_from(extent.len).map_err(io::Error::other)?;
        let mut body = vec![0; len];
        file.read_exact_at(&mut body, extent.offset)?;
        Ok(Some(body))
    }

    /// Punches the bodies at `extents` out of their segments now (see
    /// [`punch_out`]).
    pub(crate) fn discard(&self, extents: &[Extent]) {
        punch_out(&self.dir, extents.to_vec());
    }

    /// Punches the bodies at `extents` out of their segments within moments, in the
    /// background (see [`crate::puncher`]).
    pub(crate) fn discard_soon(&self, extents: &[Extent]) {
        self.puncher.punch_soon(extents);
    }

    /// Waits until the background punches asked for so far are done.
    pub(crate) fn settle(&self) {
        self.puncher.settle();
    }

    /// Punches every range of every segment that holds data no extent in `live`
    /// covers, and removes segments (and other files) with none; returns how many
    /// ranges and files went.
    fn sweep(&self, live: &HashMap<u64, Vec<Extent>>) -> io::Result<usize> {
        let mut swept = 0;
        let mut removed = false;
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let extents = path
                .file_name()
                .and_then(segment_number)
                .and_then(|number| live.get(&number));
            let Some(extents) = extents else {
                std::fs::remove_file(&path)?;
                removed = true;
                swept += 1;
                continue;
            };
            let file = OpenOptions::new().write(true).open(&path)?;
            let mut ranges: Vec<(u64, u64)> = extents.iter().map(|e| (e.offset, e.end())).collect();
            ranges.sort_unstable();
            let mut covered = 0;
            let file_end = file.metadata()?.len().next_multiple_of(BLOCK);
            for (start, end) in ranges.into_iter().chain([(file_end, 0)]) {
                if start > covered && holds_data(&file, covered, start)? {
                    punch(&file, covered, start - covered)?;
                    swept += 1;
                }
                covered = covered.max(end);
            }
        }
        if removed {
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(swept)
    }
}

/// Punches the bodies at `extents` out of the segments in `dir`, adjacent ones with
/// one punch, and logs a failure. The punch is not fsynced: a range a crash brings
/// back, or that could not be punched, is named by no record, and the start-up sweep
/// punches it.
fn punch_out(dir: &Path, mut extents: Vec<Extent>) {
    extents.sort_unstable_by_key(|extent| (extent.segment, extent.offset));
    let mut ranges: Vec<(u64, u64, u64)> = Vec::new();
    for extent in extents {
        match ranges.last_mut() {
            Some((segment, _, end)) if *segment == extent.segment && *end == extent.offset => {
                *end = extent.end();
            }
            _ => ranges.push((extent.segment, extent.offset, extent.end())),
        }
    }
    for (segment, start, end) in ranges {
        let punched = OpenOptions::new()
            .write(true)
            .open(segment_path(dir, segment))
            .and_then(|file| punch(&file, start, end - start));
        match punched {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::error!(%error, segment, "a letter's body could not be punched out");
            }
        }
    }
}

/// Removes the full waiting-letter segments in `sealed` that hold no data and that
/// nobody holds: a writer holds its segment from reserving its range until the commit
/// that records the letter (whose data is then there until it is punched), and no
/// writer reserves in a full segment. A removal is not fsynced: a crash that brings a
/// segment back leaves it to the start-up sweep.
fn remove_emptied(dir: &Path, sealed: &Mutex<Vec<Arc<Segment>>>) {
    lock(sealed).retain(|segment| {
        if Arc::strong_count(segment) > 1 || has_data(&segment.file) {
            return true;
        }
        match std::fs::remove_file(segment_path(dir, segment.number)) {
            Ok(()) => false,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(error) => {
                tracing::warn!(%error, segment = segment.number, "an emptied segment stays until the next start");
                false
            }
        }
    });
}

/// Whether `file` holds any data (not only holes); true if that cannot be told.
fn has_data(file: &File) -> bool {
    !matches!(
        rustix::fs::seek(file, rustix::fs::SeekFrom::Data(0)),
        Err(rustix::io::Errno::NXIO)
    )
}

/// The file of segment `number` in `dir`.
fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:016x}.seg"))
}

/// Drops the durable body at `extent` from the page cache (best effort). Bodies are
/// read seldom (when the member fetches the letter), and a page cache that keeps them
/// takes fresh pages for every new body: on the virtual machines kvgate was measured
/// on, filling pages the host has reclaimed ran at 0.8 GB/s against 5 to 6 GB/s for
/// pages freed a moment ago, a seventh of the server's time at 2 MiB letters.
fn forget(file: &File, extent: &Extent) {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{Advice, fadvise};
        // The blocks the body occupies are its own; no length would mean the whole
        // rest of the file.
        if let Some(len) = std::num::NonZeroU64::new(extent.end() - extent.offset) {
            let _ = fadvise(file, extent.offset, Some(len), Advice::DontNeed);
        }
    }
    let _ = (file, extent);
}

/// The number of the segment file called `name`, if it is one.
fn segment_number(name: &std::ffi::OsStr) -> Option<u64> {
    let hex = name.to_str()?.strip_suffix(".seg")?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// Whether `file` has data (not a hole) between `start` and `end`; true where the
/// file system cannot tell.
fn holds_data(file: &File, start: u64, end: u64) -> io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{SeekFrom, seek};
        match seek(file, SeekFrom::Data(start)) {
            Ok(data) => return Ok(data < end),
            // No data after `start`.
            Err(rustix::io::Errno::NXIO) => return Ok(false),
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::OPNOTSUPP) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let _ = (file, start, end);
    Ok(true)
}

/// Gives the blocks of `len` octets at `offset` of `file` back to the file system (the
/// range then reads as zeros); writes zeros over them where it cannot.
fn punch(file: &File, offset: u64, len: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{FallocateFlags, fallocate};
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        match fallocate(file, flags, offset, len) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::OPNOTSUPP) => {}
            Err(e) => return Err(e.into()),
        }
    }
    write_zeros(file, offset, len)
}

/// Writes `len` zeros at `offset` of `file`.
fn write_zeros(file: &File, offset: u64, len: u64) -> io::Result<()> {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let end = offset + len;
    let mut at = offset;
    while at < end {
        let n = (end - at).min(ZEROS.len() as u64) as usize;
        file.write_all_at(&ZEROS[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

impl Store {
    /// Appends the bodies of `letters` (each with the key its record will have in
    /// `table`, read again as `reread` says), then runs `commit` with where they went
    /// and the fsync it must wait for before its commit (a grouped commit waits for
    /// it once for the whole group); it returns its outcome and the keys of the
    /// letters it recorded. The bodies of the others (a recipient filed
    /// before), or of all if `commit` fails, are punched afterwards.
    pub(crate) fn commit_with_bodies<T>(
        &self,
        (table, reread): (Records, Reread),
        letters: &[(&str, &[u8])],
        commit: impl FnOnce(Vec<Extent>, Durable) -> Result<(T, Vec<String>), StoreError>,
    ) -> Result<T, StoreError> {
        let bytes: Vec<&[u8]> = letters.iter().map(|(_, bytes)| *bytes).collect();
        let Appended { extents, durable } = self.bodies.append(&bytes, reread)?;
        let written: Vec<(&str, Extent)> = letters
            .iter()
            .map(|(key, _)| *key)
            .zip(extents.iter().copied())
            .collect();
        let (value, recorded) = match commit(extents.clone(), durable.clone()) {
            Ok(outcome) => outcome,
            Err(error) => {
                self.discard_unrecorded(table, &written);
                return Err(error);
            }
        };
        if reread == Reread::Seldom {
            durable.forget(&extents);
        }
        let unrecorded: Vec<Extent> = written
            .iter()
            .filter(|(key, _)| !recorded.iter().any(|r| r == key))
            .map(|(_, extent)| *extent)
            .collect();
        self.bodies.discard_soon(&unrecorded);
        Ok(value)
    }

    /// Punches the bodies of `letters` after a failed commit, except those whose key
    /// `table` holds after all (a commit whose outcome was unknown may have landed); if
    /// that cannot be read, every body stays for the start-up sweep.
    fn discard_unrecorded(&self, table: Records, letters: &[(&str, Extent)]) {
        let unrecorded = self.read(|tx| {
            let records = tx.open_table(table)?;
            let mut unrecorded = Vec::new();
            for (key, extent) in letters {
                if records.get(*key)?.is_none() {
                    unrecorded.push(*extent);
                }
            }
            Ok(unrecorded)
        });
        match unrecorded {
            Ok(unrecorded) => self.bodies.discard_soon(&unrecorded),
            Err(error) => {
                tracing::error!(%error, "bodies of a failed commit stay until the next start");
            }
        }
    }

    /// The body of the message `meta` describes; `None` if the message was deleted
    /// meanwhile. The record is looked at again after the body is read: a deletion
    /// punches the body only after its commit, so a record still there means the body
    /// was read whole.
    pub(crate) fn body(&self, meta: &MessageMeta) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(body) = self.bodies.read(&meta.body)? else {
            return Ok(None);
        };
        let still_there = self.read(|tx| {
            let messages = tx.open_table(MESSAGES)?;
            Ok(messages.get(meta.id.as_str())?.is_some())
        })?;
        Ok(still_there.then_some(body))
    }

    /// Waits until the bodies of letters done with (accepted letters once processed)
    /// are punched out, which happens in the background within moments; a server
    /// calls it as it stops.
    pub fn settle_punches(&self) {
        self.bodies.settle();
    }

    /// Punches the bodies of deleted letters (after the commit that deleted them); a
    /// failure is logged, and the start-up sweep punches what is left.
    pub(crate) fn discard_bodies(&self, extents: &[Extent]) {
        self.bodies.discard(extents);
    }

    /// Punches every body no record names (no message, no accepted letter: bodies written for a commit that
    /// never happened, letters whose punch failed) and removes segments with none, and
    /// files that are no segment. Returns how many ranges and files went. Call it only
    /// while nothing files letters (when the server starts): a body is written before
    /// its letter's record is committed.
    pub fn sweep_bodies(&self) -> Result<usize, StoreError> {
        let live = self.read(|tx| {
            let mut live: HashMap<u64, Vec<Extent>> = HashMap::new();
            for entry in tx.open_table(MESSAGES)?.iter()? {
                let (_, value) = entry?;
                let meta: MessageMeta = serde_json::from_slice(value.value())?;
                live.entry(meta.body.segment).or_default().push(meta.body);
            }
            for entry in tx.open_table(SPOOLED_AT)?.iter()? {
                let (_, value) = entry?;
                let extent: Extent = serde_json::from_slice(value.value())?;
                live.entry(extent.segment).or_default().push(extent);
            }
            Ok(live)
        })?;
        Ok(self.bodies.sweep(&live)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::Mailbox;
    use crate::messages::NewMessage;
    use crate::submissions::SubmissionState;
    use crate::testing::{self, bodies_on_disk, contains, file, submitted};

    /// Appends `letters` and makes them durable.
    fn write(bodies: &Bodies, letters: &[&[u8]]) -> Vec<Extent> {
        let appended = bodies.append(letters, Reread::Seldom).unwrap();
        appended.durable.wait().unwrap();
        appended.extents
    }

    #[test]
    fn bodies_punched_in_the_background_go_together_and_spare_their_neighbours() {
        let (dir, store) = testing::open();
        let written = write(&store.bodies, &[b"FIRST", b"SECOND", b"KEPT", b"FOURTH"]);
        store
            .bodies
            .discard_soon(&[written[1], written[0], written[3]]);
        store.bodies.settle();
        let on_disk = bodies_on_disk(dir.path());
        for gone in [&b"FIRST"[..], b"SECOND", b"FOURTH"] {
            assert!(!contains(&on_disk, gone));
        }
        assert_eq!(store.bodies.read(&written[2]).unwrap().unwrap(), b"KEPT");
    }

    #[test]
    fn waiting_letters_and_filed_bodies_take_segments_of_their_own() {
        let (_dir, store) = testing::open();
        let append = |bytes: &[u8], reread| store.bodies.append(&[bytes], reread).unwrap();
        let waiting = append(b"W1", Reread::Soon).extents[0];
        let filed = append(b"F1", Reread::Seldom).extents[0];
        let next_waiting = append(b"W2", Reread::Soon).extents[0];
        let next_filed = append(b"F2", Reread::Seldom).extents[0];
        assert_ne!(waiting.segment, filed.segment);
        assert_eq!(
            (next_waiting.segment, next_waiting.offset),
            (waiting.segment, BLOCK)
        );
        assert_eq!(
            (next_filed.segment, next_filed.offset),
            (filed.segment, BLOCK)
        );
    }

    #[test]
    fn a_full_waiting_segment_is_removed_once_emptied_and_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let sizes = [3 * BLOCK, SEGMENT_BYTES];
        let bodies = Bodies::open_sized(dir.path().to_owned(), sizes).unwrap();
        let exists = |extent: &Extent| segment_path(dir.path(), extent.segment).exists();
        let appended: Vec<Appended> = (0..7)
            .map(|i| bodies.append(&[&[i; 100]], Reread::Soon).unwrap())
            .collect();
        let extents: Vec<Extent> = appended.iter().map(|a| a.extents[0]).collect();
        // Three segments: letters 0-2, 3-5 (held by a writer still), and 6 being filled.
        let holder = appended[3].durable.clone();
        drop(appended);
        assert_eq!(extents[2].segment, extents[0].segment);
        assert_ne!(extents[3].segment, extents[0].segment);
        assert_ne!(extents[6].segment, extents[3].segment);

        bodies.discard_soon(&[extents[0], extents[1], extents[3], extents[4], extents[5]]);
        bodies.settle();
        assert!(exists(&extents[0]), "letter 2 is still in it");
        assert!(exists(&extents[3]), "a writer holds it");

        bodies.discard_soon(&extents[2..3]);
        bodies.settle();
        assert!(!exists(&extents[0]));
        assert!(exists(&extents[3]));

        drop(holder);
        bodies.discard_soon(&extents[6..]);
        bodies.settle();
        assert!(!exists(&extents[3]));
        assert!(exists(&extents[6]), "the segment being filled stays");
        assert!(bodies.append(&[b"more"], Reread::Soon).is_ok());
    }

    /// The segment files in the store's body directory.
    fn segments(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir.join("bodies")).unwrap().count()
    }

    #[test]
    fn a_letter_body_is_on_disk_until_the_letter_is_deleted() {
        let (dir, store) = testing::open();
        let (alice, _) = testing::member(&store, "A123456780");
        let message = submitted(&store, &alice, Mailbox::Postfach, b"CIPHERTEXT-1");
        let again = NewMessage {
            ciphertext: testing::ciphertext(b"CIPHERTEXT-2"),
            ..message.clone()
        };
        let (other, _) = file(&store, &alice, Mailbox::Postfach, b"CIPHERTEXT-3");
        let id = store.file_message(message, Vec::new()).unwrap();
        assert!(contains(&bodies_on_disk(dir.path()), b"CIPHERTEXT-1"));

        // Filing the same recipient of the same submission again (after a crash) keeps
        // the first letter and leaves nothing of the second behind.
        let refiled = store.file_message(again, Vec::new());
        assert_eq!(refiled.unwrap(), id);
        store.bodies.settle();
        assert!(!contains(&bodies_on_disk(dir.path()), b"CIPHERTEXT-2"));
        let (meta, body) = store.fetch_message(&alice, &id).unwrap().unwrap();
        assert_eq!((meta.size, body.as_slice()), (12, &b"CIPHERTEXT-1"[..]));
        assert_eq!(
            store.message_body(&alice, &id).unwrap().as_deref(),
            Some(&b"CIPHERTEXT-1"[..])
        );

        assert!(store.delete_message(&alice, &id).unwrap());
        let on_disk = bodies_on_disk(dir.path());
        assert!(!contains(&on_disk, b"CIPHERTEXT-1"));
        assert!(contains(&on_disk, b"CIPHERTEXT-3"));
        assert_eq!(store.message_body(&alice, &id).unwrap(), None);
        assert_eq!(
            store.message_body(&alice, &other).unwrap().as_deref(),
            Some(&b"CIPHERTEXT-3"[..])
        );
        assert_eq!(segments(dir.path()), 1);
    }

    #[test]
    fn bodies_start_on_whole_blocks_and_a_full_segment_is_followed_by_a_new_one() {
        let (dir, store) = testing::open();
        let bodies = &store.bodies;
        // Writing nothing opens no segment.
        assert_eq!(write(bodies, &[]), []);
        assert_eq!(segments(dir.path()), 0);
        let large = vec![b'L'; SEGMENT_BYTES as usize];
        let written = write(bodies, &[b"a", b"bc", &large, b"d"]);
        let offsets: Vec<(u64, u64)> = written.iter().map(|e| (e.segment, e.offset)).collect();
        assert_eq!(
            offsets,
            [
                (0, 0),
                (0, BLOCK),
                (0, 2 * BLOCK),
                (0, 2 * BLOCK + SEGMENT_BYTES)
            ]
        );
        let next = write(bodies, &[b"e"]);
        assert_eq!((next[0].segment, next[0].offset), (1, 0));
        for (extent, bytes) in written.iter().zip([&b"a"[..], b"bc", &large, b"d"]) {
            assert_eq!(bodies.read(extent).unwrap().as_deref(), Some(bytes));
        }
        assert_eq!(segments(dir.path()), 2);
        // A store opened later starts a segment of its own.
        drop(store);
        let store = Store::open(&dir.path().join("kvgate.redb")).unwrap();
        let later = write(&store.bodies, &[b"f"]);
        assert_eq!((later[0].segment, later[0].offset), (2, 0));
    }

    #[test]
    fn a_failed_commit_leaves_nothing_behind() {
        let (dir, store) = testing::open();
        let (alice, _) = testing::member(&store, "A123456780");
        let message = submitted(&store, &alice, Mailbox::Postfach, b"FIRST");
        let id = message.tracking_id.clone();
        let again = NewMessage {
            ciphertext: testing::ciphertext(b"SECOND"),
            ..message.clone()
        };
        let deliver = |message: NewMessage| {
            let filings = vec![(message, Vec::new())];
            store.deliver_submission(
                &id,
                filings,
                SubmissionState::Delivered,
                Vec::new(),
                Vec::new(),
            )
        };
        deliver(message).unwrap();
        // The submission is no longer queued: the commit fails, and the second body
        // goes while the first letter's stays.
        assert!(matches!(deliver(again), Err(StoreError::NotFound(_))));
        store.bodies.settle();
        let on_disk = bodies_on_disk(dir.path());
        assert!(contains(&on_disk, b"FIRST"));
        assert!(!contains(&on_disk, b"SECOND"));
    }

    #[test]
    fn closing_an_inbox_and_cancelling_punch_the_letters_out() {
        let (dir, store) = testing::open();
        let (alice, _) = testing::member(&store, "A123456780");
        file(&store, &alice, Mailbox::Postfach, b"POSTFACH");
        file(&store, &alice, Mailbox::Smarthealth, b"SMARTHEALTH");
        assert_eq!(store.close_smarthealth(&alice, "closed").unwrap(), 1);
        let on_disk = bodies_on_disk(dir.path());
        assert!(!contains(&on_disk, b"SMARTHEALTH"));
        assert!(contains(&on_disk, b"POSTFACH"));
        let deleted = store.delete_account(&alice, "cancelled").unwrap().unwrap();
        assert_eq!(deleted.letters, 1);
        assert!(!contains(&bodies_on_disk(dir.path()), b"POSTFACH"));
    }

    #[test]
    fn where_holes_cannot_be_punched_zeros_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        std::fs::write(&path, vec![b'x'; 200_000]).unwrap();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        write_zeros(&file, 10, 150_000).unwrap();
        let after = std::fs::read(&path).unwrap();
        assert_eq!(after.len(), 200_000);
        assert!(
            after[..10]
                .iter()
                .chain(&after[150_010..])
                .all(|&b| b == b'x')
        );
        assert!(after[10..150_010].iter().all(|&b| b == 0));
    }

    #[test]
    fn the_sweep_punches_what_no_letter_names_and_removes_empty_segments() {
        let (dir, store) = testing::open();
        let (alice, _) = testing::member(&store, "A123456780");
        // A body written for a commit that never happened, in the segment of a letter
        // that stays and in one of its own; a file that is no segment.
        let (kept, _) = file(&store, &alice, Mailbox::Postfach, b"KEPT");
        write(&store.bodies, &[b"ORPHAN-1"]);
        drop(store);
        let store = Store::open(&dir.path().join("kvgate.redb")).unwrap();
        write(&store.bodies, &[b"ORPHAN-2"]);
        std::fs::write(dir.path().join("bodies").join("stray"), b"STRAY").unwrap();
        assert_eq!(segments(dir.path()), 3);

        assert_eq!(store.sweep_bodies().unwrap(), 3);
        let on_disk = bodies_on_disk(dir.path());
        for gone in [&b"ORPHAN-1"[..], b"ORPHAN-2", b"STRAY"] {
            assert!(!contains(&on_disk, gone));
        }
        assert_eq!(segments(dir.path()), 1);
        assert_eq!(store.sweep_bodies().unwrap(), 0);
        assert_eq!(
            store.message_body(&alice, &kept).unwrap().as_deref(),
            Some(&b"KEPT"[..])
        );
    }
}
