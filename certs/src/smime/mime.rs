//! Just enough MIME to tell what an entity is: its header block, its content
//! type with parameters, and the body of an `application/pkcs7-mime` entity.

use std::borrow::Cow;

use super::UnwrapError;
use crate::SecretBytes;

/// What kind of entity a message is, as far as S/MIME is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    /// `application/pkcs7-mime` or `application/x-pkcs7-mime`: CMS in the body.
    Pkcs7Mime,
    /// `multipart/signed` with a PKCS#7 signature protocol.
    MultipartSigned,
    /// `message/rfc822`: a whole message wrapped before signing (RFC 8551 3.1, KIM).
    Rfc822,
    /// Anything else, with its media type.
    Other(String),
}

/// Classifies `entity` by its `Content-Type` (missing means `text/plain`).
pub(super) fn classify(entity: &[u8]) -> Kind {
    let (headers, _) = split(entity);
    let Some(value) = header(&headers, "content-type") else {
        return Kind::Other("text/plain".to_owned());
    };
    let (media_type, params) = parse_content_type(value);
    match media_type.as_str() {
        "application/pkcs7-mime" | "application/x-pkcs7-mime" => Kind::Pkcs7Mime,
        "message/rfc822" => Kind::Rfc822,
        "multipart/signed" => {
            let protocol = params
                .iter()
                .find(|(name, _)| name == "protocol")
                .map(|(_, v)| v.to_ascii_lowercase());
            match protocol.as_deref() {
                Some("application/pkcs7-signature" | "application/x-pkcs7-signature") => {
                    Kind::MultipartSigned
                }
                _ => Kind::Other(value.trim().to_owned()),
            }
        }
        _ => Kind::Other(media_type),
    }
}

/// The DER inside an `application/pkcs7-mime` entity: base64-decoded unless the
/// transfer encoding is `binary`.
pub(super) fn pkcs7_body(entity: &[u8]) -> Result<SecretBytes, UnwrapError> {
    let (headers, body) = split(entity);
    let encoding = header(&headers, "content-transfer-encoding")
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let der = if encoding == "binary" {
        SecretBytes::from(body.to_vec())
    } else {
        decode_base64(body)?
    };
    if der.is_empty() {
        return Err(UnwrapError::Malformed(
            "the pkcs7-mime body is empty".to_owned(),
        ));
    }
    Ok(der)
}

/// Base64 characters decoded at a time (a multiple of 4). A chunk is never made larger
/// than its body: a 64 KiB buffer freed for every small letter made glibc's `free`
/// consolidate its fast bins each time.
const BASE64_CHUNK: usize = 64 * 1024;

/// Decodes a base64 body, skipping whitespace. Padding must be canonical and may only
/// end the body; like OpenSSL's decoder, unused bits of the last character need not
/// be zero. Bodies of the shape MIME writers produce take [`decode_regular`]; any
/// other, [`decode_lines`].
fn decode_base64(body: &[u8]) -> Result<SecretBytes, UnwrapError> {
    match decode_regular(body) {
        Some(der) => Ok(der),
        None => decode_lines(body),
    }
}

