//! Moving message text from the connection to the handler's sink: the whole
//! of a DATA message, or one BDAT chunk, decoded by a [`Decoder`] and written
//! in pieces of at most [`CHUNK`](super::conn::CHUNK) octets, so memory stays
//! bounded whatever the message size.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tracing::warn;

use super::conn::{Conn, Fill};
use super::decoder::Decoder;
use super::reply::Reply;

/// Why a transfer stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Interrupted {
    /// The client went silent for the data timeout.
    Timeout,
    /// The connection broke or was closed.
    Lost,
}

/// How much input a transfer takes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Extent {
    /// Up to and including the DATA terminator `<CRLF>.<CRLF>`.
    Terminator,
    /// Exactly this many octets (one BDAT chunk).
    Octets(u64),
}

/// Decodes input from `conn` into `sink` until `extent` is consumed. Bytes
/// after it stay buffered in `conn` (pipelined commands). Returns whether all
/// writes to the sink succeeded; after a failed write the input is still
/// consumed to its end but nothing more is written.
pub(super) async fn transfer<IO, W>(
    conn: &mut Conn<IO>,
    sink: &mut W,
    decoder: &mut Decoder,
    extent: Extent,
    idle: Duration,
) -> Result<bool, Interrupted>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut remaining = match extent {
        Extent::Terminator => u64::MAX,
        Extent::Octets(n) => n,
    };
    let mut out = conn.take_decoded();
    let mut sink_ok = true;
    loop {
        let input = conn.buffered();
        let take = usize::try_from(remaining).map_or(input.len(), |r| r.min(input.len()));
        let (used, done) = decoder.decode(&input[..take], &mut out);
        conn.consume(used);
        if let Extent::Octets(_) = extent {
            remaining -= used as u64;
        }
        sink_ok = write(sink, &out, sink_ok).await;
        out.clear();
        if done || remaining == 0 {
            conn.return_decoded(out);
            return Ok(sink_ok);
        }
        if conn.buffered().is_empty() {
            fill(conn, idle).await?;
        }
    }
}

/// Completes a message whose text is all in: writes what the decoder still
/// holds, flushes the sink and says whether the message stands. `sink_ok`
/// tells whether every earlier write succeeded.
pub(super) async fn complete<W>(
    sink: &mut W,
    mut decoder: Decoder,
    sink_ok: bool,
) -> Result<(), Reply>
where
    W: AsyncWrite + Unpin,
{
    let mut tail = Vec::new();
    decoder.finish(&mut tail);
    let sink_ok = write(sink, &tail, sink_ok).await;
    if let Some(refusal) = decoder.refusal() {
        return Err(refusal);
    }
    let flushed = sink_ok
        && sink
            .flush()
            .await
            .inspect_err(|e| warn!(error = %e, "flushing message data to the sink failed"))
            .is_ok();
    if flushed { Ok(()) } else { Err(local_error()) }
}

/// The reply when the sink failed.
pub(super) fn local_error() -> Reply {
    Reply::new(
        451,
        (4, 3, 0),
        "Local error while storing the message; try again later",
    )
}

/// Writes `bytes` unless an earlier write failed; returns whether the sink is
/// still good.
async fn write<W: AsyncWrite + Unpin>(sink: &mut W, bytes: &[u8], sink_ok: bool) -> bool {
    if !sink_ok || bytes.is_empty() {
        return sink_ok;
    }
    match sink.write_all(bytes).await {
        Ok(()) => true,
        Err(e) => {
            warn!(error = %e, "writing message data to the sink failed");
            false
        }
    }
}

/// Reads and drops `n` octets (a refused BDAT chunk), holding no more than
/// one read's worth at a time.
pub(super) async fn skip<IO>(
    conn: &mut Conn<IO>,
    mut n: u64,
    idle: Duration,
) -> Result<(), Interrupted>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let buffered = conn.buffered().len();
        let take = usize::try_from(n).map_or(buffered, |n| n.min(buffered));
        conn.consume(take);
        n -= take as u64;
        if n == 0 {
            return Ok(());
        }
        fill(conn, idle).await?;
    }
}

/// Reads more input, or says why there is none.
async fn fill<IO>(conn: &mut Conn<IO>, idle: Duration) -> Result<(), Interrupted>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    match conn.fill(idle, None).await {
        Ok(Fill::Data) => Ok(()),
        Ok(Fill::Timeout) => Err(Interrupted::Timeout),
        Ok(Fill::Eof | Fill::Shutdown) | Err(_) => Err(Interrupted::Lost),
    }
}
