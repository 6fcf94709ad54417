//! The redb database and the helpers every table module shares.

use std::cell::{OnceCell, RefCell, RefMut};
use std::ops::DerefMut;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{OnceLock, PoisonError, RwLock, RwLockReadGuard, TryLockError};
use std::time::{Duration, Instant};

use redb::{
    CompactionError, ConcurrencyMode, Database, ReadTransaction, ReadableDatabase, ReadableTable,
    Table, TableDefinition, TableHandle, WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::account::Scrub;
use crate::activity::Activity;
use crate::bodies::{Bodies, Durable};
use crate::error::StoreError;
use crate::group::{Group, Lane};
use crate::ids::TrackingId;
use crate::outbound::Attempts;
use crate::spool::Spool;

/// A table of JSON records under text keys.
pub(crate) type Records = TableDefinition<'static, &'static str, &'static [u8]>;

/// A [`Records`] table opened by a write transaction.
pub(crate) type RecordsTable<'t> = Table<'t, &'static str, &'static [u8]>;

/// Members by KVNR.
pub(crate) const MEMBERS: Records = TableDefinition::new("members");
/// Members' OpenPGP public keys by `KVNR/fingerprint`.
pub(crate) const MEMBER_KEYS: Records = TableDefinition::new("member_keys");
/// Unused enrolment codes by SHA-256 of the code.
pub(crate) const ENROLLMENT_CODES: Records = TableDefinition::new("enrollment_codes");
/// Devices by device ID.
pub(crate) const DEVICES: Records = TableDefinition::new("devices");
/// Device IDs by SHA-256 of the device's bearer token.
pub(crate) const TOKENS: Records = TableDefinition::new("tokens");
/// Senders by sender ID.
pub(crate) const SENDERS: Records = TableDefinition::new("senders");
/// Sender IDs by SHA-256 fingerprint of one of their certificates.
pub(crate) const SENDER_CERTS: Records = TableDefinition::new("sender_certs");
/// Trust anchors (PEM) by SHA-256 fingerprint.
pub(crate) const TRUST_ANCHORS: Records = TableDefinition::new("trust_anchors");
/// Submissions by tracking ID.
pub(crate) const SUBMISSIONS: Records = TableDefinition::new("submissions");
/// Submissions waiting for the pipeline, by tracking ID.
pub(crate) const QUEUE: Records = TableDefinition::new("queue");
/// Tracking events by `tracking-ID/sequence`.
pub(crate) const EVENTS: Records = TableDefinition::new("events");
/// Inbox message metadata by message ID.
pub(crate) const MESSAGES: Records = TableDefinition::new("messages");
/// Message IDs by `KVNR/mailbox/message-ID`, for listing an inbox in order.
pub(crate) const INBOX: Records = TableDefinition::new("inbox");
/// Message IDs by `tracking-ID/KVNR/mailbox`: a submission is filed once per recipient.
pub(crate) const FILED: Records = TableDefinition::new("filed");

/// Small accepted letters (see `Spool`) as kvgate before 2026-11-30 kept them: the
/// letter itself, by tracking ID, until it is processed. Read and emptied, no longer
/// written: redb keeps the bytes of a deleted record in its free pages.
pub(crate) const SPOOLED: Records = TableDefinition::new("spooled");
/// Where small accepted letters are (an `Extent` of a body segment, punched when the
/// letter is processed), by tracking ID, until they are processed.
pub(crate) const SPOOLED_AT: Records = TableDefinition::new("spooled_at");

/// Mail the gateway sends itself (reports), by outbound ID, until the relay took it.
pub(crate) const OUTBOUND: Records = TableDefinition::new("outbound");
/// Payloads of outbound messages by outbound ID, apart so that looking at the queue
/// never loads them (an upload's may be megabytes).
pub(crate) const OUTBOUND_PAYLOADS: Records = TableDefinition::new("outbound_payloads");
/// Members' client-encrypted key backups (opaque bytes, not JSON) by KVNR.
pub(crate) const KEY_BACKUPS: Records = TableDefinition::new("key_backups");
/// Members' document uploads by `KVNR/tracking-ID`.
pub(crate) const UPLOADS: Records = TableDefinition::new("uploads");
/// Processing attempts of queued submissions that did not end normally, by tracking ID.
pub(crate) const ATTEMPTS: Records = TableDefinition::new("attempts");
/// Quarantined submissions: why, by tracking ID.
pub(crate) const QUARANTINE: Records = TableDefinition::new("quarantine");

// Issue 9a: member settings, family, lifecycle.
/// Members' smarthealth records (accepted terms, quota refusals) by KVNR.
pub(crate) const SMARTHEALTH: Records = TableDefinition::new("smarthealth");
/// Members' registered family members by `KVNR/family-member-KVNR`.
pub(crate) const FAMILY: Records = TableDefinition::new("family");
/// When each member's app last used the API (to the day), by KVNR.
pub(crate) const ACCESS: Records = TableDefinition::new("access");
/// Octets of ciphertext per member and inbox, by `KVNR/mailbox`: kept with every
/// filing and deletion, so a quota check reads one record, not every message.
pub(crate) const USAGE: Records = TableDefinition::new("usage");
// issue 9b: member app sending (basic tier).
/// Basic-tier uploads (no enrolment) by tracking ID.
pub(crate) const BASIC_UPLOADS: Records = TableDefinition::new("basic_uploads");
/// Messenger threads by `KVNR/thread-ID`.
pub(crate) const THREADS: Records = TableDefinition::new("threads");
/// Thread IDs by `KVNR/Message-ID` of what the member sent, to file answers into them.
pub(crate) const THREAD_REFS: Records = TableDefinition::new("thread_refs");

/// A write transaction that opens each table once and keeps it open until the
/// transaction is committed: a grouped commit applies several changes (4.5 on average
/// at 4 KiB and 32 sessions) that touch the same few tables, and every opening builds
/// the table's type names and every closing writes its root back (about 550
/// allocations a 4 KiB letter while each change opened its own).
pub(crate) struct Tx<'t> {
    tx: &'t WriteTransaction,
    open: [OnceCell<RefCell<RecordsTable<'t>>>; ALL_TABLES.len()],
}

impl<'t> Tx<'t> {
    /// The tables of `tx`, none opened yet.
    pub(crate) fn new(tx: &'t WriteTransaction) -> Self {
        Tx {
            tx,
            open: Default::default(),
        }
    }

    /// The table `definition`, opened at its first use in this transaction; an error
    /// while an earlier use still holds it, or for a table the store does not define.
    pub(crate) fn open_table(
        &self,
        definition: Records,
    ) -> Result<RefMut<'_, RecordsTable<'t>>, StoreError> {
        let name = definition.name();
        let index = ALL_TABLES
            .iter()
            .position(|table| table.name() == name)
            .ok_or(StoreError::NotFound("table"))?;
        let cell = &self.open[index];
        if cell.get().is_none() {
            // Nothing else fills the cell meanwhile (a `Tx` is used by one thread).
            let _ = cell.set(RefCell::new(self.tx.open_table(definition)?));
        }
        cell.get()
            .and_then(|table| table.try_borrow_mut().ok())
            .ok_or_else(|| StoreError::TableInUse(name.to_owned()))
    }
}

/// redb's page cache. Its default (1 GiB) is far more than the records need (letter
/// bodies live in files of their own, see `Bodies`).
const CACHE_BYTES: usize = 64 * 1024 * 1024;

pub(crate) const ALL_TABLES: [Records; 29] = [
    MEMBERS,
    MEMBER_KEYS,
    ENROLLMENT_CODES,
    DEVICES,
    TOKENS,
    SENDERS,
    SENDER_CERTS,
    TRUST_ANCHORS,
    SUBMISSIONS,
    QUEUE,
    EVENTS,
    MESSAGES,
    INBOX,
    FILED,
    SPOOLED,
    SPOOLED_AT,
    OUTBOUND,
    OUTBOUND_PAYLOADS,
    KEY_BACKUPS,
    UPLOADS,
    ATTEMPTS,
    QUARANTINE,
    // Issue 9a.
    SMARTHEALTH,
    FAMILY,
    ACCESS,
    USAGE,
    // issue 9b
    BASIC_UPLOADS,
    THREADS,
    THREAD_REFS,
];

/// The durable state of one kvgate installation.
///
/// Cheap to share behind an `Arc`; every method is one transaction. Methods block on
/// disk I/O (commits fsync), so async callers should run them on a blocking thread.
/// The hot paths (accepting, filing and finishing submissions) use group commit:
/// concurrent callers share one durable commit, accepts in a lane of their own.
pub struct Store {
    /// Shared by every transaction; taken alone only to compact (see `compact`).
    db: RwLock<Database>,
    /// Group commit of accepted submissions (see [`Lane`]).
    accepting: Group,
    /// Group commit of everything else on the hot paths.
    processing: Group,
    /// The letters' bodies.
    pub(crate) bodies: Bodies,
    /// The outbound entries being handed to the relay.
    pub(crate) attempts: Attempts,
    /// Compactions put off while deletions run in a batch.
    pub(crate) scrub: Scrub,
    /// Submissions accepted and ended since the store was opened.
    pub(crate) activity: Activity,
    /// The spool whose files go with the letters the store drops (see
    /// [`Store::attach_spool`]).
    spool: OnceLock<Spool>,
}

/// How long compaction waits in all for the transactions that are open to end.
const COMPACTION_PATIENCE: Duration = Duration::from_secs(5);

/// How long it holds the database meanwhile before letting it go for a moment.
const COMPACTION_HOLD: Duration = Duration::from_millis(100);

/// How often it looks while it holds it.
const COMPACTION_POLL: Duration = Duration::from_millis(2);

/// Compacts until a pass finds nothing more to move (at most sixteen passes).
fn compact_fully(db: &mut Database) -> Result<(), CompactionError> {
    for _ in 0..16 {
        if !db.compact()? {
            break;
        }
    }
    Ok(())
}

impl Store {
    /// Opens the database at `path`, creating it (mode 0600) and its tables if needed,
    /// and the directory of letter bodies (`bodies/` beside it).
    ///
    /// One process has the database open at a time ([`StoreError::InUse`] for any other):
    /// redb's multi-process modes commit in two phases (two fsyncs), save the allocator
    /// state with every commit and read the header from the file for every read
    /// transaction, which cost 8% of the delivered letters at 4 KiB. While `kvgate serve`
    /// runs, the admin commands reach the store through the server.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        let bodies = Bodies::open(dir.join("bodies"))?;
        // Created by us, readable by the gateway's user alone (redb would create it as
        // the umask allows): it holds members' names, KVNRs and who wrote to whom.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StoreError::Io(e)),
        }
        let db = Database::builder()
            .set_concurrency_mode(ConcurrencyMode::ExclusiveWriter)
            .set_cache_size(CACHE_BYTES)
            .create(path)?;
        let store = Store {
            db: RwLock::new(db),
            accepting: Group::default(),
            processing: Group::default(),
            bodies,
            attempts: Attempts::default(),
            scrub: Scrub::default(),
            activity: Activity::default(),
            spool: OnceLock::new(),
        };
        store.write(|tx| {
            for table in ALL_TABLES {
                tx.open_table(table)?;
            }
            Ok(())
        })?;
        Ok(store)
    }

    /// Makes the files of `spool` go with the letters the store drops (a quarantined
    /// letter dropped by an operator or with its member's account) at once, rather than
    /// at the next start's sweep. Only the first spool attached counts.
    pub fn attach_spool(&self, spool: Spool) {
        let _ = self.spool.set(spool);
    }

    /// Removes the spool files of `letters`, dropped by a commit that has happened; one
    /// that cannot be removed goes at the next start's sweep.
    pub(crate) fn remove_spool_files(&self, letters: &[TrackingId]) {
        let Some(spool) = self.spool.get() else {
            return;
        };
        for id in letters {
            if let Err(error) = spool.remove(id) {
                tracing::warn!(%error, tracking_id = %id, "a dropped letter's spool file stays until the next start");
            }
        }
    }

    /// The database, shared with every other transaction.
    fn database(&self) -> RwLockReadGuard<'_, Database> {
        self.db.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Rewrites the database file so that nothing deleted survives in it: redb does
    /// not clear the pages it frees, so deleted records and letters stay readable in
    /// the file until compaction moves the live pages over them and cuts the rest
    /// off. Every other store call waits meanwhile, and the transactions open when it
    /// starts are waited for (up to five seconds).
    pub fn compact(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        loop {
            let held = Instant::now();
            let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
            // No transaction begins while the lock is held; those begun before end
            // without it.
            let outcome = loop {
                match compact_fully(&mut db) {
                    Err(CompactionError::TransactionInProgress)
                        if held.elapsed() < COMPACTION_HOLD =>
                    {
                        std::thread::sleep(COMPACTION_POLL);
                    }
                    other => break other,
                }
            };
            // One that waits for the lock itself (a store call inside another) ends
            // only once it is let go.
            drop(db);
            match outcome {
                Err(CompactionError::TransactionInProgress)
                    if started.elapsed() < COMPACTION_PATIENCE =>
                {
                    std::thread::yield_now();
                }
                other => return Ok(other?),
            }
        }
    }

    /// Runs `f` in one write transaction and commits it durably.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let tx = self.database().begin_write()?;
        let value = f(&Tx::new(&tx))?;
        tx.commit()?;
        Ok(value)
    }

    /// Applies `change` in a write transaction shared with concurrent callers and
    /// returns once that transaction is durably committed. `change` may run twice (if
    /// its batch fails, it is retried alone), so it must not consume what it captures.
    pub(crate) fn write_grouped<T, F>(&self, change: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_grouped_after(Lane::Processing, Durable::none(), change)
    }

    /// As [`Store::write_grouped`], in `lane`, once the letter bodies `durable` stands
    /// for are durable (made so once for the whole group).
    pub(crate) fn write_grouped_after<T, F>(
        &self,
        lane: Lane,
        durable: Durable,
        change: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let group = match lane {
            Lane::Accepting => &self.accepting,
            Lane::Processing => &self.processing,
        };
        group.commit(&self.database(), durable, change)
    }

    /// Runs `f` in one read transaction.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let tx = self.database().begin_read()?;
        f(&tx)
    }

    /// Like [`read`](Self::read), but `None` at once where it would wait for a
    /// compaction (which holds the database for as long as it rewrites the file): for
    /// a caller on an async worker, which must not be held that long.
    pub(crate) fn read_at_once<T>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, StoreError>,
    ) -> Option<Result<T, StoreError>> {
        let db = match self.db.try_read() {
            Ok(db) => db,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        Some(
            db.begin_read()
                .map_err(StoreError::from)
                .and_then(|tx| f(&tx)),
        )
    }
}

