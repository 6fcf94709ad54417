//! The member API: HTTPS + JSON for the member app.
//!
//! The app enrols a device (its OpenPGP key joins the member's keys), lists its inboxes,
//! fetches letters as PGP/MIME ciphertext and marks them read. Errors are
//! `application/problem+json` (RFC 9457). A member never learns whether another
//! member's message exists: it is 404 like a missing one.

mod admin;
mod auth;
mod problem;
mod routes;
mod server;

use std::sync::Arc;

use kvgate_store::{Store, StoreError};

pub use admin::{AdminState, admin_router};
pub use problem::Problem;
pub use routes::router;
pub use server::serve;

/// A member's OpenPGP public key as checked by [`KeyCheck`].
#[derive(Debug, Clone)]
pub struct CheckedKey {
    /// The key's fingerprint (uppercase hex).
    pub fingerprint: String,
    /// The normalised ASCII-armored public certificate.
    pub armored: String,
}

/// Validates an OpenPGP public key a device presents at enrolment. The gateway
/// implements it with the OpenPGP library; connectors stay free of it.
pub trait KeyCheck: Send + Sync + 'static {
    /// Checks the key; on refusal, a sentence that says why.
    fn check(&self, key: &[u8]) -> Result<CheckedKey, String>;
}

/// What every request handler shares.
#[derive(Clone)]
pub struct ApiState {
    /// The durable state.
    pub store: Arc<Store>,
    /// The enrolment key check.
    pub keys: Arc<dyn KeyCheck>,
    /// Notified after a change that may have queued outbound mail (a read receipt).
    pub outbound: Arc<tokio::sync::Notify>,
}

/// Runs a store call on a blocking thread (commits fsync); store errors become
/// problems.
async fn with_store<T: Send + 'static>(
    store: Arc<Store>,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Problem> {
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| Problem::internal(&e))?
        .map_err(Problem::from)
}
