//! Unwrapping what a practice sends: S/MIME (CMS) decryption and signature
//! verification, layer after layer, with OpenSSL.

mod auth_enveloped;
mod ber;
mod chains;
mod error;
mod keys;
mod kim;
mod libcrypto;
mod mime;
mod screen;
mod signature;

use std::fmt;
use std::time::SystemTime;

use openssl::cms::{CmsContentInfo, CmsContentInfoRef};
use openssl::x509::X509;
use zeroize::Zeroize as _;

use crate::SecretBytes;
use crate::revocation::RevocationStatus;

pub use error::UnwrapError;
pub use keys::{DecryptionKey, TrustAnchors};
pub use kim::KimRecipient;
pub use screen::{Screening, screen};

use error::{has_cms_reason, reasons};
use libcrypto::{ContentType, DecryptFailure};
use mime::Kind;

/// The most S/MIME layers [`unwrap`] opens.
pub const MAX_LAYERS: usize = 4;

/// `CMS_R_NO_MATCHING_RECIPIENT` (cmserr.h).
const CMS_R_NO_MATCHING_RECIPIENT: i32 = 132;

/// Who signed a letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// Lowercase hex SHA-256 of the signer certificate's DER.
    pub fingerprint: String,
    /// The signer certificate's subject, readable.
    pub subject: String,
    /// The signer certificate's serial number, uppercase hex.
    pub serial: String,
    /// The signer certificate's issuer, readable.
    pub issuer: String,
    /// The e-mail addresses of its subjectAltName, lowercase.
    pub emails: Vec<String>,
    /// The digest algorithm of the signature, e.g. `SHA256`.
    pub digest_algorithm: String,
    /// The signature algorithm, e.g. `RSASSA-PSS` or `ecdsa-with-SHA384`.
    pub signature_algorithm: String,
    /// What revocation checking found for the signer's chain.
    pub revocation: RevocationStatus,
    /// The instant the chain was validated for.
    pub verified_at: SystemTime,
    /// The signer certificate, DER.
    pub cert_der: Vec<u8>,
}

/// The content inside all S/MIME layers, and what the layers said.
pub struct Unwrapped {
    /// The innermost entity (headers and body), no longer S/MIME.
    pub content: SecretBytes,
    /// The signer of the innermost signed layer; `None` if nothing was signed.
    pub signer: Option<Signer>,
    /// The other signers of that layer, if it had more than one (each verified and
    /// chained like the first).
    pub co_signers: Vec<Signer>,
    /// Whether any layer was encrypted to the gateway.
    pub encrypted: bool,
    /// The recipients gematik's attribute 1.2.276.0.76.4.173 names (KIM), from
    /// the signed attributes and the AuthEnvelopedData's `unauthAttrs`.
    pub recipients: Vec<KimRecipient>,
}

impl fmt::Debug for Unwrapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The content is a patient's letter: never print it.
        f.debug_struct("Unwrapped")
            .field("content", &format_args!("<{} octets>", self.content.len()))
            .field("signer", &self.signer)
            .field("co_signers", &self.co_signers)
            .field("encrypted", &self.encrypted)
            .field("recipients", &self.recipients)
            .finish()
    }
}

/// Unwraps `message` (an RFC 5322 message or MIME entity, CRLF or LF) layer
/// after layer until its content is no longer S/MIME:
///
/// - `application/pkcs7-mime` (or `x-pkcs7-mime`) enveloped data is decrypted
///   with whichever of `keys` it is addressed to;
/// - signed data, opaque or as `multipart/signed`, is verified (over the exact,
///   CRLF-canonical bytes of the first part) and its signers' chains checked
///   against `anchors` at time `at` for S/MIME signing, with intermediates taken
///   from the message. SHA-1 and MD5 are refused;
/// - AuthEnvelopedData that OpenSSL's parser refuses (KIM's `unauthAttrs`) is
///   read with the `cms`/`der` crates and decrypted with OpenSSL's primitives;
/// - a `message/rfc822` entity inside a layer is opened to the message it wraps.
///
/// At most [`MAX_LAYERS`] layers are opened. An unsigned letter is returned with
/// `signer: None`; whether that is acceptable is the caller's policy.
pub fn unwrap(
    message: &[u8],
    keys: &[DecryptionKey],
    anchors: &TrustAnchors,
    at: SystemTime,
) -> Result<Unwrapped, UnwrapError> {
    unwrap_owned(message.to_vec(), keys, anchors, at)
}

/// [`unwrap`] of a message handed over: each layer is freed as soon as the next is
/// decoded, so a large letter is held about twice at most, not once a layer.
pub fn unwrap_owned(
    message: Vec<u8>,
    keys: &[DecryptionKey],
    anchors: &TrustAnchors,
    at: SystemTime,
) -> Result<Unwrapped, UnwrapError> {
    unwrap_letter(message, keys, anchors, at).outcome
}

