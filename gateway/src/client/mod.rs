//! Small clients of kvgate's own protocols, for `kvgate demo` and for tests: an SMTP
//! submission client that authenticates with a client certificate, and an HTTPS client
//! for the member API.

pub mod https;
pub mod smtp;

use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A client-side error.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Network or TLS failure.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A certificate or key could not be read.
    #[error("bad PEM: {0}")]
    Pem(#[from] rustls_pki_types::pem::Error),
    /// TLS configuration failed.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The server said something unexpected.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Builds a TLS client configuration trusting `ca_pem`, optionally presenting a
/// client certificate (`cert_pem`, `key_pem`).
pub fn tls_config(
    ca_pem: &[u8],
    identity: Option<(&[u8], &[u8])>,
) -> Result<Arc<ClientConfig>, ClientError> {
    crate::serve::install_crypto_provider();
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert?)?;
    }
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let config = match identity {
        Some((cert_pem, key_pem)) => {
            let chain = CertificateDer::pem_slice_iter(cert_pem).collect::<Result<Vec<_>, _>>()?;
            let key = PrivateKeyDer::from_pem_slice(key_pem)?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The TLS server name to verify, e.g. `localhost` for the development certificate.
pub fn server_name(host: &str) -> Result<ServerName<'static>, ClientError> {
    ServerName::try_from(host.to_owned())
        .map_err(|e| ClientError::Protocol(format!("{host:?} is not a server name: {e}")))
}
