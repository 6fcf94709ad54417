//! The gateway's configuration file (`kvgate.toml`).
//!
//! Relative paths in the file are relative to the directory that holds it, so a data
//! directory made by `kvgate init` can be moved as a whole.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use kvgate_connectors::api::{BodyTime, ListenerLimits, RateLimit};
use kvgate_store::CredentialPolicy;
use kvgate_store::Timestamp;
use serde::{Deserialize, Serialize};

/// Name of the configuration file inside a data directory.
pub const FILE_NAME: &str = "kvgate.toml";

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The mail domain: members are `<KVNR>@postfach.<domain>` and
    /// `<KVNR>@smarthealth.<domain>`.
    pub domain: String,
    /// The host name the SMTP server announces.
    pub hostname: String,
    /// Where the database and the spool live.
    pub data_dir: PathBuf,
    /// Listening addresses.
    pub listen: Listen,
    /// The TLS server certificate and key of all listeners.
    pub tls: KeyPair,
    /// S/MIME: the keys letters are encrypted to.
    pub smime: Smime,
    /// Trust anchors for sender certificates, beyond those added with `kvgate trust add`.
    #[serde(default)]
    pub trust: Trust,
    /// SMTP limits.
    #[serde(default)]
    pub limits: Limits,
    /// The relay that outbound mail (reports) is handed to; without one it waits in
    /// the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<Relay>,
    /// Retries and lifetime of the outbound queue.
    #[serde(default)]
    pub queue: QueuePolicy,
    /// Limits on processing one letter (poison letters are quarantined).
    #[serde(default)]
    pub pipeline: PipelinePolicy,
    /// The operators' HTTPS endpoint (tracking, queue); off unless configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminApi>,
    /// The insurer's back office, which members' uploads are sent to; without it the
    /// member API refuses uploads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub back_office: Option<BackOffice>,
    /// Credentials, enrolment limits and smarthealth rules of the member API.
    #[serde(default)]
    pub member_api: MemberApi,
    /// Rate limits of the app's basic tier (uploads without enrolment).
    #[serde(default)]
    pub basic_tier: BasicTier,
    /// KIM profiles.
    #[serde(default)]
    pub kim: Kim,
    /// Where this configuration was read from (not part of the file).
    #[serde(skip)]
    pub base: PathBuf,
}

/// Listening addresses.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// SMTP with STARTTLS.
    pub smtp: SocketAddr,
    /// SMTP with implicit TLS.
    pub smtps: SocketAddr,
    /// The member HTTPS API.
    pub api: SocketAddr,
}

/// A certificate (chain) and its private key, both PEM files.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPair {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (mode 0600).
    pub key: PathBuf,
}

/// S/MIME settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Smime {
    /// Every key the gateway decrypts with: the current one and, during a rollover,
    /// the previous ones.
    pub decryption_keys: Vec<KeyPair>,
    /// The instant signer certificates are validated for: `receipt` (when the
    /// letter was accepted, the default), `processing`, or an RFC 3339 instant
    /// (re-checking archived letters as of their date).
    #[serde(default, skip_serializing_if = "VerifyAt::is_receipt")]
    pub verify_at: VerifyAt,
    /// What a letter encrypted as EnvelopedData (AES-CBC: no integrity protection)
    /// gets: `refuse` (the default, reason `unauthenticated-encryption`) or `accept`
    /// (for senders that cannot send AuthEnvelopedData yet; a refusal of such a
    /// letter then never says which check failed, see [`crate::verdict`]).
    #[serde(default, skip_serializing_if = "Unauthenticated::is_refuse")]
    pub unauthenticated_encryption: Unauthenticated,
}

/// What a letter without integrity protection (EnvelopedData) gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unauthenticated {
    /// Refused, whatever it holds.
    #[default]
    Refuse,
    /// Unwrapped and checked; a refusal says only that it failed.
    Accept,
}

impl Unauthenticated {
    fn is_refuse(&self) -> bool {
        *self == Unauthenticated::Refuse
    }
}

