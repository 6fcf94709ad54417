//! Telling from a letter's first octets whether its content is encrypted, so that a
//! letter sent in the clear can be refused before anything of it is kept.
//!
//! Only the structure is read: the media types of the MIME layers and, inside
//! `application/pkcs7-mime`, the CMS content type and the start of signed content.
//! Nothing is decrypted or verified; that is the pipeline's work.

use super::mime::{self, Kind};
use crate::SecretBytes;

/// What a letter's first octets show about its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screening {
    /// Enveloped (encrypted) data, at the top or under signatures.
    Encrypted,
    /// Not S/MIME at its top: a message in the clear.
    NotSmime,
    /// Signed, but what is signed is readable: no encryption under the signatures.
    NotEncrypted,
    /// The octets given end before this can be told, or what they hold is not
    /// well-formed enough to tell: the pipeline judges the whole letter.
    Undecided,
}

/// Layers looked through: the pipeline refuses more than [`super::MAX_LAYERS`].
const MAX_DEPTH: usize = super::MAX_LAYERS;

/// Base64 characters of a `pkcs7-mime` body decoded to look inside: enough for the
/// CMS header and the start of signed content, whatever certificates follow it.
const PEEK: usize = 8 * 1024;

/// Base64 characters decoded at first: the CMS header of enveloped data, or signed
/// data's start and the header of what it signs, fits in them. Scanning all of
/// [`PEEK`] took 2% of the server's time for a 4 KiB letter.
const GLANCE: usize = 1024;

/// `id-envelopedData` (RFC 5652), DER contents of the OID.
const ENVELOPED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03];
/// `id-ct-authEnvelopedData` (RFC 5083).
const AUTH_ENVELOPED_DATA: &[u8] = &[
    0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x17,
];
/// `id-signedData` (RFC 5652).
const SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];

/// Screens a letter by its first octets (`head`: the whole letter, or as much of its
/// start as was received).
pub fn screen(head: &[u8]) -> Screening {
    // A message wrapped whole is S/MIME's inner layer, never a letter's top.
    if mime::header_block_ends(head) && mime::classify(head) == Kind::Rfc822 {
        return Screening::NotSmime;
    }
    layer(head, 0)
}

/// Screens one MIME entity `depth` layers down.
fn layer(entity: &[u8], depth: usize) -> Screening {
    if depth > MAX_DEPTH || !mime::header_block_ends(entity) {
        return Screening::Undecided;
    }
    let inner = match mime::classify(entity) {
        Kind::Pkcs7Mime => Some(pkcs7(entity, depth)),
        Kind::MultipartSigned => match mime::first_part(entity) {
            Some(part) => Some(layer(part, depth + 1)),
            None => Some(Screening::Undecided),
        },
        Kind::Rfc822 => Some(layer(mime::body(entity), depth + 1)),
        Kind::Other(_) => None,
    };
    match inner {
        // Readable content under a signature is signed, not encrypted.
        Some(Screening::NotSmime) => Screening::NotEncrypted,
        Some(screening) => screening,
        None => Screening::NotSmime,
    }
}

/// Screens an `application/pkcs7-mime` entity by the CMS at the start of its body;
/// a body that cannot be read as CMS so far is left to the pipeline.
///
/// The first [`GLANCE`] characters are decoded first, and [`PEEK`] only where they do
/// not decide. Every answer but `Undecided` rests on a prefix that was read whole, so
/// more characters cannot change it.
fn pkcs7(entity: &[u8], depth: usize) -> Screening {
    match pkcs7_within(entity, depth, GLANCE) {
        Screening::Undecided => pkcs7_within(entity, depth, PEEK),
        decided => decided,
    }
}

/// [`pkcs7`] on at most `peek` base64 characters of the body.
fn pkcs7_within(entity: &[u8], depth: usize, peek: usize) -> Screening {
    let Some(der) = mime::pkcs7_body_start(entity, peek) else {
        return Screening::Undecided;
    };
    match Walk(&der).content_info() {
        Some(Cms::Enveloped) => Screening::Encrypted,
        Some(Cms::Signed(inner)) => layer(&inner, depth + 1),
        // Compressed data may hold encrypted data, and what the pipeline does not
        // take it refuses with its own reason.
        Some(Cms::Other) | None => Screening::Undecided,
    }
}

/// Whether `der`, a whole CMS ContentInfo, holds EnvelopedData or AuthEnvelopedData:
/// nothing but ciphertext and what it takes to decrypt it.
pub(super) fn is_enveloped(der: &[u8]) -> bool {
    Walk(der)
        .content_type()
        .is_some_and(|t| t == ENVELOPED_DATA || t == AUTH_ENVELOPED_DATA)
}

