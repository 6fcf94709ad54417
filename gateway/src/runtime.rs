//! Opening an installation: its configuration, store and spool.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use kvgate_store::{Spool, Store};

use crate::config::{self, Config};
use crate::init;

/// An opened installation.
pub struct Installation {
    /// The configuration.
    pub config: Config,
    /// The durable state.
    pub store: Arc<Store>,
    /// The spool of accepted letters.
    pub spool: Spool,
}

/// The configuration file to use: the given one, or the default data directory's.
pub fn config_path(given: Option<&Path>) -> PathBuf {
    given.map_or_else(
        || Path::new(init::DEFAULT_DIR).join(config::FILE_NAME),
        Path::to_owned,
    )
}

impl Installation {
    /// Opens the installation whose configuration is at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let config = Config::load(path)?;
        let db = config.database_path();
        let store = Store::open(&db).with_context(|| format!("opening {}", db.display()))?;
        let spool_dir = config.spool_dir();
        let spool =
            Spool::open(&spool_dir).with_context(|| format!("opening {}", spool_dir.display()))?;
        store.attach_spool(spool.clone());
        Ok(Installation {
            config,
            store: Arc::new(store),
            spool,
        })
    }
}
