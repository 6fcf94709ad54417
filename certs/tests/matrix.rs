//! The S/MIME matrix of issue 4, every cell made by the `openssl` command-line
//! tool (an independent implementation): key transport and key agreement with
//! every content cipher, several gateway keys at once, every signature algorithm
//! opaque and detached, nesting, and path validation.

mod common;

use std::time::{Duration, SystemTime};

use common::der::Tlv;
use common::pki::{Publish, TestPki};
use kvgate_certs::revocation::RevocationStatus;
use kvgate_certs::smime::{self, DecryptionKey, TrustAnchors, UnwrapError, Unwrapped};
use kvgate_certs::x509;

const LETTER: &str = "From: Praxis Dr. Demo <praxis@demo-practice.test>\n\
To: <A123456780@smarthealth.kvgate.test>\n\
Subject: Befund vom 1. April\n\
MIME-Version: 1.0\n\
Content-Type: text/plain; charset=utf-8\n\
\n\
Sehr geehrte Frau Muster,\n\
anbei Ihr Befund: alles in Ordnung.\n";

/// The gateway's keys during a rollover: two RSA, two ECC.
const GATEWAY_KEYS: [(&str, &str); 4] = [
    ("gw-rsa", "rsa2048"),
    ("gw-rsa-previous", "rsa3072"),
    ("gw-p256", "p256"),
    ("gw-bp256", "bp256"),
];

struct Matrix {
    pki: TestPki,
    keys: Vec<DecryptionKey>,
    anchors: TrustAnchors,
}

impl Matrix {
    /// The PKI and the gateway keys; `None` (with a note) without `openssl`.
    fn new() -> Option<Matrix> {
        if !common::have("openssl") {
            return None;
        }
        let pki = TestPki::new(&Publish::default());
        for (name, kind) in GATEWAY_KEYS {
            pki.issue(name, kind, "encrypt");
        }
        pki.issue("practice", "rsa2048", "sign");
        common::write(pki.path(), "letter.eml", LETTER);
        let keys = GATEWAY_KEYS
            .iter()
            .map(|(name, _)| pki.decryption_key(name))
            .collect();
        let anchors = pki.anchors();
        Some(Matrix { pki, keys, anchors })
    }

    fn unwrap_file(&self, name: &str) -> Result<Unwrapped, UnwrapError> {
        self.unwrap_with(name, &self.anchors, SystemTime::now())
    }

    fn unwrap_with(
        &self,
        name: &str,
        anchors: &TrustAnchors,
        at: SystemTime,
    ) -> Result<Unwrapped, UnwrapError> {
        smime::unwrap(&self.pki.read(name), &self.keys, anchors, at)
    }

    /// Checks that `name` unwraps to the letter signed by `signer`; returns a
    /// description of what is wrong, if anything.
    fn check(&self, name: &str, signer: &str, encrypted: bool) -> Option<String> {
        let unwrapped = match self.unwrap_file(name) {
            Ok(unwrapped) => unwrapped,
            Err(e) => return Some(format!("{name}: {}: {e}", e.reason())),
        };
        let found = unwrapped.signer.as_ref().map(|s| s.fingerprint.clone());
        if common::lf(&unwrapped.content) != LETTER.as_bytes()
            || found != Some(self.pki.fingerprint(signer))
            || unwrapped.encrypted != encrypted
        {
            return Some(format!("{name}: wrong content, signer or encryption flag"));
        }
        None
    }

    fn reason(&self, name: &str) -> &'static str {
        common::reason(self.unwrap_file(name))
    }
}

