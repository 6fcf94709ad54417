//! PGP/MIME (RFC 3156) `multipart/encrypted` messages.

use std::fmt::Write as _;

use super::{MemberKey, PgpError, Recipients, encrypt_to};

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
    pgp_mime_to(headers, inner_entity, &Recipients::parse(recipients)?)
}

/// [`pgp_mime`] to certificates parsed before.
pub fn pgp_mime_to(
    headers: &[(&str, &str)],
    inner_entity: &[u8],
    recipients: &Recipients,
) -> Result<Vec<u8>, PgpError> {
    let mut out = String::new();
    for (name, value) in headers {
        let name_ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        if !name_ok || value.contains(['\r', '\n']) {
            return Err(PgpError::InvalidHeader(format!("{name}: {value}")));
        }
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    let armored = encrypt_to(inner_entity, recipients)?;
    let boundary = boundary()?;
    // Room for the armor with CRLF line ends (64 characters a line) and the MIME frame.
    out.reserve(armored.len() + armored.len() / 32 + 1024);
    out.push_str(&format!(
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
    // The armor is ASCII: the lossy conversion never replaces anything.
    for line in String::from_utf8_lossy(&armored).lines() {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(&format!("\r\n--{boundary}--\r\n"));
    Ok(out.into_bytes())
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
