//! Where the deployment listens and the name its TLS certificate must carry.

use std::net::SocketAddr;

use rustls_pki_types::ServerName;

/// A listener of the deployment under test.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The resolved address.
    pub addr: SocketAddr,
    /// The TLS server name checked against the certificate: `--tls-name`, else the
    /// host as given (a DNS name or an IP address).
    pub name: ServerName<'static>,
}

/// An address or TLS name that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The host does not resolve.
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, std::io::Error),
    /// The host resolves to nothing.
    #[error("{0} resolves to no address")]
    NoAddress(String),
    /// Not `HOST:PORT`.
    #[error("{0:?} is not HOST:PORT")]
    Syntax(String),
    /// Not a DNS name or IP address.
    #[error("{0:?} is not a valid TLS server name")]
    Name(String),
}

impl Endpoint {
    /// Resolves `host_port` (`HOST:PORT`, `[V6]:PORT`); the TLS name is `tls_name` if
    /// given, else HOST.
    pub async fn resolve(host_port: &str, tls_name: Option<&str>) -> Result<Self, EndpointError> {
        let (host, _) = host_port
            .rsplit_once(':')
            .ok_or_else(|| EndpointError::Syntax(host_port.to_owned()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addr = tokio::net::lookup_host(host_port)
            .await
            .map_err(|e| EndpointError::Resolve(host_port.to_owned(), e))?
            .next()
            .ok_or_else(|| EndpointError::NoAddress(host_port.to_owned()))?;
        let name = tls_name.unwrap_or(host).to_owned();
        let name =
            ServerName::try_from(name.clone()).map_err(|_| EndpointError::Name(name.clone()))?;
        Ok(Endpoint { addr, name })
    }
}
