//! PGP/MIME (RFC 3156) `multipart/encrypted` messages, and the form kvgate stores
//! them in.
//!
//! A stored message keeps its OpenPGP part binary and is armored when it is read:
//! the armor's base64 would add a third to every letter written to disk. The stored
//! form is [`STORED_MAGIC`], the lengths of the MIME text before and after the
//! OpenPGP part (four octets each, big-endian), that text before, the binary OpenPGP
//! message, and the text after. Stored octets without the magic prefix are a whole
//! message (kvgate stored letters so until November 2026) and are read as they are.

use std::fmt::Write as _;

use super::armor::{Armor, armored_len};
use super::encrypt::encrypt_into;
use super::{MemberKey, PgpError, Recipients};

/// The first octets of a stored PGP/MIME message. A message itself starts with a
/// header name, never with a NUL.
pub const STORED_MAGIC: &[u8] = b"\0kvgate stored PGP/MIME 1\0";

/// A PGP/MIME message in the form kvgate stores it (see the module documentation).
#[derive(Debug, Clone)]
pub struct StoredPgpMime {
    stored: Vec<u8>,
    message_len: usize,
}

impl StoredPgpMime {
    /// The octets to store.
    pub fn as_stored(&self) -> &[u8] {
        &self.stored
    }

    /// The octets to store, taken.
    pub fn into_stored(self) -> Vec<u8> {
        self.stored
    }

    /// Octets of the RFC 3156 message it is read as ([`StoredMessage`]).
    pub fn message_len(&self) -> usize {
        self.message_len
    }
}

/// Stored octets read as their RFC 3156 message: the OpenPGP part of a
/// [`StoredPgpMime`] armored between its MIME text, octets stored as a whole message
/// as they are.
#[derive(Debug)]
pub struct StoredMessage {
    stored: Vec<u8>,
    /// For a [`StoredPgpMime`]: where its OpenPGP message starts and ends.
    binary: Option<(usize, usize)>,
    message_len: usize,
}

impl StoredMessage {
    /// Reads the layout of `stored`; an error if it has the magic prefix but lengths
    /// that do not fit it.
    pub fn parse(stored: Vec<u8>) -> Result<Self, PgpError> {
        let Some(rest) = stored.strip_prefix(STORED_MAGIC) else {
            return Ok(StoredMessage {
                message_len: stored.len(),
                stored,
                binary: None,
            });
        };
        let damaged = || PgpError::DamagedStored {
            octets: stored.len(),
        };
        let (lengths, rest) = rest.split_first_chunk::<8>().ok_or_else(damaged)?;
        let [a, b, c, d, e, f, g, h] = *lengths;
        let before = u32::from_be_bytes([a, b, c, d]) as usize;
        let after = u32::from_be_bytes([e, f, g, h]) as usize;
        let binary_len = rest
            .len()
            .checked_sub(before)
            .and_then(|left| left.checked_sub(after))
            .ok_or_else(damaged)?;
        let start = STORED_MAGIC.len() + 8 + before;
        Ok(StoredMessage {
            binary: Some((start, start + binary_len)),
            message_len: before + armored_len(binary_len) + after,
            stored,
        })
    }

    /// Octets of the message.
    pub fn message_len(&self) -> usize {
        self.message_len
    }

    /// The message in pieces, each with at most `piece` octets of the OpenPGP message
    /// (armored as they are taken), so that no more than one armored piece is held
    /// beside the stored octets. A message stored whole is one piece.
    pub fn pieces(self, piece: usize) -> Pieces {
        Pieces {
            next: self.binary.map_or(0, |(start, _)| start),
            message: self,
            piece: piece.max(1),
            armor: None,
            done: false,
        }
    }

    /// The whole message (one piece of it all).
    pub fn into_message(self) -> Vec<u8> {
        self.pieces(usize::MAX).next().unwrap_or_default()
    }
}

