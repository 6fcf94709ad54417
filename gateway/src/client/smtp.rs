//! An SMTP submission client over implicit TLS with a client certificate.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::ClientConfig;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{ClientError, server_name};

/// One SMTP reply: its code and its text lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The text of each line, without the code and separator.
    pub lines: Vec<String>,
}

impl Reply {
    /// The last line's text, where the enhanced status and the sentence are.
    pub fn text(&self) -> &str {
        self.lines.last().map_or("", String::as_str)
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text())
    }
}

/// An open SMTP session.
pub struct SmtpClient {
    stream: BufReader<TlsStream<TcpStream>>,
}

impl SmtpClient {
    /// Connects with implicit TLS and reads the greeting.
    pub async fn connect(
        addr: SocketAddr,
        host: &str,
        tls: Arc<ClientConfig>,
    ) -> Result<(Self, Reply), ClientError> {
        let tcp = TcpStream::connect(addr).await?;
        // Commands are small and each waits for its reply: no Nagle delay.
        tcp.set_nodelay(true)?;
        let tls = TlsConnector::from(tls)
            .connect(server_name(host)?, tcp)
            .await?;
        let mut client = SmtpClient {
            stream: BufReader::new(tls),
        };
        let greeting = client.reply().await?;
        Ok((client, greeting))
    }

    /// Sends one command line and reads its reply.
    pub async fn command(&mut self, line: &str) -> Result<Reply, ClientError> {
        self.stream
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await?;
        self.stream.get_mut().flush().await?;
        self.reply().await
    }

    /// Sends DATA and, after 354, the message (dot-stuffed, CRLF line ends), and
    /// returns the reply to the final dot. Any other reply to DATA is returned as is.
    pub async fn data(&mut self, message: &[u8]) -> Result<Reply, ClientError> {
        let go_ahead = self.command("DATA").await?;
        if go_ahead.code != 354 {
            return Ok(go_ahead);
        }
        // Stuffed a chunk at a time: a large message is never copied whole.
        let mut out = Vec::with_capacity(DATA_CHUNK + MAX_LINE);
        let mut rest = message;
        while !rest.is_empty() {
            out.clear();
            rest = stuff_lines(rest, &mut out, DATA_CHUNK);
            self.stream.get_mut().write_all(&out).await?;
        }
        self.finish_data(b".\r\n").await
    }

    /// Like [`data`](Self::data), with a message stuffed before: a sender that submits
    /// the same message many times (the benchmark's load) scans and copies it once.
    pub async fn data_text(&mut self, text: &DataText) -> Result<Reply, ClientError> {
        let go_ahead = self.command("DATA").await?;
        if go_ahead.code != 354 {
            return Ok(go_ahead);
        }
        self.finish_data(&text.0).await
    }

    /// Writes the last of the DATA content, `tail` (ending in the closing dot), and
    /// reads the reply.
    async fn finish_data(&mut self, tail: &[u8]) -> Result<Reply, ClientError> {
        self.stream.get_mut().write_all(tail).await?;
        self.stream.get_mut().flush().await?;
        self.reply().await
    }

    /// Reads one (possibly multi-line) reply.
    pub async fn reply(&mut self) -> Result<Reply, ClientError> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if self.stream.read_line(&mut line).await? == 0 {
                return Err(ClientError::Protocol(
                    "the server closed the connection".into(),
                ));
            }
            let line = line.trim_end_matches(['\r', '\n']);
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| ClientError::Protocol(format!("not an SMTP reply: {line:?}")))?;
            lines.push(line.get(4..).unwrap_or("").to_owned());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply { code, lines });
            }
        }
    }
}

/// Submits one message: EHLO, MAIL, RCPT for each recipient, DATA, QUIT. Returns the
/// first refusal, or the reply to the final dot.
pub async fn submit(
    addr: SocketAddr,
    tls: Arc<ClientConfig>,
    from: &str,
    recipients: &[&str],
    message: &[u8],
) -> Result<Reply, ClientError> {
    let (mut client, greeting) = SmtpClient::connect(addr, "localhost", tls).await?;
    if greeting.code != 220 {
        return Ok(greeting);
    }
    let steps = std::iter::once("EHLO client.localhost".to_owned())
        .chain(std::iter::once(format!("MAIL FROM:<{from}>")))
        .chain(recipients.iter().map(|r| format!("RCPT TO:<{r}>")));
    for step in steps {
        let reply = client.command(&step).await?;
        if reply.code != 250 {
            return Ok(reply);
        }
    }
    let reply = client.data(message).await?;
    let _ = client.command("QUIT").await;
    Ok(reply)
}

/// A message as the content of DATA: every line ended by CRLF, a leading dot
/// doubled, and the closing dot line.
#[derive(Debug, Clone)]
pub struct DataText(Vec<u8>);

impl DataText {
    /// Stuffs `message` as [`SmtpClient::data`] does while it sends.
    pub fn new(message: &[u8]) -> Self {
        let mut text = Vec::with_capacity(message.len() + message.len() / 32 + 3);
        let rest = stuff_lines(message, &mut text, usize::MAX);
        debug_assert!(rest.is_empty());
        text.extend_from_slice(b".\r\n");
        DataText(text)
    }
}

/// Octets of dot-stuffed message text written at a time.
const DATA_CHUNK: usize = 64 * 1024;

/// The longest text line SMTP allows, CRLF included (RFC 5321 §4.5.3.1.6): room kept
/// so that a chunk's last line rarely makes its buffer grow.
const MAX_LINE: usize = 1000;

/// Appends whole lines of `message` to `out` as the content of DATA (every line ended
/// by CRLF, a bare LF too; a leading dot doubled) until `out` holds at least `limit`
/// octets, and returns the lines not yet appended.
fn stuff_lines<'a>(mut rest: &'a [u8], out: &mut Vec<u8>, limit: usize) -> &'a [u8] {
    while !rest.is_empty() && out.len() < limit {
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(end) => (&rest[..end], &rest[end + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
        rest = next;
    }
    rest
}

#[cfg(test)]
mod tests {
    use super::{DataText, stuff_lines};

    /// `message` stuffed in chunks of at least `limit` octets, and the closing dot.
    fn stuffed(message: &[u8], limit: usize) -> Vec<u8> {
        let (mut out, mut rest) = (Vec::new(), message);
        while !rest.is_empty() {
            let before = out.len();
            rest = stuff_lines(rest, &mut out, before + limit);
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    #[test]
    fn data_lines_end_in_crlf_and_leading_dots_are_doubled_in_any_chunks() {
        let message = b"a\n.b\r\n..c\r\n\r\nlast";
        for limit in [1, 2, 5, 64 * 1024] {
            assert_eq!(
                stuffed(message, limit),
                b"a\r\n..b\r\n...c\r\n\r\nlast\r\n.\r\n",
                "chunks of {limit}"
            );
        }
        assert_eq!(stuffed(b"one\r\n", 1), b"one\r\n.\r\n");
        assert_eq!(stuffed(b"", 1), b".\r\n");
    }

    #[test]
    fn data_text_is_what_data_sends() {
        for message in [&b"a\n.b\r\n..c\r\n\r\nlast"[..], b"one\r\n", b""] {
            assert_eq!(DataText::new(message).0, stuffed(message, 64 * 1024));
        }
    }
}
