//! `smime::unwrap` on letters made by the `openssl` command-line tool (an
//! independent S/MIME implementation, as a practice system would use), and on
//! letters made by `compose`, checked by the same tool.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use kvgate_certs::devpki::{self, DevPki, Profile};
use kvgate_certs::smime::{self, DecryptionKey, TrustAnchors, UnwrapError, Unwrapped};
use kvgate_certs::{compose, x509};
use tempfile::TempDir;

const LETTER: &str = "From: Praxis Dr. Demo <praxis@demo-practice.test>\n\
To: <A123456780@smarthealth.kvgate.test>\n\
Subject: Befund vom 1. April\n\
MIME-Version: 1.0\n\
Content-Type: text/plain; charset=utf-8\n\
Content-Transfer-Encoding: 8bit\n\
\n\
Sehr geehrte Frau Muster,\n\
anbei Ihr Befund: alles in Ordnung.\n\
\n\
Mit freundlichen Gr\u{fc}\u{df}en\n";

struct Fixture {
    dir: TempDir,
    pki: DevPki,
    keys: Vec<DecryptionKey>,
    anchors: TrustAnchors,
}

impl Fixture {
    fn new() -> Fixture {
        let pki = devpki::generate("kvgate.test", "praxis@demo-practice.test").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        common::write(d, "ca.pem", &pki.ca.cert_pem);
        common::write(d, "ca.key.pem", pki.ca.key_pem.as_bytes());
        common::write(d, "gateway.pem", &pki.gateway.cert_pem);
        common::write(d, "gateway.key", pki.gateway.key_pem.as_bytes());
        common::write(d, "practice.pem", &pki.practice.cert_pem);
        common::write(d, "practice.key", pki.practice.key_pem.as_bytes());
        common::write(d, "letter.eml", LETTER);
        let keys = vec![
            DecryptionKey::from_pem(
                pki.gateway.cert_pem.as_bytes(),
                pki.gateway.key_pem.as_bytes(),
            )
            .unwrap(),
        ];
        let anchors =
            TrustAnchors::new(&x509::parse_pem_chain(pki.ca.cert_pem.as_bytes()).unwrap()).unwrap();
        Fixture {
            dir,
            pki,
            keys,
            anchors,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `openssl cms` with `args`, reading and writing files in the fixture's directory.
    fn cms(&self, args: &[&str]) -> Vec<u8> {
        let mut all = vec!["cms"];
        all.extend_from_slice(args);
        common::openssl(self.path(), &all)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path().join(name)).unwrap()
    }

    fn unwrap_file(&self, name: &str) -> Result<Unwrapped, UnwrapError> {
        smime::unwrap(
            &self.read(name),
            &self.keys,
            &self.anchors,
            SystemTime::now(),
        )
    }

    fn practice_fingerprint(&self) -> String {
        fingerprint(&self.pki.practice.cert_pem)
    }

    /// Asserts a correctly signed and encrypted letter.
    fn assert_letter(&self, unwrapped: &Unwrapped, encrypted: bool) {
        assert_eq!(common::lf(&unwrapped.content), LETTER.as_bytes());
        let signer = unwrapped.signer.as_ref().expect("a signer");
        assert_eq!(signer.fingerprint, self.practice_fingerprint());
        assert_eq!(signer.subject, "CN=Demo Practice, O=demo-practice.test");
        assert_eq!(x509::fingerprint_der(&signer.cert_der), signer.fingerprint);
        assert_eq!(unwrapped.encrypted, encrypted);
    }
}

fn fingerprint(pem: &str) -> String {
    x509::fingerprint(&x509::parse_pem_chain(pem.as_bytes()).unwrap()[0]).unwrap()
}

#[test]
fn detached_signature_then_encryption() {
    if !common::have("openssl") {
        return;
    }
    let f = Fixture::new();
    f.cms(&[
        "-sign",
        "-signer",
        "practice.pem",
        "-inkey",
        "practice.key",
        "-in",
        "letter.eml",
        "-out",
        "signed.eml",
    ]);
    assert!(String::from_utf8_lossy(&f.read("signed.eml")).contains("multipart/signed"));
    f.cms(&[
        "-encrypt",
        "-aes256",
        "-in",
        "signed.eml",
        "-out",
        "letter.p7m",
        "gateway.pem",
    ]);
    let unwrapped = f.unwrap_file("letter.p7m").unwrap();
    f.assert_letter(&unwrapped, true);
}

#[test]
fn opaque_signature_then_encryption() {
    if !common::have("openssl") {
        return;
    }
    let f = Fixture::new();
    f.cms(&[
        "-sign",
        "-nodetach",
        "-signer",
        "practice.pem",
        "-inkey",
        "practice.key",
        "-in",
        "letter.eml",
        "-out",
        "signed.eml",
    ]);
    assert!(String::from_utf8_lossy(&f.read("signed.eml")).contains("smime-type=signed-data"));
    f.cms(&[
        "-encrypt",
        "-aes256",
        "-in",
        "signed.eml",
        "-out",
        "letter.p7m",
        "gateway.pem",
    ]);
    let unwrapped = f.unwrap_file("letter.p7m").unwrap();
    f.assert_letter(&unwrapped, true);
}

#[test]
fn encryption_then_signature() {
    if !common::have("openssl") {
        return;
    }
    let f = Fixture::new();
    f.cms(&[
        "-encrypt",
        "-aes256",
        "-in",
        "letter.eml",
        "-out",
        "enc.eml",
        "gateway.pem",
    ]);
    f.cms(&[
        "-sign",
        "-signer",
        "practice.pem",
        "-inkey",
        "practice.key",
        "-in",
        "enc.eml",
        "-out",
        "letter.eml.signed",
    ]);
    let unwrapped = f.unwrap_file("letter.eml.signed").unwrap();
    f.assert_letter(&unwrapped, true);

    f.cms(&[
        "-sign",
        "-nodetach",
        "-signer",
        "practice.pem",
        "-inkey",
        "practice.key",
        "-in",
        "enc.eml",
        "-out",
        "opaque.eml",
    ]);
    let unwrapped = f.unwrap_file("opaque.eml").unwrap();
    f.assert_letter(&unwrapped, true);
}

#[test]
fn aes_gcm_auth_enveloped_data() {
    if !common::have("openssl") {
        return;
    }
    let f = Fixture::new();
    f.cms(&[
        "-sign",
        "-signer",
        "practice.pem",
        "-inkey",
        "practice.key",
        "-in",
        "letter.eml",
        "-out",
        "signed.eml",
    ]);
    f.cms(&[
        "-encrypt",
        "-aes-256-gcm",
        "-in",
        "signed.eml",
        "-out",
        "letter.p7m",
        "gateway.pem",
    ]);
    assert!(String::from_utf8_lossy(&f.read("letter.p7m")).contains("authEnveloped-data"));
    let unwrapped = f.unwrap_file("letter.p7m").unwrap();
    f.assert_letter(&unwrapped, true);
}

#[test]
fn whole_rfc5322_message_with_lf_line_ends() {
    if !common::have("openssl") {
        return;
    }
    let f = Fixture::new();
    f.cms(&[
        "-sign",
        "-signer",
        "practice.pem",
        "-inkey",
        "practice.key",
        "-in",
        "letter.eml",
        "-out",
        "signed.eml",
    ]);
    f.cms(&[
        "-encrypt",
        "-aes256",
        "-in",
        "signed.eml",
        "-out",
        "letter.p7m",
        "gateway.pem",
    ]);
    let mut message = b"Received: from pvs.demo-practice.test\r\n\tby kvgate.test; Tue, 1 Apr 2025 10:00:00 +0200\r\n\
From: <praxis@demo-practice.test>\r\nTo: <A123456780@smarthealth.kvgate.test>\r\nSubject: [...]\r\n\
Message-ID: <1@demo-practice.test>\r\n"
        .to_vec();
    message.extend_from_slice(&f.read("letter.p7m"));
    let unwrapped = smime::unwrap(&message, &f.keys, &f.anchors, SystemTime::now()).unwrap();
    f.assert_letter(&unwrapped, true);
    let unwrapped = smime::unwrap(
        &common::lf(&message),
        &f.keys,
        &f.anchors,
        SystemTime::now(),
    )
    .unwrap();
    f.assert_letter(&unwrapped, true);

    // A detached signature stored with LF line ends still verifies: the signed
    // part is canonicalised to CRLF as S/MIME requires.
    let signed = common::lf(&f.read("signed.eml"));
    let unwrapped = smime::unwrap(&signed, &f.keys, &f.anchors, SystemTime::now()).unwrap();
    f.assert_letter(&unwrapped, false);
}

#[test]
fn signed_only_is_not_encrypted() {
    if !common::have("openssl") {
        return;
    }
    let f = Fixture::new();
    f.cms(&[
        "-sign",
        "-signer",
        "practice.pem",
        "-inkey",
        "practice.key",
        "-in",
        "letter.eml",
        "-out",
        "signed.eml",
    ]);
    let unwrapped = f.unwrap_file("signed.eml").unwrap();
    f.assert_letter(&unwrapped, false);
}

#[test]
fn encrypted_but_unsigned_has_no_signer() {
    if !common::have("openssl") {
        return;
    }
    let f = Fixture::new();
    f.cms(&[
        "-encrypt",
        "-aes256",
        "-in",
        "letter.eml",
        "-out",
        "letter.p7m",
        "gateway.pem",
    ]);
    let unwrapped = f.unwrap_file("letter.p7m").unwrap();
    assert_eq!(common::lf(&unwrapped.content), LETTER.as_bytes());
    assert!(unwrapped.signer.is_none());
    assert!(unwrapped.encrypted);
}

#[test]
fn encrypted_to_another_certificate_is_not_for_gateway() {
    if !common::have("openssl") {
        return;
    }
    let f = Fixture::new();
    f.cms(&[
        "-sign",
        "-signer",
        "practice.pem",
        "-inkey",
        "practice.key",
        "-in",
        "letter.eml",
        "-out",
        "signed.eml",
    ]);
    // Encrypted to the practice's own certificate instead of the gateway's.
    f.cms(&[
        "-encrypt",
        "-aes256",
        "-in",
        "signed.eml",
        "-out",
        "letter.p7m",
        "practice.pem",
    ]);
    assert_eq!(
        common::reason(f.unwrap_file("letter.p7m")),
        "not-for-gateway"
    );
    // No keys at all.
    let message = f.read("letter.p7m");
    assert_eq!(
        common::reason(smime::unwrap(&message, &[], &f.anchors, SystemTime::now())),
        "not-for-gateway"
    );
    // With the right key among several, it opens.
    let practice_key = DecryptionKey::from_pem(
        f.pki.practice.cert_pem.as_bytes(),
        f.pki.practice.key_pem.as_bytes(),
    )
    .unwrap();
    let gateway_key = DecryptionKey::from_pem(
        f.pki.gateway.cert_pem.as_bytes(),
        f.pki.gateway.key_pem.as_bytes(),
    )
    .unwrap();
    let unwrapped = smime::unwrap(
        &message,
        &[gateway_key, practice_key],
        &f.anchors,
        SystemTime::now(),
    )
    .unwrap();
    f.assert_letter(&unwrapped, true);
}

#[test]
fn signer_of_an_untrusted_ca_is_refused() {
    if !common::have("openssl") {
        return;
    }
    let f = Fixture::new();
    let stranger = devpki::generate("untrusted.test", "praxis@demo-practice.test").unwrap();
    common::write(f.path(), "stranger.pem", &stranger.practice.cert_pem);
    common::write(
        f.path(),
        "stranger.key",
        stranger.practice.key_pem.as_bytes(),
    );
    for detach in [true, false] {
        let mut args = vec![
            "-sign",
            "-signer",
            "stranger.pem",
            "-inkey",
            "stranger.key",
            "-in",
            "letter.eml",
            "-out",
            "signed.eml",
        ];
        if !detach {
            args.push("-nodetach");
        }
        f.cms(&args);
        f.cms(&[
            "-encrypt",
            "-aes256",
            "-in",
            "signed.eml",
            "-out",
            "letter.p7m",
            "gateway.pem",
        ]);
        assert_eq!(
            common::reason(f.unwrap_file("letter.p7m")),
            "untrusted-signer"
        );
    }
    // Trusting the stranger's CA as well makes it verify.
    let mut anchors = x509::parse_pem_chain(f.pki.ca.cert_pem.as_bytes()).unwrap();
    anchors.extend(x509::parse_pem_chain(stranger.ca.cert_pem.as_bytes()).unwrap());
    let anchors = TrustAnchors::new(&anchors).unwrap();
    let unwrapped =
        smime::unwrap(&f.read("letter.p7m"), &f.keys, &anchors, SystemTime::now()).unwrap();
    assert_eq!(
        unwrapped.signer.unwrap().fingerprint,
        fingerprint(&stranger.practice.cert_pem)
    );
}

#[test]
fn tampered_content_is_a_bad_signature() {
    if !common::have("openssl") {
        return;
    }
    let f = Fixture::new();
    f.cms(&[
        "-sign",
        "-signer",
        "practice.pem",
        "-inkey",
        "practice.key",
        "-in",
        "letter.eml",
        "-out",
        "signed.eml",
    ]);
    let signed = String::from_utf8(f.read("signed.eml")).unwrap();
    assert!(signed.contains("alles in Ordnung"));
    let tampered = signed.replace("alles in Ordnung", "alles in Unordnung");
    assert_eq!(
        common::reason(smime::unwrap(
            tampered.as_bytes(),
            &f.keys,
            &f.anchors,
            SystemTime::now()
        )),
        "bad-signature"
    );
    // Also when the tampered letter is then encrypted to the gateway.
    common::write(f.path(), "tampered.eml", &tampered);
    f.cms(&[
        "-encrypt",
        "-aes256",
        "-in",
        "tampered.eml",
        "-out",
        "letter.p7m",
        "gateway.pem",
    ]);
    assert_eq!(common::reason(f.unwrap_file("letter.p7m")), "bad-signature");
}

#[test]
fn a_wrong_authentication_tag_fails_decryption() {
    if !common::have("openssl") {
        return;
    }
    let f = Fixture::new();
    f.cms(&[
        "-encrypt",
        "-aes-256-gcm",
        "-outform",
        "DER",
        "-in",
        "letter.eml",
        "-out",
        "letter.der",
        "gateway.pem",
    ]);
    let entity = |der: &[u8]| {
        format!(
            "Content-Type: application/pkcs7-mime; smime-type=authEnveloped-data; name=smime.p7m\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            openssl::base64::encode_block(der)
        )
    };
    let mut der = f.read("letter.der");
    let intact = smime::unwrap(
        entity(&der).as_bytes(),
        &f.keys,
        &f.anchors,
        SystemTime::now(),
    )
    .unwrap();
    assert!(intact.encrypted);
    assert_eq!(common::lf(&intact.content), LETTER.as_bytes());
    // The MAC is the structure's last field: its last octet is the tag's.
    let last = der.len() - 1;
    der[last] ^= 1;
    assert_eq!(
        common::reason(smime::unwrap(
            entity(&der).as_bytes(),
            &f.keys,
            &f.anchors,
            SystemTime::now()
        )),
        "decryption-failed"
    );
}

#[test]
fn expired_signer_is_refused() {
    if !common::have("openssl") {
        return;
    }
    let f = Fixture::new();
    let mut profile = Profile::practice("Old Practice", "old@demo-practice.test");
    // Expired ten minutes ago (the CA itself is valid from an hour ago).
    profile.not_before = SystemTime::now() - Duration::from_secs(400 * 86400);
    profile.not_after = SystemTime::now() - Duration::from_secs(600);
    let expired = devpki::issue(&f.pki.ca, &profile).unwrap();
    common::write(f.path(), "old.pem", &expired.cert_pem);
    common::write(f.path(), "old.key", expired.key_pem.as_bytes());
    f.cms(&[
        "-sign",
        "-signer",
        "old.pem",
        "-inkey",
        "old.key",
        "-in",
        "letter.eml",
        "-out",
        "signed.eml",
    ]);
    f.cms(&[
        "-encrypt",
        "-aes256",
        "-in",
        "signed.eml",
        "-out",
        "letter.p7m",
        "gateway.pem",
    ]);
    assert_eq!(
        common::reason(f.unwrap_file("letter.p7m")),
        "signer-expired"
    );

    // Verification time `at`: the same letter verified while the certificate was valid.
    let message = f.read("letter.p7m");
    let then = SystemTime::now() - Duration::from_secs(1800);
    let unwrapped = smime::unwrap(&message, &f.keys, &f.anchors, then).unwrap();
    assert_eq!(
        unwrapped.signer.unwrap().fingerprint,
        fingerprint(&expired.cert_pem)
    );

    // A valid practice letter checked before its certificate existed, or after it ended.
    f.cms(&[
        "-sign",
        "-signer",
        "practice.pem",
        "-inkey",
        "practice.key",
        "-in",
        "letter.eml",
        "-out",
        "good.eml",
    ]);
    let good = f.read("good.eml");
    for at in [
        SystemTime::now() - Duration::from_secs(86400),
        SystemTime::now() + Duration::from_secs(3 * 365 * 86400),
    ] {
        assert_eq!(
            common::reason(smime::unwrap(&good, &f.keys, &f.anchors, at)),
            "signer-expired"
        );
    }
}

#[test]
fn sha1_signature_is_weak() {
    if !common::have("openssl") {
        return;
    }
    let f = Fixture::new();
    for detach in [true, false] {
        let mut args = vec![
            "-sign",
            "-md",
            "sha1",
            "-signer",
            "practice.pem",
            "-inkey",
            "practice.key",
            "-in",
            "letter.eml",
            "-out",
            "signed.eml",
        ];
        if !detach {
            args.push("-nodetach");
        }
        f.cms(&args);
        f.cms(&[
            "-encrypt",
            "-aes256",
            "-in",
            "signed.eml",
            "-out",
            "letter.p7m",
            "gateway.pem",
        ]);
        assert_eq!(
            common::reason(f.unwrap_file("letter.p7m")),
            "weak-algorithm"
        );
    }
}

#[test]
fn plain_mail_is_not_smime() {
    assert_eq!(
        common::reason(smime::unwrap(
            LETTER.as_bytes(),
            &[],
            &TrustAnchors::new(&[]).unwrap(),
            SystemTime::now()
        )),
        "not-smime"
    );
    let multipart = b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\nhi\r\n--x--\r\n";
    assert_eq!(
        common::reason(smime::unwrap(
            multipart,
            &[],
            &TrustAnchors::new(&[]).unwrap(),
            SystemTime::now()
        )),
        "not-smime"
    );
}

#[test]
fn garbage_is_malformed() {
    let anchors = TrustAnchors::new(&[]).unwrap();
    let now = SystemTime::now();
    let cases: [&[u8]; 4] = [
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\n%%%not base64%%%\r\n",
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\nMIIBAAAA\r\n",
        b"Content-Type: application/x-pkcs7-mime\r\n\r\n",
        b"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=b\r\n\r\n--b\r\n\r\nhello\r\n--b\r\nContent-Type: application/pkcs7-signature\r\n\r\nAAAA\r\n--b--\r\n",
    ];
    for case in cases {
        assert_eq!(
            common::reason(smime::unwrap(case, &[], &anchors, now)),
            "malformed"
        );
    }
}

#[test]
fn more_than_four_layers_is_too_deep() {
    if !common::have("openssl") {
        return;
    }
    let f = Fixture::new();
    let mut input = "letter.eml".to_owned();
    for layer in 1..=5 {
        let output = format!("layer{layer}.eml");
        f.cms(&[
            "-encrypt",
            "-aes256",
            "-in",
            &input,
            "-out",
            &output,
            "gateway.pem",
        ]);
        if layer == 4 {
            let unwrapped = f.unwrap_file(&output).unwrap();
            assert_eq!(common::lf(&unwrapped.content), LETTER.as_bytes());
        }
        input = output;
    }
    assert_eq!(common::reason(f.unwrap_file(&input)), "too-deep");
}

#[test]
fn composed_letters_unwrap_and_satisfy_openssl() {
    if !common::have("openssl") {
        return;
    }
    let f = Fixture::new();
    let letter = LETTER.replace('\n', "\r\n");
    let signed = compose::sign(
        letter.as_bytes(),
        f.pki.practice.cert_pem.as_bytes(),
        f.pki.practice.key_pem.as_bytes(),
    )
    .unwrap();
    let encrypted = compose::encrypt(&signed, f.pki.gateway.cert_pem.as_bytes()).unwrap();
    let unwrapped = smime::unwrap(&encrypted, &f.keys, &f.anchors, SystemTime::now()).unwrap();
    assert_eq!(unwrapped.content.as_slice(), letter.as_bytes());
    f.assert_letter(&unwrapped, true);

    // OpenSSL opens and verifies the same letter.
    common::write(f.path(), "composed.p7m", &encrypted);
    f.cms(&[
        "-decrypt",
        "-recip",
        "gateway.pem",
        "-inkey",
        "gateway.key",
        "-in",
        "composed.p7m",
        "-out",
        "composed-signed.eml",
    ]);
    let content = f.cms(&[
        "-verify",
        "-CAfile",
        "ca.pem",
        "-purpose",
        "smimesign",
        "-in",
        "composed-signed.eml",
    ]);
    assert_eq!(common::lf(&content), LETTER.as_bytes());
}

#[test]
fn decryption_key_must_match_its_certificate() {
    let pki = devpki::generate("kvgate.test", "praxis@demo-practice.test").unwrap();
    let mismatch = DecryptionKey::from_pem(
        pki.gateway.cert_pem.as_bytes(),
        pki.practice.key_pem.as_bytes(),
    );
    assert!(matches!(
        mismatch,
        Err(kvgate_certs::CertError::KeyMismatch { .. })
    ));
    assert!(DecryptionKey::from_pem(b"junk", pki.gateway.key_pem.as_bytes()).is_err());
}

#[test]
fn intermediates_are_taken_from_the_message() {
    if !common::have("openssl") {
        return;
    }
    let f = Fixture::new();
    let d = f.path();
    common::write(
        d,
        "inter.ext",
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
    );
    common::write(
        d,
        "leaf.ext",
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,nonRepudiation\n\
         extendedKeyUsage=emailProtection\nsubjectAltName=email:leaf@demo-practice.test\n",
    );
    let openssl = |args: &[&str]| common::openssl(d, args);
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "inter.key",
        "-subj",
        "/CN=Intermediate",
        "-out",
        "inter.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "inter.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key.pem",
        "-CAcreateserial",
        "-days",
        "30",
        "-sha256",
        "-extfile",
        "inter.ext",
        "-out",
        "inter.pem",
    ]);
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "leaf.key",
        "-subj",
        "/CN=Leaf Practice",
        "-out",
        "leaf.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "inter.pem",
        "-CAkey",
        "inter.key",
        "-CAcreateserial",
        "-days",
        "30",
        "-sha256",
        "-extfile",
        "leaf.ext",
        "-out",
        "leaf.pem",
    ]);

    f.cms(&[
        "-sign",
        "-signer",
        "leaf.pem",
        "-inkey",
        "leaf.key",
        "-certfile",
        "inter.pem",
        "-in",
        "letter.eml",
        "-out",
        "signed.eml",
    ]);
    f.cms(&[
        "-encrypt",
        "-aes256",
        "-in",
        "signed.eml",
        "-out",
        "letter.p7m",
        "gateway.pem",
    ]);
    let unwrapped = f.unwrap_file("letter.p7m").unwrap();
    assert_eq!(unwrapped.signer.unwrap().subject, "CN=Leaf Practice");

    // Without the intermediate in the message the chain cannot be built.
    f.cms(&[
        "-sign",
        "-signer",
        "leaf.pem",
        "-inkey",
        "leaf.key",
        "-in",
        "letter.eml",
        "-out",
        "alone.eml",
    ]);
    assert_eq!(
        common::reason(f.unwrap_file("alone.eml")),
        "untrusted-signer"
    );
}

#[test]
fn non_utf8_bytes_in_openssl_errors_are_malformed_not_a_panic() {
    // Found by fuzzing (fuzz/unwrap_cms): OpenSSL's MIME parser quotes the bad
    // content type in its error data, which the `openssl` crate cannot turn
    // into a `str` without panicking.
    let message =
        b"Content-Type:multipart/signed;boundary=\"179\";protocol=application/pkcs7-signature\n\
\n--179\n\n--179\nContent-Type:\xb8\n--179--\n";
    let f = Fixture::new();
    assert_eq!(
        common::reason(smime::unwrap(
            message,
            &f.keys,
            &f.anchors,
            SystemTime::now()
        )),
        "malformed"
    );
}
