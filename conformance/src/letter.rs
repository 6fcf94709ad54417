//! Test letters as a practice system writes them: an inner MIME message with a
//! text part and a binary attachment, wrapped in S/MIME layers in a chosen order.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kvgate_certs::{compose, sha1_signed};
use mail_parser::{Message, MessageParser, MimeHeaders};

/// File name of the attachment every test letter carries.
pub const ATTACHMENT_NAME: &str = "befund.bin";

/// One letter before wrapping, with the markers that identify it after delivery.
pub struct Letter {
    /// A random marker that appears in the subject and nowhere in the outer message.
    pub marker: String,
    /// The attachment's bytes.
    pub attachment: Vec<u8>,
    /// The inner RFC 5322 message, CRLF line ends.
    pub inner: Vec<u8>,
    from: String,
    to: String,
}

/// A certificate and key, PEM, that signs letters.
pub struct SignerPem<'a> {
    /// Certificate, PEM.
    pub cert: &'a [u8],
    /// Private key, PEM.
    pub key: &'a [u8],
}

/// How the inner message is wrapped.
pub enum Wrapping<'a> {
    /// Signed by `signer`, then encrypted to `recipient` (the usual order).
    SignThenEncrypt(SignerPem<'a>, &'a [u8]),
    /// Encrypted to `recipient`, then signed by `signer`.
    EncryptThenSign(SignerPem<'a>, &'a [u8]),
    /// Signed by `signer` with SHA-1 as digest, then encrypted to `recipient`.
    Sha1SignThenEncrypt(SignerPem<'a>, &'a [u8]),
    /// Encrypted only.
    EncryptOnly(&'a [u8]),
    /// Signed only.
    SignOnly(SignerPem<'a>),
    /// A `multipart/signed` whose visible part is the letter but whose "detached"
    /// signature is an opaque SignedData over other content (eContent confusion,
    /// CVE-2018-18509 class), encrypted to `recipient`.
    EContentConfusion(SignerPem<'a>, &'a [u8]),
}

impl Letter {
    /// A new letter from `from` to `to` with a fresh marker and attachment.
    pub fn new(from: &str, to: &str) -> Result<Self, String> {
        let marker = format!("cf{}", hex(&random::<8>()?));
        let attachment: Vec<u8> = random::<3000>()?.to_vec();
        let date = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc2822)
            .map_err(|e| format!("formatting the date: {e}"))?;
        let mut inner = format!(
            "From: <{from}>\r\nTo: <{to}>\r\nSubject: Befund {marker}\r\nDate: {date}\r\n\
             Message-ID: <{marker}@conformance.test>\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"{marker}-b\"\r\n\r\n\
             --{marker}-b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
             Conformance letter {marker}.\r\n\
             --{marker}-b\r\nContent-Type: application/octet-stream; name=\"{ATTACHMENT_NAME}\"\r\n\
             Content-Disposition: attachment; filename=\"{ATTACHMENT_NAME}\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n"
        );
        let encoded = STANDARD.encode(&attachment);
        for line in encoded.as_bytes().chunks(76) {
            inner.push_str(&String::from_utf8_lossy(line));
            inner.push_str("\r\n");
        }
        inner.push_str(&format!("--{marker}-b--\r\n"));
        Ok(Letter {
            marker,
            attachment,
            inner: inner.into_bytes(),
            from: from.to_owned(),
            to: to.to_owned(),
        })
    }

    /// Asks for a read receipt (RFC 8098 `Disposition-Notification-To`) to `to`.
    pub fn request_mdn(mut self, to: &str) -> Self {
        let mut inner = format!("Disposition-Notification-To: <{to}>\r\n").into_bytes();
        inner.append(&mut self.inner);
        self.inner = inner;
        self
    }

    /// The message to send over SMTP: outer headers (no subject) and the wrapped entity.
    pub fn wrap(&self, wrapping: &Wrapping<'_>) -> Result<Vec<u8>, String> {
        let failed = |what: &str, e: &dyn std::fmt::Display| format!("{what} the test letter: {e}");
        let sign = |entity: &[u8], signer: &SignerPem<'_>| {
            compose::sign(entity, signer.cert, signer.key).map_err(|e| failed("signing", &e))
        };
        let encrypt = |entity: &[u8], recipient: &[u8]| {
            compose::encrypt(entity, recipient).map_err(|e| failed("encrypting", &e))
        };
        let entity = match wrapping {
            Wrapping::SignThenEncrypt(signer, recipient) => {
                encrypt(&sign(&self.inner, signer)?, recipient)?
            }
            Wrapping::EncryptThenSign(signer, recipient) => {
                sign(&encrypt(&self.inner, recipient)?, signer)?
            }
            Wrapping::Sha1SignThenEncrypt(signer, recipient) => {
                let signed = sha1_signed::sign(&self.inner, signer.cert, signer.key)
                    .map_err(|e| failed("signing (SHA-1)", &e))?;
                encrypt(&signed, recipient)?
            }
            Wrapping::EncryptOnly(recipient) => encrypt(&self.inner, recipient)?,
            Wrapping::SignOnly(signer) => sign(&self.inner, signer)?,
            Wrapping::EContentConfusion(signer, recipient) => {
                let other = b"Content-Type: text/plain\r\n\r\nNot the letter that is shown.\r\n";
                encrypt(&self.confused(&sign(other, signer)?), recipient)?
            }
        };
        // The outer Message-ID shares nothing with the marker, so the marker can only
        // reach the member's ciphertext through a leak of the inner message.
        let mut message = format!(
            "From: <{}>\r\nTo: <{}>\r\nSubject: [...]\r\nMessage-ID: <{}@conformance.test>\r\n",
            self.from,
            self.to,
            hex(&random::<8>()?)
        )
        .into_bytes();
        message.extend_from_slice(&entity);
        Ok(message)
    }
}

impl Letter {
    /// `multipart/signed` with the letter as the visible part and the base64 body of
    /// the opaque `signed` entity as the signature part.
    fn confused(&self, signed: &[u8]) -> Vec<u8> {
        let body = signed
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(signed, |i| &signed[i + 4..]);
        let boundary = format!("{}-s", self.marker);
        let mut out = format!(
            "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"{boundary}\"\r\n\r\n--{boundary}\r\n"
        )
        .into_bytes();
        out.extend_from_slice(&self.inner);
        out.extend_from_slice(
            format!(
                "\r\n--{boundary}\r\nContent-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n\
                 Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(body);
        out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        out
    }
}

/// The decoded contents of the attachment called `name` anywhere in `raw`,
/// nested messages included.
pub fn find_attachment(raw: &[u8], name: &str) -> Option<Vec<u8>> {
    let message = MessageParser::default().parse(raw)?;
    search(&message, name)
}

fn search(message: &Message<'_>, name: &str) -> Option<Vec<u8>> {
    message.parts.iter().find_map(|part| match part.message() {
        Some(nested) => search(nested, name),
        None if part.attachment_name() == Some(name) => Some(part.contents().to_vec()),
        None => None,
    })
}

/// `N` random bytes.
pub fn random<const N: usize>() -> Result<[u8; N], String> {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    Ok(bytes)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
