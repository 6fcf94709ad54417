//! OpenPGP interoperability with GnuPG 2.2 (an independent implementation, as on
//! a member's device): gpg keys are accepted, gpg reads what we encrypt, and we
//! read what gpg encrypts.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use kvgate_certs::openpgp::{self, MemberKey, PgpError};
use sequoia_openpgp::cert::prelude::*;
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::serialize::SerializeInto;
use tempfile::TempDir;

const INNER: &[u8] = b"From: <praxis@demo-practice.test>\r\nSubject: Befund\r\nContent-Type: text/plain\r\n\r\nAlles gut.\r\n";

/// A throw-away GnuPG home; its agent is stopped on drop.
struct Gpg {
    home: TempDir,
}

impl Gpg {
    fn new() -> Gpg {
        let home = tempfile::Builder::new()
            .prefix("gpg")
            .tempdir_in("/tmp")
            .unwrap();
        Gpg { home }
    }

    fn run(&self, args: &[&str]) -> Vec<u8> {
        let mut all = vec![
            "--batch",
            "--yes",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ];
        all.extend_from_slice(args);
        common::run(self.dir(), "gpg", &all, &[("GNUPGHOME", self.dir())])
    }

    /// Imports armored keys (or a revocation) into this home.
    fn import(&self, armored: impl AsRef<[u8]>) {
        common::write(self.dir(), "import.asc", armored);
        self.run(&["--import", "import.asc"]);
    }

