//! Settings of accepted TCP connections shared by the listeners.

use tokio::net::TcpStream;

/// Turns off Nagle's algorithm: a reply is small and the client waits for it, so it
/// must not wait for the acknowledgement of earlier data (up to 40 ms of delayed ACK).
/// A connection where that fails is served anyway.
pub(crate) fn no_delay(tcp: &TcpStream) {
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%error, "cannot turn off Nagle's algorithm");
    }
}