/// Decodes a body of lines of one width (a multiple of 4) each ended by the same
/// break (CRLF or LF), the last line possibly shorter, or returns `None` for anything
/// else. Each line's break is checked where the width puts it rather than searched
/// for, and whitespace is not scanned for: the chunks are decoded strictly, which
/// refuses whitespace, padding before the end and unused bits that are not zero, so
/// whatever this accepts, [`decode_lines`] decodes to the same octets. At 2 MiB the
/// searches took more time than the decoding.
fn decode_regular(body: &[u8]) -> Option<SecretBytes> {
    let width = memchr::memchr2(b'\r', b'\n', body)?;
    if width == 0 || !width.is_multiple_of(4) || width > BASE64_CHUNK {
        return None;
    }
    let crlf = body[width..].starts_with(b"\r\n");
    if !crlf && !body[width..].starts_with(b"\n") {
        return None;
    }
    let line = width + 1 + usize::from(crlf);
    // Whether `text` starts with a line of `width` and its break (compared octet by
    // octet: a slice comparison calls memcmp for every line).
    let line_at = |text: &[u8]| match text.get(width..line) {
        Some([b'\r', b'\n']) => crlf,
        Some([b'\n']) => !crlf,
        _ => false,
    };
    let mut der = SecretBytes::with_capacity(body.len().div_ceil(4) * 3);
    let mut chunk = SecretBytes::with_capacity(BASE64_CHUNK.min(body.len()));
    let mut rest = body;
    loop {
        while chunk.len() + width <= BASE64_CHUNK && line_at(rest) {
            chunk.extend_from_slice(&rest[..width]);
            rest = &rest[line..];
        }
        if !line_at(rest) {
            // The last line, if any, and nothing after it but line breaks.
            let end = rest.len()
                - rest
                    .iter()
                    .rev()
                    .take_while(|&&b| b == b'\r' || b == b'\n')
                    .count();
            let last = &rest[..end];
            if last.len() > width || memchr::memchr2(b'\r', b'\n', last).is_some() {
                return None;
            }
            if chunk.len() + last.len() <= BASE64_CHUNK {
                chunk.extend_from_slice(last);
                decode_strictly(&mut chunk, &mut der)?;
                return Some(der);
            }
        }
        decode_strictly(&mut chunk, &mut der)?;
    }
}

/// Decodes `chunk` (strict base64: no whitespace, padding only at its end, unused
/// bits zero) onto the end of `der`, straight into its spare room (decoding in place
/// and appending copied every letter once more), and empties `chunk`. `der` must have
/// the room: were it to grow, the old allocation would be left unwiped.
fn decode_strictly(chunk: &mut SecretBytes, der: &mut SecretBytes) -> Option<()> {
    debug_assert!(der.capacity() - der.len() >= chunk.len() / 4 * 3);
    base64_simd::STANDARD
        .decode_append(&chunk[..], &mut **der)
        .ok()?;
    chunk.clear();
    Some(())
}

/// Decodes a base64 body of any line shape a chunk at a time: MIME's lines are found
/// with memchr and copied whole into the chunk, so no whitespace-free copy of a large
/// body is made, and each chunk is decoded in place with SIMD.
fn decode_lines(body: &[u8]) -> Result<SecretBytes, UnwrapError> {
    let invalid = || UnwrapError::Malformed("the pkcs7-mime body is not valid base64".to_owned());
    // Room for everything, so that decoding never moves (and leaves behind) plaintext.
    let mut der = SecretBytes::with_capacity(body.len().div_ceil(4) * 3);
    // Opaque signed data carries the letter itself: wipe the chunks too.
    let mut chunk = SecretBytes::with_capacity(BASE64_CHUNK.min(body.len()));
    // MIME's base64 lines hold no whitespace but their breaks; should a body hold
    // some, it is dropped as the lines are gathered.
    let spaced = memchr::memchr3(b' ', b'\t', 0x0c, body).is_some();
    let mut padded = false;
    let mut rest = body;
    loop {
        while chunk.len() < BASE64_CHUNK && !rest.is_empty() {
            // A line, up to its CR or LF, as much of it as the chunk takes.
            let end = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
            let line = &rest[..end.min(BASE64_CHUNK - chunk.len())];
            if spaced {
                chunk.extend(line.iter().filter(|b| !b.is_ascii_whitespace()));
            } else {
                chunk.extend_from_slice(line);
            }
            rest = &rest[line.len()..];
            let breaks = rest
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            rest = &rest[breaks..];
        }
        if chunk.is_empty() {
            return Ok(der);
        }
        // Only the last chunk can be short: its padding must be there; a chunk ending
        // in padding must be the last.
        if padded || !chunk.len().is_multiple_of(4) {
            return Err(invalid());
        }
        padded = chunk.last() == Some(&b'=');
        // Of whole quartets, forgiving decoding takes exactly canonical padding, at the
        // end only, and ignores the unused bits.
        let decoded =
            base64_simd::forgiving_decode_inplace(&mut chunk[..]).map_err(|_| invalid())?;
        der.extend_from_slice(decoded);
        chunk.clear();
    }
}

