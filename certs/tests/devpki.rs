//! The dev PKI checked by independent implementations: `openssl verify` with
//! purposes, rustls-webpki verification and a real mutual-TLS handshake.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kvgate_certs::devpki::{self, KeyKind, Profile};
use kvgate_certs::x509;
use openssl::pkey::PKey;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

const DOMAIN: &str = "kvgate.test";
const PRACTICE: &str = "praxis@demo-practice.test";

fn der(pem: &str) -> CertificateDer<'static> {
    let certs = x509::parse_pem_chain(pem.as_bytes()).unwrap();
    CertificateDer::from(certs[0].to_der().unwrap())
}

fn key(pem: &str) -> PrivateKeyDer<'static> {
    let key = PKey::private_key_from_pem(pem.as_bytes()).unwrap();
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        key.private_key_to_pkcs8().unwrap(),
    ))
}

#[test]
fn openssl_verify_accepts_purposes() {
    if !common::have("openssl") {
        return;
    }
    let pki = devpki::generate(DOMAIN, PRACTICE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::write(d, "ca.pem", &pki.ca.cert_pem);
    common::write(d, "gateway.pem", &pki.gateway.cert_pem);
    common::write(d, "practice.pem", &pki.practice.cert_pem);

    for (cert, purpose, ok) in [
        ("gateway.pem", "sslserver", true),
        ("gateway.pem", "smimeencrypt", true),
        ("gateway.pem", "sslclient", false),
        ("practice.pem", "sslclient", true),
        ("practice.pem", "smimesign", true),
        ("practice.pem", "smimeencrypt", true),
        ("practice.pem", "sslserver", false),
        ("ca.pem", "any", true),
    ] {
        let (success, output) = common::openssl_status(
            d,
            &["verify", "-CAfile", "ca.pem", "-purpose", purpose, cert],
        );
        assert_eq!(
            success, ok,
            "openssl verify -purpose {purpose} {cert}: {output}"
        );
    }

    // The certificate details, as OpenSSL prints them.
    let text = String::from_utf8(common::openssl(
        d,
        &["x509", "-in", "gateway.pem", "-noout", "-text"],
    ))
    .unwrap();
    for needle in [
        "Version: 3 (0x2)",
        "sha256WithRSAEncryption",
        "Public-Key: (2048 bit)",
        "DNS:localhost",
        "IP Address:127.0.0.1",
        "email:gateway@kvgate.test",
        "X509v3 Subject Key Identifier",
        "X509v3 Authority Key Identifier",
        "TLS Web Server Authentication, E-mail Protection",
        "Digital Signature, Key Encipherment",
    ] {
        assert!(
            text.contains(needle),
            "gateway certificate lacks {needle}:\n{text}"
        );
    }
    let text = String::from_utf8(common::openssl(
        d,
        &["x509", "-in", "ca.pem", "-noout", "-text"],
    ))
    .unwrap();
    assert!(text.contains("CA:TRUE"), "{text}");
    assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");
    assert!(text.contains("CN = kvgate development CA"), "{text}");
    let text = String::from_utf8(common::openssl(
        d,
        &["x509", "-in", "practice.pem", "-noout", "-text"],
    ))
    .unwrap();
    assert!(
        text.contains("Digital Signature, Non Repudiation, Key Encipherment"),
        "{text}"
    );
    assert!(
        text.contains("TLS Web Client Authentication, E-mail Protection"),
        "{text}"
    );
    assert!(text.contains("email:praxis@demo-practice.test"), "{text}");
}

#[test]
fn serials_are_random_positive_128_bit() {
    let pki = devpki::generate(DOMAIN, PRACTICE).unwrap();
    let mut serials = Vec::new();
    for pem in [
        &pki.ca.cert_pem,
        &pki.gateway.cert_pem,
        &pki.practice.cert_pem,
    ] {
        let cert = &x509::parse_pem_chain(pem.as_bytes()).unwrap()[0];
        let serial = cert.serial_number().to_bn().unwrap();
        assert!(!serial.is_negative());
        assert_eq!(serial.num_bits(), 128);
        serials.push(serial.to_vec());
    }
    serials.dedup();
    assert_eq!(serials.len(), 3);
}

#[test]
fn issue_rejects_a_bad_validity_and_a_foreign_key() {
    let pki = devpki::generate(DOMAIN, PRACTICE).unwrap();
    let mut profile = Profile::practice("P", "p@example.test");
    profile.not_after = profile.not_before - Duration::from_secs(1);
    assert!(matches!(
        devpki::issue(&pki.ca, &profile),
        Err(kvgate_certs::CertError::Validity(_))
    ));
    let wrong = devpki::Issued {
        cert_pem: pki.ca.cert_pem.clone(),
        key_pem: pki.gateway.key_pem.clone(),
    };
    let profile = Profile::practice("P", "p@example.test");
    assert!(matches!(
        devpki::issue(&wrong, &profile),
        Err(kvgate_certs::CertError::KeyMismatch { .. })
    ));
}

#[test]
fn webpki_accepts_gateway_as_server_and_practice_as_client() {
    let pki = devpki::generate(DOMAIN, PRACTICE).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(der(&pki.ca.cert_pem)).unwrap();
    let roots = Arc::new(roots);
    let now = UnixTime::now();

    let servers = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .unwrap();
    let gateway = der(&pki.gateway.cert_pem);
    for name in ["localhost", "127.0.0.1"] {
        let name = ServerName::try_from(name).unwrap();
        servers
            .verify_server_cert(&gateway, &[], &name, &[], now)
            .unwrap_or_else(|e| panic!("gateway as server for {name:?}: {e}"));
    }
    let other = ServerName::try_from("example.org").unwrap();
    assert!(
        servers
            .verify_server_cert(&gateway, &[], &other, &[], now)
            .is_err()
    );
    let practice = der(&pki.practice.cert_pem);
    let localhost = ServerName::try_from("localhost").unwrap();
    assert!(
        servers
            .verify_server_cert(&practice, &[], &localhost, &[], now)
            .is_err()
    );

    let clients = WebPkiClientVerifier::builder_with_provider(roots, provider)
        .build()
        .unwrap();
    clients.verify_client_cert(&practice, &[], now).unwrap();
    assert!(clients.verify_client_cert(&gateway, &[], now).is_err());

    // A practice certificate of another CA is refused.
    let stranger = devpki::generate(DOMAIN, "stranger@untrusted.test").unwrap();
    assert!(
        clients
            .verify_client_cert(&der(&stranger.practice.cert_pem), &[], now)
            .is_err()
    );

    // An expired one too.
    let mut profile = Profile::practice("Old Practice", "old@demo-practice.test");
    profile.not_before = SystemTime::now() - Duration::from_secs(3 * 86400);
    profile.not_after = SystemTime::now() - Duration::from_secs(86400);
    let expired = devpki::issue(&pki.ca, &profile).unwrap();
    assert!(
        clients
            .verify_client_cert(&der(&expired.cert_pem), &[], now)
            .is_err()
    );
}

#[test]
fn mutual_tls_handshake_with_rustls() {
    let pki = devpki::generate(DOMAIN, PRACTICE).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(der(&pki.ca.cert_pem)).unwrap();
    let roots = Arc::new(roots);

    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .unwrap();
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![der(&pki.gateway.cert_pem)], key(&pki.gateway.key_pem))
        .unwrap();
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![der(&pki.practice.cert_pem)],
            key(&pki.practice.key_pem),
        )
        .unwrap();

    let name = ServerName::try_from("localhost").unwrap();
    let mut client = ClientConnection::new(Arc::new(client), name).unwrap();
    let mut server = ServerConnection::new(Arc::new(server)).unwrap();
    for _ in 0..10 {
        let mut wire = Vec::new();
        client.write_tls(&mut wire).unwrap();
        server.read_tls(&mut wire.as_slice()).unwrap();
        server.process_new_packets().unwrap();
        wire.clear();
        server.write_tls(&mut wire).unwrap();
        client.read_tls(&mut wire.as_slice()).unwrap();
        client.process_new_packets().unwrap();
        if !client.is_handshaking() && !server.is_handshaking() {
            break;
        }
    }
    assert!(!client.is_handshaking() && !server.is_handshaking());
    let peer = server.peer_certificates().unwrap();
    assert_eq!(
        x509::fingerprint_der(&peer[0]),
        x509::fingerprint(&x509::parse_pem_chain(pki.practice.cert_pem.as_bytes()).unwrap()[0])
            .unwrap()
    );
}