/// The instant a letter's signature chain is validated for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum VerifyAt {
    /// When the gateway accepted the letter.
    #[default]
    Receipt,
    /// When the pipeline processes it.
    Processing,
    /// A fixed instant.
    Instant(Timestamp),
}

impl VerifyAt {
    /// Whether this is the default, [`VerifyAt::Receipt`].
    pub fn is_receipt(&self) -> bool {
        *self == VerifyAt::Receipt
    }

    /// The instant for a letter received at `received`.
    pub fn instant(self, received: Timestamp) -> SystemTime {
        match self {
            VerifyAt::Receipt => received.to_system_time(),
            VerifyAt::Processing => SystemTime::now(),
            VerifyAt::Instant(at) => at.to_system_time(),
        }
    }
}

impl TryFrom<String> for VerifyAt {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "receipt" => Ok(VerifyAt::Receipt),
            "processing" => Ok(VerifyAt::Processing),
            instant => instant.parse().map(VerifyAt::Instant).map_err(|_| {
                format!(
                    "verify_at must be \"receipt\", \"processing\" or an RFC 3339 instant, not {instant:?}"
                )
            }),
        }
    }
}

impl From<VerifyAt> for String {
    fn from(value: VerifyAt) -> Self {
        match value {
            VerifyAt::Receipt => "receipt".to_owned(),
            VerifyAt::Processing => "processing".to_owned(),
            VerifyAt::Instant(at) => at.to_rfc3339(),
        }
    }
}

/// KIM settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kim {
    /// What a letter that breaks the eArztbrief profile gets: `flag` (delivered,
    /// the finding recorded) or `refuse` (failure DSN, `earztbrief-profile`).
    #[serde(default)]
    pub earztbrief: ProfilePolicy,
}

/// What happens to a letter that breaks a profile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfilePolicy {
    /// Deliver it and record the finding.
    #[default]
    Flag,
    /// Refuse it.
    Refuse,
}

/// Trust anchors, intermediates and revocation checking of signer certificates.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trust {
    /// CA certificates (PEM) that sender certificates must chain to.
    #[serde(default)]
    pub anchors: Vec<PathBuf>,
    /// Intermediate CA certificates (PEM) for chains whose messages lack them.
    #[serde(default)]
    pub intermediates: Vec<PathBuf>,
    /// CRL files (PEM or DER); newer ones are fetched from distribution points.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// What happens when no CRL or OCSP source answers: `hard` refuses the
    /// letter (`revocation-unknown`), `soft` delivers it and records that; `strict`
    /// is `hard` and also refuses a certificate that names no source and no CRL file
    /// covers (`revocation-no-source`; not for the development PKI).
    #[serde(default)]
    pub revocation: RevocationMode,
}

/// Hard-fail or soft-fail revocation checking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationMode {
    /// Refuse when the status cannot be established.
    #[default]
    Hard,
    /// Deliver, recording that the status was not checked.
    Soft,
    /// Refuse as `hard` does, and refuse a certificate that has no source at all.
    Strict,
}

/// SMTP limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest message accepted, in octets (advertised with SIZE).
    pub max_message_size: u64,
    /// Most recipients of one message.
    pub max_recipients: usize,
    /// Seconds a client may take for one command or one piece of message data
    /// (the server timeout of RFC 5321 §4.5.3.2.7: 5 minutes).
    pub command_timeout_secs: u64,
    /// Seconds a TLS handshake may take.
    pub tls_handshake_timeout_secs: u64,
    /// Seconds a client on the STARTTLS port has, from connecting, to complete
    /// STARTTLS with its client certificate (then 421 4.7.0).
    pub auth_deadline_secs: u64,
    /// Commands that do not advance a mail transaction (NOOP, RSET, EHLO, HELO,
    /// HELP, VRFY, EXPN) a session may send between accepted letters (then 421 4.7.0).
    pub max_junk_commands: usize,
    /// Milliseconds the SMTP server listens before its greeting; a client that
    /// talks in that time is refused (0: only input already there is caught).
    pub greeting_delay_ms: u64,
    /// Most SMTP sessions at once, over both SMTP listeners.
    pub max_connections: usize,
    /// Most SMTP sessions at once from one client IP address, counted from before
    /// the TLS handshake; loopback addresses (the gateway's own host) are not counted.
    pub max_connections_per_address: usize,
    /// Most SMTP sessions at once with the same client certificate.
    pub max_connections_per_certificate: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 256 * 1024 * 1024,
            max_recipients: 100,
            command_timeout_secs: 300,
            tls_handshake_timeout_secs: 30,
            auth_deadline_secs: 60,
            max_junk_commands: 100,
            greeting_delay_ms: 0,
            max_connections: 500,
            max_connections_per_address: 100,
            max_connections_per_certificate: 100,
        }
    }
}