/// The pieces of a [`StoredMessage`], in order.
#[derive(Debug)]
pub struct Pieces {
    message: StoredMessage,
    piece: usize,
    /// Where the next octets of the OpenPGP message are.
    next: usize,
    armor: Option<Armor>,
    done: bool,
}

impl Iterator for Pieces {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        let stored = &self.message.stored;
        let Some((start, end)) = self.message.binary else {
            self.done = true;
            return Some(std::mem::take(&mut self.message.stored));
        };
        let take = self.piece.min(end - self.next);
        let text = start - STORED_MAGIC.len() - 8 + stored.len() - end;
        let mut out = Vec::with_capacity(armored_len(take) + text);
        let armor = match self.armor.as_mut() {
            Some(armor) => armor,
            None => {
                out.extend_from_slice(&stored[STORED_MAGIC.len() + 8..start]);
                self.armor.insert(Armor::start(&mut out))
            }
        };
        armor.push(&mut out, &stored[self.next..self.next + take]);
        self.next += take;
        if self.next == end {
            if let Some(armor) = self.armor.take() {
                armor.finish(&mut out);
            }
            out.extend_from_slice(&stored[end..]);
            self.done = true;
        }
        Some(out)
    }
}

/// Builds an RFC 3156 PGP/MIME message with CRLF line ends: `headers` first
/// ("Name: value" pairs, in order), then `MIME-Version` and a
/// `multipart/encrypted` content type with a random boundary; part 1 is the
/// `application/pgp-encrypted` version part, part 2 (`encrypted.asc`) holds
/// [`encrypt`](super::encrypt)`(inner_entity, recipients)`.
pub fn pgp_mime(
    headers: &[(&str, &str)],
    inner_entity: &[u8],
    recipients: &[MemberKey],
) -> Result<Vec<u8>, PgpError> {
    let stored = pgp_mime_to(headers, &[inner_entity], &Recipients::parse(recipients)?)?;
    Ok(StoredMessage::parse(stored.into_stored())?.into_message())
}

/// [`pgp_mime`] to certificates parsed before, of an inner entity given as
/// consecutive parts (say, trace headers, then the message they precede), in the
/// form kvgate stores it. The OpenPGP message is written into it as it is made, so
/// it is the only large buffer besides the plaintext.
pub fn pgp_mime_to(
    headers: &[(&str, &str)],
    inner_entity: &[&[u8]],
    recipients: &Recipients,
) -> Result<StoredPgpMime, PgpError> {
    let mut frame = String::new();
    for (name, value) in headers {
        let name_ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        if !name_ok || value.contains(['\r', '\n']) {
            return Err(PgpError::InvalidHeader(format!("{name}: {value}")));
        }
        frame.push_str(&format!("{name}: {value}\r\n"));
    }
    let boundary = boundary()?;
    frame.push_str(&format!(
        "MIME-Version: 1.0\r\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n \
         boundary=\"{boundary}\"\r\n\
         \r\n\
         This is an OpenPGP/MIME encrypted message (RFC 3156).\r\n\
         --{boundary}\r\n\
         Content-Type: application/pgp-encrypted\r\n\
         Content-Description: PGP/MIME version identification\r\n\
         \r\n\
         Version: 1\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\
         Content-Description: OpenPGP encrypted message\r\n\
         Content-Disposition: inline; filename=\"encrypted.asc\"\r\n\
         \r\n"
    ));
    let end = format!("\r\n--{boundary}--\r\n");
    let plaintext: usize = inner_entity.iter().map(|part| part.len()).sum();
    // The session keys and packet framing fit in the last term.
    let capacity = STORED_MAGIC.len() + 8 + frame.len() + plaintext + end.len() + 2048;
    let mut stored = Vec::with_capacity(capacity);
    stored.extend_from_slice(STORED_MAGIC);
    for text in [frame.as_str(), end.as_str()] {
        let len = u32::try_from(text.len())
            .map_err(|_| PgpError::InvalidHeader("more than 4 GiB of headers".to_owned()))?;
        stored.extend_from_slice(&len.to_be_bytes());
    }
    stored.extend_from_slice(frame.as_bytes());
    let start = stored.len();
    encrypt_into(inner_entity, recipients, &mut stored)?;
    let binary_len = stored.len() - start;
    stored.extend_from_slice(end.as_bytes());
    Ok(StoredPgpMime {
        stored,
        message_len: frame.len() + armored_len(binary_len) + end.len(),
    })
}