/// What a CMS ContentInfo holds, as far as its start shows.
enum Cms {
    /// EnvelopedData or AuthEnvelopedData.
    Enveloped,
    /// SignedData, with the start of its encapsulated content (wiped when dropped).
    Signed(SecretBytes),
    /// Any other content type (data, compressed data, digested data…).
    Other,
}

/// A cursor over the start of a BER encoding. Every read returns `None` where the
/// octets end or do not have the expected shape.
struct Walk<'a>(&'a [u8]);

impl<'a> Walk<'a> {
    /// Reads a ContentInfo's type and, for SignedData, the start of its content.
    fn content_info(&mut self) -> Option<Cms> {
        let content_type = self.content_type()?;
        if content_type == ENVELOPED_DATA || content_type == AUTH_ENVELOPED_DATA {
            return Some(Cms::Enveloped);
        }
        if content_type != SIGNED_DATA {
            return Some(Cms::Other);
        }
        self.enter(0xa0)?;
        self.enter(0x30)?;
        self.primitive(0x02)?; // version
        self.primitive(0x31)?; // digestAlgorithms, read whole
        self.enter(0x30)?; // encapContentInfo
        self.primitive(0x06)?; // eContentType
        // Without eContent the signature is detached: nothing inside to screen.
        self.enter(0xa0)?;
        self.octets().map(Cms::Signed)
    }

