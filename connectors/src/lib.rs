//! The protocol edges of kvgate: SMTP ingress and the member HTTPS API.
//!
//! Connectors speak protocols and know no policy: the SMTP server asks a
//! [`smtp::Handler`] what to accept, and the API works on the store through the
//! member's own device credentials.

pub mod api;
pub mod smtp;
mod tcp;
mod throttle;
pub mod tls;
