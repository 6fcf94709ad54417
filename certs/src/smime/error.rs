//! Why a message could not be unwrapped, with stable reason codes.

use openssl::error::ErrorStack;

pub(super) use crate::error::reasons;

/// Why [`unwrap`](super::unwrap) refused a message. [`UnwrapError::reason`] gives a
/// stable code for logs, DSNs and tests; `Display` gives a sentence for people.
#[derive(Debug, thiserror::Error)]
pub enum UnwrapError {
    /// The message is not S/MIME at all (`not-smime`).
    #[error("the message is not S/MIME: its content type is {content_type}")]
    NotSmime {
        /// The content type found (`text/plain` when none is given).
        content_type: String,
    },
    /// Bad MIME, base64 or DER, or an unsupported CMS structure (`malformed`).
    #[error("the S/MIME structure is malformed: {0}")]
    Malformed(String),
    /// No RecipientInfo matches any gateway key (`not-for-gateway`).
    #[error("the message is not encrypted for the gateway: {0}")]
    NotForGateway(String),
    /// A RecipientInfo names a gateway key, but decryption failed: an
    /// unsupported cipher, or a damaged key or content (`decryption-failed`).
    #[error("the message is encrypted for the gateway but cannot be decrypted: {0}")]
    DecryptionFailed(String),
    /// The signature does not verify: content altered or signature broken (`bad-signature`).
    #[error("the S/MIME signature does not verify (content altered or signature damaged): {0}")]
    BadSignature(String),
    /// The signer's certificate does not chain to a trust anchor (`untrusted-signer`).
    #[error("the signer certificate {subject} is not trusted: {detail}")]
    UntrustedSigner {
        /// Subject of the signer certificate (or "unknown").
        subject: String,
        /// What the chain check said.
        detail: String,
    },
    /// A certificate of the signer's chain is outside its validity (`signer-expired`).
    #[error("the signer certificate {subject} was not valid at verification time: {detail}")]
    SignerExpired {
        /// Subject of the signer certificate.
        subject: String,
        /// What the chain check said.
        detail: String,
    },
    /// The signature uses a refused digest such as SHA-1 or MD5 (`weak-algorithm`).
    #[error("the signature uses the weak algorithm {algorithm}; SHA-256 or stronger is required")]
    WeakAlgorithm {
        /// Name of the refused algorithm.
        algorithm: String,
    },
    /// A certificate of the signer's chain is revoked (`signer-revoked`).
    #[error("the certificate {subject} of the signer's chain is revoked: {detail}")]
    SignerRevoked {
        /// Subject of the revoked certificate.
        subject: String,
        /// When, and which source said so.
        detail: String,
    },
    /// Hard-fail: the revocation status of a certificate of the signer's chain
    /// could not be established (`revocation-unknown`).
    #[error("the revocation status of {subject} could not be checked: {detail}")]
    RevocationUnknown {
        /// Subject of the certificate.
        subject: String,
        /// What each CRL or OCSP source said.
        detail: String,
    },
    /// Strict revocation checking: a certificate of the signer's chain names no CRL or
    /// OCSP source and no configured CRL file covers it (`revocation-no-source`).
    #[error(
        "the revocation status of {subject} cannot be checked: it names no CRL or OCSP source and no CRL file of the gateway covers it"
    )]
    RevocationNoSource {
        /// Subject of the certificate.
        subject: String,
    },
    /// The signer certificate may not sign e-mail: keyUsage without
    /// digitalSignature or nonRepudiation, or an extendedKeyUsage without
    /// emailProtection (`signer-usage`).
    #[error("the certificate {subject} may not sign e-mail: {detail}")]
    SignerUsage {
        /// Subject of the signer certificate.
        subject: String,
        /// What the chain check said.
        detail: String,
    },
    /// A certificate of the signer's chain has a critical extension that is not
    /// understood (`critical-extension`).
    #[error("the certificate {subject} has an unknown critical extension: {detail}")]
    CriticalExtension {
        /// Subject of the signer certificate.
        subject: String,
        /// What the chain check said.
        detail: String,
    },
    /// The signed content is not a message: its eContentType is not id-data (e.g. a
    /// timestamp's TSTInfo), or a signer's content-type attribute names another type
    /// (`unexpected-content-type`).
    #[error("the signed content is not a message: {0}")]
    UnexpectedContentType(String),
    /// A key of the signer's chain is too weak: RSA, DSA or DH under 2048 bits,
    /// elliptic curves under 224 (`signer-weak-key`).
    #[error("the certificate {subject} of the signer's chain has a weak key: {detail}")]
    SignerWeakKey {
        /// Subject of the certificate with the weak key.
        subject: String,
        /// The key's size and what is required.
        detail: String,
    },
    /// A `multipart/signed` whose signature also embeds content: what is shown
    /// would not be what is signed (`content-confusion`, CVE-2018-18509 class).
    #[error(
        "the multipart/signed signature embeds its own content, which could differ from the visible part"
    )]
    ContentConfusion,
    /// More nested S/MIME layers than allowed (`too-deep`).
    #[error("the message nests more than {max} S/MIME layers")]
    TooDeep {
        /// The maximum number of layers.
        max: usize,
    },
}

impl UnwrapError {
    /// The stable reason code, e.g. `bad-signature`.
    pub fn reason(&self) -> &'static str {
        match self {
            UnwrapError::NotSmime { .. } => "not-smime",
            UnwrapError::Malformed(_) => "malformed",
            UnwrapError::NotForGateway(_) => "not-for-gateway",
            UnwrapError::DecryptionFailed(_) => "decryption-failed",
            UnwrapError::BadSignature(_) => "bad-signature",
            UnwrapError::UntrustedSigner { .. } => "untrusted-signer",
            UnwrapError::SignerExpired { .. } => "signer-expired",
            UnwrapError::WeakAlgorithm { .. } => "weak-algorithm",
            UnwrapError::SignerRevoked { .. } => "signer-revoked",
            UnwrapError::RevocationUnknown { .. } => "revocation-unknown",
            UnwrapError::RevocationNoSource { .. } => "revocation-no-source",
            UnwrapError::SignerUsage { .. } => "signer-usage",
            UnwrapError::CriticalExtension { .. } => "critical-extension",
            UnwrapError::SignerWeakKey { .. } => "signer-weak-key",
            UnwrapError::UnexpectedContentType(_) => "unexpected-content-type",
            UnwrapError::ContentConfusion => "content-confusion",
            UnwrapError::TooDeep { .. } => "too-deep",
        }
    }
}

/// Whether `errors` holds the CMS error with `reason` code.
pub(super) fn has_cms_reason(errors: &ErrorStack, reason: i32) -> bool {
    /// `ERR_LIB_CMS` (err.h).
    const ERR_LIB_CMS: i32 = 46;
    errors
        .errors()
        .iter()
        .any(|e| e.library_code() == ERR_LIB_CMS && e.reason_code() == reason)
}