/// A table records are read from: one a read transaction opened, or one a write
/// transaction holds ([`Tx::open_table`]).
pub(crate) trait ReadRecords {
    /// The table.
    fn records(&self) -> &impl ReadableTable<&'static str, &'static [u8]>;
}

impl ReadRecords for redb::ReadOnlyTable<&'static str, &'static [u8]> {
    fn records(&self) -> &impl ReadableTable<&'static str, &'static [u8]> {
        self
    }
}

impl ReadRecords for RefMut<'_, RecordsTable<'_>> {
    fn records(&self) -> &impl ReadableTable<&'static str, &'static [u8]> {
        &**self
    }
}

/// Reads and decodes one record.
pub(crate) fn get<T: DeserializeOwned>(
    table: &impl ReadRecords,
    key: &str,
) -> Result<Option<T>, StoreError> {
    match table.records().get(key)? {
        Some(bytes) => Ok(Some(serde_json::from_slice(bytes.value())?)),
        None => Ok(None),
    }
}

/// Encodes and writes one record.
pub(crate) fn put<'t, T: Serialize>(
    table: &mut impl DerefMut<Target = RecordsTable<'t>>,
    key: &str,
    value: &T,
) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(value)?;
    table.insert(key, bytes.as_slice())?;
    Ok(())
}

