//! What the member API asks of the OpenPGP library: the enrolment key check, and
//! stored letters read as the PGP/MIME messages members fetch.

use kvgate_certs::openpgp::{self, StoredMessage};
use kvgate_connectors::api::{CheckedKey, KeyCheck, LetterPieces, LetterReader};

/// Octets of OpenPGP message armored at a time when a letter is fetched (about 87 KiB
/// of armor).
const PIECE: usize = 64 * 1024;

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

/// Armors the OpenPGP part of a stored letter as it is sent ([`StoredMessage`]).
pub struct StoredPgpMimeReader;

impl LetterReader for StoredPgpMimeReader {
    fn read(&self, stored: Vec<u8>) -> Result<LetterPieces, String> {
        let message = StoredMessage::parse(stored).map_err(|e| e.to_string())?;
        Ok(LetterPieces {
            len: message.message_len() as u64,
            pieces: Box::new(message.pieces(PIECE)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_letter_stored_whole_is_served_as_it_is_and_a_damaged_one_is_refused() {
        let whole =
            b"Subject: [...]\r\nMIME-Version: 1.0\r\n\r\n-----BEGIN PGP MESSAGE-----".to_vec();
        let read = StoredPgpMimeReader.read(whole.clone()).unwrap();
        assert_eq!(read.len, whole.len() as u64);
        assert_eq!(read.pieces.collect::<Vec<_>>(), [whole]);
        let damaged = [openpgp::STORED_MAGIC, &[0, 0, 0, 9]].concat();
        let Err(refusal) = StoredPgpMimeReader.read(damaged) else {
            panic!("a damaged letter is read");
        };
        assert!(refusal.contains("damaged"), "{refusal}");
    }
}
