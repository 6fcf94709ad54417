//! PKI and crypto of kvgate.
//!
//! - [`devpki`]: a development PKI (CA, gateway, practice) made with OpenSSL.
//! - [`x509`]: small certificate helpers (PEM chains, fingerprints, subjects).
//! - [`smime`]: unwrapping what a practice sends (CMS decrypt and verify).
//! - [`revocation`]: CRL and OCSP checking of validated chains.
//! - [`compose`]: composing S/MIME letters as a practice system does.
//! - [`sha1_signed`]: a SHA-1 signed letter, for checking that it is refused.
//! - [`openpgp`]: member keys, encryption and PGP/MIME with sequoia.
//!
//! OpenSSL (the `openssl` crate, vendored) does everything X.509 and CMS;
//! sequoia-openpgp does everything OpenPGP. This crate selects no sequoia crypto
//! backend: the binary that links it does.

#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod compose;
pub mod devpki;
mod error;
pub mod openpgp;
pub mod revocation;
mod secret;
pub mod sha1_signed;
pub mod smime;
pub mod x509;

pub use secret::SecretBytes;

pub use error::CertError;