impl Limits {
    /// The command timeout as a duration.
    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout_secs)
    }

    /// The TLS handshake timeout as a duration.
    pub fn tls_handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.tls_handshake_timeout_secs)
    }

    /// The authentication deadline of the STARTTLS port as a duration.
    pub fn auth_deadline(&self) -> Duration {
        Duration::from_secs(self.auth_deadline_secs)
    }

    /// The greeting delay as a duration.
    pub fn greeting_delay(&self) -> Duration {
        Duration::from_millis(self.greeting_delay_ms)
    }
}

/// The operators' HTTPS endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminApi {
    /// Where it listens (a management network or loopback).
    pub listen: SocketAddr,
    /// A file (mode 0600) holding the operators' bearer token, e.g. made with
    /// `openssl rand -hex 32`.
    pub token_file: PathBuf,
}

/// Where members' uploads go: S/MIME signed by the gateway and encrypted to the back
/// office's certificate, through the outbound queue and the relay.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackOffice {
    /// The back office's mail address (envelope and `To:`).
    pub address: String,
    /// Its S/MIME certificate (PEM) uploads are encrypted to.
    pub certificate: PathBuf,
    /// The envelope sender and `From:` of uploads (default `uploads@<domain>`).
    #[serde(default)]
    pub from: Option<String>,
    /// The largest document a member may upload, in octets (default 20 MiB).
    #[serde(default = "default_max_upload")]
    pub max_upload_size: usize,
}

fn default_max_upload() -> usize {
    20 * 1024 * 1024
}

/// Credentials, enrolment limits and smarthealth rules of the member API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemberApi {
    /// Seconds an enrolment code is valid after it was issued (15 minutes).
    pub enrollment_code_lifetime_secs: u64,
    /// Wrong codes tried for a KVNR after which its open codes are void.
    pub enrollment_code_attempts: u32,
    /// Seconds a device token is valid after it was issued or refreshed (7 days).
    pub token_lifetime_secs: u64,
    /// Enrolment attempts allowed per client IP address per window.
    pub enrollment_per_ip: u32,
    /// Enrolment attempts allowed per device key per window.
    pub enrollment_per_device: u32,
    /// The rate limits' window, in seconds.
    pub enrollment_window_secs: u64,
    /// The version of the smarthealth terms a member must accept to activate it.
    pub smarthealth_terms_version: String,
    /// Storage per member's smarthealth inbox, in octets (1 GiB).
    pub smarthealth_quota_bytes: u64,
    /// Most connections to the member API at once; one beyond them is closed before
    /// the TLS handshake.
    pub max_connections: usize,
    /// Seconds a request body may take to arrive (408 beyond it), plus one for every
    /// `body_min_rate` octets received.
    pub body_timeout_secs: u64,
    /// Octets per second that earn a request body one more second.
    pub body_min_rate: u64,
    /// Seconds a response write may wait for a client that does not read before the
    /// connection is dropped.
    pub write_timeout_secs: u64,
    /// Exports (`GET /v1/export`) made at once; one more is 503 with `Retry-After`.
    pub max_exports: usize,
}

