//! TLS server configurations for the listeners (rustls, TLS 1.2 and 1.3 only).
//!
//! The configurations use the process-default [`CryptoProvider`]; the binary
//! installs one at start-up. Without one, building a configuration fails with
//! [`TlsError::NoCryptoProvider`] instead of panicking.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{
    ProducesTickets, ServerSessionMemoryCache, VerifierBuilderError, WebPkiClientVerifier,
};
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

/// Why a TLS server configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// No process-default rustls crypto provider is installed.
    #[error("no process-default rustls crypto provider is installed")]
    NoCryptoProvider,
    /// A PEM input could not be read.
    #[error("invalid PEM in {what}: {source}")]
    Pem {
        /// Which input was bad (e.g. "server certificate chain").
        what: &'static str,
        /// The PEM parser's error.
        source: rustls_pki_types::pem::Error,
    },
    /// A PEM input held no certificate.
    #[error("no certificate found in {0}")]
    NoCertificates(&'static str),
    /// A client trust anchor was not a usable CA certificate.
    #[error("client root certificate rejected: {0}")]
    ClientRoot(rustls::Error),
    /// The client certificate verifier could not be built (e.g. no roots).
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] VerifierBuilderError),
    /// rustls refused the configuration (e.g. the key does not match the certificate).
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Builds the rustls server configuration for a sender (SMTP) listener: the
/// server certificate chain and key (PEM), and client certificates *required*
/// and verified against `client_roots_pem` (PEM certificates, one or more per
/// slice). TLS 1.2 and 1.3 only.
pub fn sender_server_config(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
    client_roots_pem: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    sender_server_config_with_crls(cert_chain_pem, key_pem, client_roots_pem, &[])
}

/// [`sender_server_config`], refusing client certificates that one of `crls` (each
/// PEM or DER) lists as revoked. A certificate whose issuer has no CRL among them
/// passes (its revocation is a matter for the S/MIME checks, which also ask OCSP);
/// a CRL past its next update still counts (what it revoked stays revoked).
pub fn sender_server_config_with_crls(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
    client_roots_pem: &[&[u8]],
    crls: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = default_provider()?;
    let mut roots = RootCertStore::empty();
    for pem in client_roots_pem {
        for cert in certificates(pem, "client root certificates")? {
            roots.add(cert).map_err(TlsError::ClientRoot)?;
        }
    }
    let mut revocation_lists = Vec::new();
    for crl in crls {
        revocation_lists.extend(revocation_lists_of(crl)?);
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .with_crls(revocation_lists)
        .allow_unknown_revocation_status()
        .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certificates(cert_chain_pem, "server certificate chain")?,
            private_key(key_pem)?,
        )?;
    config.session_storage = ServerSessionMemoryCache::new(SENDER_SESSIONS);
    Ok(Arc::new(config))
}

/// Sessions a sender listener keeps for resumption (rustls's default keeps 256). A
/// resumed handshake skips the server's signature and the client chain's
/// verification: with TLS 1.2, 0.06 ms of the server's CPU against 0.69 ms for a full
/// one (`openssl s_time`). rustls issues two single-use TLS 1.3 tickets a connection,
/// each an entry, so this keeps about 2000 senders resumable, at a few KiB an entry
/// (the session's secrets and the sender's certificate chain). A configuration built
/// anew (new trust anchors or CRLs) starts with no sessions: none resumes past them.
const SENDER_SESSIONS: usize = 4096;

/// Builds the rustls server configuration for the member HTTPS API: like
/// [`sender_server_config`] but without client authentication, and resuming sessions
/// by the tickets `ticketer` seals rather than from a cache: members are far more than
/// any cache holds, and an app that comes back hours later (a ticket lives until its
/// key has rotated out) skips the server's signature. TLS 1.3 resumption still agrees
/// a fresh key (rustls resumes only with ECDHE), so a sealed ticket opens no traffic.
pub fn api_server_config(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
    ticketer: Arc<dyn ProducesTickets>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(default_provider()?)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(
            certificates(cert_chain_pem, "server certificate chain")?,
            private_key(key_pem)?,
        )?;
    config.ticketer = ticketer;
    Ok(Arc::new(config))
}

fn default_provider() -> Result<Arc<CryptoProvider>, TlsError> {
    CryptoProvider::get_default()
        .cloned()
        .ok_or(TlsError::NoCryptoProvider)
}

fn certificates(pem: &[u8], what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { what, source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates(what));
    }
    Ok(certs)
}

/// The CRLs in `crl`: PEM (one or more) or a single DER one.
fn revocation_lists_of(crl: &[u8]) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    if !crl.starts_with(b"-----BEGIN") {
        return Ok(vec![CertificateRevocationListDer::from(crl.to_vec())]);
    }
    CertificateRevocationListDer::pem_slice_iter(crl)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what: "certificate revocation list",
            source,
        })
}

fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|source| TlsError::Pem {
        what: "server private key",
        source,
    })
}
