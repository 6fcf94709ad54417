//! What the gateway refuses, and exactly how it says so.

mod common;

use std::process::Command;
use std::sync::Arc;

use common::*;
use kvgate::client::{smtp::SmtpClient, tls_config};

fn rcpt() -> String {
    format!("{MEMBER}@smarthealth.{DOMAIN}")
}

/// Runs EHLO and MAIL FROM, then returns the reply to `RCPT TO:<to>`.
fn rcpt_reply(
    server: &Server,
    tls: Arc<rustls::ClientConfig>,
    from: &str,
    to: &str,
) -> (kvgate::client::smtp::Reply, kvgate::client::smtp::Reply) {
    block_on(async {
        let (mut c, greeting) = SmtpClient::connect(server.smtps, "localhost", tls)
            .await
            .unwrap();
        assert_eq!(greeting.code, 220, "{greeting}");
        assert_eq!(c.command("EHLO test").await.unwrap().code, 250);
        let mail = c.command(&format!("MAIL FROM:<{from}>")).await.unwrap();
        if mail.code != 250 {
            return (mail.clone(), mail);
        }
        let rcpt = c.command(&format!("RCPT TO:<{to}>")).await.unwrap();
        (mail, rcpt)
    })
}

#[test]
fn smtp_refusals_carry_exact_codes() {
    require(&["openssl"]);
    let install = Install::new();
    let server = install.serve(&[]);

    // No client certificate: the handshake fails.
    let anonymous = tls_config(&std::fs::read(install.pki("ca.pem")).unwrap(), None).unwrap();
    let result = block_on(async {
        let (mut c, _) = SmtpClient::connect(server.smtps, "localhost", anonymous).await?;
        c.command("EHLO test").await
    });
    assert!(
        result.is_err(),
        "a session without a client certificate must not work: {result:?}"
    );

    // A certificate from a trusted CA that belongs to no sender: 554 5.7.1.
    install.issue_practice("stranger", "stranger@practice.test");
    let stranger = install.tls_as("stranger.pem", "stranger.key");
    let (greeting, _) = block_on(async {
        let (c, greeting) = SmtpClient::connect(server.smtps, "localhost", stranger)
            .await
            .unwrap();
        (greeting, c)
    });
    assert_eq!(greeting.code, 554, "{greeting}");
    assert!(
        greeting
            .text()
            .starts_with("5.7.1 the client certificate (sha256 "),
        "{greeting}"
    );
    assert!(
        greeting
            .text()
            .ends_with(") is not registered to any sender"),
        "{greeting}"
    );

    let tls = install.practice_tls();
    let (mail, _) = rcpt_reply(&server, tls.clone(), "someone@else.test", &rcpt());
    assert_eq!(
        mail.to_string(),
        "553 5.7.1 sender demo-practice may not use the address <someone@else.test>"
    );

    let (_, r) = rcpt_reply(
        &server,
        tls.clone(),
        PRACTICE,
        &format!("A123456781@smarthealth.{DOMAIN}"),
    );
    assert_eq!(
        r.to_string(),
        "553 5.1.3 \"A123456781\" is not a valid KVNR: the KVNR check digit is wrong (expected 0)"
    );

    let (_, r) = rcpt_reply(
        &server,
        tls.clone(),
        PRACTICE,
        &format!("X110411319@smarthealth.{DOMAIN}"),
    );
    assert_eq!(r.to_string(), "550 5.1.1 no member with KVNR X110411319");

    let (_, r) = rcpt_reply(
        &server,
        tls.clone(),
        PRACTICE,
        &format!("{MEMBER}@postfach.{DOMAIN}"),
    );
    assert_eq!(
        r.to_string(),
        "550 5.7.1 only the insurer writes to the Postfach; practices send to smarthealth"
    );

    let (_, r) = rcpt_reply(&server, tls.clone(), PRACTICE, "someone@example.org");
    assert_eq!(
        r.to_string(),
        "550 5.1.2 this gateway takes mail for kvgate.test, postfach.kvgate.test and smarthealth.kvgate.test only, not example.org"
    );

    // Postmaster (RFC 5321 §4.5.1): there is no such mailbox, and the reply says so.
    let no_postmaster = "550 5.1.1 this gateway delivers only to members' inboxes and has no \
        postmaster mailbox; please contact the insurer's support for senders instead";
    for to in [
        "Postmaster".to_owned(),
        "POSTMASTER".to_owned(),
        format!("postmaster@{DOMAIN}"),
        format!("PostMaster@smarthealth.{}", DOMAIN.to_uppercase()),
        format!("postmaster@postfach.{DOMAIN}"),
    ] {
        let (_, r) = rcpt_reply(&server, tls.clone(), PRACTICE, &to);
        assert_eq!(r.to_string(), no_postmaster, "{to}");
    }

    // An address naming no inbox: the member must exist (its inbox is decided later).
    for (kvnr, reply) in [
        ("X110411319", "550 5.1.1 no member with KVNR X110411319"),
        (MEMBER, "250 2.1.5 Recipient OK"),
    ] {
        let (_, r) = rcpt_reply(&server, tls.clone(), PRACTICE, &format!("{kvnr}@{DOMAIN}"));
        assert_eq!(r.to_string(), reply);
    }

    // A member without smarthealth, and one without any key.
    let key = install.pki("demo-member.pub.asc");
    install.admin_ok(&[
        "member",
        "add",
        "--kvnr",
        "B987654320",
        "--name",
        "N",
        "--key",
        key.to_str().unwrap(),
    ]);
    let (_, r) = rcpt_reply(
        &server,
        tls.clone(),
        PRACTICE,
        &format!("B987654320@smarthealth.{DOMAIN}"),
    );
    assert_eq!(
        r.to_string(),
        "550 5.1.1 member B987654320 has not activated smarthealth"
    );
    install.admin_ok(&[
        "member",
        "add",
        "--kvnr",
        "M123456785",
        "--name",
        "K",
        "--smarthealth",
        "--birth-date",
        "1980-05-17",
    ]);
    let (_, r) = rcpt_reply(
        &server,
        tls.clone(),
        PRACTICE,
        &format!("M123456785@smarthealth.{DOMAIN}"),
    );
    let no_key = "550 5.1.1 member M123456785 has no active OpenPGP key yet, so nothing could be encrypted to them; send by post";
    assert_eq!(r.to_string(), no_key);
    let (_, r) = rcpt_reply(&server, tls, PRACTICE, &format!("M123456785@{DOMAIN}"));
    assert_eq!(r.to_string(), no_key);
}

