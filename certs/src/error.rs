//! The error type of certificate handling (dev PKI, PEM, keys).

use openssl::error::ErrorStack;

/// Why a certificate or key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// OpenSSL refused an operation; `context` says which.
    #[error("{context}: {source}")]
    OpenSsl {
        /// What was being done.
        context: &'static str,
        /// OpenSSL's error queue.
        #[source]
        source: ErrorStack,
    },
    /// The private key does not belong to the certificate.
    #[error("the private key does not match the certificate {subject}")]
    KeyMismatch {
        /// Subject of the certificate.
        subject: String,
    },
    /// A validity period that cannot be put into a certificate.
    #[error("invalid validity period: {0}")]
    Validity(String),
    /// A key of a type the operation does not handle.
    #[error("{0}: this key type is not supported here")]
    UnsupportedKey(String),
}

/// Attaches a context to OpenSSL results.
pub(crate) trait Context<T> {
    /// Maps an [`ErrorStack`] to [`CertError::OpenSsl`] with `context`.
    fn context(self, context: &'static str) -> Result<T, CertError>;
}

impl<T> Context<T> for Result<T, ErrorStack> {
    fn context(self, context: &'static str) -> Result<T, CertError> {
        self.map_err(|source| CertError::OpenSsl { context, source })
    }
}

/// OpenSSL's error reasons as one short line, e.g. "content verify error".
pub(crate) fn reasons(errors: &ErrorStack) -> String {
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
