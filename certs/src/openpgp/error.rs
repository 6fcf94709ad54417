//! The error type of OpenPGP operations.

/// A boxed error from sequoia (or I/O beneath it).
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why an OpenPGP operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PgpError {
    /// The bytes are not one OpenPGP certificate.
    #[error("not a single OpenPGP certificate: {0}")]
    Parse(#[source] Source),
    /// The certificate is not valid under the standard policy (e.g. weak or broken self-signatures).
    #[error("the OpenPGP certificate {fingerprint} is not valid: {source}")]
    Invalid {
        /// Fingerprint of the certificate.
        fingerprint: String,
        /// What the policy check said.
        #[source]
        source: Source,
    },
    /// The certificate is expired or not yet valid.
    #[error(
        "the OpenPGP certificate {fingerprint} is not alive (expired or not yet valid): {source}"
    )]
    NotAlive {
        /// Fingerprint of the certificate.
        fingerprint: String,
        /// What the liveness check said.
        #[source]
        source: Source,
    },
    /// The certificate is revoked.
    #[error("the OpenPGP certificate {fingerprint} is revoked")]
    Revoked {
        /// Fingerprint of the certificate.
        fingerprint: String,
    },
    /// No valid, alive, non-revoked subkey for transport encryption.
    #[error("the OpenPGP certificate {fingerprint} has no valid key for transport encryption")]
    NoEncryptionKey {
        /// Fingerprint of the certificate.
        fingerprint: String,
    },
    /// Encryption was asked for without any recipient.
    #[error("no recipients to encrypt to")]
    NoRecipients,
    /// The secret key given for decryption holds no usable secret key material.
    #[error("the key {fingerprint} has no secret key for decryption")]
    NoSecretKey {
        /// Fingerprint of the key.
        fingerprint: String,
    },
    /// A header for the PGP/MIME message would break the header block.
    #[error(
        "invalid header {0:?}: names must be printable ASCII without ':' and values must not contain line breaks"
    )]
    InvalidHeader(String),
    /// Key generation failed.
    #[error("generating the OpenPGP key failed: {0}")]
    Generate(#[source] Source),
    /// Encryption failed.
    #[error("OpenPGP encryption failed: {0}")]
    Encrypt(#[source] Source),
    /// Decryption failed (not addressed to the key, corrupt, or tampered).
    #[error("OpenPGP decryption failed: {0}")]
    Decrypt(#[source] Source),
    /// Serialising a certificate failed.
    #[error("serialising the OpenPGP certificate failed: {0}")]
    Serialize(#[source] Source),
    /// Stored octets that begin like a stored PGP/MIME message but whose lengths do not
    /// fit them.
    #[error("a stored PGP/MIME message of {octets} octets is damaged: its lengths do not fit")]
    DamagedStored {
        /// How many octets were stored.
        octets: usize,
    },
    /// The random generator failed.
    #[error("the random generator failed: {0}")]
    Random(#[source] openssl::error::ErrorStack),
}
