//! Buffered connection I/O: command lines and DATA bytes in, queued replies out.
//!
//! Replies are queued and written in one go when the server needs more input
//! (RFC 2920 PIPELINING: answers go out in order, in batches), when 16 KiB of them
//! wait, or when the session flushes explicitly (DATA, STARTTLS, QUIT, close).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::counters::Counters;
use super::reply::Reply;

/// The longest command line of plain SMTP, CRLF included (RFC 5321 §4.5.3.1.4).
const BASE_COMMAND_LINE: usize = 512;
/// What the advertised extensions add to `MAIL` (RFC 5321 §4.5.3.1.4 lets them):
/// `SIZE=` 26 (RFC 1870), `RET=` and `ENVID=` 100 (RFC 3461 §4), `SMTPUTF8` 10
/// (RFC 6531 §3.4).
const MAIL_EXTENSIONS: usize = 26 + 100 + 10;
/// What the advertised extensions add to `RCPT`: `NOTIFY=` and `ORCPT=` 500
/// (RFC 3461 §4).
const RCPT_EXTENSIONS: usize = 500;
/// The longest command line taken, CRLF included: that of the longest command the
/// extensions allow (`RCPT`, 512 + 500 = 1012 octets; `MAIL` is 648). One limit for
/// every command keeps the reader simple; a longer line gets `500 5.5.2`.
const MAX_COMMAND_LINE: usize = BASE_COMMAND_LINE
    + if MAIL_EXTENSIONS > RCPT_EXTENSIONS {
        MAIL_EXTENSIONS
    } else {
        RCPT_EXTENSIONS
    };
/// The most octets of replies that wait for a flush. Past it, [`Conn::read_line`]
/// sends them before it takes the next command (RFC 2920 §3.2 lets a server flush
/// early): pipelined commands whose answers are larger than they are (EHLO's, some
/// 17 times) cannot make the server hold more, and from a client that does not read,
/// the server takes no more commands until its write goes through.
const MAX_PENDING_OUTPUT: usize = 16 * 1024;
/// How much the server reads at a time (and the largest DATA chunk it writes).
pub(super) const CHUNK: usize = 64 * 1024;

/// What [`Conn::read_line`] produced.
#[derive(Debug)]
pub(super) enum Input {
    /// A command line without its line ending.
    Line(Bytes),
    /// A line over [`MAX_COMMAND_LINE`] octets; it was discarded up to its end.
    TooLong,
    /// The client closed the connection.
    Eof,
    /// The client sent nothing for the idle timeout.
    Timeout,
    /// The server is shutting down.
    Shutdown,
}

/// What [`Conn::fill`] produced.
#[derive(Debug)]
pub(super) enum Fill {
    /// More bytes are buffered.
    Data,
    /// The client closed the connection.
    Eof,
    /// Nothing arrived for the idle timeout.
    Timeout,
    /// The server is shutting down.
    Shutdown,
}

