//! One SMTP session: the command state machine (RFC 5321, RFC 3207 STARTTLS,
//! RFC 2920 PIPELINING, RFC 3030 CHUNKING) from greeting to close.
//!
//! A BDAT command whose chunk size cannot be read is answered with 501 and
//! the connection is closed: the length of the data behind it is unknown, so
//! it could neither be skipped nor be read as commands without running
//! message text. BDAT before STARTTLS is answered with 530 and the connection
//! closed too: skipping its chunk would have the server read any number of
//! octets for a client that has not shown a certificate. Every other refused
//! BDAT chunk is read and dropped.
//!
//! Before authentication a session is short-lived: the TLS handshake has its own
//! timeout, and on the STARTTLS port the whole time from connecting to a
//! completed handshake is bounded by the authentication deadline. Commands that
//! do not advance a transaction are counted, so that a client cannot keep a
//! session alive with them for ever.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tracing::{debug, info};

use super::command::{self, Bdat, Verb};
use super::conn::{Conn, Fill, Input};
use super::data::{self, Extent, Interrupted};
use super::decoder::{Decoder, Framing};
use super::handler::{Handler, Peer};
use super::limits::CertificateSlot;
use super::reply::Reply;
use super::{Config, Mode, Shared};

/// Serves one accepted connection to its end.
pub(super) async fn run<H: Handler>(
    shared: Arc<Shared<H>>,
    tcp: TcpStream,
    addr: SocketAddr,
    shutdown: watch::Receiver<bool>,
    mode: Mode,
) {
    debug!(peer = %addr, ?mode, "SMTP connection accepted");
    let mut session = Session {
        shared,
        addr,
        shutdown,
        errors: 0,
        junk: 0,
        greeted: false,
        txn: None,
        phase: Phase::Plain,
        certificate_slot: None,
    };
    match mode {
        Mode::StartTls => session.run_starttls(tcp).await,
        Mode::ImplicitTls => session.run_implicit(tcp).await,
    }
    debug!(peer = %addr, "SMTP connection closed");
}

/// How far the connection has come.
enum Phase<S> {
    /// Before STARTTLS: only EHLO/HELO/STARTTLS/NOOP/RSET/QUIT.
    Plain,
    /// TLS is up but the handler refused the peer: the next command gets this.
    Refused(Reply),
    /// TLS is up and the handler accepted the peer.
    Ready(S),
}

/// The mail transaction in progress (after an accepted MAIL); `K` is the
/// handler's sink.
struct Txn<K> {
    smtputf8: bool,
    /// RCPT commands seen.
    rcpt_attempts: usize,
    /// Recipients the handler accepted.
    recipients: usize,
    /// The message so far, once the first BDAT chunk came.
    chunks: Option<Chunks<K>>,
}

/// A message arriving in BDAT chunks.
struct Chunks<K> {
    sink: K,
    decoder: Decoder,
    /// Octets received in chunks so far.
    received: u64,
}

/// A refused DATA or BDAT: the reply, and whether it counts as a client error.
struct Refusal {
    reply: Reply,
    client_error: bool,
}

impl Refusal {
    /// A refusal caused by a client mistake (counted towards the error limit).
    fn error(code: u16, status: (u8, u16, u16), text: &str) -> Self {
        Self {
            reply: Reply::new(code, status, text),
            client_error: true,
        }
    }
}

/// How one BDAT chunk ended.
enum ChunkEnd {
    /// The chunk is in and more are expected.
    More(Reply),
    /// The last chunk is in; the handler answered for the whole message.
    Complete(Reply),
    /// The chunk or the message was refused; the transaction is over.
    Refused(Reply),
    /// The client went away or silent in the middle of the chunk.
    Interrupted(Interrupted),
}

/// What the command loop does next.
enum Flow {
    Continue,
    Close,
    StartTls,
}

struct Session<H: Handler> {
    shared: Arc<Shared<H>>,
    addr: SocketAddr,
    shutdown: watch::Receiver<bool>,
    errors: usize,
    /// Commands that did not advance a transaction since the last accepted message.
    junk: usize,
    greeted: bool,
    txn: Option<Txn<H::Sink>>,
    phase: Phase<H::Session>,
    /// This session's place under the per-certificate connection limit.
    certificate_slot: Option<CertificateSlot>,
}