/// What [`unwrap_letter`] came to, and whether its outcome may be told to the sender.
#[derive(Debug)]
pub struct Unwrapping {
    /// The unwrapped letter, or why it was refused.
    pub outcome: Result<Unwrapped, UnwrapError>,
    /// Whether a layer was EnvelopedData, whose cipher (AES-CBC) does not protect
    /// integrity: anyone who captured such a letter can alter its ciphertext and
    /// resubmit it, and whichever check fails after the decryption (padding, MIME,
    /// DER, signature) then tells them something of the plaintext (a padding oracle,
    /// Vaudenay 2002). A sender may be told only that such a letter was refused, the
    /// same words whatever the outcome. Set as soon as the layer is met, before it is
    /// decrypted.
    pub unauthenticated: bool,
    /// Whether a signature was verified inside the last such layer: what it covers is
    /// then as its signer wrote it, whatever was done to the ciphertext around it (a
    /// signature outside the layer, encrypt-then-sign, says nothing of what the
    /// layer decrypts to: a submitter can re-sign altered ciphertext).
    pub signed_inside: bool,
}

/// What the layers opened so far say of the letter's integrity.
#[derive(Default)]
struct Integrity {
    /// An EnvelopedData layer was met.
    unauthenticated: bool,
    /// A signature verified inside the last one.
    signed_inside: bool,
}

/// [`unwrap_owned`], also saying whether the letter had a layer without integrity
/// protection (see [`Unwrapping::unauthenticated`]).
pub fn unwrap_letter(
    message: Vec<u8>,
    keys: &[DecryptionKey],
    anchors: &TrustAnchors,
    at: SystemTime,
) -> Unwrapping {
    let mut integrity = Integrity::default();
    let outcome = unwrap_layers(message, keys, anchors, at, &mut integrity);
    Unwrapping {
        outcome,
        unauthenticated: integrity.unauthenticated,
        signed_inside: integrity.signed_inside,
    }
}

/// Opens the layers of `message`, noting in `integrity` what protects them.
fn unwrap_layers(
    message: Vec<u8>,
    keys: &[DecryptionKey],
    anchors: &TrustAnchors,
    at: SystemTime,
    integrity: &mut Integrity,
) -> Result<Unwrapped, UnwrapError> {
    let mut current = SecretBytes::from(message);
    let mut encrypted = false;
    let mut signer = None;
    let mut co_signers = Vec::new();
    let mut recipients: Vec<KimRecipient> = Vec::new();
    let mut decrypting: Option<&X509> = None;
    let mut layers = 0;
    loop {
        let kind = mime::classify(&current);
        if layers == 0 && kind == Kind::Rfc822 {
            return Err(UnwrapError::NotSmime {
                content_type: "message/rfc822".to_owned(),
            });
        }
        if let Kind::Other(content_type) = kind {
            if layers == 0 {
                return Err(UnwrapError::NotSmime { content_type });
            }
            for recipient in &mut recipients {
                recipient.decrypting = decrypting.is_some_and(|cert| recipient.names(cert));
            }
            return Ok(Unwrapped {
                content: current,
                signer,
                co_signers,
                encrypted,
                recipients,
            });
        }
        if layers == MAX_LAYERS {
            return Err(UnwrapError::TooDeep { max: MAX_LAYERS });
        }
        layers += 1;
        current = if kind == Kind::Rfc822 {
            // Signed or encrypted content that wraps a whole message: the message.
            SecretBytes::from(mime::body(&current).to_vec())
        } else if kind == Kind::MultipartSigned {
            let verified = multipart_signed(&current, anchors, at)?;
            (signer, co_signers) = (Some(verified.signer), verified.co_signers);
            integrity.signed_inside = true;
            recipients.extend(verified.recipients);
            verified.content
        } else {
            let der = mime::pkcs7_body(&current)?;
            let converted = mime::binary_with_crlf(&current);
            // The MIME layer is no longer needed once its body is decoded, nor the DER
            // once it is parsed: free each before the next copy is made. Enveloped data
            // is ciphertext: only the layer's header block (a subject, names) is wiped.
            let enveloped = screen::is_enveloped(&der);
            release_layer(std::mem::take(&mut current), enveloped);
            let cms = match CmsContentInfo::from_der(&der) {
                Ok(cms) => cms,
                Err(e) => match auth_enveloped::parse(&der) {
                    // OpenSSL refuses some valid AuthEnvelopedData (KIM's unauthAttrs).
                    Some(parsed) => {
                        let parsed = parsed?;
                        let (plaintext, cert) = auth_enveloped::decrypt(&parsed, keys)?;
                        recipients.extend(parsed.recipients()?);
                        (encrypted, decrypting) = (true, Some(cert));
                        current = plaintext;
                        continue;
                    }
                    None => {
                        let hint = if converted {
                            " (the body is sent as binary and has CRLF line breaks: \
                             converting line endings may have damaged the DER)"
                        } else {
                            ""
                        };
                        return Err(UnwrapError::Malformed(format!(
                            "the CMS structure cannot be parsed: {}{hint}",
                            reasons(&e)
                        )));
                    }
                },
            };
            release(der, enveloped);
            match libcrypto::content_type(&cms) {
                ContentType::Enveloped { authenticated } => {
                    if !authenticated {
                        *integrity = Integrity {
                            unauthenticated: true,
                            signed_inside: false,
                        };
                    }
                    let (plaintext, cert) = decrypt(&cms, keys)?;
                    (encrypted, decrypting) = (true, Some(cert));
                    plaintext
                }
                ContentType::Signed => {
                    let verified = signature::verify(cms, None, anchors, at)?;
                    (signer, co_signers) = (Some(verified.signer), verified.co_signers);
                    integrity.signed_inside = true;
                    recipients.extend(verified.recipients);
                    verified.content
                }
                ContentType::Other(nid) => {
                    return Err(UnwrapError::Malformed(format!(
                        "unsupported CMS content type {}",
                        nid.long_name().unwrap_or("unknown")
                    )));
                }
            }
        };
    }
}