    /// Reads the start of a ContentInfo: its content type.
    fn content_type(&mut self) -> Option<&'a [u8]> {
        self.enter(0x30)?;
        self.primitive(0x06)
    }

    /// The start of an OCTET STRING, primitive or cut into segments.
    fn octets(&mut self) -> Option<SecretBytes> {
        let mut octets = SecretBytes::with_capacity(self.0.len());
        let (tag, length) = self.header()?;
        match tag {
            0x04 => {
                let take = length.map_or(self.0.len(), |n| n.min(self.0.len()));
                octets.extend_from_slice(&self.0[..take]);
            }
            0x24 => {
                // Segments, as far as they were received.
                while let Some((0x04, Some(n))) = self.header() {
                    let take = n.min(self.0.len());
                    octets.extend_from_slice(&self.0[..take]);
                    if take < n {
                        break;
                    }
                    self.0 = &self.0[n..];
                }
            }
            _ => return None,
        }
        Some(octets)
    }

    /// Steps into an element with identifier `tag`, definite length or not.
    fn enter(&mut self, tag: u8) -> Option<()> {
        match self.header()? {
            (t, _) if t == tag => Some(()),
            _ => None,
        }
    }

    /// Reads a whole element of definite length with identifier `tag`: its contents.
    fn primitive(&mut self, tag: u8) -> Option<&'a [u8]> {
        let (t, length) = self.header()?;
        let length = length?;
        if t != tag || length > self.0.len() {
            return None;
        }
        let (contents, rest) = self.0.split_at(length);
        self.0 = rest;
        Some(contents)
    }

    /// Reads an identifier octet and a length (`None` for indefinite), leaving the
    /// cursor at the contents.
    fn header(&mut self) -> Option<(u8, Option<usize>)> {
        let [tag, first, rest @ ..] = self.0 else {
            return None;
        };
        if tag & 0x1f == 0x1f {
            return None;
        }
        let (length, rest) = match *first {
            0x80 => (None, rest),
            short @ 0..0x80 => (Some(usize::from(short)), rest),
            long => {
                let count = usize::from(long & 0x7f);
                if count > 4 || rest.len() < count {
                    return None;
                }
                let (octets, rest) = rest.split_at(count);
                let length = octets
                    .iter()
                    .fold(0usize, |n, &octet| (n << 8) | usize::from(octet));
                (Some(length), rest)
            }
        };
        self.0 = rest;
        Some((*tag, length))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn testdata(path: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/testdata")
            .join(path);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn published_samples_are_screened_by_what_they_hold() {
        for (sample, expected) in [
            ("protected-headers/smime-sign+enc.eml", Screening::Encrypted),
            (
                "protected-headers/smime-enc+legacy-disp.eml",
                Screening::Encrypted,
            ),
            (
                "kim-samples/inputEmail.txt.05.encryptedwrap",
                Screening::Encrypted,
            ),
            (
                "protected-headers/smime-multipart-signed.eml",
                Screening::NotEncrypted,
            ),
            (
                "protected-headers/smime-onepart-signed.eml",
                Screening::NotEncrypted,
            ),
            // Its binary DER had its line ends converted (an LF after each CR): the
            // pipeline says so.
            (
                "kim-samples/inputEmail.txt.03.signedwrap",
                Screening::Undecided,
            ),
            ("kim-samples/inputEmail.txt", Screening::NotSmime),
            (
                "kim-samples/inputEmail.txt.01.rfc822wrap",
                Screening::NotSmime,
            ),
        ] {
            let letter = testdata(sample);
            assert_eq!(screen(&letter), expected, "{sample}");
        }
    }

    /// `content` signed by a throwaway certificate with the `openssl` CLI, opaque
    /// (`application/pkcs7-mime`) or detached (`multipart/signed`).
    fn openssl_signed(dir: &Path, content: &[u8], opaque: bool) -> Vec<u8> {
        let run = |args: &[&str]| {
            let status = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "openssl {args:?}");
        };
        if !dir.join("signer.pem").exists() {
            run(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=signer",
                "-keyout",
                "signer.key",
                "-out",
                "signer.pem",
            ]);
        }
        std::fs::write(dir.join("content.eml"), content).unwrap();
        let mut args = vec![
            "cms",
            "-sign",
            "-in",
            "content.eml",
            "-signer",
            "signer.pem",
            "-inkey",
            "signer.key",
            "-out",
            "signed.eml",
        ];
        if opaque {
            args.push("-nodetach");
        }
        run(&args);
        std::fs::read(dir.join("signed.eml")).unwrap()
    }

    #[test]
    fn encrypt_then_sign_is_encrypted_and_sign_only_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let encrypted = testdata("protected-headers/smime-enc+legacy-disp.eml");
        let plain = b"Content-Type: text/plain\r\n\r\nBefund\r\n";
        for opaque in [true, false] {
            let around = openssl_signed(dir.path(), &encrypted, opaque);
            assert_eq!(screen(&around), Screening::Encrypted, "opaque: {opaque}");
            let twice = openssl_signed(dir.path(), &around, opaque);
            assert_eq!(screen(&twice), Screening::Encrypted, "opaque: {opaque}");
            let clear = openssl_signed(dir.path(), plain, opaque);
            assert_eq!(screen(&clear), Screening::NotEncrypted, "opaque: {opaque}");
        }
    }

    #[test]
    fn only_enveloped_data_is_enveloped() {
        let der = |letter: &[u8]| mime::pkcs7_body(letter).unwrap();
        for sample in [
            "protected-headers/smime-enc+legacy-disp.eml",
            "kim-samples/inputEmail.txt.05.encryptedwrap",
        ] {
            assert!(is_enveloped(&der(&testdata(sample))), "{sample}");
        }
        let dir = tempfile::tempdir().unwrap();
        let signed = openssl_signed(
            dir.path(),
            b"Content-Type: text/plain\r\n\r\nBefund\r\n",
            true,
        );
        assert!(!is_enveloped(&der(&signed)));
        assert!(!is_enveloped(&[]));
        assert!(!is_enveloped(&[0x30, 0x80, 0x06]));
    }

    #[test]
    fn what_the_first_glance_cannot_tell_is_read_further() {
        let dir = tempfile::tempdir().unwrap();
        // Signed content whose header block runs past the first GLANCE characters.
        let fields: String = (0..40)
            .map(|n| format!("X-Praxis-Feld-{n:02}: {}\r\n", "z".repeat(40)))
            .collect();
        let plain = format!("{fields}Content-Type: text/plain\r\n\r\nBefund\r\n");
        let encrypted = [
            fields.as_bytes(),
            &testdata("protected-headers/smime-enc+legacy-disp.eml"),
        ]
        .concat();
        let clear = openssl_signed(dir.path(), plain.as_bytes(), true);
        let around = openssl_signed(dir.path(), &encrypted, true);
        for (letter, expected) in [
            (&clear, Screening::NotEncrypted),
            (&around, Screening::Encrypted),
        ] {
            assert_eq!(pkcs7_within(letter, 0, GLANCE), Screening::Undecided);
            assert_eq!(screen(letter), expected);
        }
    }

    #[test]
    fn a_head_that_ends_too_soon_is_left_to_the_pipeline() {
        let letter = testdata("protected-headers/smime-onepart-signed.eml");
        let body = letter.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
        for cut in [10, body - 2, body + 8] {
            assert_eq!(screen(&letter[..cut]), Screening::Undecided, "cut at {cut}");
        }
        assert_eq!(
            screen(b"Content-Type: text/plain\r\n\r\n"),
            Screening::NotSmime
        );
        assert_eq!(
            screen(b"Content-Type: application/pkcs7-mime\r\n\r\n!!!!"),
            Screening::Undecided
        );
        // CompressedData (id-ct-compressedData) may hold encrypted data: the pipeline
        // judges it.
        let compressed = [
            &[0x30, 0x80, 0x06, 0x0b][..],
            &[
                0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x09,
            ],
            &[0xa0, 0x80, 0x30, 0x80],
        ]
        .concat();
        let letter = format!(
            "Content-Type: application/pkcs7-mime; smime-type=compressed-data\r\n\r\n{}\r\n",
            openssl::base64::encode_block(&compressed)
        );
        assert_eq!(screen(letter.as_bytes()), Screening::Undecided);
    }
}
