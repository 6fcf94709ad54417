//! The SMTP ingress server (RFC 5321) for senders with TLS client certificates.
//!
//! Two kinds of listener: a plain port that offers STARTTLS (RFC 3207) and an
//! implicit-TLS port. Client certificates are required on both (the rustls
//! configuration enforces that, TLS 1.2 and 1.3 only), so the client chain is
//! verified before any mail command is taken. Extensions: SIZE, PIPELINING,
//! 8BITMIME, ENHANCEDSTATUSCODES, SMTPUTF8, DSN, CHUNKING. Every policy
//! decision (who may connect, which senders and recipients are allowed, where
//! the message goes) belongs to the [`Handler`].
//!
//! Message text (DATA and BDAT) is streamed to the handler's sink in pieces of
//! at most 64 KiB; bare CR and bare LF are normalised to CRLF (see the
//! `decoder` module for the smuggling rules).

mod address;
mod command;
mod conn;
mod counters;
mod data;
mod decoder;
mod handler;
mod limits;
mod params;
mod reply;
mod session;

use std::io;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::throttle::Throttle;
use tracing::{error, info, warn};

pub use counters::{Counters, SmtpCounts};
pub use handler::{Handler, Peer};
pub use params::{Body, MailParams, Notify, OriginalRecipient, RcptParams, Ret};
pub use reply::{EnhancedStatus, Reply};

/// How long in-flight sessions may run on after shutdown was requested.
const DRAIN_PERIOD: Duration = Duration::from_secs(10);
/// The pause after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Limits and identity of an SMTP listener.
#[derive(Debug, Clone)]
pub struct Config {
    /// The name in the greeting and the EHLO answer.
    pub hostname: String,
    /// The largest message accepted, in octets (announced as `SIZE`).
    pub max_message_size: u64,
    /// The most recipients per message.
    pub max_recipients: usize,
    /// How long the server waits for a command.
    pub command_timeout: Duration,
    /// How long a TLS handshake may take. Much shorter than the command timeout:
    /// the client is not yet known, and a handshake needs a few round trips, not a
    /// person at a keyboard.
    pub tls_handshake_timeout: Duration,
    /// How long a client on the STARTTLS port has, from connecting, to complete
    /// STARTTLS with its client certificate; then it gets `421 4.7.0` and is
    /// closed. The idle timeout alone would let a client that sends a command now
    /// and then hold its session for ever without ever authenticating.
    pub auth_deadline: Duration,
    /// How long the server waits for more message data during DATA or a
    /// BDAT chunk.
    pub data_timeout: Duration,
    /// After this many client errors the server says 421 and closes.
    pub max_errors: usize,
    /// How many commands that do not advance a mail transaction (NOOP, RSET,
    /// EHLO, HELO, HELP, VRFY, EXPN) a session may send between two accepted
    /// messages (and before the first); the next one gets `421 4.7.0` and the
    /// session is closed (cf. Postfix's `smtpd_junk_command_limit`).
    pub max_junk_commands: usize,
    /// The most sessions at once over all listeners of the server; a client
    /// over the limit gets `421 4.3.2` (STARTTLS port) or is disconnected
    /// before the TLS handshake (implicit-TLS port).
    pub max_connections: usize,
    /// The most sessions at once from one client IP address, counted from
    /// before the TLS handshake, so that clients without a certificate cannot
    /// take every session of [`Config::max_connections`] from one address; one
    /// more gets `421 4.7.0` (STARTTLS port) or is disconnected before the
    /// handshake (implicit-TLS port).
    pub max_connections_per_address: usize,
    /// Whether clients on a loopback address (the gateway's own host: local tools,
    /// the benchmark) are left out of [`Config::max_connections_per_address`].
    pub loopback_exempt: bool,
    /// The most sessions at once with the same client certificate; one more
    /// gets `421 4.7.0` after the handshake.
    pub max_connections_per_certificate: usize,
    /// How long the server listens before it sends the greeting. A client
    /// that sends anything in that time is not waiting for the greeting
    /// (RFC 5321 §4.3.1) and is refused with `554 5.5.1`. Zero still catches
    /// input that is already there.
    pub greeting_delay: Duration,
}

