//! PGP/MIME (RFC 3156) `multipart/encrypted` messages.

use std::fmt::Write as _;

use super::encrypt::encrypt_into;
use super::{MemberKey, PgpError, Recipients};

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
    pgp_mime_to(headers, &[inner_entity], &Recipients::parse(recipients)?)
}

/// [`pgp_mime`] to certificates parsed before, of an inner entity given as
/// consecutive parts (say, trace headers, then the message they precede). The armor
/// is written into the message as it is made, so the message is the only large
/// buffer besides the plaintext.
pub fn pgp_mime_to(
    headers: &[(&str, &str)],
    inner_entity: &[&[u8]],
    recipients: &Recipients,
) -> Result<Vec<u8>, PgpError> {
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
    let plaintext: usize = inner_entity.iter().map(|part| part.len()).sum();
    // Base64 grows by 4/3, and each 64-character armor line by its CRLF; the packet
    // framing and armor header and checksum fit in the last term.
    let armor = plaintext / 3 * 4 / 64 * 66 + 2048;
    let mut out = Vec::with_capacity(frame.len() + armor + boundary.len() + 8);
    out.extend_from_slice(frame.as_bytes());
    encrypt_into(inner_entity, recipients, &mut out)?;
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Ok(out)
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
