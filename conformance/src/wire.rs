//! A raw SMTP transcript client: bytes out exactly as given, replies in as parsed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How long any single reply may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// Either side of STARTTLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// An SMTP connection under test.
pub struct Wire {
    io: BufReader<Box<dyn Stream>>,
}

/// One reply: code and the text of its last line.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The code.
    pub code: u16,
    /// Every line's text.
    pub lines: Vec<String>,
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
    pub async fn plain(addr: SocketAddr) -> Result<Self, String> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        Ok(Wire {
            io: BufReader::new(Box::new(tcp)),
        })
    }

    /// An implicit-TLS connection.
    pub async fn tls(addr: SocketAddr, config: Arc<ClientConfig>) -> Result<Self, String> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let tls = handshake(tcp, config).await?;
        Ok(Wire {
            io: BufReader::new(Box::new(tls)),
        })
    }

    /// Upgrades after a `220` to STARTTLS. Bytes already buffered are dropped.
    pub async fn starttls(self, config: Arc<ClientConfig>) -> Result<Self, String> {
        let inner = self.io.into_inner();
        let tls = handshake(inner, config).await?;
        Ok(Wire {
            io: BufReader::new(Box::new(tls)),
        })
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

async fn handshake<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: S,
    config: Arc<ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<S>, String> {
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    TlsConnector::from(config)
        .connect(name, io)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))
}
