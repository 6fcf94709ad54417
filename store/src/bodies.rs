//! Letter bodies: each filed letter's ciphertext in a file of its own, named by its
//! message ID, in `bodies/` beside the database file.
//!
//! redb does not clear the pages it frees, so a letter kept in the database would stay
//! readable in its file after deletion until the next compaction. In a file of its own
//! its bytes leave with the file. A body file is written durably (created under its
//! fresh message ID, fsynced, its directory entry fsynced together with those of
//! concurrent writers) before the commit that records its letter, and removed after
//! the commit that deletes it. Nothing reads a body its record does not name, so a
//! file needs no temporary name: one no message record names (a crash between the two,
//! a write cut short, or a removal that failed) is swept at start-up.

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use redb::ReadableTable;

use crate::Store;
use crate::db::MESSAGES;
use crate::dirsync::DirSync;
use crate::error::StoreError;
use crate::ids::MessageId;

/// The directory of letter body files.
#[derive(Debug)]
pub(crate) struct Bodies {
    dir: PathBuf,
    sync: DirSync,
}

impl Bodies {
    /// Opens (and creates, mode 0700) the directory.
    pub(crate) fn open(dir: PathBuf) -> io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let sync = DirSync::new(&dir);
        Ok(Bodies { dir, sync })
    }

    /// Where the body of message `id` is.
    fn path(&self, id: &MessageId) -> PathBuf {
        self.dir.join(id.as_str())
    }

    /// Writes each letter's body to its file (mode 0600) and makes the files and their
    /// directory entries durable. On failure, the files written so far are removed.
    pub(crate) fn write(&self, letters: &[(&MessageId, &[u8])]) -> io::Result<()> {
        for (done, (id, bytes)) in letters.iter().enumerate() {
            if let Err(error) = self.write_one(id, bytes) {
                letters[..done].iter().for_each(|(id, _)| self.discard(id));
                return Err(error);
            }
        }
        match self.sync.sync() {
            Ok(()) => Ok(()),
            Err(error) => {
                letters.iter().for_each(|(id, _)| self.discard(id));
                Err(error)
            }
        }
    }

    /// Writes one body to its new file `<id>` and fsyncs it.
    fn write_one(&self, id: &MessageId, bytes: &[u8]) -> io::Result<()> {
        let path = self.path(id);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&path)?;
        match file.write_all(bytes).and_then(|()| file.sync_data()) {
            Ok(()) => Ok(()),
            Err(error) => {
                let _ = remove_file(&path);
                Err(error)
            }
        }
    }

    /// The body of message `id`; `None` if it has no file.
    pub(crate) fn read(&self, id: &MessageId) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.path(id)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes the body file of message `id` (one already gone is fine), logging a
    /// failure. The removal is not fsynced: a file that a crash brings back, or that
    /// could not be removed, is named by no message record, and the start-up sweep
    /// removes it.
    pub(crate) fn discard(&self, id: &MessageId) {
        if let Err(error) = remove_file(&self.path(id)) {
            tracing::error!(%error, message = %id, "a letter body file could not be removed");
        }
    }

    /// Removes every file whose name is not a message ID in `keep`; returns how many.
    fn sweep(&self, keep: &HashSet<MessageId>) -> io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let keep_it = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<MessageId>().ok())
                .is_some_and(|id| keep.contains(&id));
            if !keep_it {
                remove_file(&entry.path())?;
                removed += 1;
            }
        }
        if removed > 0 {
            std::fs::File::open(&self.dir)?.sync_all()?;
        }
        Ok(removed)
    }
}