#[test]
fn decryption_matrix_with_four_gateway_keys() {
    let Some(m) = Matrix::new() else { return };
    m.pki
        .sign("letter.eml", "signed.eml", "practice", false, &[]);
    // (file, recipient certificate, content cipher, key transport options)
    let cells: [(&str, &str, &str, &[&str]); 9] = [
        ("rsa15-aes128", "gw-rsa", "-aes-128-cbc", &[]),
        (
            "rsa15-aes192-previous",
            "gw-rsa-previous",
            "-aes-192-cbc",
            &[],
        ),
        (
            "oaep-aes256",
            "gw-rsa",
            "-aes-256-cbc",
            &["-keyopt", "rsa_padding_mode:oaep"],
        ),
        (
            "oaep-sha256-aes128-previous",
            "gw-rsa-previous",
            "-aes-128-cbc",
            &[
                "-keyopt",
                "rsa_padding_mode:oaep",
                "-keyopt",
                "rsa_oaep_md:sha256",
            ],
        ),
        ("ecdh-p256-aes256", "gw-p256", "-aes-256-cbc", &[]),
        ("ecdh-bp256-aes128", "gw-bp256", "-aes-128-cbc", &[]),
        ("gcm128-rsa", "gw-rsa", "-aes-128-gcm", &[]),
        (
            "gcm256-oaep",
            "gw-rsa",
            "-aes-256-gcm",
            &["-keyopt", "rsa_padding_mode:oaep"],
        ),
        ("gcm256-bp256", "gw-bp256", "-aes-256-gcm", &[]),
    ];
    let mut failures = Vec::new();
    for (name, recipient, cipher, options) in cells {
        let out = format!("{name}.eml");
        m.pki
            .encrypt("signed.eml", &out, cipher, &[recipient], options);
        failures.extend(m.check(&out, "practice", true));
    }
    // Two recipients, the gateway second: the matching RecipientInfo is found.
    m.pki.issue("someone-else", "p256", "encrypt");
    m.pki.encrypt(
        "signed.eml",
        "two.eml",
        "-aes-256-gcm",
        &["someone-else", "gw-bp256"],
        &[],
    );
    failures.extend(m.check("two.eml", "practice", true));
    assert!(failures.is_empty(), "failing cells: {failures:#?}");

    // Key agreement to a key the gateway does not hold: a reason, not a crash.
    m.pki.encrypt(
        "signed.eml",
        "other.eml",
        "-aes-256-cbc",
        &["someone-else"],
        &[],
    );
    assert_eq!(m.reason("other.eml"), "not-for-gateway");
}

#[test]
fn signature_matrix_opaque_and_detached() {
    let Some(m) = Matrix::new() else { return };
    // (signer key type, detached, options, expected digest, expected signature algorithm)
    let cells: [(&str, bool, &[&str], &str, &str); 9] = [
        (
            "rsa2048",
            false,
            &["-md", "sha256"],
            "SHA256",
            "rsaEncryption",
        ),
        (
            "rsa2048",
            true,
            &["-md", "sha512"],
            "SHA512",
            "rsaEncryption",
        ),
        (
            "rsa3072",
            true,
            &["-md", "sha256", "-keyopt", "rsa_padding_mode:pss"],
            "SHA256",
            "RSASSA-PSS",
        ),
        (
            "rsa3072",
            false,
            &["-md", "sha384", "-keyopt", "rsa_padding_mode:pss"],
            "SHA384",
            "RSASSA-PSS",
        ),
        (
            "p256",
            true,
            &["-md", "sha256"],
            "SHA256",
            "ecdsa-with-SHA256",
        ),
        (
            "p384",
            false,
            &["-md", "sha384"],
            "SHA384",
            "ecdsa-with-SHA384",
        ),
        (
            "bp256",
            true,
            &["-md", "sha256"],
            "SHA256",
            "ecdsa-with-SHA256",
        ),
        (
            "bp384",
            false,
            &["-md", "sha384"],
            "SHA384",
            "ecdsa-with-SHA384",
        ),
        (
            "bp384",
            true,
            &["-md", "sha512"],
            "SHA512",
            "ecdsa-with-SHA512",
        ),
    ];
    let mut failures = Vec::new();
    for (index, (kind, detached, options, digest, signature)) in cells.into_iter().enumerate() {
        let signer = format!("signer-{index}-{kind}");
        m.pki.issue(&signer, kind, "sign");
        let out = format!("{signer}.eml");
        m.pki.sign("letter.eml", &out, &signer, detached, options);
        if let Some(failure) = m.check(&out, &signer, false) {
            failures.push(failure);
            continue;
        }
        let unwrapped = m.unwrap_file(&out).unwrap();
        let found = unwrapped.signer.unwrap();
        if (
            found.digest_algorithm.as_str(),
            found.signature_algorithm.as_str(),
        ) != (digest, signature)
        {
            failures.push(format!(
                "{out}: algorithms {} / {}, expected {digest} / {signature}",
                found.digest_algorithm, found.signature_algorithm
            ));
        }
    }
    assert!(failures.is_empty(), "failing cells: {failures:#?}");

    // SHA-1 is refused with a reason, for RSA and ECDSA alike.
    m.pki.issue("sha1-ec", "p256", "sign");
    m.pki.sign(
        "letter.eml",
        "sha1-rsa.eml",
        "practice",
        true,
        &["-md", "sha1"],
    );
    m.pki.sign(
        "letter.eml",
        "sha1-ec.eml",
        "sha1-ec",
        false,
        &["-md", "sha1"],
    );
    assert_eq!(m.reason("sha1-rsa.eml"), "weak-algorithm");
    assert_eq!(m.reason("sha1-ec.eml"), "weak-algorithm");
}