impl Default for MemberApi {
    fn default() -> Self {
        MemberApi {
            enrollment_code_lifetime_secs: 15 * 60,
            enrollment_code_attempts: 5,
            token_lifetime_secs: 7 * 24 * 3600,
            enrollment_per_ip: 20,
            enrollment_per_device: 5,
            enrollment_window_secs: 60,
            smarthealth_terms_version: "2026-01".to_owned(),
            smarthealth_quota_bytes: 1 << 30,
            max_connections: 1000,
            body_timeout_secs: 60,
            body_min_rate: 16 * 1024,
            write_timeout_secs: 60,
            max_exports: 4,
        }
    }
}

impl MemberApi {
    /// The credential policy these settings describe.
    pub fn credentials(&self) -> CredentialPolicy {
        CredentialPolicy {
            code_lifetime_ms: self.enrollment_code_lifetime_secs.saturating_mul(1000),
            code_attempts: self.enrollment_code_attempts,
            token_lifetime_ms: self.token_lifetime_secs.saturating_mul(1000),
        }
    }

    /// The limits of the member API's listener.
    pub fn listener_limits(&self) -> ListenerLimits {
        ListenerLimits {
            max_connections: self.max_connections,
            body: BodyTime {
                timeout: Duration::from_secs(self.body_timeout_secs),
                min_rate: self.body_min_rate,
            },
            write_timeout: Duration::from_secs(self.write_timeout_secs),
        }
    }

    /// The enrolment rate limit of `per_window` attempts.
    pub fn enrollment_limit(&self, per_window: u32) -> RateLimit {
        RateLimit {
            max: per_window,
            window: Duration::from_secs(self.enrollment_window_secs),
        }
    }
}

/// Rate limits of the app's basic tier, where anyone may send documents for a KVNR.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BasicTier {
    /// Uploads per install ID in each window.
    pub uploads_per_install: u32,
    /// Uploads per client IP address in each window.
    pub uploads_per_ip: u32,
    /// The window, in seconds.
    pub window_secs: u64,
}

impl Default for BasicTier {
    fn default() -> Self {
        BasicTier {
            uploads_per_install: 10,
            uploads_per_ip: 50,
            window_secs: 3600,
        }
    }
}

/// How the gateway talks to its relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayTls {
    /// Plain connection upgraded with STARTTLS (required, not opportunistic).
    Starttls,
    /// TLS from the first byte (port 465 style).
    Tls,
    /// No TLS: only for a relay on the same host or a test.
    None,
}

/// The outbound relay.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Relay {
    /// `host:port`.
    pub address: String,
    /// Transport security.
    pub tls: RelayTls,
    /// CA certificate (PEM) the relay's certificate must chain to; without it the
    /// public web PKI roots are used.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Client certificate and key to present to the relay.
    #[serde(default)]
    pub client: Option<KeyPair>,
}

/// Limits on processing one letter: what is beyond them is quarantined.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelinePolicy {
    /// Attempts that may end abnormally (a panic, the process stopping) before the
    /// letter is quarantined.
    pub max_attempts: u32,
    /// Seconds one letter may take; a letter still running then is quarantined.
    pub time_limit_secs: u64,
    /// Letters processed at once (threads); unset, 16 per core: while one waits for
    /// its commit, others compute.
    pub workers: Option<usize>,
}

impl Default for PipelinePolicy {
    fn default() -> Self {
        // A 256 MiB letter, the largest SIZE allows by default, takes about 10 s here.
        PipelinePolicy {
            max_attempts: 3,
            time_limit_secs: 300,
            workers: None,
        }
    }
}

/// Retries and lifetime of the outbound queue (defaults as Postfix's).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueuePolicy {
    /// Wait before the first retry, in seconds; doubled after each failure.
    pub first_retry_secs: u64,
    /// Longest wait between retries, in seconds.
    pub max_retry_secs: u64,
    /// After this long waiting, a message is recorded as delayed, in seconds.
    pub delay_warning_secs: u64,
    /// After this long, a message is given up (expired), in seconds.
    pub lifetime_secs: u64,
    /// Most messages sent at once: all go to the relay, the one next hop.
    pub per_destination: usize,
    /// Seconds an SMTP exchange with the relay may take.
    pub timeout_secs: u64,
}

