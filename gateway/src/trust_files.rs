//! The files of `[trust]` (anchors, intermediates, CRLs) change on disk while the
//! server runs: an operator's job moves the CA's latest CRL into place, an operator
//! adds a CA to the anchors or takes one out. The server looks at them every few
//! seconds and, when one changed, takes up its trust anew ([`control::TrustReload`]). A
//! revocation published in a CRL file is then in force within seconds, a file renewed
//! before its nextUpdate keeps the letters of its CA's signers flowing, and an anchor
//! taken out of a file is trusted no more, all without a restart.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::control;

/// How often the files are looked at.
const EVERY: Duration = Duration::from_secs(2);

/// What the files looked like: each one's modification time and length, `None` for a
/// file that cannot be read.
pub type Looks = Vec<Option<(SystemTime, u64)>>;

/// Looks at `paths` (blocking): taken before the files are read at start, so that a
/// change made meanwhile is taken up too.
pub fn look(paths: &[PathBuf]) -> Looks {
    paths
        .iter()
        .map(|path| {
            let metadata = std::fs::metadata(path).ok()?;
            Some((metadata.modified().ok()?, metadata.len()))
        })
        .collect()
}

/// Watches the files at `paths`, which looked as `seen` when they were read, until
/// `shutdown`, and runs `reload` after any of them changed. A change that cannot be
/// taken up (a file half written, not PEM, not a CRL) is logged and the trust in force
/// stays; the next change is tried again.
pub async fn watch(
    paths: Vec<PathBuf>,
    mut seen: Looks,
    reload: control::TrustReload,
    mut shutdown: watch::Receiver<bool>,
) {
    if paths.is_empty() {
        return;
    }
    let paths = std::sync::Arc::new(paths);
    loop {
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            _ = shutdown.changed() => return,
        }
        let (paths, reload, before) = (paths.clone(), reload.clone(), seen.clone());
        let looked = tokio::task::spawn_blocking(move || {
            let now = look(&paths);
            let changed = now != before;
            (now, changed.then(|| reload()))
        });
        match looked.await {
            Ok((now, taken_up)) => {
                match taken_up {
                    Some(Ok(())) => {
                        tracing::info!("trust files changed: anchors and revocation taken up anew")
                    }
                    Some(Err(error)) => tracing::error!(
                        error = %format!("{error:#}"),
                        "trust files changed but cannot be taken up; the trust in force stays"
                    ),
                    None => {}
                }
                seen = now;
            }
            Err(error) => tracing::warn!(%error, "looking at the trust files failed"),
        }
    }
}