impl Default for Config {
    /// `localhost`, 256 MiB, 100 recipients, 5 min command and data timeout
    /// (the server timeout of RFC 5321 §4.5.3.2.7), 30 s for a TLS handshake, 60 s
    /// to authenticate on the STARTTLS port, 10 errors, 100 commands that do not
    /// advance a transaction (Postfix's default), 500 connections, 100 per client
    /// address (loopback exempt) and 100 per client certificate, no greeting delay.
    ///
    /// 100 per address is as many as one certificate may have: a practice or a
    /// hospital behind one address is held back by its certificate's limit first,
    /// while clients from one address without a certificate can hold at most a
    /// fifth of the server. Loopback is exempt because it is the gateway's own host
    /// (the benchmark runs 128 sessions from 127.0.0.1).
    fn default() -> Self {
        Self {
            hostname: "localhost".to_owned(),
            max_message_size: 256 * 1024 * 1024,
            max_recipients: 100,
            command_timeout: Duration::from_secs(5 * 60),
            tls_handshake_timeout: Duration::from_secs(30),
            auth_deadline: Duration::from_secs(60),
            data_timeout: Duration::from_secs(5 * 60),
            max_errors: 10,
            max_junk_commands: 100,
            max_connections: 500,
            max_connections_per_address: 100,
            loopback_exempt: true,
            max_connections_per_certificate: 100,
            greeting_delay: Duration::ZERO,
        }
    }
}

/// The SMTP server: one handler, one TLS configuration and one [`Config`],
/// served on any number of listeners.
pub struct Server<H: Handler> {
    shared: Arc<Shared<H>>,
}

/// What every session of a server shares.
struct Shared<H> {
    handler: Arc<H>,
    /// The TLS configuration new connections get (see [`Server::set_tls`]).
    acceptor: RwLock<TlsAcceptor>,
    config: Config,
    limits: limits::ConnectionLimits,
    counters: Arc<Counters>,
}

/// The kind of listener.
#[derive(Debug, Clone, Copy)]
enum Mode {
    StartTls,
    ImplicitTls,
}

impl<H: Handler> Server<H> {
    /// A server that asks `handler` and speaks TLS with `tls` (which should
    /// require client certificates, see [`crate::tls::sender_server_config`]).
    pub fn new(handler: Arc<H>, tls: Arc<rustls::ServerConfig>, config: Config) -> Self {
        Self {
            shared: Arc::new(Shared {
                handler,
                acceptor: RwLock::new(TlsAcceptor::from(tls)),
                limits: limits::ConnectionLimits::new(
                    config.max_connections,
                    config.max_connections_per_address,
                    config.loopback_exempt,
                    config.max_connections_per_certificate,
                ),
                config,
                counters: Arc::default(),
            }),
        }
    }