#[test]
fn ecc_keys_and_a_crl_as_openssl_reads_them() {
    if !common::have("openssl") {
        return;
    }
    let pki = devpki::generate(DOMAIN, PRACTICE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::write(d, "ca.pem", &pki.ca.cert_pem);
    for (kind, curve) in [
        (KeyKind::EcP256, "prime256v1"),
        (KeyKind::BrainpoolP256r1, "brainpoolP256r1"),
    ] {
        let mut profile = Profile::practice("ECC Practice", "ecc@demo-practice.test");
        profile.key = kind;
        let issued = devpki::issue(&pki.ca, &profile).unwrap();
        let cert = common::write(d, &format!("{curve}.pem"), &issued.cert_pem);
        let text = String::from_utf8(common::openssl(
            d,
            &["x509", "-noout", "-text", "-in", cert.to_str().unwrap()],
        ))
        .unwrap();
        assert!(text.contains(&format!("ASN1 OID: {curve}")), "{text}");
        assert!(text.contains("Key Agreement"), "{text}");
        assert!(!text.contains("Key Encipherment"), "{text}");
        let (ok, output) = common::openssl_status(
            d,
            &[
                "verify",
                "-CAfile",
                "ca.pem",
                "-purpose",
                "smimesign",
                &format!("{curve}.pem"),
            ],
        );
        assert!(ok, "{curve}: {output}");
        let key = PKey::private_key_from_pem(issued.key_pem.as_bytes()).unwrap();
        assert_eq!(key.id(), openssl::pkey::Id::EC);
    }

    // The CRL revokes exactly the one certificate named, and verifies under the CA.
    let revoked = devpki::issue(
        &pki.ca,
        &Profile::practice("Revoked", "r@demo-practice.test"),
    )
    .unwrap();
    let crl = devpki::crl(&pki.ca, &[&revoked.cert_pem], Duration::from_secs(86400)).unwrap();
    common::write(d, "ca.crl", &crl);
    common::write(d, "revoked.pem", &revoked.cert_pem);
    common::write(d, "practice.pem", &pki.practice.cert_pem);
    for (cert, valid) in [("revoked.pem", false), ("practice.pem", true)] {
        let (ok, output) = common::openssl_status(
            d,
            &[
                "verify",
                "-crl_check",
                "-CAfile",
                "ca.pem",
                "-CRLfile",
                "ca.crl",
                cert,
            ],
        );
        assert_eq!(ok, valid, "{cert}: {output}");
        if !valid {
            assert!(output.contains("certificate revoked"), "{output}");
        }
    }
}
