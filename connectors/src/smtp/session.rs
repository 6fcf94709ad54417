//! One SMTP session: the command state machine (RFC 5321, RFC 3207 STARTTLS,
//! RFC 2920 PIPELINING) from greeting to close.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tracing::{debug, info};

use super::command::{self, Verb};
use super::conn::{Conn, Input};
use super::data::{self, DataEnd};
use super::handler::{Handler, Peer};
use super::reply::Reply;
use super::{Mode, Shared};

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
        greeted: false,
        txn: None,
        phase: Phase::Plain,
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

/// The mail transaction in progress (after an accepted MAIL).
struct Txn {
    smtputf8: bool,
    /// RCPT commands seen.
    rcpt_attempts: usize,
    /// Recipients the handler accepted.
    recipients: usize,
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
    greeted: bool,
    txn: Option<Txn>,
    phase: Phase<H::Session>,
}

impl<H: Handler> Session<H> {
    async fn run_starttls(&mut self, tcp: TcpStream) {
        let mut conn = Conn::new(tcp, self.shared.config.command_timeout);
        conn.queue(&self.greeting());
        match self.commands(&mut conn).await {
            Ok(Flow::StartTls) => {}
            Ok(_) => return conn.close().await,
            Err(e) => return debug!(peer = %self.addr, error = %e, "SMTP connection failed"),
        }
        if let Err(e) = conn.flush().await {
            return debug!(peer = %self.addr, error = %e, "SMTP connection failed");
        }
        // Dropping the buffer discards anything pipelined behind STARTTLS.
        let Some(tls) = self.handshake(conn.into_inner()).await else {
            return;
        };
        let conn = Conn::new(tls, self.shared.config.command_timeout);
        self.connect(&conn, false);
        self.serve_tls(conn).await;
    }

    async fn run_implicit(&mut self, tcp: TcpStream) {
        let Some(tls) = self.handshake(tcp).await else {
            return;
        };
        let mut conn = Conn::new(tls, self.shared.config.command_timeout);
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

    // `&mut self` (not `&self`) keeps the session future `Send` without
    // requiring `H::Session: Sync`.
    async fn handshake(&mut self, tcp: TcpStream) -> Option<TlsStream<TcpStream>> {
        let accept = self.shared.acceptor.accept(tcp);
        match tokio::time::timeout(self.shared.config.command_timeout, accept).await {
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

    /// Asks the handler about the peer; starts a fresh SMTP state either way.
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

    /// Reads and answers commands until the session ends or STARTTLS begins.
    async fn commands<IO>(&mut self, conn: &mut Conn<IO>) -> io::Result<Flow>
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
        let flow = match verb {
            Verb::Ehlo | Verb::Helo => self.hello(conn, verb, args, tls),
            Verb::StartTls => self.starttls(conn, args, tls),
            Verb::Noop => ok(conn, Reply::new(250, (2, 0, 0), "OK")),
            Verb::Rset if !args.is_empty() => {
                self.error(conn, Reply::new(501, (5, 5, 4), "Syntax: RSET"))
            }
            Verb::Rset => {
                self.reset();
                ok(conn, Reply::new(250, (2, 0, 0), "OK"))
            }
            Verb::Quit => {
                conn.queue(&Reply::new(221, (2, 0, 0), "Bye"));
                Flow::Close
            }
            Verb::Unknown => self.error(conn, Reply::new(500, (5, 5, 1), "Command not recognized")),
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

    fn hello<IO>(&mut self, conn: &mut Conn<IO>, verb: Verb, args: &str, tls: bool) -> Flow
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
        self.reset();
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
        let Phase::Ready(hs) = &mut self.phase else {
            return Ok(self.error(conn, must_starttls()));
        };
        let refusal = match &self.txn {
            _ if !args.is_empty() => Some(Reply::new(501, (5, 5, 4), "Syntax: DATA")),
            None => Some(Reply::new(503, (5, 5, 1), "Need MAIL command")),
            Some(txn) if txn.rcpt_attempts == 0 => {
                Some(Reply::new(503, (5, 5, 1), "Need RCPT command"))
            }
            Some(txn) if txn.recipients == 0 => {
                return Ok(ok(conn, Reply::new(554, (5, 5, 1), "No valid recipients")));
            }
            Some(_) => None,
        };
        if let Some(reply) = refusal {
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
        let end = data::receive(
            conn,
            &mut sink,
            config.max_message_size,
            config.data_timeout,
        )
        .await;
        let flow = match end {
            DataEnd::Received => {
                let reply = handler.data_end(hs, sink).await;
                info!(peer = %self.addr, code = reply.code, "message received");
                ok(conn, reply)
            }
            DataEnd::Refused(reply) => {
                handler.data_abort(hs, sink).await;
                info!(peer = %self.addr, code = reply.code, "message refused");
                ok(conn, reply)
            }
            DataEnd::Timeout => {
                handler.data_abort(hs, sink).await;
                debug!(peer = %self.addr, "SMTP data timeout");
                conn.queue(&Reply::new(421, (4, 4, 2), "Timeout"));
                Flow::Close
            }
            DataEnd::Lost => {
                handler.data_abort(hs, sink).await;
                debug!(peer = %self.addr, "SMTP connection lost during DATA");
                Flow::Close
            }
        };
        handler.reset(hs);
        self.txn = None;
        Ok(flow)
    }

    /// Forgets the mail transaction.
    fn reset(&mut self) {
        self.txn = None;
        if let Phase::Ready(hs) = &mut self.phase {
            self.shared.handler.reset(hs);
        }
    }

    fn error<IO>(&mut self, conn: &mut Conn<IO>, reply: Reply) -> Flow
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        note_error(&mut self.errors, &self.shared, conn, reply)
    }
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