impl<H: Handler> Session<H> {
    async fn run_starttls(&mut self, tcp: TcpStream) {
        let config = &self.shared.config;
        let deadline = Instant::now() + config.auth_deadline;
        let mut conn = Conn::new(tcp, config.command_timeout.min(config.auth_deadline))
            .counting(self.shared.counters.clone());
        match tokio::time::timeout_at(deadline, self.plain(&mut conn)).await {
            Ok(Ok(Flow::StartTls)) => {}
            Ok(Ok(_)) => return conn.close().await,
            Ok(Err(e)) => return debug!(peer = %self.addr, error = %e, "SMTP connection failed"),
            Err(_) => {
                info!(peer = %self.addr, "SMTP client did not authenticate in time");
                conn.queue(&Reply::new(
                    421,
                    (4, 7, 0),
                    "TLS with a client certificate was not established in time; closing",
                ));
                return conn.close().await;
            }
        }
        // Dropping the buffer discards anything pipelined behind STARTTLS.
        let Some(tls) = self.handshake(conn.into_inner(), Some(deadline)).await else {
            return;
        };
        let conn = Conn::new(tls, self.shared.config.command_timeout)
            .counting(self.shared.counters.clone());
        self.connect(&conn, false);
        self.serve_tls(conn).await;
    }

    /// The plaintext part of a STARTTLS-port session, up to the 220 to STARTTLS
    /// sent (`Flow::StartTls`) or the end of the session. Nothing in it needs
    /// cleaning up if it is cancelled: there is no handler session yet.
    async fn plain(&mut self, conn: &mut Conn<TcpStream>) -> io::Result<Flow> {
        if self.spoke_early(conn).await {
            return Ok(Flow::Close);
        }
        conn.queue(&self.greeting());
        let flow = self.commands(conn).await?;
        if let Flow::StartTls = flow {
            conn.flush().await?;
        }
        Ok(flow)
    }

    async fn run_implicit(&mut self, tcp: TcpStream) {
        let Some(tls) = self.handshake(tcp, None).await else {
            return;
        };
        let mut conn = Conn::new(tls, self.shared.config.command_timeout)
            .counting(self.shared.counters.clone());
        if self.spoke_early(&mut conn).await {
            return conn.close().await;
        }
        self.connect(&conn, true);
        match &self.phase {
            Phase::Refused(reply) => {
                conn.queue(reply);
                return conn.close().await;
            }
            Phase::Plain | Phase::Ready(_) => conn.queue(&self.greeting()),
        }
        self.serve_tls(conn).await;
    }

    async fn serve_tls(&mut self, mut conn: Conn<TlsStream<TcpStream>>) {
        // STARTTLS is refused once TLS is up, so the loop only ends in a close.
        match self.commands(&mut conn).await {
            Ok(_) => conn.close().await,
            Err(e) => debug!(peer = %self.addr, error = %e, "SMTP connection failed"),
        }
    }

    /// The TLS handshake, given the handshake timeout and no more than up to
    /// `deadline`.
    // `&mut self` (not `&self`) keeps the session future `Send` without
    // requiring `H::Session: Sync`.
    async fn handshake(
        &mut self,
        tcp: TcpStream,
        deadline: Option<Instant>,
    ) -> Option<TlsStream<TcpStream>> {
        let acceptor = (self.shared.acceptor.read())
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let accept = acceptor.accept(tcp);
        let limit = Instant::now() + self.shared.config.tls_handshake_timeout;
        let limit = deadline.map_or(limit, |deadline| deadline.min(limit));
        match tokio::time::timeout_at(limit, accept).await {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(e)) => {
                debug!(peer = %self.addr, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                debug!(peer = %self.addr, "TLS handshake timed out");
                None
            }
        }
    }