    /// What the server has counted since it started, for the operators' metrics.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.shared.counters)
    }

    /// Speaks TLS with `tls` on the connections accepted from now on (sessions already
    /// running keep theirs): for trust anchors changed while the server runs.
    pub fn set_tls(&self, tls: Arc<rustls::ServerConfig>) {
        *self
            .shared
            .acceptor
            .write()
            .unwrap_or_else(PoisonError::into_inner) = TlsAcceptor::from(tls);
    }

    /// Accepts on a plain port offering STARTTLS (nothing but EHLO, HELO,
    /// STARTTLS, NOOP, RSET and QUIT before TLS). Returns after `shutdown`
    /// turned true and the sessions ended (see [`Server::serve_implicit_tls`]).
    pub async fn serve_starttls(
        &self,
        listener: TcpListener,
        shutdown: watch::Receiver<bool>,
    ) -> io::Result<()> {
        self.serve(listener, shutdown, Mode::StartTls).await
    }

    /// Accepts on an implicit-TLS port (handshake first, then the greeting).
    /// When `shutdown` turns true it stops accepting, lets running sessions
    /// finish for up to 10 s (sessions waiting for a command get
    /// `421 4.3.2 Service shutting down`), cancels the rest and returns.
    ///
    /// Failed `accept` calls are logged and retried, so the only error is
    /// that the listener's local address cannot be read. A shutdown sender
    /// that is dropped without sending `true` never stops the server.
    pub async fn serve_implicit_tls(
        &self,
        listener: TcpListener,
        shutdown: watch::Receiver<bool>,
    ) -> io::Result<()> {
        self.serve(listener, shutdown, Mode::ImplicitTls).await
    }

    async fn serve(
        &self,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
        mode: Mode,
    ) -> io::Result<()> {
        let local = listener.local_addr()?;
        info!(%local, ?mode, "SMTP listener started");
        let mut sessions = JoinSet::new();
        loop {
            tokio::select! {
                () = conn::shutdown_requested(&mut shutdown) => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, addr)) => match self.shared.limits.admit(addr.ip()) {
                        Ok(admission) => {
                            crate::tcp::no_delay(&tcp);
                            let implicit_tls = matches!(mode, Mode::ImplicitTls);
                            let open = self.shared.counters.session_started(implicit_tls);
                            let shared = Arc::clone(&self.shared);
                            let session = session::run(shared, tcp, addr, shutdown.clone(), mode);
                            sessions.spawn(async move {
                                session.await;
                                drop((open, admission));
                            });
                        }
                        Err(busy) => {
                            self.shared.counters.turned_away();
                            refuse_busy(&tcp, mode, busy);
                        }
                    },
                    Err(e) => {
                        warn!(%local, error = %e, "SMTP accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
                Some(done) = sessions.join_next(), if !sessions.is_empty() => log_panic(done),
            }
        }
        drop(listener);
        info!(%local, sessions = sessions.len(), "SMTP listener stopped; draining sessions");
        let drain = async {
            while let Some(done) = sessions.join_next().await {
                log_panic(done);
            }
        };
        if tokio::time::timeout(DRAIN_PERIOD, drain).await.is_err() {
            warn!(%local, sessions = sessions.len(), "cancelling SMTP sessions after the drain period");
            sessions.shutdown().await;
        }
        Ok(())
    }
}

/// How often a refusal of clients for want of room is logged at most (`also_refused`
/// counts those not logged since the last line).
const REFUSALS_LOGGED_EVERY: Duration = Duration::from_secs(10);

/// Turns a client away when the server, or its address, has no room: on the
/// STARTTLS port with a plain 421 (written without waiting; if the socket cannot
/// take it at once the client just sees the close), on the implicit-TLS port by
/// closing before the handshake, which would cost more than the refusal is worth.
fn refuse_busy(tcp: &TcpStream, mode: Mode, busy: limits::Busy) {
    static SERVER_FULL: Throttle = Throttle::new(REFUSALS_LOGGED_EVERY);
    static ADDRESS_FULL: Throttle = Throttle::new(REFUSALS_LOGGED_EVERY);
    let peer = tcp.peer_addr().ok();
    let reply = match busy {
        limits::Busy::Server => {
            if let Some(also_refused) = SERVER_FULL.occur() {
                warn!(
                    ?peer,
                    also_refused, "SMTP connection limit reached; refusing a client"
                );
            }
            Reply::new(421, (4, 3, 2), "Too many connections; try again later")
        }
        limits::Busy::Address => {
            if let Some(also_refused) = ADDRESS_FULL.occur() {
                info!(
                    ?peer,
                    also_refused, "SMTP client address over its connection limit"
                );
            }
            Reply::new(
                421,
                (4, 7, 0),
                "Too many connections from your address; try again later",
            )
        }
    };
    if let Mode::StartTls = mode {
        let _ = tcp.try_write(reply.to_string().as_bytes());
    }
}

fn log_panic(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        error!(error = %e, "SMTP session panicked");
    }
}
