//! The store's error type.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or created.
    #[error("cannot open the database: {0}")]
    Open(redb::DatabaseError),
    /// Another process (a running `kvgate serve`) has the database open.
    #[error("the database is open in another process")]
    InUse,
    /// A transaction could not be started.
    #[error("cannot start a transaction: {0}")]
    Transaction(#[from] redb::TransactionError),
    /// A table could not be opened.
    #[error("cannot open a table: {0}")]
    Table(#[from] redb::TableError),
    /// A table asked for while the same transaction still uses it (a bug).
    #[error("the table {0} is already in use in this transaction")]
    TableInUse(String),
    /// Reading or writing a table failed.
    #[error("storage error: {0}")]
    Storage(#[from] redb::StorageError),
    /// The commit did not reach the disk.
    #[error("commit failed: {0}")]
    Commit(#[from] redb::CommitError),
    /// A stored record could not be decoded (or encoded).
    #[error("corrupt record: {0}")]
    Record(#[from] serde_json::Error),
    /// The database file could not be compacted.
    #[error("cannot compact the database: {0}")]
    Compaction(#[from] redb::CompactionError),
    /// A spool or letter body file operation failed.
    #[error("file I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The operation refers to something that does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The operation would overwrite something that already exists.
    #[error("{0} already exists")]
    Exists(&'static str),
    /// The operation would exceed a quota.
    #[error("the {0} is full")]
    Full(&'static str),
    /// A grouped commit ended without an outcome for this change (its batch leader
    /// panicked).
    #[error("the commit was abandoned")]
    Abandoned,
    /// The system's random number generator failed.
    #[error("random number generator failed: {0}")]
    Random(#[from] getrandom::Error),
}

impl From<redb::DatabaseError> for StoreError {
    fn from(error: redb::DatabaseError) -> Self {
        match error {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse,
            other => StoreError::Open(other),
        }
    }
}
