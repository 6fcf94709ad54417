//! The member API: HTTPS + JSON for the member app.
//!
//! The app enrols a device (its OpenPGP key joins the member's keys), manages the
//! member's devices, recovery key and key backup, lists its inboxes page by page or
//! waits for new letters, fetches letters as PGP/MIME ciphertext, marks them read and
//! deletes them, uploads documents for the insurer's back office and shows the
//! tracking of the member's own uploads. Everything the app sends to the back office
//! (documents, also from the basic tier without enrolment; requests; replies and
//! messenger messages) takes one path (`outgoing`) and leaves a copy in `sent`.
//! Every route is described in `openapi.json`, served at `/v1/openapi.json`. Errors
//! are `application/problem+json` (RFC 9457). A member never learns whether another
//! member's message exists: it is 404 like a missing one.

mod account;
mod admin;
mod auth;
mod body_time;
mod client;
mod credentials;
mod devices;
mod documents;
mod enrolment;
mod export;
mod family;
mod keys;
mod limiter;
mod linger;
mod membership;
mod messages;
// issue 9b: member app sending.
mod basic;
mod outgoing;
mod param;
mod problem;
mod ratelimit;
mod requests;
mod routes;
mod server;
mod settings;
mod sniff;
mod stall;
mod threads;
mod tracking;

use std::sync::Arc;

use kvgate_store::{Store, StoreError};

pub use admin::{AdminState, admin_router};
pub use body_time::BodyTime;
pub use credentials::Security;
pub use limiter::{Limiter, RateLimit};
pub use outgoing::{Document, Sealed, Sealer, UPLOAD_PURPOSE, Uploads};
pub use problem::Problem;
pub use ratelimit::RateLimits;
pub use routes::router;
pub use server::{ListenerLimits, serve};
pub use settings::SmarthealthRules;

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

/// Reads a letter's stored ciphertext as the member fetches it: a PGP/MIME message.
/// The gateway implements it with the OpenPGP library (it stores the OpenPGP part
/// unarmored); connectors stay free of it.
pub trait LetterReader: Send + Sync + 'static {
    /// The message `stored` holds; on failure, a sentence that says why.
    fn read(&self, stored: Vec<u8>) -> Result<LetterPieces, String>;
}

/// A letter as the member fetches it, made a piece at a time as it is sent.
pub struct LetterPieces {
    /// Octets of the whole letter.
    pub len: u64,
    /// Its octets, in order.
    pub pieces: Box<dyn Iterator<Item = Vec<u8>> + Send>,
}

/// What every request handler shares.
#[derive(Clone)]
pub struct ApiState {
    /// The durable state.
    pub store: Arc<Store>,
    /// The enrolment key check.
    pub keys: Arc<dyn KeyCheck>,
    /// Reads stored letters as members fetch them.
    pub letters: Arc<dyn LetterReader>,
    /// Notified after a change that may have queued outbound mail (a read receipt).
    pub outbound: Arc<tokio::sync::Notify>,
    /// Rung (`send_replace(())`) after letters were filed: wakes `GET /v1/messages/wait`.
    pub filed: Arc<tokio::sync::watch::Sender<()>>,
    /// How document uploads are sealed and bounded; `None` refuses them (no back
    /// office configured).
    pub uploads: Option<Uploads>,
    /// Credential lifetimes and enrolment rate limits.
    pub security: Security,
    /// The smarthealth terms version and quota.
    pub smarthealth: SmarthealthRules,
    /// The basic tier's rate limits (issue 9b).
    pub basic: Arc<RateLimits>,
    /// Permits for exports running at once (`GET /v1/export`).
    pub exports: Arc<tokio::sync::Semaphore>,
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
