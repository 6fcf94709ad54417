//! Which letters the pipeline's workers are processing, in a file of one slot per
//! worker, so that a start after the process died (an abort in a library, the OOM
//! killer, `kill -9`) knows which letters were running and counts that attempt against
//! them, and against no other.
//!
//! A worker writes the tracking ID into its slot before it processes a letter and
//! blanks the slot after. The writes are not synced: the file's pages outlive the
//! process in the page cache, which is what a poison letter takes down. (A crash of
//! the whole machine may lose the last writes; a letter that brings down the kernel is
//! then not counted, and its attempt is simply made again.) Counting durably before
//! each attempt instead cost a commit for every letter handed out and counted letters
//! that merely waited for a worker, so that a few crashes in a row quarantined the
//! whole backlog.

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::Path;

use kvgate_store::TrackingId;

/// Octets a slot takes: a tracking ID (26 characters) and a line end, padded.
const SLOT: usize = 32;

/// The file of the workers' slots.
#[derive(Debug)]
pub struct RunningFile {
    file: File,
}

impl RunningFile {
    /// Opens the file at `path` (created if missing) and returns it with the letters
    /// its slots name: those running when the gateway last stopped. The slots are
    /// blanked before the workers start.
    pub fn take_over(path: &Path) -> io::Result<(RunningFile, Vec<TrackingId>)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let running = RunningFile { file };
        let mut recorded = Vec::new();
        let mut slot = [0u8; SLOT];
        let mut index = 0;
        while running.read_slot(index, &mut slot)? {
            let text = std::str::from_utf8(&slot).unwrap_or_default();
            if let Ok(id) = text
                .trim_matches(|c: char| c == '\0' || c.is_whitespace())
                .parse()
            {
                recorded.push(id);
            }
            index += 1;
        }
        running.file.set_len(0)?;
        Ok((running, recorded))
    }

    /// Records that worker `worker` processes `id` from now on.
    pub fn start(&self, worker: u64, id: &TrackingId) -> io::Result<()> {
        let mut slot = [b' '; SLOT];
        let text = id.as_str().as_bytes();
        let len = text.len().min(SLOT - 1);
        slot[..len].copy_from_slice(&text[..len]);
        slot[SLOT - 1] = b'\n';
        self.file.write_all_at(&slot, offset(worker))
    }

    /// Records that worker `worker` is done with its letter.
    pub fn end(&self, worker: u64) -> io::Result<()> {
        let mut slot = [b' '; SLOT];
        slot[SLOT - 1] = b'\n';
        self.file.write_all_at(&slot, offset(worker))
    }

    /// Reads slot `index` into `slot`; false past the end of the file.
    fn read_slot(&self, index: u64, slot: &mut [u8; SLOT]) -> io::Result<bool> {
        match self.file.read_exact_at(slot, offset(index)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Where the slot of worker `worker` starts.
fn offset(worker: u64) -> u64 {
    worker.saturating_mul(SLOT as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_letters_running_when_the_process_died_are_found_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipeline.running");
        let (running, found) = RunningFile::take_over(&path).unwrap();
        assert!(found.is_empty());
        let [first, second, third] = [(); 3].map(|()| TrackingId::generate().unwrap());
        running.start(1, &first).unwrap();
        running.start(7, &second).unwrap();
        running.end(1).unwrap();
        running.start(1, &third).unwrap();
        running.start(3, &first).unwrap();
        running.end(3).unwrap();
        // The process dies here: the file is all that is left.
        drop(running);
        let (running, found) = RunningFile::take_over(&path).unwrap();
        assert_eq!(found, [third, second]);
        // Taken over: blanked for the next run.
        drop(running);
        assert_eq!(RunningFile::take_over(&path).unwrap().1, []);
    }
}