/// Frees `bytes`: wiped, unless they hold nothing but `ciphertext`.
fn release(bytes: SecretBytes, ciphertext: bool) {
    if ciphertext {
        drop(bytes.declassify());
    }
}

/// Frees a `pkcs7-mime` layer: its header block is wiped; its body, unless it is
/// `enveloped` data.
fn release_layer(mut layer: SecretBytes, enveloped: bool) {
    if enveloped {
        let headers = layer.len() - mime::body(&layer).len();
        layer[..headers].zeroize();
    }
    release(layer, enveloped);
}

/// Verifies a `multipart/signed` entity over its first part.
fn multipart_signed(
    entity: &[u8],
    anchors: &TrustAnchors,
    at: SystemTime,
) -> Result<signature::Verified, UnwrapError> {
    let read = libcrypto::smime_read(entity).map_err(|e| {
        UnwrapError::Malformed(format!("the multipart/signed entity cannot be read: {e}"))
    })?;
    let Some(content) = read.detached else {
        return Err(UnwrapError::Malformed(
            "the multipart/signed entity has no signed part".to_owned(),
        ));
    };
    if libcrypto::content_type(&read.cms) != ContentType::Signed {
        return Err(UnwrapError::Malformed(
            "the signature part of multipart/signed is not signed data".to_owned(),
        ));
    }
    if !libcrypto::is_detached(&read.cms) {
        return Err(UnwrapError::ContentConfusion);
    }
    signature::verify(read.cms, Some(content), anchors, at)
}

/// Decrypts enveloped data with the first key it is addressed to; returns the
/// plaintext and that key's certificate.
fn decrypt<'k>(
    cms: &CmsContentInfoRef,
    keys: &'k [DecryptionKey],
) -> Result<(SecretBytes, &'k X509), UnwrapError> {
    let mut failures = Vec::new();
    for key in keys {
        match libcrypto::decrypt(cms, &key.key, &key.cert) {
            Ok(plaintext) => return Ok((plaintext, &key.cert)),
            // OpenSSL fails without any queued error when no RecipientInfo names
            // the certificate, and with NO_MATCHING_RECIPIENT when none fits the key type.
            Err(DecryptFailure::Key(e))
                if e.errors().is_empty() || has_cms_reason(&e, CMS_R_NO_MATCHING_RECIPIENT) => {}
            // One sentence whether the key transport (RSA padding, OAEP decoding) or
            // the content (CBC padding, GCM tag) failed: a difference would tell a
            // submitter which, an oracle on the gateway's key (Bleichenbacher, Manger).
            Err(DecryptFailure::Key(_) | DecryptFailure::Content) => failures.push(format!(
                "{}: the content encryption key or the content does not decrypt",
                crate::x509::subject_line(&key.cert)
            )),
        }
    }
    if !failures.is_empty() {
        return Err(UnwrapError::DecryptionFailed(failures.join("; ")));
    }
    Err(not_for_gateway(keys))
}

/// The refusal for enveloped data addressed to none of `keys`.
fn not_for_gateway(keys: &[DecryptionKey]) -> UnwrapError {
    UnwrapError::NotForGateway(if keys.is_empty() {
        "the gateway has no decryption key".to_owned()
    } else {
        let ours: Vec<String> = keys
            .iter()
            .map(|k| crate::x509::subject_line(&k.cert))
            .collect();
        format!(
            "it is addressed to none of the gateway certificates ({})",
            ours.join("; ")
        )
    })
}