/// Whether `entity` declares a `binary` transfer encoding and its body holds a
/// CRLF: a sign that line endings were converted, which breaks binary DER.
pub(super) fn binary_with_crlf(entity: &[u8]) -> bool {
    let (headers, body) = split(entity);
    header(&headers, "content-transfer-encoding")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("binary"))
        && body.windows(2).any(|w| w == b"\r\n")
}

/// Whether `entity` holds the end of its header block (an empty line, or a line that
/// is neither a field nor a continuation), as [`split`] finds it.
pub(super) fn header_block_ends(entity: &[u8]) -> bool {
    let mut rest = entity;
    while let Some(at) = memchr::memchr(b'\n', rest) {
        let line = &rest[..at];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let continues = matches!(line.first(), Some(b' ' | b'\t'));
        if line.is_empty() || !(continues || memchr::memchr(b':', line).is_some()) {
            return true;
        }
        rest = &rest[at + 1..];
    }
    false
}

/// The first part of a `multipart/signed` entity and whatever follows it, or `None`
/// if its boundary is not declared or does not occur.
pub(super) fn first_part(entity: &[u8]) -> Option<&[u8]> {
    let (headers, body) = split(entity);
    let (_, params) = parse_content_type(header(&headers, "content-type")?);
    let (_, boundary) = params.iter().find(|(name, _)| name == "boundary")?;
    let delimiter = format!("--{boundary}");
    let mut rest = body;
    loop {
        if let Some(after) = rest.strip_prefix(delimiter.as_bytes()) {
            let end = memchr::memchr(b'\n', after)?;
            return Some(&after[end + 1..]);
        }
        let at = memchr::memchr(b'\n', rest)?;
        rest = &rest[at + 1..];
    }
}

/// The start of the DER inside an `application/pkcs7-mime` entity: at most `peek`
/// characters of a base64 body decoded (whole quartets; whitespace skipped; up to the
/// first character that is neither), or as many octets of a binary one. `None` if the
/// base64 is not valid.
pub(super) fn pkcs7_body_start(entity: &[u8], peek: usize) -> Option<SecretBytes> {
    let (headers, body) = split(entity);
    let binary = header(&headers, "content-transfer-encoding")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("binary"));
    if binary {
        return Some(SecretBytes::from(body[..body.len().min(peek)].to_vec()));
    }
    // The body ends where base64 does (a part's body, at its next boundary).
    let base64 = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
    let mut chars = SecretBytes::with_capacity(peek.min(body.len()));
    chars.extend(
        body.iter()
            .copied()
            .take_while(|b| base64(b) || b.is_ascii_whitespace())
            .filter(|b| !b.is_ascii_whitespace())
            .take(peek),
    );
    let whole = chars.len() - chars.len() % 4;
    let decoded = base64_simd::forgiving_decode_inplace(&mut chars[..whole]).ok()?;
    Some(SecretBytes::from(decoded.to_vec()))
}

/// The body of `entity`, after its header block.
pub(super) fn body(entity: &[u8]) -> &[u8] {
    split(entity).1
}

/// One header field: its name as written, and its unfolded value (borrowed unless it
/// was folded or is not UTF-8).
type Field<'a> = (&'a str, Cow<'a, str>);

/// Splits an entity into its unfolded header fields and its body. The header block
/// ends at the first empty line; a line that is neither a field nor a continuation
/// also ends it (and starts the body).
fn split(entity: &[u8]) -> (Vec<Field<'_>>, &[u8]) {
    let mut fields: Vec<Field<'_>> = Vec::new();
    let mut rest = entity;
    loop {
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return (fields, next);
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some((_, value)) = fields.last_mut() {
                let value = value.to_mut();
                value.push(' ');
                value.push_str(trimmed(line).as_ref());
            }
        } else if let Some(colon) = memchr::memchr(b':', line) {
            // A name that is not UTF-8 matches no name looked for.
            let name = std::str::from_utf8(&line[..colon]).map_or("", str::trim);
            fields.push((name, trimmed(&line[colon + 1..])));
        } else {
            return (fields, rest);
        }
        if next.is_empty() {
            return (fields, next);
        }
        rest = next;
    }
}