    /// Whether the client sent anything before the greeting (within the
    /// greeting delay); if so, the refusal is queued. RFC 5321 §4.3.1: a
    /// client waits for the greeting, so one that does not is a bot or is
    /// trying to desynchronise the dialogue.
    async fn spoke_early<IO>(&mut self, conn: &mut Conn<IO>) -> bool
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let delay = self.shared.config.greeting_delay;
        let early = matches!(
            conn.fill(delay, Some(&mut self.shutdown)).await,
            Ok(Fill::Data)
        );
        if early {
            info!(peer = %self.addr, "SMTP client spoke before the greeting");
            conn.queue(&Reply::new(
                554,
                (5, 5, 1),
                "Protocol error: command sent before the greeting",
            ));
        }
        early
    }

    /// Asks the handler about the peer (unless its certificate is over the
    /// connection limit); starts a fresh SMTP state either way.
    fn connect(&mut self, conn: &Conn<TlsStream<TcpStream>>, implicit_tls: bool) {
        let client_certs = conn
            .get_ref()
            .get_ref()
            .1
            .peer_certificates()
            .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default();
        let peer = Peer {
            addr: self.addr,
            client_certs,
            implicit_tls,
        };
        self.greeted = false;
        self.txn = None;
        let slot = peer
            .client_certs
            .first()
            .map(|leaf| self.shared.limits.admit_certificate(leaf));
        if let Some(None) = slot {
            info!(peer = %self.addr, "SMTP client certificate over its connection limit");
            self.phase = Phase::Refused(Reply::new(
                421,
                (4, 7, 0),
                "Too many connections with this client certificate; try again later",
            ));
            return;
        }
        self.certificate_slot = slot.flatten();
        self.phase = match self.shared.handler.connect(&peer) {
            Ok(session) => {
                info!(peer = %self.addr, certs = peer.client_certs.len(), "SMTP client connected");
                Phase::Ready(session)
            }
            Err(reply) => {
                info!(peer = %self.addr, code = reply.code, "SMTP client refused");
                Phase::Refused(reply)
            }
        };
    }

    fn greeting(&self) -> Reply {
        Reply::bare(220, format!("{} ESMTP kvgate", self.shared.config.hostname))
    }

    /// Reads and answers commands until the session ends or STARTTLS begins;
    /// a transaction still open then is discarded.
    async fn commands<IO>(&mut self, conn: &mut Conn<IO>) -> io::Result<Flow>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let flow = self.command_loop(conn).await;
        self.end_transaction().await;
        flow
    }

    async fn command_loop<IO>(&mut self, conn: &mut Conn<IO>) -> io::Result<Flow>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let timeout = self.shared.config.command_timeout;
        loop {
            let flow = match conn.read_line(timeout, &mut self.shutdown).await? {
                Input::Line(line) => match std::str::from_utf8(&line) {
                    Ok(line) => self.command(conn, line).await?,
                    Err(_) => self.error(
                        conn,
                        Reply::new(500, (5, 5, 2), "Invalid characters in command"),
                    ),
                },
                Input::TooLong => self.error(conn, Reply::new(500, (5, 5, 2), "Line too long")),
                Input::Eof => Flow::Close,
                Input::Timeout => {
                    debug!(peer = %self.addr, "SMTP command timeout");
                    conn.queue(&Reply::new(421, (4, 4, 2), "Timeout"));
                    Flow::Close
                }
                Input::Shutdown => {
                    conn.queue(&Reply::new(421, (4, 3, 2), "Service shutting down"));
                    Flow::Close
                }
            };
            match flow {
                Flow::Continue => {}
                Flow::Close | Flow::StartTls => return Ok(flow),
            }
        }
    }

    /// Answers one command line.
    async fn command<IO>(&mut self, conn: &mut Conn<IO>, line: &str) -> io::Result<Flow>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        if let Phase::Refused(reply) = &self.phase {
            conn.queue(reply);
            return Ok(Flow::Close);
        }
        let (verb, args) = command::split(line);
        let tls = !matches!(self.phase, Phase::Plain);
        if is_junk(verb) {
            self.junk += 1;
            if self.junk > self.shared.config.max_junk_commands {
                info!(peer = %self.addr, "SMTP client over its limit of commands that do not advance a transaction");
                conn.queue(&Reply::new(
                    421,
                    (4, 7, 0),
                    "Too many commands that do not advance a mail transaction; closing",
                ));
                return Ok(Flow::Close);
            }
        }
        let flow = match verb {
            Verb::Ehlo | Verb::Helo => self.hello(conn, verb, args, tls).await,
            Verb::StartTls => self.starttls(conn, args, tls),
            Verb::Noop => ok(conn, Reply::new(250, (2, 0, 0), "OK")),
            Verb::Rset if !args.is_empty() => {
                self.error(conn, Reply::new(501, (5, 5, 4), "Syntax: RSET"))
            }
            Verb::Rset => {
                self.end_transaction().await;
                ok(conn, Reply::new(250, (2, 0, 0), "OK"))
            }
            Verb::Quit => {
                conn.queue(&Reply::new(221, (2, 0, 0), "Bye"));
                Flow::Close
            }
            Verb::Unknown => self.error(conn, Reply::new(500, (5, 5, 1), "Command not recognized")),
            Verb::Bdat if !tls => {
                // Its chunk is not read (see the module documentation).
                conn.queue(&must_starttls());
                Flow::Close
            }
            Verb::Bdat => return self.bdat(conn, args).await,
            _ if !tls => self.error(conn, must_starttls()),
            Verb::Vrfy => ok(
                conn,
                Reply::new(
                    252,
                    (2, 5, 0),
                    "Cannot VRFY user, but will accept message and attempt delivery",
                ),
            ),
            Verb::Expn => ok(conn, Reply::new(502, (5, 5, 1), "EXPN not supported")),
            Verb::Help => ok(conn, Reply::new(214, (2, 0, 0), "See RFC 5321")),
            Verb::Mail => self.mail(conn, args),
            Verb::Rcpt => self.rcpt(conn, args),
            Verb::Data => return self.data(conn, args).await,
        };
        Ok(flow)
    }

    async fn hello<IO>(&mut self, conn: &mut Conn<IO>, verb: Verb, args: &str, tls: bool) -> Flow
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        if args.is_empty() {
            let syntax = if verb == Verb::Helo {
                "Syntax: HELO hostname"
            } else {
                "Syntax: EHLO hostname"
            };
            return self.error(conn, Reply::new(501, (5, 5, 2), syntax));
        }
        self.end_transaction().await;
        self.greeted = true;
        let config = &self.shared.config;
        if verb == Verb::Helo {
            return ok(conn, Reply::bare(250, config.hostname.clone()));
        }
        let mut lines = vec![
            config.hostname.clone(),
            format!("SIZE {}", config.max_message_size),
            "PIPELINING".to_owned(),
            "8BITMIME".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
            "SMTPUTF8".to_owned(),
            "DSN".to_owned(),
            "CHUNKING".to_owned(),
        ];
        if !tls {
            lines.push("STARTTLS".to_owned());
        }
        ok(conn, Reply::bare(250, lines.join("\n")))
    }

    fn starttls<IO>(&mut self, conn: &mut Conn<IO>, args: &str, tls: bool) -> Flow
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        if tls {
            return self.error(conn, Reply::new(503, (5, 5, 1), "TLS already active"));
        }
        if !args.is_empty() {
            return self.error(conn, Reply::new(501, (5, 5, 4), "Syntax: STARTTLS"));
        }
        conn.queue(&Reply::new(220, (2, 0, 0), "Ready to start TLS"));
        Flow::StartTls
    }

    fn mail<IO>(&mut self, conn: &mut Conn<IO>, args: &str) -> Flow
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let Phase::Ready(hs) = &mut self.phase else {
            return self.error(conn, must_starttls());
        };
        if !self.greeted {
            return note_error(
                &mut self.errors,
                &self.shared,
                conn,
                Reply::new(503, (5, 5, 1), "Send EHLO or HELO first"),
            );
        }
        if self.txn.is_some() {
            return note_error(
                &mut self.errors,
                &self.shared,
                conn,
                Reply::new(503, (5, 5, 1), "Nested MAIL command"),
            );
        }
        let mail = match command::parse_mail(args) {
            Ok(mail) => mail,
            Err(reply) => return note_error(&mut self.errors, &self.shared, conn, reply),
        };
        let handler = &self.shared.handler;
        if mail
            .params
            .size
            .is_some_and(|size| size > self.shared.config.max_message_size)
        {
            return ok(
                conn,
                Reply::new(
                    552,
                    (5, 3, 4),
                    "Message size exceeds fixed maximum message size",
                ),
            );
        }
        handler.reset(hs);
        match handler.mail_from(hs, mail.reverse_path, &mail.params) {
            Ok(()) => {
                self.txn = Some(Txn {
                    smtputf8: mail.params.smtputf8,
                    rcpt_attempts: 0,
                    recipients: 0,
                    chunks: None,
                });
                ok(conn, Reply::new(250, (2, 1, 0), "Sender OK"))
            }
            Err(reply) => ok(conn, reply),
        }
    }

    fn rcpt<IO>(&mut self, conn: &mut Conn<IO>, args: &str) -> Flow
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let Phase::Ready(hs) = &mut self.phase else {
            return self.error(conn, must_starttls());
        };
        let Some(txn) = &mut self.txn else {
            return note_error(
                &mut self.errors,
                &self.shared,
                conn,
                Reply::new(503, (5, 5, 1), "Need MAIL command"),
            );
        };
        txn.rcpt_attempts += 1;
        let rcpt = match command::parse_rcpt(args, txn.smtputf8) {
            Ok(rcpt) => rcpt,
            Err(reply) => return note_error(&mut self.errors, &self.shared, conn, reply),
        };
        if txn.recipients >= self.shared.config.max_recipients {
            return ok(conn, Reply::new(452, (4, 5, 3), "Too many recipients"));
        }
        match self
            .shared
            .handler
            .rcpt_to(hs, rcpt.forward_path, &rcpt.params)
        {
            Ok(()) => {
                txn.recipients += 1;
                ok(conn, Reply::new(250, (2, 1, 5), "Recipient OK"))
            }
            Err(reply) => ok(conn, reply),
        }
    }

    async fn data<IO>(&mut self, conn: &mut Conn<IO>, args: &str) -> io::Result<Flow>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        if !args.is_empty() {
            return Ok(self.error(conn, Reply::new(501, (5, 5, 4), "Syntax: DATA")));
        }
        let (hs, txn) = match envelope(&mut self.phase, &mut self.txn) {
            Ok(ready) => ready,
            Err(refusal) => return Ok(self.refuse(conn, refusal)),
        };
        if txn.chunks.is_some() {
            // RFC 3030 §2: DATA and BDAT do not mix in one transaction.
            let reply = Reply::new(503, (5, 5, 1), "DATA cannot follow BDAT; send RSET");
            return Ok(note_error(&mut self.errors, &self.shared, conn, reply));
        }
        let handler = &self.shared.handler;
        let config = &self.shared.config;
        let mut sink = match handler.data_start(hs).await {
            Ok(sink) => sink,
            Err(reply) => return Ok(ok(conn, reply)),
        };
        conn.queue(&Reply::bare(354, "End data with <CR><LF>.<CR><LF>"));
        if let Err(e) = conn.flush().await {
            handler.data_abort(hs, sink).await;
            return Err(e);
        }
        let mut decoder = Decoder::new(Framing::Dot, config.max_message_size);
        let received = data::transfer(
            conn,
            &mut sink,
            &mut decoder,
            Extent::Terminator,
            config.data_timeout,
        )
        .await;
        let completed = match received {
            Ok(sink_ok) => data::complete(&mut sink, decoder, sink_ok).await,
            Err(stop) => {
                handler.data_abort(hs, sink).await;
                self.end_transaction().await;
                return Ok(self.interrupted(conn, stop));
            }
        };
        let reply = match completed {
            Ok(()) => handler.data_end(hs, sink).await,
            Err(refusal) => {
                handler.data_abort(hs, sink).await;
                refusal
            }
        };
        info!(peer = %self.addr, code = reply.code, "message received by DATA");
        self.end_transaction().await;
        self.accepted(&reply);
        Ok(ok(conn, reply))
    }

    /// `BDAT size [LAST]` (RFC 3030): one chunk of the message. The chunk is
    /// read in every case, also when it is refused, so that message text is
    /// never taken for commands.
    async fn bdat<IO>(&mut self, conn: &mut Conn<IO>, args: &str) -> io::Result<Flow>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let chunk = match command::parse_bdat(args) {
            Ok(chunk) => chunk,
            Err(reply) => {
                conn.queue(&reply);
                return Ok(Flow::Close);
            }
        };
        let idle = self.shared.config.data_timeout;
        let end = match envelope(&mut self.phase, &mut self.txn) {
            Ok((hs, txn)) => receive_chunk(&self.shared, conn, hs, txn, chunk).await,
            Err(refusal) => {
                return Ok(match data::skip(conn, chunk.size, idle).await {
                    Ok(()) => self.refuse(conn, refusal),
                    Err(stop) => self.interrupted(conn, stop),
                });
            }
        };
        let flow = match end {
            ChunkEnd::More(reply) => return Ok(ok(conn, reply)),
            ChunkEnd::Complete(reply) => {
                info!(peer = %self.addr, code = reply.code, "message received by BDAT");
                self.accepted(&reply);
                ok(conn, reply)
            }
            ChunkEnd::Refused(reply) => {
                info!(peer = %self.addr, code = reply.code, "message refused during BDAT");
                ok(conn, reply)
            }
            ChunkEnd::Interrupted(stop) => self.interrupted(conn, stop),
        };
        self.end_transaction().await;
        Ok(flow)
    }

    /// Starts counting commands that do not advance a transaction anew once a
    /// message is accepted, so that a long session of many letters is not cut.
    fn accepted(&mut self, reply: &Reply) {
        if (200..300).contains(&reply.code) {
            self.junk = 0;
        }
    }

    /// Forgets the mail transaction; a message half received in BDAT chunks
    /// is handed back to the handler with `data_abort`.
    async fn end_transaction(&mut self) {
        let txn = self.txn.take();
        if let Phase::Ready(hs) = &mut self.phase {
            let handler = &self.shared.handler;
            if let Some(chunks) = txn.and_then(|txn| txn.chunks) {
                handler.data_abort(hs, chunks.sink).await;
            }
            handler.reset(hs);
        }
    }

    /// Ends the session after the client went silent or away mid-message.
    fn interrupted<IO>(&self, conn: &mut Conn<IO>, stop: Interrupted) -> Flow
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        match stop {
            Interrupted::Timeout => {
                debug!(peer = %self.addr, "SMTP data timeout");
                conn.queue(&Reply::new(421, (4, 4, 2), "Timeout"));
            }
            Interrupted::Lost => {
                debug!(peer = %self.addr, "SMTP connection lost during message data");
            }
        }
        Flow::Close
    }

    /// Answers a refused DATA or BDAT.
    fn refuse<IO>(&mut self, conn: &mut Conn<IO>, refusal: Refusal) -> Flow
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        if refusal.client_error {
            self.error(conn, refusal.reply)
        } else {
            ok(conn, refusal.reply)
        }
    }

    fn error<IO>(&mut self, conn: &mut Conn<IO>, reply: Reply) -> Flow
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        note_error(&mut self.errors, &self.shared, conn, reply)
    }
}

