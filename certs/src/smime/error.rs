//! Why a message could not be unwrapped, with stable reason codes.

use openssl::error::ErrorStack;

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
    /// No RecipientInfo matches any gateway key, or decryption failed (`not-for-gateway`).
    #[error("the message is not encrypted for the gateway: {0}")]
    NotForGateway(String),
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
            UnwrapError::BadSignature(_) => "bad-signature",
            UnwrapError::UntrustedSigner { .. } => "untrusted-signer",
            UnwrapError::SignerExpired { .. } => "signer-expired",
            UnwrapError::WeakAlgorithm { .. } => "weak-algorithm",
            UnwrapError::TooDeep { .. } => "too-deep",
        }
    }
}

/// OpenSSL's error reasons as one short line, e.g. "content verify error".
pub(super) fn reasons(errors: &ErrorStack) -> String {
    let mut lines: Vec<String> = errors
        .errors()
        .iter()
        .map(|e| {
            let reason = e.reason().unwrap_or("unknown reason");
            match e.data() {
                Some(data) if !data.is_empty() => format!("{reason} ({data})"),
                _ => reason.to_owned(),
            }
        })
        .collect();
    lines.dedup();
    if lines.is_empty() {
        "no details from OpenSSL".to_owned()
    } else {
        lines.join("; ")
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