/// A client connection with its input buffer and the replies not yet sent.
pub(super) struct Conn<IO> {
    io: IO,
    input: BytesMut,
    output: Vec<u8>,
    decoded: Vec<u8>,
    write_timeout: Duration,
    /// Where the refusals sent are counted, if anywhere.
    counters: Option<Arc<Counters>>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Conn<IO> {
    /// Wraps a stream; writes that stall longer than `write_timeout` fail.
    pub(super) fn new(io: IO, write_timeout: Duration) -> Self {
        Self {
            io,
            input: BytesMut::with_capacity(CHUNK),
            output: Vec::new(),
            decoded: Vec::new(),
            write_timeout,
            counters: None,
        }
    }

    /// Counts the refusals sent on this connection in `counters`.
    pub(super) fn counting(mut self, counters: Arc<Counters>) -> Self {
        self.counters = Some(counters);
        self
    }

    /// Returns the stream. Input that was buffered but not yet processed is
    /// dropped: after STARTTLS this discards plaintext the client pipelined
    /// behind the command (CVE-2011-0411 command injection).
    pub(super) fn into_inner(self) -> IO {
        self.io
    }

    /// The stream.
    pub(super) fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Queues a reply; it is sent at the next flush.
    pub(super) fn queue(&mut self, reply: &Reply) {
        if let Some(counters) = &self.counters {
            counters.replied(reply);
        }
        self.output.extend_from_slice(reply.to_string().as_bytes());
    }

    /// Sends the queued replies.
    pub(super) async fn flush(&mut self) -> io::Result<()> {
        let Self {
            io,
            output,
            write_timeout,
            ..
        } = self;
        let write = async {
            io.write_all(output).await?;
            io.flush().await
        };
        match tokio::time::timeout(*write_timeout, write).await {
            Ok(result) => {
                output.clear();
                result
            }
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
        }
    }

    /// Sends the queued replies and closes the stream (TLS: with close_notify).
    /// Errors are of no interest any more at this point.
    pub(super) async fn close(mut self) {
        if self.flush().await.is_ok() {
            let _ = tokio::time::timeout(self.write_timeout, self.io.shutdown()).await;
        }
    }

    /// The buffered input not yet consumed.
    pub(super) fn buffered(&self) -> &[u8] {
        &self.input
    }

    /// The connection's buffer for decoded message text, empty, with room for a
    /// [`CHUNK`]; hand it back with [`Conn::return_decoded`] so the next message
    /// reuses it.
    pub(super) fn take_decoded(&mut self) -> Vec<u8> {
        let mut decoded = std::mem::take(&mut self.decoded);
        decoded.clear();
        decoded.reserve(CHUNK);
        decoded
    }

    /// Keeps `decoded` for the next message.
    pub(super) fn return_decoded(&mut self, decoded: Vec<u8>) {
        self.decoded = decoded;
    }

    /// Marks `n` buffered octets as consumed.
    pub(super) fn consume(&mut self, n: usize) {
        self.input.advance(n);
    }

    /// Reads the next command line (terminated by LF, an optional CR before it
    /// removed). Queued replies are flushed before waiting for input, and before
    /// anything else once they reach [`MAX_PENDING_OUTPUT`]. A line
    /// over [`MAX_COMMAND_LINE`] octets is discarded as it arrives, never buffered
    /// whole.
    pub(super) async fn read_line(
        &mut self,
        idle: Duration,
        shutdown: &mut watch::Receiver<bool>,
    ) -> io::Result<Input> {
        if self.output.len() >= MAX_PENDING_OUTPUT {
            self.flush().await?;
        }
        let mut discarding = false;
        loop {
            if let Some(end) = self.input.iter().position(|&b| b == b'\n') {
                // The line is copied out: a line split off would share the buffer
                // while the caller holds it, and the next read would allocate a new
                // one (64 KiB for every command).
                let too_long = discarding || end + 1 > MAX_COMMAND_LINE;
                let line = (!too_long).then(|| {
                    let text = &self.input[..end];
                    Bytes::copy_from_slice(text.strip_suffix(b"\r").unwrap_or(text))
                });
                self.input.advance(end + 1);
                return Ok(line.map_or(Input::TooLong, Input::Line));
            }
            if self.input.len() >= MAX_COMMAND_LINE {
                discarding = true;
                self.input.clear();
            }
            self.flush().await?;
            match self.fill(idle, Some(shutdown)).await? {
                Fill::Data => {}
                Fill::Eof => return Ok(Input::Eof),
                Fill::Timeout => return Ok(Input::Timeout),
                Fill::Shutdown => return Ok(Input::Shutdown),
            }
        }
    }

    /// Reads more input into the buffer, waiting at most `idle`, and (if
    /// given) giving up when the server shuts down.
    pub(super) async fn fill(
        &mut self,
        idle: Duration,
        shutdown: Option<&mut watch::Receiver<bool>>,
    ) -> io::Result<Fill> {
        self.input.reserve(CHUNK.saturating_sub(self.input.len()));
        let read = tokio::time::timeout(idle, self.io.read_buf(&mut self.input));
        let stop = async {
            match shutdown {
                Some(rx) => shutdown_requested(rx).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = read => match read {
                Err(_) => Ok(Fill::Timeout),
                Ok(Ok(0)) => Ok(Fill::Eof),
                Ok(Ok(_)) => Ok(Fill::Data),
                Ok(Err(e)) => Err(e),
            },
            () = stop => Ok(Fill::Shutdown),
        }
    }
}

/// Resolves once the shutdown flag is true. If the sender is gone without
/// ever asking for shutdown, it never resolves.
pub(super) async fn shutdown_requested(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn pipelined_commands_never_queue_more_than_the_bound() {
        let (client, server) = tokio::io::duplex(4 * 1024 * 1024);
        let (mut from_server, mut to_server) = tokio::io::split(client);
        let commands = 8192;
        // 64 KiB of commands, and the client reads nothing until the end.
        to_server
            .write_all(&b"EHLO a\r\n".repeat(commands))
            .await
            .unwrap();
        to_server.shutdown().await.unwrap();
        let ehlo = Reply::bare(
            250,
            "mx.test\nSIZE 268435456\nPIPELINING\n8BITMIME\nENHANCEDSTATUSCODES\n\
             SMTPUTF8\nDSN\nCHUNKING\nSTARTTLS",
        );
        let reply_len = ehlo.to_string().len();
        let mut conn = Conn::new(server, Duration::from_secs(60));
        let (_stop, mut shutdown) = watch::channel(false);
        let (mut answered, mut most_pending) = (0, 0);
        loop {
            match conn
                .read_line(Duration::from_secs(60), &mut shutdown)
                .await
                .unwrap()
            {
                Input::Line(line) => assert_eq!(&line[..], b"EHLO a"),
                Input::Eof => break,
                other => panic!("{other:?}"),
            }
            conn.queue(&ehlo);
            answered += 1;
            most_pending = most_pending.max(conn.output.len());
        }
        assert_eq!(answered, commands);
        assert!(
            most_pending < MAX_PENDING_OUTPUT + reply_len,
            "{most_pending} octets of replies were pending"
        );
        conn.close().await;
        let mut received = Vec::new();
        from_server.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, ehlo.to_string().repeat(commands).into_bytes());
    }
}
