//! OpenPGP with sequoia: members' public keys, demo key generation, encryption
//! and PGP/MIME (RFC 3156), and decryption for the demo and tests.
//!
//! This crate selects no sequoia crypto backend; the binary does.

mod armor;
mod crc24;
mod decrypt;
mod encrypt;
mod error;
mod pgp_mime;
mod seipd;

use sequoia_openpgp::cert::prelude::*;
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::policy::StandardPolicy;
use sequoia_openpgp::serialize::SerializeInto;
use sequoia_openpgp::types::{Features, RevocationStatus};
use sequoia_openpgp::{Cert, Profile};
use zeroize::Zeroizing;

pub use decrypt::decrypt;
pub use encrypt::{Recipients, encrypt, encrypt_to};
pub use error::{PgpError, Source};
pub use pgp_mime::{Pieces, STORED_MAGIC, StoredMessage, StoredPgpMime, pgp_mime, pgp_mime_to};

/// A member's checked public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberKey {
    /// The certificate's fingerprint, uppercase hex.
    pub fingerprint: String,
    /// The public certificate, ASCII-armored, without any secret key material.
    pub armored: String,
}

/// Parses and checks a member's public key (armored or binary): it must be one
/// certificate, valid under the standard policy, alive, not revoked, with at
/// least one valid, alive, non-revoked transport-encryption key. Returns it
/// normalised and armored, with any secret key material stripped.
pub fn parse_public_key(bytes: &[u8]) -> Result<MemberKey, PgpError> {
    let cert = Cert::from_bytes(bytes).map_err(|e| PgpError::Parse(e.into()))?;
    let cert = cert.strip_secret_key_material();
    let fingerprint = cert.fingerprint().to_hex();
    let policy = StandardPolicy::new();
    let valid = encrypt::valid_now(&cert, &policy)?;
    valid.alive().map_err(|e| PgpError::NotAlive {
        fingerprint: fingerprint.clone(),
        source: e.into(),
    })?;
    if let RevocationStatus::Revoked(_) = valid.revocation_status() {
        return Err(PgpError::Revoked { fingerprint });
    }
    if encrypt::transport_keys(&valid).next().is_none() {
        return Err(PgpError::NoEncryptionKey { fingerprint });
    }
    let armored = cert
        .armored()
        .to_vec()
        .map_err(|e| PgpError::Serialize(e.into()))?;
    Ok(MemberKey {
        fingerprint,
        armored: String::from_utf8_lossy(&armored).into_owned(),
    })
}

/// Generates a demo member key: v4 (RFC 4880), Cv25519, advertising SEIPDv1
/// only (so GnuPG 2.2 can read what is encrypted to it), with a signing and a
/// transport+storage encryption subkey, valid for three years. Returns the
/// armored secret key and the public [`MemberKey`].
pub fn generate_member_key(user_id: &str) -> Result<(Zeroizing<String>, MemberKey), PgpError> {
    let generate = |e: sequoia_openpgp::anyhow::Error| PgpError::Generate(e.into());
    let (cert, _revocation) = CertBuilder::general_purpose(Some(user_id))
        .set_profile(Profile::RFC4880)
        .map_err(generate)?
        .set_cipher_suite(CipherSuite::Cv25519)
        .set_features(Features::empty().set_seipdv1())
        .map_err(generate)?
        .generate()
        .map_err(generate)?;
    let secret = Zeroizing::new(
        cert.as_tsk()
            .armored()
            .to_vec()
            .map_err(|e| PgpError::Serialize(e.into()))?,
    );
    let secret = Zeroizing::new(String::from_utf8_lossy(&secret).into_owned());
    let public = cert.strip_secret_key_material();
    let armored = public
        .armored()
        .to_vec()
        .map_err(|e| PgpError::Serialize(e.into()))?;
    Ok((
        secret,
        MemberKey {
            fingerprint: public.fingerprint().to_hex(),
            armored: String::from_utf8_lossy(&armored).into_owned(),
        },
    ))
}