#[test]
fn signer_details_travel_with_the_letter() {
    let Some(m) = Matrix::new() else { return };
    m.pki
        .sign("letter.eml", "signed.eml", "practice", true, &[]);
    let at = SystemTime::now();
    let signer = m
        .unwrap_with("signed.eml", &m.anchors, at)
        .unwrap()
        .signer
        .unwrap();
    let serial =
        String::from_utf8(
            m.pki
                .run(&["x509", "-in", "practice.pem", "-noout", "-serial"]),
        )
        .unwrap();
    assert_eq!(format!("serial={}\n", signer.serial), serial);
    assert_eq!(signer.subject, "CN=practice, O=kvgate test");
    assert_eq!(signer.issuer, "CN=int, O=kvgate test");
    assert_eq!(signer.emails, ["praxis@demo-practice.test"]);
    assert_eq!(signer.verified_at, at);
    // Neither certificate names a CRL or OCSP source.
    assert_eq!(
        signer.revocation,
        RevocationStatus::NotChecked {
            detail: "CN=practice, O=kvgate test: names no CRL or OCSP source; \
                     CN=int, O=kvgate test: names no CRL or OCSP source"
                .to_owned()
        }
    );
}

#[test]
fn nested_layers_unwrap_to_the_innermost_content() {
    let Some(m) = Matrix::new() else { return };
    m.pki.issue("outer-signer", "p256", "sign");
    // Triple wrap (RFC 2634): sign, encrypt, sign again (by another party).
    m.pki.sign("letter.eml", "inner.eml", "practice", true, &[]);
    m.pki
        .encrypt("inner.eml", "middle.eml", "-aes-256-gcm", &["gw-p256"], &[]);
    m.pki
        .sign("middle.eml", "triple.eml", "outer-signer", false, &[]);
    assert_eq!(m.check("triple.eml", "practice", true), None);
    // Encrypt-then-sign with key agreement and a detached signature.
    m.pki
        .encrypt("letter.eml", "enc.eml", "-aes-128-cbc", &["gw-bp256"], &[]);
    m.pki
        .sign("enc.eml", "enc-signed.eml", "practice", true, &[]);
    assert_eq!(m.check("enc-signed.eml", "practice", true), None);
}

#[test]
fn path_validation_refuses_unfit_certificates() {
    let Some(m) = Matrix::new() else { return };
    let cases = [
        ("no-signing-usage", "no_signing_usage", "signer-usage"),
        ("server-only", "server_only", "signer-usage"),
        ("unknown-critical", "unknown_critical", "critical-extension"),
    ];
    for (name, section, expected) in cases {
        m.pki.issue(name, "p256", section);
        let out = format!("{name}.eml");
        m.pki.sign("letter.eml", &out, name, true, &[]);
        assert_eq!(m.reason(&out), expected, "{name}");
    }
    // A leaf under an intermediate that is not a CA (basicConstraints).
    m.pki.issue("fake-ca", "rsa2048", "not_a_ca");
    m.pki.issue_from("under-fake-ca", "p256", "sign", "fake-ca");
    m.pki.sign_with_chain(
        "letter.eml",
        "fake.eml",
        "under-fake-ca",
        Some("fake-ca.pem"),
        &[],
    );
    assert_eq!(m.reason("fake.eml"), "untrusted-signer");
}