impl Default for QueuePolicy {
    fn default() -> Self {
        QueuePolicy {
            first_retry_secs: 300,
            max_retry_secs: 4000,
            delay_warning_secs: 4 * 3600,
            lifetime_secs: 5 * 24 * 3600,
            per_destination: 4,
            timeout_secs: 300,
        }
    }
}

impl QueuePolicy {
    /// The wait after `attempts` failed attempts: exponential, capped.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u64 << attempts.saturating_sub(1).min(30);
        Duration::from_secs(
            self.first_retry_secs
                .saturating_mul(factor)
                .min(self.max_retry_secs),
        )
    }
}

/// The configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("{path} is not a valid kvgate configuration: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The longest greeting delay a configuration may set, in milliseconds.
const MAX_GREETING_DELAY_MS: u64 = 30_000;
/// The most pipeline workers a configuration may set.
const MAX_WORKERS: usize = 1024;
/// The most connections to the relay at once a configuration may set.
const MAX_PER_DESTINATION: usize = 100;

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        config.base = path.parent().map(Path::to_owned).unwrap_or_default();
        let invalid = |message: &str| ConfigError::Invalid {
            path: path.to_owned(),
            message: message.to_owned(),
        };
        if config.domain.is_empty() || config.domain.contains(['@', ' ']) {
            return Err(invalid(
                "domain must be a mail domain such as kvgate.example",
            ));
        }
        if config.smime.decryption_keys.is_empty() {
            return Err(invalid("smime.decryption_keys needs at least one key"));
        }
        let limits = &config.limits;
        if limits.max_message_size == 0
            || limits.max_recipients == 0
            || limits.max_connections == 0
            || limits.max_connections_per_address == 0
            || limits.max_connections_per_certificate == 0
            || limits.tls_handshake_timeout_secs == 0
            || limits.auth_deadline_secs == 0
            || limits.max_junk_commands == 0
            || limits.command_timeout_secs == 0
        {
            return Err(invalid("limits must be positive"));
        }
        if limits.greeting_delay_ms > MAX_GREETING_DELAY_MS {
            return Err(invalid(
                "limits.greeting_delay_ms may be at most 30000: senders give up on a greeting after five minutes, and every session waits it out",
            ));
        }
        let api = &config.member_api;
        if api.enrollment_code_lifetime_secs == 0
            || api.enrollment_code_attempts == 0
            || api.token_lifetime_secs == 0
            || api.enrollment_per_ip == 0
            || api.enrollment_per_device == 0
            || api.enrollment_window_secs == 0
            || api.smarthealth_quota_bytes == 0
            || api.smarthealth_terms_version.trim().is_empty()
            || api.max_connections == 0
            || api.body_timeout_secs == 0
            || api.body_min_rate == 0
            || api.write_timeout_secs == 0
            || api.max_exports == 0
        {
            return Err(invalid("member_api values must be positive"));
        }
        let pipeline = &config.pipeline;
        if pipeline.max_attempts == 0
            || pipeline.time_limit_secs == 0
            || pipeline.workers == Some(0)
        {
            return Err(invalid("pipeline values must be positive"));
        }
        if pipeline
            .workers
            .is_some_and(|workers| workers > MAX_WORKERS)
        {
            return Err(invalid(
                "pipeline.workers may be at most 1024 (each is a thread; 16 per core is the default)",
            ));
        }
        let basic = &config.basic_tier;
        if basic.uploads_per_install == 0 || basic.uploads_per_ip == 0 || basic.window_secs == 0 {
            return Err(invalid(
                "basic_tier values must be positive (window_secs = 0 would turn the limits off; uploads_per_* = 0 would refuse every upload)",
            ));
        }
        let queue = &config.queue;
        if queue.per_destination == 0
            || queue.lifetime_secs == 0
            || queue.timeout_secs == 0
            || queue.first_retry_secs == 0
            || queue.max_retry_secs == 0
        {
            return Err(invalid(
                "queue values must be positive (a zero retry wait would try the relay on every pass, a zero timeout never reach it)",
            ));
        }
        if queue.per_destination > MAX_PER_DESTINATION {
            return Err(invalid(
                "queue.per_destination may be at most 100 connections to the relay at once",
            ));
        }
        if config
            .back_office
            .as_ref()
            .is_some_and(|b| b.max_upload_size == 0)
        {
            return Err(invalid("back_office.max_upload_size must be positive"));
        }
        Ok(config)
    }

    /// A path from the file, resolved against the file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.base.join(path)
        }
    }

    /// The data directory (database, letter bodies, spool, control socket).
    pub fn data_dir(&self) -> PathBuf {
        self.resolve(&self.data_dir)
    }

    /// The database file.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir().join("kvgate.redb")
    }

    /// The spool directory.
    pub fn spool_dir(&self) -> PathBuf {
        self.data_dir().join("spool")
    }

    /// The development configuration `kvgate init` writes.
    pub fn development(domain: &str) -> Self {
        let pair = || KeyPair {
            cert: PathBuf::from("pki/gateway.pem"),
            key: PathBuf::from("pki/gateway.key"),
        };
        Config {
            domain: domain.to_owned(),
            hostname: "localhost".to_owned(),
            data_dir: PathBuf::from("."),
            listen: Listen {
                smtp: SocketAddr::from(([127, 0, 0, 1], 2525)),
                smtps: SocketAddr::from(([127, 0, 0, 1], 4650)),
                api: SocketAddr::from(([127, 0, 0, 1], 8443)),
            },
            tls: pair(),
            smime: Smime {
                decryption_keys: vec![pair()],
                verify_at: VerifyAt::Receipt,
                unauthenticated_encryption: Unauthenticated::Refuse,
            },
            trust: Trust {
                anchors: vec![PathBuf::from("pki/ca.pem")],
                ..Trust::default()
            },
            limits: Limits::default(),
            relay: None,
            queue: QueuePolicy::default(),
            pipeline: PipelinePolicy::default(),
            admin: None,
            back_office: None,
            member_api: MemberApi::default(),
            basic_tier: BasicTier::default(),
            kim: Kim::default(),
            base: PathBuf::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn development_config_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let text = toml::to_string(&Config::development("kvgate.test")).unwrap();
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.domain, "kvgate.test");
        assert_eq!(config.database_path(), dir.path().join("./kvgate.redb"));
        assert_eq!(config.limits.max_recipients, 100);
        assert_eq!(config.trust.revocation, RevocationMode::Hard);
    }

    #[test]
    fn smtp_session_limits_default_and_must_be_positive() {
        let limits: Limits = toml::from_str("max_connections_per_address = 20\n").unwrap();
        assert_eq!(limits.max_connections_per_address, 20);
        assert_eq!(limits.tls_handshake_timeout(), Duration::from_secs(30));
        assert_eq!(limits.auth_deadline(), Duration::from_secs(60));
        assert_eq!(limits.max_junk_commands, 100);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        for zero in [
            "max_connections_per_address",
            "tls_handshake_timeout_secs",
            "auth_deadline_secs",
            "max_junk_commands",
        ] {
            let mut config = toml::Value::try_from(Config::development("kvgate.test")).unwrap();
            config["limits"][zero] = toml::Value::Integer(0);
            std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
            let error = Config::load(&path).unwrap_err().to_string();
            assert!(error.contains("limits must be positive"), "{zero}: {error}");
        }
    }

    #[test]
    fn verify_at_is_receipt_processing_or_an_instant() {
        let smime = |text: &str| toml::from_str::<Smime>(&format!("decryption_keys = []\n{text}"));
        assert_eq!(smime("").unwrap().verify_at, VerifyAt::Receipt);
        assert_eq!(
            smime("verify_at = \"processing\"").unwrap().verify_at,
            VerifyAt::Processing
        );
        let at = smime("verify_at = \"2020-06-20T12:58:26+02:00\"")
            .unwrap()
            .verify_at;
        assert_eq!(at, VerifyAt::Instant(Timestamp(1_592_650_706_000)));
        assert_eq!(String::from(at), "2020-06-20T10:58:26.000Z");
        let error = smime("verify_at = \"yesterday\"").unwrap_err().to_string();
        assert!(error.contains("RFC 3339 instant"), "{error}");
    }

    #[test]
    fn letters_without_integrity_protection_are_refused_unless_accepted() {
        let smime = |text: &str| toml::from_str::<Smime>(&format!("decryption_keys = []\n{text}"));
        let policy = |text: &str| smime(text).unwrap().unauthenticated_encryption;
        assert_eq!(policy(""), Unauthenticated::Refuse);
        assert_eq!(
            policy("unauthenticated_encryption = \"accept\""),
            Unauthenticated::Accept
        );
        assert!(smime("unauthenticated_encryption = \"warn\"").is_err());
    }

    #[test]
    fn trust_takes_intermediates_crls_and_soft_fail() {
        let trust: Trust = toml::from_str(
            "anchors = [\"ca.pem\"]\nintermediates = [\"sub.pem\"]\n\
             crls = [\"sub.crl\"]\nrevocation = \"soft\"\n",
        )
        .unwrap();
        assert_eq!(trust.intermediates, vec![PathBuf::from("sub.pem")]);
        assert_eq!(trust.crls, vec![PathBuf::from("sub.crl")]);
        assert_eq!(trust.revocation, RevocationMode::Soft);
        assert!(toml::from_str::<Trust>("revocation = \"lenient\"\n").is_err());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = QueuePolicy::default();
        let waits: Vec<u64> = (1..=6).map(|n| policy.backoff(n).as_secs()).collect();
        assert_eq!(waits, [300, 600, 1200, 2400, 4000, 4000]);
    }

    /// Loads the development configuration with `table` as section `name`.
    fn load_with(name: &str, table: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut config: toml::Table = toml::to_string(&Config::development("kvgate.test"))
            .unwrap()
            .parse()
            .unwrap();
        config.insert(name.into(), table.parse::<toml::Table>().unwrap().into());
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
        Config::load(&path)
    }

    #[test]
    fn absurd_queue_pipeline_and_limit_values_are_refused() {
        for (table, value) in [
            ("limits", "command_timeout_secs = 0"),
            ("limits", "greeting_delay_ms = 3600000"),
            ("queue", "timeout_secs = 0"),
            ("queue", "first_retry_secs = 0"),
            ("queue", "max_retry_secs = 0"),
            ("queue", "per_destination = 2305843009213693952"),
            ("pipeline", "workers = 1000000"),
        ] {
            assert!(
                matches!(load_with(table, value), Err(ConfigError::Invalid { .. })),
                "[{table}] {value} was taken"
            );
        }
        assert!(load_with("queue", "timeout_secs = 30").is_ok());
        assert!(load_with("pipeline", "workers = 64").is_ok());
    }

    #[test]
    fn basic_tier_limits_must_be_positive() {
        let basic = load_with("basic_tier", "window_secs = 60\nuploads_per_ip = 5\n").unwrap();
        assert_eq!(basic.basic_tier.window_secs, 60);
        assert_eq!(basic.basic_tier.uploads_per_ip, 5);
        assert_eq!(basic.basic_tier.uploads_per_install, 10);
        for zero in [
            "window_secs = 0",
            "uploads_per_ip = 0",
            "uploads_per_install = 0",
        ] {
            match load_with("basic_tier", zero) {
                Err(ConfigError::Invalid { message, .. }) => {
                    assert!(
                        message.starts_with("basic_tier values must be positive"),
                        "{message}"
                    );
                }
                other => panic!("{zero}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut text = toml::to_string(&Config::development("kvgate.test")).unwrap();
        text.insert_str(0, "colour = \"blue\"\n");
        std::fs::write(&path, text).unwrap();
        assert!(matches!(
            Config::load(&path),
            Err(ConfigError::Parse { .. })
        ));
    }
}