/// `bytes` as text (invalid UTF-8 replaced), trimmed.
fn trimmed(bytes: &[u8]) -> Cow<'_, str> {
    match String::from_utf8_lossy(bytes) {
        Cow::Borrowed(text) => Cow::Borrowed(text.trim()),
        Cow::Owned(text) => Cow::Owned(text.trim().to_owned()),
    }
}

/// The value of the first field called `name` (any case).
fn header<'a>(fields: &'a [Field<'_>], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_ref())
}

/// Splits a `Content-Type` value into the lowercase media type and its
/// parameters (lowercase names; quoted values unquoted).
fn parse_content_type(value: &str) -> (String, Vec<(String, String)>) {
    let (media_type, mut rest) = value.split_once(';').unwrap_or((value, ""));
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches(|c: char| c == ';' || c.is_whitespace());
        let Some((name, after)) = rest.split_once('=') else {
            break;
        };
        let name = name.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (param_value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
            let mut unquoted = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            unquoted.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => unquoted.push(c),
                }
            }
            (unquoted, &quoted[end..])
        } else {
            let end = after.find([';', ' ', '\t']).unwrap_or(after.len());
            (after[..end].to_owned(), &after[end..])
        };
        params.push((name, param_value));
        rest = remainder;
    }
    (media_type.trim().to_ascii_lowercase(), params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_bodies_decode_across_chunks_and_padding_only_ends_them() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let encoded = openssl::base64::encode_block(&data);
        // 76-character lines with CRLF, as MIME writes them: whitespace falls inside chunks.
        let body: Vec<u8> = encoded
            .as_bytes()
            .chunks(76)
            .flat_map(|line| line.iter().copied().chain(*b"\r\n"))
            .collect();
        assert!(body.len() > 2 * BASE64_CHUNK);
        assert_eq!(decode_base64(&body).unwrap().as_slice(), data.as_slice());
        // Padding before the end, even at a chunk boundary, is refused.
        let mut early = b"QQ==".repeat(BASE64_CHUNK / 4);
        early.extend_from_slice(b"QUJD");
        assert!(decode_base64(&early).is_err());
        assert!(decode_base64(b"QQ==QUJD").is_err());
        assert!(decode_base64(b"QUJ").is_err());
        assert_eq!(decode_base64(b"QU\r\nJD\n").unwrap().as_slice(), b"ABC");
        assert_eq!(
            decode_base64(b" QU J\tD \r\n\r\n").unwrap().as_slice(),
            b"ABC"
        );
        // Unused bits of the last character need not be zero (QQ== and QR== both
        // decode to "A"); padding that is not canonical is refused.
        assert_eq!(decode_base64(b"QR==").unwrap().as_slice(), b"A");
        assert!(decode_base64(b"QQ=").is_err());
        assert!(decode_base64(b"Q===").is_err());
        assert!(decode_base64(b"QQ=A").is_err());
    }

    /// `text` in lines of `width` characters, each followed by `eol`.
    fn lines(text: &[u8], width: usize, eol: &[u8]) -> Vec<u8> {
        text.chunks(width)
            .flat_map(|line| [line, eol].concat())
            .collect()
    }

    #[test]
    fn regular_bodies_take_the_fast_path_and_decode_alike() {
        use base64::Engine as _;
        use base64::engine::{GeneralPurpose, GeneralPurposeConfig};
        // An independent decoder that, like OpenSSL, takes unused bits that are not zero.
        let lenient = GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
        );
        let data: Vec<u8> = (0..150_001u32).map(|i| (i * 13 % 251) as u8).collect();
        let text = base64::engine::general_purpose::STANDARD.encode(&data);
        let text = text.as_bytes();
        let mut spaced = lines(text, 76, b"\r\n");
        spaced.splice(1000..1000, *b" ");
        spaced.splice(2000..2000, *b"\tQUJD");
        let mut blank = lines(text, 76, b"\r\n");
        blank.splice(780..780, *b"\r\n");
        let uneven = [
            &lines(&text[..760], 76, b"\r\n")[..],
            &lines(&text[760..], 64, b"\r\n"),
        ]
        .concat();
        let unbroken = lines(text, 76, b"\r\n");
        let unbroken = unbroken[..unbroken.len() - 2].to_vec();
        let nonzero_bits = [&lines(&b"QUJD".repeat(40), 76, b"\r\n")[..], b"QR=="].concat();
        let cases: [(&str, Vec<u8>, bool); 10] = [
            ("76 CRLF", lines(text, 76, b"\r\n"), true),
            ("64 LF", lines(text, 64, b"\n"), true),
            ("4 CRLF", lines(&text[..4000], 4, b"\r\n"), true),
            ("last line unbroken", unbroken, true),
            (
                "trailing breaks",
                [&lines(text, 76, b"\r\n")[..], b"\r\n\n"].concat(),
                true,
            ),
            ("whitespace in lines", spaced, false),
            ("a blank line", blank, false),
            ("two widths", uneven, false),
            ("unused bits not zero", nonzero_bits, false),
            ("78, not a multiple of 4", lines(text, 78, b"\r\n"), false),
        ];
        for (name, body, fast) in cases {
            let stripped: Vec<u8> = body
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            let expected = lenient.decode(&stripped).unwrap();
            assert_eq!(decode_regular(&body).is_some(), fast, "{name}");
            assert_eq!(
                decode_base64(&body).unwrap().as_slice(),
                expected.as_slice(),
                "{name}"
            );
        }
        // Padding in a middle line is refused on either path.
        let early = [&b"QQ==\r\n"[..], &lines(text, 4, b"\r\n")].concat();
        assert!(decode_regular(&early).is_none());
        assert!(decode_base64(&early).is_err());
    }

    #[test]
    fn classifies_by_content_type() {
        assert_eq!(
            classify(b"Subject: x\r\n\r\nhello\r\n"),
            Kind::Other("text/plain".into())
        );
        assert_eq!(
            classify(
                b"Content-Type: application/pkcs7-mime;\n smime-type=enveloped-data\n\nAAAA\n"
            ),
            Kind::Pkcs7Mime
        );
        assert_eq!(
            classify(b"Content-type: APPLICATION/X-PKCS7-MIME\r\n\r\nAAAA"),
            Kind::Pkcs7Mime
        );
        assert_eq!(
            classify(
                b"Content-Type: multipart/signed; micalg=sha-256;\r\n\tprotocol=\"application/pkcs7-signature\"; boundary=\"b\"\r\n\r\n"
            ),
            Kind::MultipartSigned
        );
        assert!(matches!(
            classify(
                b"Content-Type: multipart/signed; protocol=\"application/pgp-signature\"\r\n\r\n"
            ),
            Kind::Other(_)
        ));
        // Fields that are not UTF-8 are passed over, and a folded value is joined.
        assert_eq!(
            classify(b"X-\xff: \xfe\r\nCONTENT-TYPE:\r\n message/rfc822 \r\n\r\nbody"),
            Kind::Rfc822
        );
    }

    #[test]
    fn decodes_base64_and_binary_bodies() {
        let b64 = b"Content-Type: application/pkcs7-mime\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\nAw==\r\n";
        assert_eq!(*pkcs7_body(b64).unwrap(), vec![0, 1, 2, 3]);
        let binary =
            b"Content-Type: application/pkcs7-mime\nContent-Transfer-Encoding: binary\n\n\x30\x00";
        assert_eq!(*pkcs7_body(binary).unwrap(), vec![0x30, 0]);
        let bad = b"Content-Type: application/pkcs7-mime\n\n!!!!\n";
        assert_eq!(pkcs7_body(bad).unwrap_err().reason(), "malformed");
    }
}