#[test]
fn unsigned_and_foreign_signed_letters_are_not_delivered() {
    require(&["openssl"]);
    let install = Install::new();
    let server = install.serve(&[]);
    let to = rcpt();

    // Encrypted but not signed.
    let unsigned = install.openssl_letter(&text_letter("x", "unsigned"), None, "x");
    let id = tracking_id(&server.send(install.practice_tls(), PRACTICE, &[&to], &unsigned));
    let trail = wait_final(&install, &id);
    assert_eq!(trail["submission"]["state"], "failed");
    let last = trail["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], "failed");
    assert_eq!(last["reason"], "not-signed");
    assert_eq!(last["recipient"], to.as_str());

    // Signed by another registered practice than the one connected.
    install.issue_practice("second", "praxis@second.test");
    let cert = install.work("second.pem");
    install.admin_ok(&[
        "sender",
        "add",
        "--id",
        "second-practice",
        "--cert",
        cert.to_str().unwrap(),
        "--from",
        "praxis@second.test",
    ]);
    let foreign = install.openssl_letter(
        &text_letter("x", "foreign"),
        Some((&cert, &install.work("second.key"))),
        "x",
    );
    let id = tracking_id(&server.send(install.practice_tls(), PRACTICE, &[&to], &foreign));
    let trail = wait_final(&install, &id);
    assert_eq!(trail["submission"]["state"], "failed");
    let last = trail["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["reason"], "signer-mismatch", "{trail}");
    assert!(
        last["detail"]
            .as_str()
            .unwrap()
            .contains("not a certificate of the connected sender demo-practice")
    );

    // In the clear, small or large: not S/MIME at all, or signed (detached or opaque)
    // over readable content. Each is refused at DATA, and nothing of it reaches the
    // disk (a large one is refused before it would get a spool file).
    for size in [100, 300 * 1024] {
        let marker = format!("PLAINTEXT-MARKER-{size}");
        let line = format!("{}\r\n", "x".repeat(76));
        let body = format!("{marker}\r\n{}", line.repeat(size / line.len() + 1));
        let plain = text_letter("plain", &body);
        for (letter, reason, why) in [
            (plain.clone(), "not-smime", "it is not S/MIME"),
            (
                sign_around(&install, &plain, &[]),
                "not-encrypted",
                "it is signed, but what is signed is readable",
            ),
            (
                sign_around(&install, &plain, &["-nodetach"]),
                "not-encrypted",
                "it is signed, but what is signed is readable",
            ),
        ] {
            let reply = server.send(install.practice_tls(), PRACTICE, &[&to], &letter);
            assert_eq!(reply.code, 554, "{reply}");
            assert_eq!(
                reply.text(),
                format!(
                    "5.7.1 {reason}: a practice's letter must be S/MIME, signed and encrypted \
                     to the gateway; {why}, and nothing of it was kept"
                ),
            );
            assert!(
                files_containing(&install.data(), marker.as_bytes()).is_empty(),
                "the plaintext reached the disk"
            );
        }
    }

    // None of them reached the inbox, and nothing is left in the spool.
    let spool: Vec<_> = std::fs::read_dir(install.data().join("spool"))
        .unwrap()
        .collect();
    assert!(spool.is_empty(), "{spool:?}");
}

#[test]
fn letters_without_integrity_protection_are_refused_and_never_say_which_check_failed() {
    require(&["openssl"]);
    let install = Install::new();
    let to = rcpt();
    let practice = (
        install.pki("demo-practice.pem"),
        install.pki("demo-practice.key"),
    );
    let signer = Some((practice.0.as_path(), practice.1.as_path()));
    let cbc =
        |inner: &[u8], signer| install.openssl_letter_with("-aes-256-cbc", inner, signer, "x");
    let signed = cbc(&text_letter("x", "CBC-SIGNED"), signer);
    let last_event = |server: &Server, letter: &[u8]| {
        let id = tracking_id(&server.send(install.practice_tls(), PRACTICE, &[&to], letter));
        let trail = wait_final(&install, &id);
        trail["events"].as_array().unwrap().last().unwrap().clone()
    };

    // By default, EnvelopedData (AES-CBC) is refused, a good letter too.
    let server = install.serve(&[]);
    let last = last_event(&server, &signed);
    assert_eq!(last["kind"], "failed");
    assert_eq!(last["reason"], "unauthenticated-encryption");
    assert!(
        last["detail"]
            .as_str()
            .unwrap()
            .contains("the gateway takes AuthEnvelopedData (AES-GCM"),
        "{last}"
    );
    assert!(server.terminate().success());

    // Accepted by the operator: a good letter is delivered; an unsigned one and one
    // whose ciphertext was altered (its last block, so that the padding breaks) are
    // refused in the same words, and the log has what really failed.
    install.set_config_value("smime", "unauthenticated_encryption", "accept");
    let server = install.serve(&[]);
    assert_eq!(last_event(&server, &signed)["kind"], "delivered");
    let unsigned = last_event(&server, &cbc(&text_letter("x", "CBC-UNSIGNED"), None));
    let altered = last_event(&server, &alter_last_block(&install, &signed));
    // Signed around the encryption (encrypt-then-sign): anyone can sign altered
    // ciphertext, so that is no proof of what it decrypts to.
    let unsigned_inside = cbc(&text_letter("x", "CBC-SIGNED-AROUND"), None);
    let around = last_event(&server, &sign_around(&install, &unsigned_inside, &[]));
    for refused in [&unsigned, &altered, &around] {
        assert_eq!(refused["kind"], "failed", "{refused}");
        assert_eq!(refused["reason"], "decryption-failed", "{refused}");
    }
    assert_eq!(unsigned["detail"], altered["detail"]);
    assert_eq!(unsigned["detail"], around["detail"]);
    assert!(
        unsigned["detail"]
            .as_str()
            .unwrap()
            .contains("the gateway does not say which check failed"),
        "{unsigned}"
    );
    let log = server.log.lock().unwrap().join("\n");
    assert!(
        log.contains("not-signed: the letter carries no S/MIME signature"),
        "{log}"
    );
    assert!(log.contains("cause=decryption-failed: "), "{log}");
}

/// `letter` signed by the demo practice as it is (encrypt-then-sign when it is
/// encrypted), with the `openssl` CLI and `extra` arguments (`-nodetach`: opaque).
fn sign_around(install: &Install, letter: &[u8], extra: &[&str]) -> Vec<u8> {
    let (inner, outer) = (install.work("around.eml"), install.work("around.p7m"));
    std::fs::write(&inner, letter).unwrap();
    run(Command::new("openssl")
        .args(["cms", "-sign", "-md", "sha256", "-in"])
        .arg(&inner)
        .arg("-signer")
        .arg(install.pki("demo-practice.pem"))
        .arg("-inkey")
        .arg(install.pki("demo-practice.key"))
        .args(extra)
        .arg("-out")
        .arg(&outer));
    std::fs::read(&outer).unwrap()
}

/// `letter` with the last byte of its ciphertext flipped (re-encoded as DER by the
/// `openssl` CLI, whose S/MIME output is indefinite-length BER), so that the last
/// block's padding no longer decrypts.
fn alter_last_block(install: &Install, letter: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let (smime, der) = (install.work("cbc.eml"), install.work("cbc.der"));
    std::fs::write(&smime, letter).unwrap();
    run(Command::new("openssl")
        .args([
            "cms", "-cmsout", "-inform", "SMIME", "-outform", "DER", "-in",
        ])
        .arg(&smime)
        .arg("-out")
        .arg(&der));
    let mut der = std::fs::read(&der).unwrap();
    *der.last_mut().unwrap() ^= 0x01;
    let text = String::from_utf8_lossy(letter).replace("\r\n", "\n");
    let (headers, _) = text.split_once("\n\n").unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).unwrap())
        .collect();
    format!("{headers}\n\n{}\n", lines.join("\n")).into_bytes()
}

#[test]
fn strict_revocation_refuses_a_signer_without_a_source_at_once() {
    require(&["openssl"]);
    let install = Install::new();
    install.set_config_value("trust", "revocation", "strict");
    let server = install.serve(&[]);
    // The development PKI's certificates name no CRL or OCSP source.
    let letter = install.practice_letter(&text_letter("x", "y"), "x");
    let id = tracking_id(&server.send(install.practice_tls(), PRACTICE, &[&rcpt()], &letter));
    let trail = wait_final(&install, &id);
    let last = trail["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], "failed", "{trail}");
    assert_eq!(last["reason"], "revocation-no-source", "{trail}");
    assert!(
        last["detail"]
            .as_str()
            .unwrap()
            .contains("names no CRL or OCSP source"),
        "{last}"
    );
}