/// Receives one BDAT chunk of an accepted envelope. On any outcome but a
/// chunk that is not the last, the sink has been handed back to the
/// handler (by `data_end` or `data_abort`) and the transaction is over.
async fn receive_chunk<H: Handler, IO>(
    shared: &Shared<H>,
    conn: &mut Conn<IO>,
    hs: &mut H::Session,
    txn: &mut Txn<H::Sink>,
    chunk: Bdat,
) -> ChunkEnd
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let handler = &shared.handler;
    let config = &shared.config;
    let mut chunks = match txn.chunks.take() {
        Some(chunks) => chunks,
        None => match handler.data_start(hs).await {
            Ok(sink) => Chunks {
                sink,
                decoder: Decoder::new(Framing::Counted, config.max_message_size),
                received: 0,
            },
            Err(reply) => return refuse_chunk(conn, chunk, config, reply).await,
        },
    };
    chunks.received = chunks.received.saturating_add(chunk.size);
    if chunks.received > config.max_message_size {
        handler.data_abort(hs, chunks.sink).await;
        let too_big = Reply::new(552, (5, 3, 4), "Message too big");
        return refuse_chunk(conn, chunk, config, too_big).await;
    }
    let received = data::transfer(
        conn,
        &mut chunks.sink,
        &mut chunks.decoder,
        Extent::Octets(chunk.size),
        config.data_timeout,
    )
    .await;
    let refusal = match received {
        Err(stop) => {
            handler.data_abort(hs, chunks.sink).await;
            return ChunkEnd::Interrupted(stop);
        }
        Ok(false) => Some(data::local_error()),
        Ok(true) => chunks.decoder.refusal(),
    };
    if let Some(reply) = refusal {
        handler.data_abort(hs, chunks.sink).await;
        return ChunkEnd::Refused(reply);
    }
    if !chunk.last {
        txn.chunks = Some(chunks);
        let text = format!("{} octets received", chunk.size);
        return ChunkEnd::More(Reply::new(250, (2, 0, 0), text));
    }
    let Chunks {
        mut sink, decoder, ..
    } = chunks;
    match data::complete(&mut sink, decoder, true).await {
        Ok(()) => ChunkEnd::Complete(handler.data_end(hs, sink).await),
        Err(reply) => {
            handler.data_abort(hs, sink).await;
            ChunkEnd::Refused(reply)
        }
    }
}

