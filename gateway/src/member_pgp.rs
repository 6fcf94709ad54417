//! The member API's enrolment key check, done with the OpenPGP library.

use kvgate_certs::openpgp;
use kvgate_connectors::api::{CheckedKey, KeyCheck};

/// Accepts an OpenPGP public key with a usable encryption subkey.
pub struct OpenPgpKeyCheck;

impl KeyCheck for OpenPgpKeyCheck {
    fn check(&self, key: &[u8]) -> Result<CheckedKey, String> {
        openpgp::parse_public_key(key)
            .map(|k| CheckedKey {
                fingerprint: k.fingerprint,
                armored: k.armored,
            })
            .map_err(|e| e.to_string())
    }
}
