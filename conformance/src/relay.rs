//! The suite's own SMTP receiver (`--relay-listen`): the gateway's outbound relay
//! in cases that check the receipts it sends. Plain SMTP; every message is kept.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The longest line or message the receiver takes.
const MAX_LINE: usize = 4096;
const MAX_MESSAGE: usize = 32 * 1024 * 1024;

/// A message the gateway handed to the receiver.
#[derive(Debug, Clone)]
pub struct Received {
    /// `MAIL FROM`.
    pub mail_from: String,
    /// `RCPT TO`s.
    pub rcpt_to: Vec<String>,
    /// The message, dot-unstuffed.
    pub data: Vec<u8>,
}

/// How long a receipt may take to reach the relay.
pub const RECEIPT_TIMEOUT: Duration = Duration::from_secs(90);

/// A running receiver.
pub struct Relay {
    received: Arc<Mutex<Vec<Received>>>,
}

impl Relay {
    /// Listens on `addr` for the rest of the run.
    pub async fn start(addr: SocketAddr) -> std::io::Result<Relay> {
        let listener = TcpListener::bind(addr).await?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let store = received.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    // A broken connection only loses that connection's message.
                    let _ = session(tcp, &store).await;
                });
            }
        });
        Ok(Relay { received })
    }

    /// Waits up to `timeout` for a message to `rcpt` that `accept` takes.
    pub async fn wait_for(
        &self,
        rcpt: &str,
        timeout: Duration,
        accept: impl Fn(&Received) -> bool,
    ) -> Option<Received> {
        let started = Instant::now();
        loop {
            let found = self
                .received
                .lock()
                .ok()?
                .iter()
                .find(|m| m.rcpt_to.iter().any(|r| r.eq_ignore_ascii_case(rcpt)) && accept(m))
                .cloned();
            if found.is_some() || started.elapsed() > timeout {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Received {
    /// The message as lower-case text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).to_lowercase()
    }

    /// The first `Diagnostic-Code:` line of a DSN, lower case (empty if none).
    pub fn diagnostic_code(&self) -> String {
        self.text()
            .lines()
            .find(|l| l.starts_with("diagnostic-code:"))
            .unwrap_or_default()
            .to_owned()
    }

    /// Whether this is a DSN (`multipart/report; report-type=delivery-status`) that
    /// names `tracking_id`.
    pub fn is_dsn_for(&self, tracking_id: &str) -> bool {
        let text = self.text();
        (text.contains("report-type=delivery-status")
            || text.contains("report-type=\"delivery-status\""))
            && text.contains(&tracking_id.to_lowercase())
    }
}

/// One SMTP session: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT.
async fn session(tcp: TcpStream, store: &Mutex<Vec<Received>>) -> std::io::Result<()> {
    let mut io = BufReader::new(tcp);
    io.write_all(b"220 kvgate-conformance relay ESMTP\r\n")
        .await?;
    let (mut from, mut rcpts) = (String::new(), Vec::new());
    loop {
        let Some(line) = read_line(&mut io).await? else {
            return Ok(());
        };
        let upper = line.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            b"250-kvgate-conformance\r\n250-8BITMIME\r\n250 SIZE 33554432\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            from = path(&line[10..]);
            rcpts.clear();
            b"250 OK\r\n"
        } else if upper.starts_with("RCPT TO:") {
            rcpts.push(path(&line[8..]));
            b"250 OK\r\n"
        } else if upper == "DATA" {
            io.write_all(b"354 go ahead\r\n").await?;
            let data = read_data(&mut io).await?;
            if let Ok(mut all) = store.lock() {
                all.push(Received {
                    mail_from: std::mem::take(&mut from),
                    rcpt_to: std::mem::take(&mut rcpts),
                    data,
                });
            }
            b"250 OK\r\n"
        } else if upper == "QUIT" {
            io.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else if upper == "RSET" || upper.starts_with("NOOP") {
            b"250 OK\r\n"
        } else {
            b"502 not implemented\r\n"
        };
        io.write_all(reply).await?;
    }
}

/// The address inside `<…>`, parameters dropped.
fn path(arg: &str) -> String {
    let arg = arg.trim();
    let end = arg.find('>').map_or(arg.len(), |i| i + 1);
    arg[..end].trim_matches(['<', '>']).to_owned()
}

/// One line without its line end; `None` at the end of the stream.
async fn read_line(io: &mut BufReader<TcpStream>) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    let n = (&mut *io)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

/// The message up to `.` alone on a line, dot-unstuffed, CRLF line ends.
async fn read_data(io: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    while let Some(line) = read_line(io).await? {
        if line == "." {
            return Ok(data);
        }
        if data.len() < MAX_MESSAGE {
            data.extend_from_slice(line.strip_prefix('.').unwrap_or(&line).as_bytes());
            data.extend_from_slice(b"\r\n");
        }
    }
    Ok(data)
}
