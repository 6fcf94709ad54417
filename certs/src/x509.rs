//! Small X.509 helpers: PEM chains, SHA-256 fingerprints, readable subjects.

use std::fmt::Write as _;

use openssl::x509::{X509, X509NameRef, X509Ref};

use crate::error::{CertError, Context};

/// Parses every certificate of a PEM bundle, in order. Input without any
/// certificate gives an empty list.
pub fn parse_pem_chain(pem: &[u8]) -> Result<Vec<X509>, CertError> {
    X509::stack_from_pem(pem).context("parsing PEM certificates")
}

/// Lowercase hex SHA-256 of the certificate's DER, without colons.
pub fn fingerprint(cert: &X509Ref) -> Result<String, CertError> {
    let der = cert.to_der().context("encoding the certificate")?;
    Ok(fingerprint_der(&der))
}

/// Lowercase hex SHA-256 of a DER certificate, without colons.
pub fn fingerprint_der(der: &[u8]) -> String {
    let digest = openssl::sha::sha256(der);
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// The serial number in uppercase hex, e.g. `1A2B`.
pub fn serial_hex(cert: &X509Ref) -> Result<String, CertError> {
    let serial = cert
        .serial_number()
        .to_bn()
        .and_then(|bn| bn.to_hex_str().map(|hex| hex.to_string()));
    serial.context("reading the serial number")
}

/// The subject as one readable line, e.g. `CN=Demo Practice, O=demo-practice.test`.
pub fn subject_line(cert: &X509Ref) -> String {
    name_line(cert.subject_name())
}

/// A distinguished name as one readable line, e.g. `CN=Demo CA, O=Demo`.
pub fn name_line(name: &X509NameRef) -> String {
    let mut parts = Vec::new();
    for entry in name.entries() {
        let nid = entry.object().nid();
        let label = nid
            .short_name()
            .map_or_else(|_| entry.object().to_string(), str::to_owned);
        let value = entry
            .data()
            .to_string()
            .unwrap_or_else(|_| String::from_utf8_lossy(entry.data().as_slice()).into_owned());
        parts.push(format!("{label}={value}"));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devpki;

    #[test]
    fn fingerprint_matches_openssl_sha256() {
        let pki = devpki::generate("kvgate.test", "praxis@demo-practice.test").unwrap();
        let mut bundle = pki.practice.cert_pem.clone();
        bundle.push_str(&pki.ca.cert_pem);
        let chain = parse_pem_chain(bundle.as_bytes()).unwrap();
        assert_eq!(chain.len(), 2);
        let fp = fingerprint(&chain[0]).unwrap();
        assert_eq!(fp.len(), 64);
        assert!(
            fp.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        let digest = openssl::hash::hash(
            openssl::hash::MessageDigest::sha256(),
            &chain[0].to_der().unwrap(),
        )
        .unwrap();
        let expected: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(fp, expected);
        assert_eq!(
            subject_line(&chain[0]),
            "CN=Demo Practice, O=demo-practice.test"
        );
        assert_eq!(
            subject_line(&chain[1]),
            "CN=kvgate development CA, O=kvgate development"
        );
        assert!(parse_pem_chain(b"").unwrap().is_empty());
    }
}
