//! SignedData whose digest is SHA-1: what an outdated practice system still sends and
//! a verifier must refuse (RFC 8551 §2.1). Test material only, for suites that check
//! the refusal. OpenSSL's `CMS_sign` always picks SHA-256 for these keys, so the
//! structure (RFC 5652 §5) is assembled here with signed attributes, as any client
//! writes them.

use openssl::hash::{MessageDigest, hash};
use openssl::pkey::{Id, PKey};
use openssl::sign::Signer;
use openssl::x509::X509;

use crate::compose::pkcs7_mime;
use crate::error::{CertError, Context};

/// id-signedData (1.2.840.113549.1.7.2).
const SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
/// id-data (1.2.840.113549.1.7.1).
const DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
/// id-sha1 (1.3.14.3.2.26).
const SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
/// rsaEncryption (1.2.840.113549.1.1.1).
const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// ecdsa-with-SHA1 (1.2.840.10045.4.1).
const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
/// id-contentType (1.2.840.113549.1.9.3).
const CONTENT_TYPE: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x03];
/// id-messageDigest (1.2.840.113549.1.9.4).
const MESSAGE_DIGEST: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x04];

/// Signs `entity` like [`crate::compose::sign`] (opaque SignedData, the signer's
/// certificate included), but with SHA-1 as digest (RSA or ECDSA key), returning an
/// `application/pkcs7-mime; smime-type=signed-data` entity.
pub fn sign(
    entity: &[u8],
    signer_cert_pem: &[u8],
    signer_key_pem: &[u8],
) -> Result<Vec<u8>, CertError> {
    let cert = X509::from_pem(signer_cert_pem).context("reading the signer certificate")?;
    let key = PKey::private_key_from_pem(signer_key_pem).context("reading the signer key")?;
    let signature_algorithm = match key.id() {
        Id::RSA => algorithm(RSA, true),
        Id::EC => algorithm(ECDSA_SHA1, false),
        other => {
            return Err(CertError::UnsupportedKey(format!(
                "a SHA-1 signature with a {other:?} key"
            )));
        }
    };
    let digest = hash(MessageDigest::sha1(), entity).context("hashing the content")?;
    // Two attributes, already in DER SET OF order (the shorter encoding first).
    let attributes = [
        tlv(0x30, &[oid(CONTENT_TYPE), tlv(0x31, &oid(DATA))].concat()),
        tlv(
            0x30,
            &[oid(MESSAGE_DIGEST), tlv(0x31, &tlv(0x04, &digest))].concat(),
        ),
    ]
    .concat();
    let mut signer = Signer::new(MessageDigest::sha1(), &key).context("preparing the signer")?;
    let signature = signer
        .sign_oneshot_to_vec(&tlv(0x31, &attributes))
        .context("signing")?;

    let serial = cert
        .serial_number()
        .to_bn()
        .context("reading the serial")?
        .to_vec();
    let issuer = cert.issuer_name().to_der().context("encoding the issuer")?;
    let signer_info = tlv(
        0x30,
        &[
            tlv(0x02, &[1]),
            tlv(0x30, &[issuer, unsigned_integer(&serial)].concat()),
            algorithm(SHA1, true),
            tlv(0xa0, &attributes),
            signature_algorithm,
            tlv(0x04, &signature),
        ]
        .concat(),
    );
    let signed_data = tlv(
        0x30,
        &[
            tlv(0x02, &[1]),
            tlv(0x31, &algorithm(SHA1, true)),
            tlv(0x30, &[oid(DATA), tlv(0xa0, &tlv(0x04, entity))].concat()),
            tlv(0xa0, &cert.to_der().context("encoding the certificate")?),
            tlv(0x31, &signer_info),
        ]
        .concat(),
    );
    let content_info = tlv(0x30, &[oid(SIGNED_DATA), tlv(0xa0, &signed_data)].concat());
    Ok(pkcs7_mime("signed-data", &content_info))
}

/// A DER tag-length-value.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// An OBJECT IDENTIFIER from its encoded arcs.
fn oid(arcs: &[u8]) -> Vec<u8> {
    tlv(0x06, arcs)
}

/// An AlgorithmIdentifier, with NULL parameters if `null`.
fn algorithm(arcs: &[u8], null: bool) -> Vec<u8> {
    let params: &[u8] = if null { &[0x05, 0x00] } else { &[] };
    tlv(0x30, &[oid(arcs), params.to_vec()].concat())
}

/// A non-negative INTEGER from its big-endian magnitude.
fn unsigned_integer(magnitude: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(magnitude.len() + 1);
    if magnitude.first().is_none_or(|&b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(magnitude);
    tlv(0x02, &content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devpki::{self, KeyKind, Profile};
    use openssl::cms::{CMSOptions, CmsContentInfo};

    #[test]
    fn der_lengths() {
        assert_eq!(tlv(0x04, &[7; 3]), [0x04, 3, 7, 7, 7]);
        assert_eq!(&tlv(0x04, &[0; 200])[..3], [0x04, 0x81, 200]);
        assert_eq!(&tlv(0x04, &[0; 300])[..4], [0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(unsigned_integer(&[0x80]), [0x02, 2, 0, 0x80]);
        assert_eq!(unsigned_integer(&[]), [0x02, 1, 0]);
    }

    /// OpenSSL reads what is made here and finds the signature valid, with SHA-1.
    #[test]
    fn openssl_verifies_the_sha1_signature() {
        let pki = devpki::generate("kvgate.test", "praxis@demo-practice.test").unwrap();
        let mut ec = Profile::practice("EC Practice", "ec@demo-practice.test");
        ec.key = KeyKind::BrainpoolP256r1;
        let ec = devpki::issue(&pki.ca, &ec).unwrap();
        let entity = b"Content-Type: text/plain\r\n\r\nBefund.\r\n";
        for signer in [&pki.practice, &ec] {
            let mime = sign(
                entity,
                signer.cert_pem.as_bytes(),
                signer.key_pem.as_bytes(),
            )
            .unwrap();
            let text = String::from_utf8(mime).unwrap();
            let body: String = text
                .split("\r\n\r\n")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .collect();
            let der = openssl::base64::decode_block(&body).unwrap();
            let mut cms = CmsContentInfo::from_der(&der).unwrap();
            let mut content = Vec::new();
            cms.verify(
                None,
                None,
                None,
                Some(&mut content),
                CMSOptions::NO_SIGNER_CERT_VERIFY,
            )
            .unwrap();
            assert_eq!(content, entity);
            assert!(text.contains("smime-type=signed-data"));
        }
    }
}