#[test]
fn weak_keys_and_weakly_signed_certificates_are_refused() {
    let Some(m) = Matrix::new() else { return };
    let refusal = |name: &str| {
        let out = format!("{name}.eml");
        let chain = format!(
            "{}.pem",
            if name == "under-weak-int" {
                "weak-int"
            } else {
                "int"
            }
        );
        m.pki
            .sign_with_chain("letter.eml", &out, name, Some(&chain), &[]);
        match m.unwrap_file(&out) {
            Ok(_) => panic!("{name}: verified"),
            Err(e) => {
                eprintln!("{name}: {}: {e}", e.reason());
                (e.reason(), e.to_string())
            }
        }
    };
    for (name, bits) in [("rsa1024", 1024), ("rsa512", 512)] {
        m.pki.issue(name, name, "sign");
        let (reason, text) = refusal(name);
        assert_eq!(reason, "signer-weak-key", "{text}");
        assert!(
            text.contains(&format!("CN={name}, O=kvgate test"))
                && text.contains(&format!("a {bits}-bit RSA key (the signer certificate)"))
                && text.contains("at least 2048 bits"),
            "{text}"
        );
    }
    // A leaf of a strong key under an intermediate with a weak one.
    m.pki.issue_from("weak-int", "rsa1024", "int", "root");
    m.pki
        .issue_from("under-weak-int", "p256", "sign", "weak-int");
    let (reason, text) = refusal("under-weak-int");
    assert_eq!(reason, "signer-weak-key", "{text}");
    assert!(
        text.contains("CN=weak-int, O=kvgate test")
            && text.contains("a 1024-bit RSA key (the certificate at depth 1 of its chain)"),
        "{text}"
    );
    // A signer certificate its CA signed with SHA-1.
    m.pki
        .issue_signed("sha1-signed", "p256", "sign", "int", "-sha1");
    let (reason, text) = refusal("sha1-signed");
    assert_eq!(reason, "weak-algorithm", "{text}");
    assert!(
        text.contains("RSA-SHA1 of the signer certificate"),
        "{text}"
    );
    // At the limits: RSA-2048 and P-224 pass.
    m.pki.issue("p224", "p224", "sign");
    for signer in ["p224", "practice"] {
        let out = format!("{signer}-ok.eml");
        m.pki.sign("letter.eml", &out, signer, true, &[]);
        assert_eq!(m.check(&out, signer, false), None);
    }
}

