//! A raw SMTP transcript client: bytes out exactly as given, replies in as parsed.

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::endpoint::Endpoint;

/// How long any single reply may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// Either side of STARTTLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// An SMTP connection under test.
pub struct Wire {
    io: BufReader<Box<dyn Stream>>,
    endpoint: Endpoint,
}

/// One reply: code and the text of its last line.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The code.
    pub code: u16,
    /// Every line's text.
    pub lines: Vec<String>,
}

impl Reply {
    /// The enhanced status code (RFC 3463) that starts the last line, if any.
    pub fn enhanced(&self) -> Option<&str> {
        let first = self.lines.last()?.split_whitespace().next()?;
        let mut parts = first.split('.');
        let ok = parts.clone().count() == 3
            && parts.all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        ok.then_some(first)
    }

    /// Fails unless the reply has exactly this code and enhanced code.
    pub fn expect_reply(&self, code: u16, enhanced: &str, what: &str) -> Result<(), String> {
        if self.code == code && self.enhanced() == Some(enhanced) {
            Ok(())
        } else {
            Err(format!("{what}: expected {code} {enhanced}, got {self}"))
        }
    }

    /// Fails unless the reply has this code.
    pub fn expect_code(&self, code: u16, what: &str) -> Result<(), String> {
        if self.code == code {
            Ok(())
        } else {
            Err(format!("{what}: expected {code}, got {self}"))
        }
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}",
            self.code,
            self.lines.last().map_or("", String::as_str)
        )
    }
}

impl Wire {
    /// A plain TCP connection.
    pub async fn plain(endpoint: &Endpoint) -> Result<Self, String> {
        Ok(Wire {
            io: BufReader::new(Box::new(connect(endpoint).await?)),
            endpoint: endpoint.clone(),
        })
    }

    /// An implicit-TLS connection.
    pub async fn tls(endpoint: &Endpoint, config: Arc<ClientConfig>) -> Result<Self, String> {
        let tls = handshake(connect(endpoint).await?, endpoint, config).await?;
        Ok(Wire {
            io: BufReader::new(Box::new(tls)),
            endpoint: endpoint.clone(),
        })
    }

    /// Upgrades after a `220` to STARTTLS. Bytes already buffered are dropped.
    pub async fn starttls(self, config: Arc<ClientConfig>) -> Result<Self, String> {
        let inner = self.io.into_inner();
        let tls = handshake(inner, &self.endpoint, config).await?;
        Ok(Wire {
            io: BufReader::new(Box::new(tls)),
            endpoint: self.endpoint,
        })
    }

    /// The connection itself, for bytes that are not SMTP. Buffered input is dropped.
    pub fn into_stream(self) -> Box<dyn Stream> {
        self.io.into_inner()
    }

    /// Sends bytes exactly as given.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        let w = self.io.get_mut();
        w.write_all(bytes).await.map_err(|e| format!("send: {e}"))?;
        w.flush().await.map_err(|e| format!("send: {e}"))
    }

    /// Sends a command line and reads its reply.
    pub async fn command(&mut self, line: &str) -> Result<Reply, String> {
        self.send(format!("{line}\r\n").as_bytes()).await?;
        self.reply().await
    }

    /// Reads one reply.
    pub async fn reply(&mut self) -> Result<Reply, String> {
        tokio::time::timeout(REPLY_TIMEOUT, self.read_reply())
            .await
            .map_err(|_| "no reply within 20 s".to_owned())?
    }

    async fn read_reply(&mut self) -> Result<Reply, String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self
                .io
                .read_line(&mut line)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed".to_owned());
            }
            let line = line.trim_end_matches(['\r', '\n']);
            let code = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("not a reply: {line:?}"))?;
            lines.push(line.get(4..).unwrap_or_default().to_owned());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply { code, lines });
            }
        }
    }
}

/// A TCP connection to `endpoint`.
pub async fn connect(endpoint: &Endpoint) -> Result<TcpStream, String> {
    TcpStream::connect(endpoint.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", endpoint.addr))
}

/// A TLS client handshake over `io`, checking the certificate against `endpoint`'s name.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: S,
    endpoint: &Endpoint,
    config: Arc<ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<S>, String> {
    TlsConnector::from(config)
        .connect(endpoint.name.clone(), io)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))
}