/// Reads and drops a refused chunk, then refuses it with `reply`.
async fn refuse_chunk<IO>(
    conn: &mut Conn<IO>,
    chunk: Bdat,
    config: &Config,
    reply: Reply,
) -> ChunkEnd
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    match data::skip(conn, chunk.size, config.data_timeout).await {
        Ok(()) => ChunkEnd::Refused(reply),
        Err(stop) => ChunkEnd::Interrupted(stop),
    }
}

/// The handler's session and the transaction, if the envelope is complete
/// enough for message data (TLS, MAIL and at least one accepted RCPT).
fn envelope<'a, S, K>(
    phase: &'a mut Phase<S>,
    txn: &'a mut Option<Txn<K>>,
) -> Result<(&'a mut S, &'a mut Txn<K>), Refusal> {
    let Phase::Ready(hs) = phase else {
        return Err(Refusal {
            reply: must_starttls(),
            client_error: true,
        });
    };
    let Some(txn) = txn else {
        return Err(Refusal::error(503, (5, 5, 1), "Need MAIL command"));
    };
    if txn.rcpt_attempts == 0 {
        return Err(Refusal::error(503, (5, 5, 1), "Need RCPT command"));
    }
    if txn.recipients == 0 {
        return Err(Refusal {
            reply: Reply::new(554, (5, 5, 1), "No valid recipients"),
            client_error: false,
        });
    }
    Ok((hs, txn))
}

/// Whether a command does not advance a mail transaction (counted against
/// [`Config::max_junk_commands`]).
fn is_junk(verb: Verb) -> bool {
    matches!(
        verb,
        Verb::Noop | Verb::Rset | Verb::Ehlo | Verb::Helo | Verb::Help | Verb::Vrfy | Verb::Expn
    )
}

fn must_starttls() -> Reply {
    Reply::new(530, (5, 7, 0), "Must issue a STARTTLS command first")
}

/// Queues a reply and goes on.
fn ok<IO>(conn: &mut Conn<IO>, reply: Reply) -> Flow
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    conn.queue(&reply);
    Flow::Continue
}

/// Queues the reply to a client error, or, at the error limit, `421` and close.
fn note_error<H: Handler, IO>(
    errors: &mut usize,
    shared: &Shared<H>,
    conn: &mut Conn<IO>,
    reply: Reply,
) -> Flow
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    *errors += 1;
    if *errors >= shared.config.max_errors {
        conn.queue(&Reply::new(421, (4, 7, 0), "Too many errors"));
        return Flow::Close;
    }
    conn.queue(&reply);
    Flow::Continue
}
