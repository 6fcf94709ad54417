//! Checking that a message the gateway sent is S/MIME-signed by the gateway's own
//! certificate: a `multipart/signed` whose detached signature (RFC 8551 §3.5)
//! verifies over the first part with that certificate and no other.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mail_parser::{MessageParser, MimeHeaders};
use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::stack::Stack;
use openssl::x509::X509;

/// Passes if `raw` is `multipart/signed` (`application/pkcs7-signature`) and its
/// signature verifies over the signed part with `signer_pem` as the signer.
pub fn signed_by(raw: &[u8], signer_pem: &[u8]) -> Result<(), String> {
    let message = MessageParser::default()
        .parse(raw)
        .ok_or("the message cannot be parsed")?;
    let content_type = message
        .content_type()
        .ok_or("the message has no Content-Type")?;
    let protocol = content_type.attribute("protocol").unwrap_or_default();
    let signed = content_type.ctype().eq_ignore_ascii_case("multipart")
        && content_type
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case("signed"))
        && [
            "application/pkcs7-signature",
            "application/x-pkcs7-signature",
        ]
        .iter()
        .any(|p| protocol.eq_ignore_ascii_case(p));
    if !signed {
        return Err(format!(
            "expected multipart/signed with protocol application/pkcs7-signature, got {}/{} protocol {protocol:?}",
            content_type.ctype(),
            content_type.subtype().unwrap_or_default()
        ));
    }
    let boundary = content_type
        .attribute("boundary")
        .ok_or("the multipart/signed has no boundary")?;
    let (content, signature) = parts(raw, boundary)?;
    verify(content, &signature, signer_pem)
}

/// The signed part (exact octets) and the decoded signature of a `multipart/signed`.
fn parts<'a>(raw: &'a [u8], boundary: &str) -> Result<(&'a [u8], Vec<u8>), String> {
    let delimiter = format!("\r\n--{boundary}");
    let delimiter = delimiter.as_bytes();
    let find = |from: usize| {
        raw.get(from..)
            .and_then(|rest| rest.windows(delimiter.len()).position(|w| w == delimiter))
            .map(|i| from + i)
    };
    let line_end = |at: usize| {
        raw.get(at..)
            .and_then(|rest| rest.windows(2).position(|w| w == b"\r\n"))
            .map(|i| at + i + 2)
    };
    let missing = || "the multipart/signed lacks its parts".to_owned();
    let first = find(0).ok_or_else(missing)?;
    let content_start = line_end(first + 2).ok_or_else(missing)?;
    let content_end = find(content_start).ok_or_else(missing)?;
    let signature_start = line_end(content_end + 2).ok_or_else(missing)?;
    let signature_end = find(signature_start).ok_or_else(missing)?;
    let signature_part = &raw[signature_start..signature_end];
    let body = signature_part
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| &signature_part[i + 4..])
        .ok_or("the signature part has no body")?;
    let text: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let der = STANDARD
        .decode(text)
        .map_err(|e| format!("the signature part is not base64: {e}"))?;
    Ok((&raw[content_start..content_end], der))
}

/// Verifies the detached SignedData `der` over `content`; only `signer_pem` may
/// have signed it (the certificates inside the signature are not used).
fn verify(content: &[u8], der: &[u8], signer_pem: &[u8]) -> Result<(), String> {
    let openssl = |what: &str, e: openssl::error::ErrorStack| format!("{what}: {e}");
    let mut cms =
        CmsContentInfo::from_der(der).map_err(|e| openssl("the signature is not CMS", e))?;
    let signer = X509::from_pem(signer_pem).map_err(|e| openssl("the gateway certificate", e))?;
    let mut certs = Stack::new().map_err(|e| openssl("a certificate stack", e))?;
    certs
        .push(signer)
        .map_err(|e| openssl("a certificate stack", e))?;
    // Chain building is the operator's business; what is checked here is that the
    // gateway's own key made the signature over exactly this content.
    cms.verify(
        Some(&certs),
        None,
        Some(content),
        None,
        CMSOptions::NOINTERN | CMSOptions::NO_SIGNER_CERT_VERIFY | CMSOptions::BINARY,
    )
    .map_err(|e| {
        openssl(
            "the signature does not verify with the gateway's S/MIME certificate",
            e,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvgate_certs::{compose, devpki};

    fn signed(content: &[u8], by: &devpki::Issued) -> Vec<u8> {
        let der =
            compose::sign_detached(content, by.cert_pem.as_bytes(), by.key_pem.as_bytes()).unwrap();
        let mut raw = b"From: <gateway@kvgate.test>\r\nMIME-Version: 1.0\r\n\
            Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"b1\"\r\n\r\n\
            --b1\r\n"
            .to_vec();
        raw.extend_from_slice(content);
        raw.extend_from_slice(
            b"\r\n--b1\r\nContent-Type: application/pkcs7-signature\r\nContent-Transfer-Encoding: base64\r\n\r\n",
        );
        raw.extend_from_slice(STANDARD.encode(der).as_bytes());
        raw.extend_from_slice(b"\r\n--b1--\r\n");
        raw
    }

    #[test]
    fn verifies_only_the_named_signer_over_the_exact_content() {
        let pki = devpki::generate("kvgate.test", "praxis@demo-practice.test").unwrap();
        let content = b"Content-Type: text/plain\r\n\r\nReport.\r\n";
        let raw = signed(content, &pki.gateway);
        signed_by(&raw, pki.gateway.cert_pem.as_bytes()).unwrap();
        // Another certificate is not the signer, even though the signature carries its own.
        assert!(signed_by(&raw, pki.practice.cert_pem.as_bytes()).is_err());
        // A changed content does not verify.
        let tampered = String::from_utf8(raw)
            .unwrap()
            .replace("Report.", "Rep0rt.");
        assert!(signed_by(tampered.as_bytes(), pki.gateway.cert_pem.as_bytes()).is_err());
        // Not multipart/signed at all.
        assert!(signed_by(content, pki.gateway.cert_pem.as_bytes()).is_err());
    }
}