/// A random boundary that cannot occur in base64 armor (it contains `=_`).
fn boundary() -> Result<String, PgpError> {
    let mut random = [0u8; 16];
    openssl::rand::rand_bytes(&mut random).map_err(PgpError::Random)?;
    let mut boundary = String::from("=_kvgate_");
    for byte in random {
        // Writing to a String cannot fail.
        let _ = write!(boundary, "{byte:02x}");
    }
    Ok(boundary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openpgp::generate_member_key;

    fn read(stored: &[u8]) -> Result<Vec<u8>, PgpError> {
        StoredMessage::parse(stored.to_vec()).map(StoredMessage::into_message)
    }

    #[test]
    fn a_whole_message_is_read_as_it_is_in_one_piece() {
        let message = b"From: <a@example.test>\r\n\r\nbody".to_vec();
        let stored = StoredMessage::parse(message.clone()).unwrap();
        assert_eq!(stored.message_len(), message.len());
        assert_eq!(stored.pieces(4).collect::<Vec<_>>(), [message]);
    }

    #[test]
    fn stored_lengths_that_do_not_fit_are_refused() {
        let mut stored = STORED_MAGIC.to_vec();
        stored.extend_from_slice(&[0, 0, 0, 5, 0, 0]);
        let damaged = |stored: &[u8]| matches!(read(stored), Err(PgpError::DamagedStored { octets }) if octets == stored.len());
        assert!(damaged(&stored));
        stored.extend_from_slice(&[0, 5]);
        stored.extend_from_slice(b"beforafte");
        assert!(damaged(&stored));
        stored.push(b'r');
        let read = read(&stored).unwrap();
        assert!(read.starts_with(b"befor-----BEGIN PGP MESSAGE-----\r\n"));
        assert!(read.ends_with(b"-----END PGP MESSAGE-----\r\nafter"));
        assert_eq!(read.len(), 10 + armored_len(0));
    }

    #[test]
    fn the_message_read_is_the_mime_text_around_the_armored_part() {
        let (_, public) = generate_member_key("A <a@example.test>").unwrap();
        let recipients = Recipients::parse(&[public]).unwrap();
        let inner = vec![b'x'; 10_000];
        let sealed = pgp_mime_to(&[("Subject", "[...]")], &[&inner], &recipients).unwrap();
        let message = read(sealed.as_stored()).unwrap();
        assert_eq!(sealed.message_len(), message.len());
        let text = std::str::from_utf8(&message).unwrap();
        assert!(text.starts_with("Subject: [...]\r\nMIME-Version: 1.0\r\n"));
        let (_, armored) = text
            .split_once("filename=\"encrypted.asc\"\r\n\r\n")
            .unwrap();
        let boundary = text
            .split_once("boundary=\"")
            .unwrap()
            .1
            .split_once('"')
            .unwrap()
            .0;
        assert!(armored.starts_with("-----BEGIN PGP MESSAGE-----\r\n\r\n"));
        let end = format!("-----END PGP MESSAGE-----\r\n\r\n--{boundary}--\r\n");
        assert!(armored.ends_with(&end), "{armored}");

        // In pieces of any size, the same message.
        for piece in [1, 47, 48, 1000, 1 << 20] {
            let stored = StoredMessage::parse(sealed.as_stored().to_vec()).unwrap();
            let (start, end) = stored.binary.unwrap();
            let pieces: Vec<Vec<u8>> = stored.pieces(piece).collect();
            assert_eq!(pieces.len(), (end - start).div_ceil(piece));
            assert_eq!(pieces.concat(), message, "pieces of {piece}");
        }
    }
}