#[test]
fn signed_content_of_another_type_than_data_is_refused() {
    let Some(m) = Matrix::new() else { return };
    /// id-ct-TSTInfo: what a timestamp token signs.
    const TST_INFO: &str = "1.2.840.113549.1.9.16.1.4";
    let tst = ["-econtent_type", TST_INFO];
    m.pki.sign("letter.eml", "tst.eml", "practice", false, &tst);
    m.pki.sign(
        "letter.eml",
        "tst-noattr.eml",
        "practice",
        false,
        &[&tst[..], &["-noattr"]].concat(),
    );
    for name in ["tst.eml", "tst-noattr.eml"] {
        assert_eq!(m.reason(name), "unexpected-content-type", "{name}");
    }
    // eContentType rewritten to id-data, the signed content-type attribute still
    // TSTInfo: OpenSSL does not compare them (the CLI verifies it), we do.
    m.pki.sign(
        "letter.eml",
        "tst.der",
        "practice",
        false,
        &[&tst[..], &["-outform", "DER"]].concat(),
    );
    let mut der = Tlv::parse(&m.pki.read("tst.der"));
    // ContentInfo [0] SignedData: version, digestAlgorithms, encapContentInfo { eContentType, ... }
    *der.at(&[1, 0, 2, 0]).octets() = vec![0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
    common::write(m.pki.path(), "relabelled.der", der.encode());
    let (verified, said) = common::openssl_status(
        m.pki.path(),
        &[
            "cms",
            "-verify",
            "-noverify",
            "-inform",
            "DER",
            "-in",
            "relabelled.der",
            "-out",
            "/dev/null",
        ],
    );
    eprintln!("openssl cms -verify of the relabelled signature: {verified}: {said}");
    let result = smime::unwrap(
        &common::pkcs7_entity(&der.encode(), "signed-data"),
        &m.keys,
        &m.anchors,
        SystemTime::now(),
    );
    let refusal = result.err().unwrap();
    assert_eq!(refusal.reason(), "unexpected-content-type", "{refusal}");
    assert!(
        refusal
            .to_string()
            .contains("content-type attribute names 1.2.840.113549.1.9.16.1.4"),
        "{refusal}"
    );
}

#[test]
fn validity_is_judged_at_verification_time() {
    let Some(m) = Matrix::new() else { return };
    m.pki
        .sign("letter.eml", "signed.eml", "practice", true, &[]);
    let in_two_years = SystemTime::now() + Duration::from_secs(2 * 365 * 86_400);
    let a_month_ago = SystemTime::now() - Duration::from_secs(30 * 86_400);
    let unwrap = |at| m.unwrap_with("signed.eml", &m.anchors, at);
    let first = unwrap(SystemTime::now()).unwrap().signer.unwrap();
    // Validated again (its path now known) for a later instant: the same answer.
    let later = SystemTime::now() + Duration::from_secs(60);
    let again = unwrap(later).unwrap().signer.unwrap();
    assert_eq!(
        (first.fingerprint, first.subject, first.issuer),
        (again.fingerprint, again.subject, again.issuer)
    );
    assert_eq!(again.verified_at, later);
    // A path validated before is not reused outside the validity of its certificates.
    assert_eq!(common::reason(unwrap(in_two_years)), "signer-expired");
    assert_eq!(common::reason(unwrap(a_month_ago)), "signer-expired");
    assert!(unwrap(SystemTime::now()).is_ok());
    // A certificate that expired before it was used.
    m.pki
        .issue_dated("expired", "p256", "20200101000000Z", "20210101000000Z");
    m.pki
        .sign("letter.eml", "expired.eml", "expired", true, &[]);
    assert_eq!(m.reason("expired.eml"), "signer-expired");
}

#[test]
fn intermediates_may_come_from_a_configured_store() {
    let Some(m) = Matrix::new() else { return };
    // Signed without the intermediate in the message.
    m.pki
        .sign_with_chain("letter.eml", "bare.eml", "practice", None, &[]);
    assert_eq!(m.reason("bare.eml"), "untrusted-signer");
    let intermediates = x509::parse_pem_chain(&m.pki.read("int.pem")).unwrap();
    let anchors = m.anchors.clone().with_intermediates(&intermediates);
    let unwrapped = m
        .unwrap_with("bare.eml", &anchors, SystemTime::now())
        .unwrap();
    assert_eq!(
        unwrapped.signer.unwrap().fingerprint,
        m.pki.fingerprint("practice")
    );
}

/// `openssl cms` options for a bare DER SignedData over the exact input octets.
const DER: &[&str] = &["-binary", "-outform", "DER"];

/// A `multipart/signed` entity with `visible` as its first part and `signature`
/// (DER) as its signature part.
fn multipart_signed(visible: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut entity = b"MIME-Version: 1.0\r\n\
Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"sig\"\r\n\
\r\n\
--sig\r\n"
        .to_vec();
    entity.extend_from_slice(visible);
    entity.extend_from_slice(
        b"\r\n--sig\r\n\
Content-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\n",
    );
    for line in openssl::base64::encode_block(signature)
        .as_bytes()
        .chunks(64)
    {
        entity.extend_from_slice(line);
        entity.extend_from_slice(b"\r\n");
    }
    entity.extend_from_slice(b"--sig--\r\n");
    entity
}

#[test]
fn signature_embedding_other_content_is_refused() {
    let Some(m) = Matrix::new() else { return };
    // CVE-2018-18509 class: the signature carries (and validly signs) its own
    // content; the visible part says something else.
    let hidden = LETTER.replace("alles in Ordnung", "bitte sofort 500 EUR ueberweisen");
    common::write(m.pki.path(), "hidden.eml", &hidden);
    m.pki
        .sign("hidden.eml", "embedded.der", "practice", false, DER);
    let visible = LETTER.replace('\n', "\r\n");
    let confused = multipart_signed(visible.as_bytes(), &m.pki.read("embedded.der"));
    common::write(m.pki.path(), "confused.eml", &confused);
    assert_eq!(m.reason("confused.eml"), "content-confusion");
    // Even when the embedded content equals the visible part.
    common::write(m.pki.path(), "visible.eml", &visible);
    m.pki
        .sign("visible.eml", "same.der", "practice", false, DER);
    let same = multipart_signed(visible.as_bytes(), &m.pki.read("same.der"));
    common::write(m.pki.path(), "same.eml", &same);
    assert_eq!(m.reason("same.eml"), "content-confusion");
}

#[test]
fn headers_outside_the_signature_are_not_delivered() {
    let Some(m) = Matrix::new() else { return };
    m.pki
        .sign("letter.eml", "detached.eml", "practice", true, &[]);
    m.pki
        .sign("letter.eml", "opaque.eml", "practice", false, &[]);
    for name in ["detached.eml", "opaque.eml"] {
        // Unsigned outer headers claiming another sender and subject.
        let mut smuggled = b"From: <chef@other-practice.test>\r\nSubject: Kuendigung\r\n".to_vec();
        smuggled.extend(m.pki.read(name));
        let out = format!("smuggled-{name}");
        common::write(m.pki.path(), &out, &smuggled);
        let content = m.unwrap_file(&out).unwrap().content;
        assert_eq!(common::lf(&content), LETTER.as_bytes(), "{name}");
    }
    // A header changed inside the signed part breaks the signature.
    let signed = String::from_utf8(m.pki.read("detached.eml")).unwrap();
    let forged = signed.replacen(
        "Subject: Befund vom 1. April",
        "Subject: Befund vom 2. April",
        1,
    );
    assert_ne!(forged, signed);
    common::write(m.pki.path(), "forged.eml", forged);
    assert_eq!(m.reason("forged.eml"), "bad-signature");
}