/// Decodes every record whose key starts with `prefix`, in key order.
pub(crate) fn scan<T: DeserializeOwned>(
    table: &impl ReadRecords,
    prefix: &str,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    for entry in table.records().range(prefix..)? {
        let (key, value) = entry?;
        if !key.value().starts_with(prefix) {
            break;
        }
        out.push(serde_json::from_slice(value.value())?);
    }
    Ok(out)
}

/// Whether any record's key starts with `prefix` (nothing is decoded).
pub(crate) fn any_under(table: &impl ReadRecords, prefix: &str) -> Result<bool, StoreError> {
    match table.records().range(prefix..)?.next() {
        Some(entry) => Ok(entry?.0.value().starts_with(prefix)),
        None => Ok(false),
    }
}

/// A random secret of `bytes` random bytes, as lowercase hex.
pub(crate) fn random_hex(bytes: usize) -> Result<String, StoreError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)?;
    Ok(hex(&buf))
}

/// Lowercase hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Lowercase hex SHA-256 of a secret, for tables that only need to check it.
pub(crate) fn secret_hash(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, mpsc};

    use super::*;

    #[test]
    fn compaction_waits_for_the_transactions_open_when_it_starts() {
        let (_dir, store) = crate::testing::open();
        let store = Arc::new(store);
        let (opened, is_open) = mpsc::channel();
        let reader = {
            let store = store.clone();
            std::thread::spawn(move || {
                store.read(|_| {
                    opened.send(()).unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    Ok(())
                })
            })
        };
        is_open.recv().unwrap();
        store.compact().unwrap();
        reader.join().unwrap().unwrap();
    }

    #[test]
    fn hex_is_lowercase_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn a_second_opening_finds_the_database_in_use() {
        let (dir, _store) = crate::testing::open();
        let again = Store::open(&dir.path().join("kvgate.redb"));
        assert!(matches!(again, Err(StoreError::InUse)), "{:?}", again.err());
    }
}
