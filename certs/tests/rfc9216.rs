//! `smime::unwrap` on the CMS examples built with the RFC 9216 LAMPS sample
//! certificates (draft-ireland-examples-cms, in `../shared/testdata/rfc9216-cms`):
//! objects made by an implementation other than OpenSSL.

mod common;

use std::path::PathBuf;
use std::time::SystemTime;

use kvgate_certs::smime::{self, DecryptionKey, TrustAnchors, UnwrapError, Unwrapped};
use kvgate_certs::x509;

const CONTENT: &[u8] = b"This is some sample content.";

/// The test vector folder, or `None` (with a note) where it is absent.
fn vectors() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/rfc9216-cms");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIPPED: {} is missing", dir.display());
        None
    }
}

fn read(dir: &std::path::Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

/// Unwraps the DER object `name` as a base64 `application/pkcs7-mime` entity,
/// decrypting with Bob's key and trusting the LAMPS RSA CA.
fn unwrap(dir: &std::path::Path, name: &str) -> Result<Unwrapped, UnwrapError> {
    let der = read(dir, &format!("binary-files/{name}.p7m"));
    let mut entity = b"Content-Type: application/pkcs7-mime; name=smime.p7m\r\n\
Content-Transfer-Encoding: base64\r\n\r\n"
        .to_vec();
    for line in openssl::base64::encode_block(&der).as_bytes().chunks(76) {
        entity.extend_from_slice(line);
        entity.extend_from_slice(b"\r\n");
    }
    let bob = DecryptionKey::from_pem(
        &read(dir, "certs-and-keys/lamps-bob.encrypt.crt"),
        &read(dir, "certs-and-keys/lamps-bob.decrypt.p8.pem"),
    )
    .unwrap();
    let ca = x509::parse_pem_chain(&read(dir, "certs-and-keys/lamps-ca.rsa.crt")).unwrap();
    let anchors = TrustAnchors::new(&ca).unwrap();
    smime::unwrap(&entity, &[bob], &anchors, SystemTime::now())
}

#[test]
fn rsa_and_rsa_pss_signatures_of_alice_verify() {
    let Some(dir) = vectors() else { return };
    for (name, algorithm) in [
        ("signedByAliceRSA", "rsaEncryption"),
        ("signedByAliceRSAPSS", "RSASSA-PSS"),
    ] {
        let unwrapped = unwrap(&dir, name).unwrap();
        assert_eq!(*unwrapped.content, CONTENT, "{name}");
        assert!(!unwrapped.encrypted);
        let signer = unwrapped.signer.unwrap();
        assert_eq!(signer.subject, "O=IETF, OU=LAMPS WG, CN=Alice Lovelace");
        assert_eq!(signer.emails, ["alice@smime.example"]);
        assert_eq!(signer.signature_algorithm, algorithm, "{name}");
    }
}

#[test]
fn rsa_oaep_enveloped_data_for_bob_decrypts() {
    let Some(dir) = vectors() else { return };
    // OAEP to Bob alone, and to Bob (RSA) and Dana (X25519) together.
    for name in ["encryptedForBobRSAOaep", "encryptedForBobAndDana"] {
        let unwrapped = unwrap(&dir, name).unwrap();
        assert_eq!(*unwrapped.content, CONTENT, "{name}");
        assert!(unwrapped.encrypted);
        assert!(unwrapped.signer.is_none());
    }
}

#[test]
fn what_the_gateway_cannot_read_is_refused_with_a_reason() {
    let Some(dir) = vectors() else { return };
    // ChaCha20-Poly1305 (RFC 8103) for Bob: addressed to the gateway's key,
    // but OpenSSL does not know the cipher in CMS.
    assert_eq!(
        common::reason(unwrap(&dir, "authEnvelopedForBobChaCha20Poly1305")),
        "decryption-failed"
    );
    // A key-encryption-key recipient, not the gateway's certificate.
    assert_eq!(
        common::reason(unwrap(&dir, "encryptedKekri")),
        "not-for-gateway"
    );
    // Signatures without certificates: the signer cannot be identified.
    assert_eq!(
        common::reason(unwrap(&dir, "signedByAliceAndCarlosNoCerts")),
        "untrusted-signer"
    );
    // Ed25519: the signature verifies (that is checked first), but the
    // Ed25519 sample CA is not among the vectors, so the chain does not.
    let Err(UnwrapError::UntrustedSigner { subject, detail }) =
        unwrap(&dir, "signedByCarlosEd25519")
    else {
        panic!("Carlos's chain cannot be built");
    };
    assert_eq!(subject, "O=IETF, OU=LAMPS WG, CN=Carlos Turing");
    assert!(
        detail.starts_with("unable to get local issuer certificate"),
        "{detail}"
    );
    // A detached signature sent as if it carried its content.
    assert_eq!(
        common::reason(unwrap(&dir, "signedByCarlosDetached")),
        "malformed"
    );
}
