//! Composing S/MIME: letters as a practice system makes them (sign, then encrypt to
//! the gateway), used by `kvgate demo` and test tools, and the detached signature the
//! gateway puts on its own reports. The gateway never signs a letter on a sender's
//! behalf.

use openssl::base64;
use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::error::ErrorStack;
use openssl::pkey::PKey;
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::X509;

/// Signs `entity` (a MIME entity with CRLF line ends: headers, blank line, body) as
/// opaque SignedData, returning an `application/pkcs7-mime; smime-type=signed-data`
/// entity. The signer's certificate is included.
pub fn sign(
    entity: &[u8],
    signer_cert_pem: &[u8],
    signer_key_pem: &[u8],
) -> Result<Vec<u8>, ErrorStack> {
    let der = signed_data(entity, signer_cert_pem, signer_key_pem, CMSOptions::BINARY)?;
    Ok(pkcs7_mime("signed-data", &der))
}

/// Signs `entity` (a canonical MIME entity with CRLF line ends) as a detached
/// SignedData with SHA-256, returning the DER signature for the second part of a
/// `multipart/signed` (RFC 8551 §3.5.3). The signer's certificate is included.
pub fn sign_detached(
    entity: &[u8],
    signer_cert_pem: &[u8],
    signer_key_pem: &[u8],
) -> Result<Vec<u8>, ErrorStack> {
    signed_data(
        entity,
        signer_cert_pem,
        signer_key_pem,
        CMSOptions::BINARY | CMSOptions::DETACHED,
    )
}

/// DER SignedData over `entity` by the PEM certificate and key, with `flags`.
fn signed_data(
    entity: &[u8],
    signer_cert_pem: &[u8],
    signer_key_pem: &[u8],
    flags: CMSOptions,
) -> Result<Vec<u8>, ErrorStack> {
    let cert = X509::from_pem(signer_cert_pem)?;
    let key = PKey::private_key_from_pem(signer_key_pem)?;
    CmsContentInfo::sign(Some(&cert), Some(&key), None, Some(entity), flags)?.to_der()
}

/// Encrypts `entity` to the recipient certificate as AuthEnvelopedData (AES-256-GCM,
/// RFC 5083/5084, key transport): unlike EnvelopedData with AES-CBC, nobody can alter
/// it undetected. Returns an `application/pkcs7-mime; smime-type=authEnveloped-data`
/// entity.
pub fn encrypt(entity: &[u8], recipient_cert_pem: &[u8]) -> Result<Vec<u8>, ErrorStack> {
    let cert = X509::from_pem(recipient_cert_pem)?;
    let mut recipients = Stack::new()?;
    recipients.push(cert)?;
    let cms = CmsContentInfo::encrypt(
        &recipients,
        entity,
        Cipher::aes_256_gcm(),
        CMSOptions::BINARY,
    )?;
    Ok(pkcs7_mime("authEnveloped-data", &cms.to_der()?))
}

/// An `application/pkcs7-mime` entity holding `der` in base64 lines of 76 characters.
pub(crate) fn pkcs7_mime(smime_type: &str, der: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "MIME-Version: 1.0\r\n\
         Content-Type: application/pkcs7-mime; smime-type={smime_type}; name=\"smime.p7m\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"smime.p7m\"\r\n\r\n"
    );
    let encoded = base64::encode_block(der);
    for line in encoded.as_bytes().chunks(76) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push_str("\r\n");
    }
    out.into_bytes()
}
