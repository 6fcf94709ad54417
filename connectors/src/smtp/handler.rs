//! The policy interface: what the server asks of its user.

use std::net::SocketAddr;

use rustls_pki_types::CertificateDer;

use super::params::{MailParams, RcptParams};
use super::reply::Reply;

/// A connected client after the TLS handshake.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's socket address.
    pub addr: SocketAddr,
    /// The client's certificate chain, end-entity first, already verified by
    /// rustls against the listener's client roots.
    pub client_certs: Vec<CertificateDer<'static>>,
    /// Whether the client came in on the implicit-TLS port (else STARTTLS).
    pub implicit_tls: bool,
}

/// Decides what the SMTP server accepts and where messages go. The server
/// handles the protocol; every policy decision is the handler's. Replies a
/// handler returns are sent as they are.
pub trait Handler: Send + Sync + 'static {
    /// Per-connection state of the handler (e.g. the authenticated sender and
    /// the envelope so far).
    type Session: Send;
    /// Where the message text (DATA or BDAT chunks) is streamed, with CRLF
    /// line endings. If a session task is cancelled (e.g. at the end of the
    /// shutdown grace period) the sink is dropped without
    /// [`Handler::data_abort`], so dropping a sink must discard it.
    type Sink: tokio::io::AsyncWrite + Send + Unpin;

    /// After the TLS handshake (the client chain already verified by rustls
    /// against the roots): maps the peer to a session, or refuses it (the
    /// server then sends the refusal and closes).
    fn connect(&self, peer: &Peer) -> Result<Self::Session, Reply>;

    /// `MAIL FROM`: checks the reverse path (empty for the null sender `<>`)
    /// and parameters. The server has already called [`Handler::reset`].
    fn mail_from(
        &self,
        session: &mut Self::Session,
        reverse_path: &str,
        params: &MailParams,
    ) -> Result<(), Reply>;

    /// `RCPT TO`: checks one recipient (the mailbox without angle brackets).
    fn rcpt_to(
        &self,
        session: &mut Self::Session,
        forward_path: &str,
        params: &RcptParams,
    ) -> Result<(), Reply>;

    /// Called at DATA (before the 354 go-ahead is sent) or at the first BDAT
    /// chunk to open the sink; `Err` is sent instead of 354 (DATA) or as the
    /// answer to the chunk, which is then read and dropped (BDAT).
    fn data_start(
        &self,
        session: &mut Self::Session,
    ) -> impl Future<Output = Result<Self::Sink, Reply>> + Send;

    /// All data was received and written to the sink (and the sink flushed):
    /// after the final dot of DATA or the `BDAT … LAST` chunk. The handler
    /// makes it durable and answers (e.g. `250 2.0.0 <id> queued`).
    fn data_end(
        &self,
        session: &mut Self::Session,
        sink: Self::Sink,
    ) -> impl Future<Output = Reply> + Send;

    /// The server refused the message after [`Handler::data_start`] (too big,
    /// line too long, I/O error, timeout, connection lost), or a BDAT message
    /// was left unfinished (RSET, EHLO, QUIT, end of session): discard the sink.
    fn data_abort(
        &self,
        session: &mut Self::Session,
        sink: Self::Sink,
    ) -> impl Future<Output = ()> + Send;

    /// RSET, EHLO/HELO, a new MAIL transaction, the end of a message (DATA or
    /// BDAT) or of the session: forget the envelope.
    fn reset(&self, session: &mut Self::Session);
}
