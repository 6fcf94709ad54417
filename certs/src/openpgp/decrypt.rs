//! Decrypting an OpenPGP message with a secret key (for the demo and tests; the
//! gateway itself never holds members' secret keys).

use std::io::Read;

use sequoia_openpgp::crypto::{KeyPair, SessionKey};
use sequoia_openpgp::packet::{PKESK, SKESK};
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageStructure, VerificationHelper,
};
use sequoia_openpgp::policy::StandardPolicy;
use sequoia_openpgp::types::SymmetricAlgorithm;
use sequoia_openpgp::{Cert, KeyHandle};

use super::PgpError;
use crate::SecretBytes;

const BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----";
const END: &[u8] = b"-----END PGP MESSAGE-----";

/// Decrypts `message` (an armored or binary OpenPGP message, or a whole
/// PGP/MIME message whose armored block is used) with the armored secret key
/// `secret_key`. Signatures inside are not checked.
pub fn decrypt(message: &[u8], secret_key: &str) -> Result<SecretBytes, PgpError> {
    let cert = Cert::from_bytes(secret_key.as_bytes()).map_err(|e| PgpError::Parse(e.into()))?;
    let fingerprint = cert.fingerprint().to_hex();
    let policy = StandardPolicy::new();
    let mut keys = Vec::new();
    for key in cert
        .keys()
        .with_policy(&policy, None)
        .supported()
        .secret()
        .for_transport_encryption()
        .chain(
            cert.keys()
                .with_policy(&policy, None)
                .supported()
                .secret()
                .for_storage_encryption(),
        )
    {
        // Keys whose secret is encrypted with a password are skipped.
        if let Ok(pair) = key.key().clone().into_keypair() {
            keys.push(pair);
        }
    }
    if keys.is_empty() {
        return Err(PgpError::NoSecretKey { fingerprint });
    }
    let failed = |e: sequoia_openpgp::anyhow::Error| PgpError::Decrypt(e.into());
    let mut decryptor = DecryptorBuilder::from_bytes(armored_block(message))
        .map_err(failed)?
        .with_policy(&policy, None, Helper { keys })
        .map_err(failed)?;
    let mut plaintext = SecretBytes::default();
    decryptor
        .read_to_end(&mut plaintext)
        .map_err(|e| PgpError::Decrypt(e.into()))?;
    Ok(plaintext)
}

/// The armored block inside `message`, or `message` itself if there is none.
fn armored_block(message: &[u8]) -> &[u8] {
    let Some(start) = find(message, BEGIN) else {
        return message;
    };
    match find(&message[start..], END) {
        Some(end) => &message[start..start + end + END.len()],
        None => &message[start..],
    }
}

/// Position of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Supplies the secret keys to sequoia's decryptor.
struct Helper {
    keys: Vec<KeyPair>,
}

impl VerificationHelper for Helper {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> sequoia_openpgp::Result<Vec<Cert>> {
        Ok(Vec::new())
    }

    fn check(&mut self, _structure: MessageStructure) -> sequoia_openpgp::Result<()> {
        Ok(())
    }
}

impl DecryptionHelper for Helper {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> sequoia_openpgp::Result<Option<Cert>> {
        for pkesk in pkesks {
            for pair in &mut self.keys {
                if let Some((algo, session_key)) = pkesk.decrypt(pair, sym_algo)
                    && decrypt(algo, &session_key)
                {
                    return Ok(None);
                }
            }
        }
        Err(sequoia_openpgp::Error::MissingSessionKey(
            "the message is not encrypted to this key".to_owned(),
        )
        .into())
    }
}
