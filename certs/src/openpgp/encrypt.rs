//! Encrypting to members' certificates as an ASCII-armored OpenPGP message.

use std::io::Write;

use sequoia_openpgp::Cert;
use sequoia_openpgp::cert::prelude::*;
use sequoia_openpgp::packet::key::{PublicParts, UnspecifiedRole};
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::policy::StandardPolicy;
use sequoia_openpgp::serialize::stream::{Encryptor, LiteralWriter, Message, Recipient};

use super::armor::{Armor, armored_len};
use super::seipd;
use super::{MemberKey, PgpError};

/// The keys of `valid` usable for transport encryption now.
pub(super) fn transport_keys<'a>(
    valid: &ValidCert<'a>,
) -> ValidKeyAmalgamationIter<'a, PublicParts, UnspecifiedRole> {
    valid
        .keys()
        .supported()
        .alive()
        .revoked(false)
        .for_transport_encryption()
}

/// `cert` under `policy` now, or why it is not valid.
pub(super) fn valid_now<'a>(
    cert: &'a Cert,
    policy: &'a StandardPolicy<'a>,
) -> Result<ValidCert<'a>, PgpError> {
    cert.with_policy(policy, None)
        .map_err(|e| PgpError::Invalid {
            fingerprint: cert.fingerprint().to_hex(),
            source: e.into(),
        })
}

/// Members' certificates parsed once, for encrypting many letters to them.
#[derive(Debug, Clone)]
pub struct Recipients {
    certs: Vec<Cert>,
}

impl Recipients {
    /// Parses the armored certificates of `keys`.
    pub fn parse(keys: &[MemberKey]) -> Result<Self, PgpError> {
        let certs = keys
            .iter()
            .map(|r| Cert::from_bytes(r.armored.as_bytes()).map_err(|e| PgpError::Parse(e.into())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Recipients { certs })
    }
}

/// Encrypts `plaintext` to every valid transport-encryption key of every
/// recipient, as an ASCII-armored OpenPGP message (CRLF line ends). Sequoia picks
/// SEIPDv1 or v2 from what all recipients advertise.
pub fn encrypt(plaintext: &[u8], recipients: &[MemberKey]) -> Result<Vec<u8>, PgpError> {
    encrypt_to(plaintext, &Recipients::parse(recipients)?)
}

/// [`encrypt`] to certificates parsed before.
pub fn encrypt_to(plaintext: &[u8], recipients: &Recipients) -> Result<Vec<u8>, PgpError> {
    let mut binary = Vec::with_capacity(plaintext.len() + 1024);
    encrypt_into(&[plaintext], recipients, &mut binary)?;
    let mut out = Vec::with_capacity(armored_len(binary.len()));
    let mut armor = Armor::start(&mut out);
    armor.push(&mut out, &binary);
    armor.finish(&mut out);
    Ok(out)
}

/// Encrypts the concatenation of `parts` like [`encrypt_to`], appending the binary
/// message to `out` as it goes: the plaintext is never copied into one buffer.
///
/// Where every recipient advertises SEIPDv2 (RFC 9580 AEAD), sequoia's encryptor
/// writes it; otherwise the message is SEIPDv1, written by [`seipd`].
pub(super) fn encrypt_into(
    parts: &[&[u8]],
    recipients: &Recipients,
    out: &mut Vec<u8>,
) -> Result<(), PgpError> {
    if recipients.certs.is_empty() {
        return Err(PgpError::NoRecipients);
    }
    let policy = StandardPolicy::new();
    let mut keys = Vec::new();
    let mut seipdv2 = true;
    for cert in &recipients.certs {
        let fingerprint = cert.fingerprint().to_hex();
        let valid = valid_now(cert, &policy)?;
        seipdv2 &= valid.features().is_some_and(|f| f.supports_seipdv2());
        let before = keys.len();
        keys.extend(transport_keys(&valid));
        if keys.len() == before {
            return Err(PgpError::NoEncryptionKey { fingerprint });
        }
    }

    if seipdv2 {
        let failed = |e: sequoia_openpgp::anyhow::Error| PgpError::Encrypt(e.into());
        let message = Message::new(out);
        let message = Encryptor::for_recipients(message, keys.into_iter().map(Recipient::from))
            .build()
            .map_err(failed)?;
        let mut message = LiteralWriter::new(message).build().map_err(failed)?;
        for part in parts {
            message
                .write_all(part)
                .map_err(|e| PgpError::Encrypt(e.into()))?;
        }
        message.finalize().map_err(failed)?;
    } else {
        seipd::write(out, keys.iter().map(|key| key.key()), parts)?;
    }
    Ok(())
}