/// Removes a file; one already gone is not an error.
fn remove_file(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl Store {
    /// Writes the bodies of `letters` to their files, then runs `commit`, which returns
    /// its outcome and the IDs of the letters it recorded. The files of the others (a
    /// recipient filed before), or of all if `commit` fails, are removed afterwards.
    pub(crate) fn commit_with_bodies<T>(
        &self,
        letters: &[(&MessageId, &[u8])],
        commit: impl FnOnce() -> Result<(T, Vec<MessageId>), StoreError>,
    ) -> Result<T, StoreError> {
        self.bodies.write(letters)?;
        let (value, recorded) = match commit() {
            Ok(outcome) => outcome,
            Err(error) => {
                self.discard_unrecorded(letters);
                return Err(error);
            }
        };
        for (id, _) in letters {
            if !recorded.contains(id) {
                self.bodies.discard(id);
            }
        }
        Ok(value)
    }

    /// Removes the files of `letters` after a failed commit, except those a message
    /// record names after all (a commit whose outcome was unknown may have landed); if
    /// that cannot be read, every file stays for the start-up sweep.
    fn discard_unrecorded(&self, letters: &[(&MessageId, &[u8])]) {
        let named = self.read(|tx| {
            let messages = tx.open_table(MESSAGES)?;
            let mut named = HashSet::new();
            for (id, _) in letters {
                if messages.get(id.as_str())?.is_some() {
                    named.insert((*id).clone());
                }
            }
            Ok(named)
        });
        match named {
            Ok(named) => letters
                .iter()
                .filter(|(id, _)| !named.contains(*id))
                .for_each(|(id, _)| self.bodies.discard(id)),
            Err(error) => {
                tracing::error!(%error, "body files of a failed commit stay until the next start");
            }
        }
    }

    /// The body of message `id` (whose record the caller has read); `None` if its file
    /// is gone (the letter was deleted meanwhile).
    pub(crate) fn body(&self, id: &MessageId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.bodies.read(id)?)
    }

    /// Removes the body files of deleted letters (after the commit that deleted them);
    /// a failure is logged, and the start-up sweep removes what is left.
    pub(crate) fn discard_bodies(&self, ids: &[MessageId]) {
        ids.iter().for_each(|id| self.bodies.discard(id));
    }

    /// Removes every body file no message record names: bodies written for a commit
    /// that never happened, of letters whose removal failed, and files not named by a message ID at all.
    /// Returns how many. Call it only while nothing files letters (when the server
    /// starts): a body is written before its letter's record is committed.
    pub fn sweep_bodies(&self) -> Result<usize, StoreError> {
        let keep = self.read(|tx| {
            let mut keep = HashSet::new();
            for entry in tx.open_table(MESSAGES)?.iter()? {
                let (key, _) = entry?;
                if let Ok(id) = key.value().parse::<MessageId>() {
                    keep.insert(id);
                }
            }
            Ok(keep)
        })?;
        Ok(self.bodies.sweep(&keep)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvnr::Kvnr;
    use crate::mailbox::Mailbox;
    use crate::messages::NewMessage;
    use crate::submissions::SubmissionState;
    use crate::testing::{self, body_files, file, submitted};

    #[test]
    fn a_letter_body_lives_in_its_file_until_the_letter_is_deleted() {
        let (dir, store) = testing::open();
        let alice = Kvnr::parse("A123456780").unwrap();
        let message = submitted(&store, &alice, Mailbox::Postfach, b"CIPHERTEXT-1");
        let again = NewMessage {
            ciphertext: b"CIPHERTEXT-2".to_vec(),
            ..message.clone()
        };
        let id = store.file_message(message, Vec::new()).unwrap();
        assert_eq!(body_files(dir.path()), [id.to_string()]);
        let on_disk = std::fs::read(dir.path().join("bodies").join(id.as_str())).unwrap();
        assert_eq!(on_disk, b"CIPHERTEXT-1");

        // Filing the same recipient of the same submission again (after a crash) keeps
        // the first letter and leaves no second body file behind.
        let refiled = store.file_message(again, Vec::new());
        assert_eq!(refiled.unwrap(), id);
        assert_eq!(body_files(dir.path()), [id.to_string()]);
        let (meta, body) = store.fetch_message(&alice, &id).unwrap().unwrap();
        assert_eq!((meta.size, body.as_slice()), (12, &b"CIPHERTEXT-1"[..]));
        assert_eq!(
            store.message_body(&alice, &id).unwrap().as_deref(),
            Some(&b"CIPHERTEXT-1"[..])
        );

        assert!(store.delete_message(&alice, &id).unwrap());
        assert!(body_files(dir.path()).is_empty());
        assert_eq!(store.message_body(&alice, &id).unwrap(), None);
    }

    #[test]
    fn a_failed_commit_leaves_no_body_file_behind() {
        let (dir, store) = testing::open();
        let alice = Kvnr::parse("A123456780").unwrap();
        let message = submitted(&store, &alice, Mailbox::Postfach, b"FIRST");
        let id = message.tracking_id.clone();
        let again = NewMessage {
            ciphertext: b"SECOND".to_vec(),
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
        assert_eq!(body_files(dir.path()).len(), 1);
        // The submission is no longer queued: the commit fails, and the second body
        // file goes while the first letter's stays.
        assert!(matches!(deliver(again), Err(StoreError::NotFound(_))));
        let [kept] = body_files(dir.path()).try_into().unwrap();
        let body = std::fs::read(dir.path().join("bodies").join(kept)).unwrap();
        assert_eq!(body, b"FIRST");
    }

    #[test]
    fn closing_an_inbox_and_cancelling_remove_the_letters_files() {
        let (dir, store) = testing::open();
        let (alice, _) = testing::member(&store, "A123456780");
        let (kept, _) = file(&store, &alice, Mailbox::Postfach, b"POSTFACH");
        file(&store, &alice, Mailbox::Smarthealth, b"SMARTHEALTH");
        assert_eq!(body_files(dir.path()).len(), 2);
        assert_eq!(store.close_smarthealth(&alice, "closed").unwrap(), 1);
        assert_eq!(body_files(dir.path()), [kept.to_string()]);
        let deleted = store.delete_account(&alice, "cancelled").unwrap().unwrap();
        assert_eq!(deleted.letters, 1);
        assert!(body_files(dir.path()).is_empty());
    }

    #[test]
    fn the_sweep_removes_files_no_letter_names() {
        let (dir, store) = testing::open();
        let alice = Kvnr::parse("A123456780").unwrap();
        let (kept, _) = file(&store, &alice, Mailbox::Postfach, b"KEPT");
        let bodies = dir.path().join("bodies");
        let unnamed = MessageId::generate().unwrap();
        std::fs::write(bodies.join(unnamed.as_str()), b"ORPHAN").unwrap();
        std::fs::write(bodies.join(format!("{kept}.tmp")), b"HALF").unwrap();
        assert_eq!(store.sweep_bodies().unwrap(), 2);
        assert_eq!(body_files(dir.path()), [kept.to_string()]);
        assert_eq!(store.sweep_bodies().unwrap(), 0);
        assert_eq!(
            store.message_body(&alice, &kept).unwrap().as_deref(),
            Some(&b"KEPT"[..])
        );
    }
}