    /// Runs gpg like [`Gpg::run`] but returns whether it succeeded and its stderr.
    fn status(&self, args: &[&str]) -> (bool, String) {
        let output = std::process::Command::new("gpg")
            .args(["--batch", "--no-tty"])
            .args(args)
            .current_dir(self.dir())
            .env("GNUPGHOME", self.dir())
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    fn dir(&self) -> &Path {
        self.home.path()
    }
}

/// The armored OpenPGP message inside `text` (a PGP/MIME message or the message itself).
fn armored_part(text: &[u8]) -> &[u8] {
    let text = std::str::from_utf8(text).unwrap();
    let start = text.find("-----BEGIN PGP MESSAGE-----").unwrap();
    let end = text.find("-----END PGP MESSAGE-----").unwrap() + "-----END PGP MESSAGE-----".len();
    &text.as_bytes()[start..end]
}

/// The binary OpenPGP message of an armored one.
fn dearmored(armored: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let text = std::str::from_utf8(armored).unwrap();
    let body: String = text
        .split("\r\n")
        .skip_while(|line| !line.is_empty())
        .take_while(|line| !line.starts_with('='))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

/// The versions of the PKESK packets and of the SEIPD packet of a binary message.
fn packet_versions(binary: &[u8]) -> (Vec<u8>, u8) {
    use sequoia_openpgp::Packet;
    use sequoia_openpgp::parse::{PacketParser, PacketParserResult};
    let mut pkesks = Vec::new();
    let mut ppr = PacketParser::from_bytes(binary).unwrap();
    while let PacketParserResult::Some(pp) = ppr {
        match &pp.packet {
            Packet::PKESK(pkesk) => pkesks.push(pkesk.version()),
            Packet::SEIP(seip) => return (pkesks, seip.version()),
            other => panic!("unexpected packet {other:?}"),
        }
        ppr = pp.next().unwrap().1;
    }
    panic!("no SEIPD packet");
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = std::process::Command::new("gpgconf")
            .args(["--kill", "gpg-agent"])
            .env("GNUPGHOME", self.home.path())
            .status();
    }
}

#[test]
fn gnupg_key_is_accepted_and_reads_our_encryption() {
    if !common::have("gpg") {
        return;
    }
    let gpg = Gpg::new();
    gpg.run(&[
        "--quick-gen-key",
        "Member <member@example.test>",
        "future-default",
        "default",
        "2y",
    ]);
    let exported = gpg.run(&["--armor", "--export", "member@example.test"]);
    let key = openpgp::parse_public_key(&exported).unwrap();
    assert_eq!(key.fingerprint.len(), 40);
    assert!(
        key.fingerprint
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
    );
    assert!(
        key.armored
            .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    );
    let listed =
        String::from_utf8(gpg.run(&["--with-colons", "--fingerprint", "member@example.test"]))
            .unwrap();
    assert!(
        listed.contains(&format!("fpr:::::::::{}:", key.fingerprint)),
        "{listed}"
    );

    // Binary input works too.
    let binary = gpg.run(&["--export", "member@example.test"]);
    assert_eq!(openpgp::parse_public_key(&binary).unwrap(), key);

    // Three lengths in a row: the armor's last line ends with two, one and no
    // padding characters for one of them each.
    for extra in 0..3 {
        let plaintext = [INNER, &b"x".repeat(extra)[..]].concat();
        let message = openpgp::encrypt(&plaintext, std::slice::from_ref(&key)).unwrap();
        assert!(message.starts_with(b"-----BEGIN PGP MESSAGE-----"));
        common::write(gpg.dir(), "message.asc", &message);
        assert_eq!(gpg.run(&["--decrypt", "message.asc"]), plaintext);
    }
}

#[test]
fn secret_material_is_stripped() {
    if !common::have("gpg") {
        return;
    }
    let gpg = Gpg::new();
    gpg.run(&[
        "--quick-gen-key",
        "Member <member@example.test>",
        "future-default",
        "default",
        "2y",
    ]);
    let secret = gpg.run(&["--armor", "--export-secret-keys", "member@example.test"]);
    let key = openpgp::parse_public_key(&secret).unwrap();
    assert!(key.armored.contains("PUBLIC KEY BLOCK"));
    assert!(!key.armored.contains("PRIVATE"));
    let cert = sequoia_openpgp::Cert::from_bytes(key.armored.as_bytes()).unwrap();
    assert!(!cert.is_tsk());
}

#[test]
fn keys_without_encryption_or_expired_are_refused() {
    if !common::have("gpg") {
        return;
    }
    let gpg = Gpg::new();
    // A signing-only key.
    gpg.run(&[
        "--quick-gen-key",
        "Signer <signer@example.test>",
        "ed25519",
        "sign",
        "2y",
    ]);
    let exported = gpg.run(&["--armor", "--export", "signer@example.test"]);
    assert!(matches!(
        openpgp::parse_public_key(&exported),
        Err(PgpError::NoEncryptionKey { .. })
    ));

    // A revoked key.
    gpg.run(&[
        "--quick-gen-key",
        "Revoked <revoked@example.test>",
        "future-default",
        "default",
        "2y",
    ]);
    let listed =
        String::from_utf8(gpg.run(&["--with-colons", "--fingerprint", "revoked@example.test"]))
            .unwrap();
    let fpr = listed
        .lines()
        .find_map(|l| l.strip_prefix("fpr:::::::::"))
        .and_then(|l| l.split(':').next())
        .unwrap()
        .to_owned();
    let revocation = std::fs::read(
        gpg.dir()
            .join("openpgp-revocs.d")
            .join(format!("{fpr}.rev")),
    )
    .unwrap();
    // GnuPG guards the stored certificate with a leading ':'.
    let revocation: Vec<u8> = String::from_utf8(revocation)
        .unwrap()
        .lines()
        .map(|l| l.strip_prefix(':').unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
        .into_bytes();
    gpg.import(revocation);
    let exported = gpg.run(&["--armor", "--export", "revoked@example.test"]);
    assert!(matches!(
        openpgp::parse_public_key(&exported),
        Err(PgpError::Revoked { .. })
    ));

    // An expired key (made with sequoia, backdated).
    let created = SystemTime::now() - Duration::from_secs(10 * 86400);
    let (cert, _) = CertBuilder::general_purpose(Some("Old <old@example.test>"))
        .set_creation_time(created)
        .set_validity_period(Duration::from_secs(86400))
        .generate()
        .unwrap();
    let armored = cert.armored().to_vec().unwrap();
    assert!(matches!(
        openpgp::parse_public_key(&armored),
        Err(PgpError::NotAlive { .. })
    ));

    assert!(matches!(
        openpgp::parse_public_key(b"not a key"),
        Err(PgpError::Parse(_))
    ));
}

#[test]
fn demo_key_in_gnupg_reads_our_pgp_mime() {
    if !common::have("gpg") {
        return;
    }
    let (secret, public) =
        openpgp::generate_member_key("Demo Member <A123456780@smarthealth.kvgate.test>").unwrap();
    assert!(secret.starts_with("-----BEGIN PGP PRIVATE KEY BLOCK-----"));
    assert_eq!(
        openpgp::parse_public_key(public.armored.as_bytes()).unwrap(),
        public
    );

    let gpg = Gpg::new();
    gpg.import(secret.as_bytes());

    let headers = [
        ("From", "kvgate <gateway@kvgate.test>"),
        ("To", "<A123456780@smarthealth.kvgate.test>"),
        ("Subject", "..."),
    ];
    let message = openpgp::pgp_mime(&headers, INNER, std::slice::from_ref(&public)).unwrap();
    let text = String::from_utf8(message.clone()).unwrap();
    assert!(text.starts_with("From: kvgate <gateway@kvgate.test>\r\nTo: <A123456780@smarthealth.kvgate.test>\r\nSubject: ...\r\nMIME-Version: 1.0\r\n"));
    assert!(
        text.contains("Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";")
    );
    assert!(text.contains("Content-Type: application/pgp-encrypted\r\n"));
    assert!(text.contains("\r\nVersion: 1\r\n"));
    assert!(text.contains("Content-Disposition: inline; filename=\"encrypted.asc\""));
    assert!(
        !text.replace("\r\n", "").contains('\n'),
        "bare LF in the PGP/MIME message"
    );
    let boundary = text
        .split("boundary=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert!(text.ends_with(&format!("--{boundary}--\r\n")));
    assert_eq!(text.matches(&format!("--{boundary}\r\n")).count(), 2);

    // GnuPG decrypts the armored part (and it is SEIPDv1, which GnuPG 2.2 reads).
    common::write(gpg.dir(), "part.asc", armored_part(&message));
    assert_eq!(gpg.run(&["--decrypt", "part.asc"]), INNER);
    let packets = String::from_utf8_lossy(&gpg.run(&["--list-packets", "part.asc"])).into_owned();
    assert!(packets.contains("mdc_method: 2"), "{packets}");

    // And our own decrypt reads the whole PGP/MIME message.
    assert_eq!(
        openpgp::decrypt(&message, &secret).unwrap().as_slice(),
        INNER
    );
}

#[test]
fn we_read_what_gnupg_encrypts() {
    if !common::have("gpg") {
        return;
    }
    let (secret, public) = openpgp::generate_member_key("Demo Member <demo@example.test>").unwrap();
    let gpg = Gpg::new();
    gpg.import(public.armored.as_bytes());
    common::write(gpg.dir(), "inner.eml", INNER);
    gpg.run(&[
        "--trust-model",
        "always",
        "--armor",
        "--recipient",
        &public.fingerprint,
        "--output",
        "out.asc",
        "--encrypt",
        "inner.eml",
    ]);
    let encrypted = std::fs::read(gpg.dir().join("out.asc")).unwrap();
    assert_eq!(
        openpgp::decrypt(&encrypted, &secret).unwrap().as_slice(),
        INNER
    );
}

#[test]
fn encrypts_to_several_members_and_round_trips() {
    let (secret_a, a) = openpgp::generate_member_key("A <a@example.test>").unwrap();
    let (secret_b, b) = openpgp::generate_member_key("B <b@example.test>").unwrap();
    let (secret_c, _) = openpgp::generate_member_key("C <c@example.test>").unwrap();
    let message = openpgp::encrypt(INNER, &[a, b]).unwrap();
    assert_eq!(
        openpgp::decrypt(&message, &secret_a).unwrap().as_slice(),
        INNER
    );
    assert_eq!(
        openpgp::decrypt(&message, &secret_b).unwrap().as_slice(),
        INNER
    );
    assert!(matches!(
        openpgp::decrypt(&message, &secret_c),
        Err(PgpError::Decrypt(_))
    ));
    assert!(matches!(
        openpgp::encrypt(INNER, &[]),
        Err(PgpError::NoRecipients)
    ));
    let public_only = MemberKey {
        fingerprint: String::new(),
        armored: String::new(),
    };
    assert!(openpgp::encrypt(INNER, &[public_only]).is_err());
}

/// A letter over several of the encryptor's 64 KiB steps, given in parts at odd
/// offsets, to a demo key and a GnuPG RSA key: GnuPG reads it whole with either, the
/// packets have definite lengths, and one flipped ciphertext octet is caught by the
/// modification detection code. An empty letter is read too.
#[test]
fn gnupg_reads_long_letters_and_refuses_a_tampered_one() {
    if !common::have("gpg") {
        return;
    }
    let (secret, public) = openpgp::generate_member_key("A <a@example.test>").unwrap();
    let gpg = Gpg::new();
    gpg.import(secret.as_bytes());
    let gpg_rsa = Gpg::new();
    gpg_rsa.run(&[
        "--quick-gen-key",
        "R <r@example.test>",
        "rsa3072",
        "sign,encr",
        "2y",
    ]);
    let rsa = openpgp::parse_public_key(&gpg_rsa.run(&["--armor", "--export"])).unwrap();

    let letter: Vec<u8> = (0..200_003u32).map(|i| (i * 7919 % 251) as u8).collect();
    let parts = [&letter[..7], &letter[7..70_007], &letter[70_007..]];
    let recipients = openpgp::Recipients::parse(&[public.clone(), rsa]).unwrap();
    let sealed = openpgp::pgp_mime_to(&[], &parts, &recipients).unwrap();
    let stored = sealed.as_stored();
    let message = openpgp::StoredMessage::parse(stored.to_vec())
        .unwrap()
        .into_message();
    assert_eq!(sealed.message_len(), message.len());
    // Stored, the OpenPGP part is binary: the armor's base64 and line ends are not.
    assert!(stored.starts_with(openpgp::STORED_MAGIC));
    assert!(!String::from_utf8_lossy(stored).contains("BEGIN PGP MESSAGE"));
    assert!(
        stored.len() * 4 < message.len() * 3 + 4096,
        "{} {}",
        stored.len(),
        message.len()
    );
    let armored = armored_part(&message);
    for home in [&gpg, &gpg_rsa] {
        common::write(home.dir(), "letter.asc", armored);
        assert_eq!(home.run(&["--decrypt", "letter.asc"]), letter);
    }
    assert_eq!(
        openpgp::decrypt(&message, &secret).unwrap().as_slice(),
        letter
    );

    let packets = String::from_utf8(gpg.run(&["--list-packets", "letter.asc"])).unwrap();
    for algo in [18, 1] {
        let pkesk = format!(":pubkey enc packet: version 3, algo {algo}, keyid");
        assert_eq!(packets.matches(&pkesk).count(), 1, "{packets}");
    }
    assert!(
        packets.contains(":encrypted data packet:\n\tlength: 200"),
        "{packets}"
    );
    assert!(packets.contains("\tmdc_method: 2\n"), "{packets}");
    assert!(packets.contains("raw data: 200003 bytes"), "{packets}");

    let mut binary = dearmored(armored);
    assert_eq!(packet_versions(&binary), (vec![3, 3], 1));
    let middle = binary.len() / 2;
    binary[middle] ^= 0x20;
    common::write(gpg.dir(), "tampered.gpg", &binary);
    let (decrypted, stderr) = gpg.status(&["--decrypt", "tampered.gpg"]);
    assert!(!decrypted, "{stderr}");
    assert!(stderr.contains("manipulated"), "{stderr}");
    assert!(matches!(
        openpgp::decrypt(&binary, &secret),
        Err(PgpError::Decrypt(_))
    ));

    let empty = openpgp::encrypt(b"", std::slice::from_ref(&public)).unwrap();
    common::write(gpg.dir(), "empty.asc", &empty);
    assert_eq!(gpg.run(&["--decrypt", "empty.asc"]), b"");
}

/// Members whose certificates all advertise SEIPDv2 (RFC 9580) get AEAD encryption;
/// one member without it among them makes the message SEIPDv1 for all.
#[test]
fn seipdv2_only_where_every_member_reads_it() {
    let (v6, _) = CertBuilder::general_purpose(Some("Six <six@example.test>"))
        .generate()
        .unwrap();
    let v6_secret = String::from_utf8(v6.as_tsk().armored().to_vec().unwrap()).unwrap();
    let v6_public = openpgp::parse_public_key(&v6.armored().to_vec().unwrap()).unwrap();
    let (v4_secret, v4_public) = openpgp::generate_member_key("Four <four@example.test>").unwrap();

    let message = openpgp::encrypt(INNER, std::slice::from_ref(&v6_public)).unwrap();
    assert_eq!(packet_versions(&dearmored(&message)), (vec![6], 2));
    assert_eq!(
        openpgp::decrypt(&message, &v6_secret).unwrap().as_slice(),
        INNER
    );

    let message = openpgp::encrypt(INNER, &[v6_public, v4_public]).unwrap();
    assert_eq!(packet_versions(&dearmored(&message)), (vec![3, 3], 1));
    for secret in [&v6_secret, &*v4_secret] {
        assert_eq!(
            openpgp::decrypt(&message, secret).unwrap().as_slice(),
            INNER
        );
    }
}

#[test]
fn pgp_mime_refuses_header_injection() {
    let (_, key) = openpgp::generate_member_key("A <a@example.test>").unwrap();
    let keys = [key];
    for headers in [
        [("Subject", "hi\r\nBcc: someone@example.org")],
        [("Bad Name", "x")],
        [("", "x")],
    ] {
        assert!(matches!(
            openpgp::pgp_mime(&headers, INNER, &keys),
            Err(PgpError::InvalidHeader(_))
        ));
    }
}

#[test]
fn decrypt_needs_a_secret_key() {
    let (_, public) = openpgp::generate_member_key("A <a@example.test>").unwrap();
    let message = openpgp::encrypt(INNER, std::slice::from_ref(&public)).unwrap();
    assert!(matches!(
        openpgp::decrypt(&message, &public.armored),
        Err(PgpError::NoSecretKey { .. })
    ));
}
