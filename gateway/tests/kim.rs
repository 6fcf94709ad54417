//! `kvgate verify` (the real binary) on gematik's KIM sample and on letters the
//! `openssl` CLI makes, and the configured verification time of the pipeline.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// gematik's KIM sample folder (`../shared/testdata/kim-samples`).
fn samples() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/kim-samples");
    assert!(dir.is_dir(), "{} is missing", dir.display());
    dir
}

/// The KIM sample resealed around its undamaged signed layer (see certs/README.md).
fn resealed() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../certs/tests/fixtures/kim-resealed.eml")
}

/// `--cert`/`--key` of recipient `a` (hci-enc-2) or `b` (hci-enc-3).
fn recipient_flags(which: &str) -> Vec<String> {
    let name = match which {
        "a" => "recipient-a/hci-enc-2-kim-bsp",
        _ => "recipient-b/hci-enc-3-kim-bsp",
    };
    let dir = samples();
    vec![
        "--cert".into(),
        dir.join(format!("{name}.pem")).display().to_string(),
        "--key".into(),
        dir.join(format!("{name}.prv.pem")).display().to_string(),
    ]
}

/// The sample's signer certificate, taken out of its SignedData by `openssl cms`
/// (its issuing CA is not part of the sample, so it is pinned).
fn signer_pem(work: &Path) -> PathBuf {
    let out = work.join("kim-signer.pem");
    run(Command::new("openssl")
        .args(["cms", "-verify", "-noverify", "-inform", "DER", "-in"])
        .arg(samples().join("inputEmail.txt.02.signedcms"))
        .arg("-certsout")
        .arg(&out)
        .arg("-out")
        .arg(work.join("kim-content")));
    out
}

fn verify(args: &[String]) -> Output {
    Command::new(KVGATE)
        .arg("verify")
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kim_sample_verifies_with_flags_as_of_its_date() {
    require(&["openssl"]);
    let work = tempfile::tempdir().unwrap();
    let signer = signer_pem(work.path());
    for which in ["a", "b"] {
        let mut args = vec![resealed().display().to_string()];
        args.extend(recipient_flags(which));
        args.extend([
            "--trust".into(),
            signer.display().to_string(),
            "--at".into(),
            "2020-06-20T12:58:26+02:00".into(),
        ]);
        let out = verify(&args);
        let text = stdout(&out);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "verified as of: 2020-06-20T10:58:26.000Z");
        assert_eq!(lines[1], "verdict: verified");
        assert!(
            lines[2].starts_with("signer: CN=Asclepios ApothekeTEST-ONLY"),
            "{text}"
        );
        assert!(
            lines.contains(&"signature: RSASSA-PSS with SHA256"),
            "{text}"
        );
        assert!(lines.contains(&"from: mustersender@komle.de"), "{text}");
        // An SMC-B certificate names no e-mail address: nothing to compare From with.
        assert!(
            lines.contains(&"from-in-certificate: none (the certificate holds no e-mail address)"),
            "{text}"
        );
        let (serial, address) = match which {
            "a" => ("FF22A88FFD24", "mustersender@komle.de"),
            _ => ("9F52A80078E4", "musterempfaenger@komle.de"),
        };
        let decrypted_with: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with("kim-recipient: ") && l.ends_with(", decrypted with)"))
            .collect();
        assert_eq!(decrypted_with.len(), 2, "{text}");
        for line in decrypted_with {
            assert!(
                line.starts_with(&format!("kim-recipient: <{address}> = serial {serial} of ")),
                "{text}"
            );
        }
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("signer-issuer: ") && l.contains("GEM.SMCB-CA24 TEST-ONLY")),
            "{text}"
        );
    }
}

#[test]
fn kim_sample_verified_now_is_refused_as_expired() {
    require(&["openssl"]);
    let work = tempfile::tempdir().unwrap();
    let mut args = vec![resealed().display().to_string()];
    args.extend(recipient_flags("a"));
    args.extend([
        "--trust".into(),
        signer_pem(work.path()).display().to_string(),
    ]);
    let out = verify(&args);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[1..3],
        ["verdict: refused", "reason: signer-expired"],
        "{text}"
    );
    assert!(
        lines[3].starts_with("detail: the signer certificate CN=Asclepios"),
        "{text}"
    );
}

#[test]
fn kim_sample_as_sent_decrypts_and_is_refused_at_its_damaged_signed_layer() {
    require(&["openssl"]);
    let work = tempfile::tempdir().unwrap();
    let mut args = vec![
        samples()
            .join("inputEmail.txt.05.encryptedwrap")
            .display()
            .to_string(),
    ];
    args.extend(recipient_flags("b"));
    args.extend([
        "--trust".into(),
        signer_pem(work.path()).display().to_string(),
        "--at".into(),
        "2020-06-20".into(),
    ]);
    let out = verify(&args);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.starts_with("verified as of: 2020-06-20T12:00:00.000Z\n"),
        "{text}"
    );
    assert!(text.contains("\nreason: malformed\n"), "{text}");
    assert!(
        text.contains("sent as binary and has CRLF line breaks"),
        "{text}"
    );
}

#[test]
fn configured_keys_and_trust_verify_a_practice_letter() {
    require(&["openssl"]);
    let install = Install::new();
    let letter = install.work("letter.p7m");
    std::fs::write(
        &letter,
        install.practice_letter(&text_letter("s", "body"), "s"),
    )
    .unwrap();
    let config = install.config().display().to_string();
    let file = letter.display().to_string();

    let out = verify(&[file.clone(), "--config".into(), config.clone()]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("\nverdict: verified\n"), "{text}");
    assert!(text.contains(&format!("\nfrom: {PRACTICE}\n")), "{text}");

    // Before the development PKI existed: the signer was not yet valid.
    let out = verify(&[
        file.clone(),
        "--config".into(),
        config.clone(),
        "--at".into(),
        "2000-01-01".into(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("\nreason: signer-expired\n"),
        "{}",
        stdout(&out)
    );

    // Encrypted but not signed: refused as the pipeline refuses it.
    let unsigned = install.work("unsigned.p7m");
    std::fs::write(
        &unsigned,
        install.openssl_letter(&text_letter("u", "u"), None, "u"),
    )
    .unwrap();
    let out = verify(&[
        unsigned.display().to_string(),
        "--config".into(),
        config.clone(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("\nreason: not-signed\n"),
        "{}",
        stdout(&out)
    );

    // A bad --at is an error, not a verdict.
    let out = verify(&[
        file,
        "--config".into(),
        config,
        "--at".into(),
        "soon".into(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).is_empty());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--at \"soon\" is neither an RFC 3339 instant"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_pipeline_verifies_as_of_the_configured_instant() {
    require(&["openssl"]);
    let install = Install::new();
    let path = install.config();
    let mut config: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    config["smime"]
        .as_table_mut()
        .unwrap()
        .insert("verify_at".into(), "2000-01-01T00:00:00Z".into());
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let server = install.serve(&[]);
    let letter = install.practice_letter(&text_letter("old", "as of 2000"), "old");
    let id = server.send_to_member(&install, &letter);
    let trail = wait_final(&install, &id);
    assert_eq!(trail["submission"]["state"], "failed", "{trail}");
    let last = trail["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["reason"], "signer-expired", "{trail}");
}

/// An installation that decrypts with recipient-a's key besides its own, trusts
/// the KIM sample's signer (pinned), verifies as of the sample's date, and has
/// a sender `kim` (TLS certificate from the development CA, S/MIME certificate
/// the sample's signer, From `mustersender@komle.de`).
fn kim_installation() -> Install {
    let install = Install::new();
    let path = install.config();
    let mut config: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    let smime = config["smime"].as_table_mut().unwrap();
    smime.insert("verify_at".into(), "2020-06-20T10:58:26Z".into());
    let mut pair = toml::Table::new();
    let name = samples().join("recipient-a/hci-enc-2-kim-bsp");
    pair.insert("cert".into(), format!("{}.pem", name.display()).into());
    pair.insert("key".into(), format!("{}.prv.pem", name.display()).into());
    smime["decryption_keys"]
        .as_array_mut()
        .unwrap()
        .push(pair.into());
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();

    let signer = signer_pem(install.dir.path());
    install.issue_practice("kim", "mustersender@komle.de");
    let kim_tls = install.work("kim.pem").display().to_string();
    let signer = signer.to_str().unwrap();
    fn sender<'a>(rest: &[&'a str]) -> Vec<&'a str> {
        [&["sender", "add", "--id", "kim"], rest].concat()
    }
    for args in [
        vec!["trust", "add", signer],
        sender(&["--cert", &kim_tls, "--from", "mustersender@komle.de"]),
        sender(&["--cert", signer]),
    ] {
        let out = install.admin(&args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    install
}

#[test]
fn kim_letter_whose_recipient_attribute_names_no_gateway_address_is_refused() {
    require(&["openssl"]);
    let install = kim_installation();
    let server = install.serve(&[]);
    let letter = std::fs::read(resealed()).unwrap();
    let reply = server.send(
        install.tls_as("kim.pem", "kim.key"),
        "mustersender@komle.de",
        &[&format!("{MEMBER}@smarthealth.{DOMAIN}")],
        &letter,
    );
    let trail = wait_final(&install, &tracking_id(&reply));
    assert_eq!(trail["submission"]["state"], "failed", "{trail}");
    let last = trail["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["reason"], "recipient-mismatch", "{trail}");
    let detail = last["detail"].as_str().unwrap();
    assert!(
        detail.contains(
            "maps the gateway certificate the letter was decrypted with to no address of this gateway \
             (KIM recipients (signed): <mustersender@komle.de> = serial FF22A88FFD24 of "
        ),
        "{detail}"
    );
    assert!(
        detail.contains("<musterempfaenger@komle.de> = serial 9F52A80078E4"),
        "{detail}"
    );
}

/// A letter from the demo practice with `headers` (From, Sender) as given.
fn letter_with(headers: &str) -> Vec<u8> {
    format!(
        "{headers}To: <{MEMBER}@smarthealth.{DOMAIN}>\r\nSubject: integrity\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nBefund\r\n"
    )
    .into_bytes()
}

#[test]
fn sender_integrity_envelope_from_and_sender_must_agree() {
    require(&["openssl"]);
    let install = Install::new();
    const OTHER: &str = "empfang@demo-practice.test";
    install.admin_ok(&[
        "sender",
        "add",
        "--id",
        "demo-practice",
        "--cert",
        install.pki("demo-practice.pem").to_str().unwrap(),
        "--from",
        OTHER,
    ]);
    let server = install.serve(&[]);
    let to = format!("{MEMBER}@smarthealth.{DOMAIN}");
    let send = |mail_from: &str, headers: &str| {
        let letter = install.practice_letter(&letter_with(headers), "integrity");
        let reply = server.send(install.practice_tls(), mail_from, &[&to], &letter);
        wait_final(&install, &tracking_id(&reply))
    };
    let refused = |trail: &serde_json::Value, detail: &str| {
        assert_eq!(trail["submission"]["state"], "failed", "{trail}");
        let last = trail["events"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["reason"], "sender-mismatch", "{trail}");
        assert_eq!(last["detail"], detail, "{trail}");
    };

    // Envelope sender and From differ (both addresses of the sender), no Sender header.
    let trail = send(OTHER, &format!("From: <{PRACTICE}>\r\n"));
    refused(
        &trail,
        &format!(
            "the envelope sender <{OTHER}> is neither the From address <{PRACTICE}> nor the Sender of the signed letter"
        ),
    );
    // A Sender header naming an address the connected sender may not use.
    let trail = send(
        PRACTICE,
        &format!("From: <{PRACTICE}>\r\nSender: <someone@else.test>\r\n"),
    );
    refused(
        &trail,
        "sender demo-practice may not use the Sender address <someone@else.test>",
    );
    // A Sender header with two mailboxes.
    let trail = send(
        PRACTICE,
        &format!("From: <{PRACTICE}>\r\nSender: <{PRACTICE}>, <{OTHER}>\r\n"),
    );
    refused(
        &trail,
        "the Sender header of the signed letter does not name exactly one mailbox",
    );
    // The envelope sender is the Sender, From another address of the same sender: delivered.
    let trail = send(
        OTHER,
        &format!("From: <{PRACTICE}>\r\nSender: <{OTHER}>\r\n"),
    );
    assert_eq!(trail["submission"]["state"], "delivered", "{trail}");
}

#[test]
fn kim_headers_are_recorded_and_the_service_identifier_kept_in_clear() {
    require(&["openssl", "gpg"]);
    let install = Install::new();
    let server = install.serve(&[]);
    let session = member_session(&install, &server);
    let letter = install.practice_letter(
        &letter_with(&format!(
            "From: <{PRACTICE}>\r\nX-KIM-Dienstkennung: KIM-Mail;Default;V1.0\r\n\
             X-KIM-Sendersystem: Demo-PVS;4.2\r\n"
        )),
        "kim",
    );
    let (id, trail) = file_letter(&install, &server, &letter);
    let verified = verified_detail(&trail);
    assert!(
        verified.ends_with(
            "; X-KIM-Dienstkennung: KIM-Mail;Default;V1.0; X-KIM-Sendersystem: Demo-PVS;4.2"
        ),
        "{verified}"
    );
    let delivered = String::from_utf8(letter_of(&session, &id)).unwrap();
    let (outer, _) = delivered.split_once("\r\n\r\n").unwrap();
    assert!(
        outer
            .lines()
            .any(|l| l == "X-KIM-Dienstkennung: KIM-Mail;Default;V1.0"),
        "{outer}"
    );
    assert!(!outer.contains("Sendersystem"), "{outer}");

    // Inside the encryption: KIM's result headers with the values of gematik's
    // example of a decrypted, verified client mail.
    let plaintext = gpg_decrypt(&install, &install.work("gnupg"), delivered.as_bytes()).unwrap();
    let text = String::from_utf8_lossy(&plaintext);
    let gematik =
        std::fs::read_to_string(samples().join("kas/2_4_Client-Mail_finalisiert.txt")).unwrap();
    for name in ["X-KIM-DecryptionResult: ", "X-KIM-IntegrityCheckResult: "] {
        let expected = gematik.lines().find(|l| l.starts_with(name)).unwrap();
        assert!(
            text.contains(&format!("\r\n{expected}\r\n")),
            "{expected}: {text}"
        );
    }
    assert!(
        text.contains("\r\nX-Kvgate-Signature: verified; "),
        "{text}"
    );
}

/// An eArztbrief from the demo practice: `body` as its text, then one part per
/// `(media type, Content-Description)`.
fn earztbrief(body: &str, parts: &[(&str, &str)]) -> Vec<u8> {
    let mut letter = format!(
        "From: <{PRACTICE}>\r\nTo: <{MEMBER}@smarthealth.{DOMAIN}>\r\nSubject: eArztbrief\r\n\
         X-KIM-Dienstkennung: Arztbrief;Entlassbrief;V1.2\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"eab\"\r\n\r\n\
         --eab\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    );
    for (media, description) in parts {
        letter.push_str(&format!(
            "--eab\r\nContent-Type: {media}\r\nContent-Description: {description}\r\n\
             Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJSBrdmdhdGUgdGVzdAo=\r\n"
        ));
    }
    letter.push_str("--eab--\r\n");
    letter.into_bytes()
}

const PDF: (&str, &str) = ("application/pdf", "eAB-PDF-signed");
const CDA: (&str, &str) = ("text/xml", "eAB-XML");

fn verified_detail(trail: &serde_json::Value) -> String {
    trail["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "verified")
        .unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn earztbrief_profile_is_flagged_by_default() {
    require(&["openssl", "gpg"]);
    let install = Install::new();
    let server = install.serve(&[]);
    let session = member_session(&install, &server);

    let good = earztbrief(
        "Anbei der eArztbrief.",
        &[
            PDF,
            CDA,
            ("image/png", "eAB-Anhang-01"),
            ("application/pdf", "eAB-Anhang-02"),
        ],
    );
    let (_, trail) = file_letter(&install, &server, &install.practice_letter(&good, "eab"));
    assert!(!verified_detail(&trail).contains("flagged"), "{trail}");

    let two_pdfs = earztbrief("", &[PDF, PDF, CDA]);
    let (id, trail) = file_letter(
        &install,
        &server,
        &install.practice_letter(&two_pdfs, "eab"),
    );
    assert!(
        verified_detail(&trail)
            .ends_with("; flagged earztbrief-profile: 2 eAB-PDF-signed parts instead of one"),
        "{trail}"
    );
    let plaintext =
        gpg_decrypt(&install, &install.work("gnupg"), &letter_of(&session, &id)).unwrap();
    let text = String::from_utf8_lossy(&plaintext);
    assert!(
        text.contains(
            "X-Kvgate-Finding: earztbrief-profile; detail=\"2 eAB-PDF-signed parts instead of one\"\r\n"
        ),
        "{text}"
    );
}

#[test]
fn earztbrief_profile_refused_when_configured() {
    require(&["openssl"]);
    let install = Install::new();
    install.set_config_table("kim", "earztbrief = \"refuse\"");
    let server = install.serve(&[]);
    let medical = "Diagnose: ".to_owned() + &"Befund ".repeat(40);
    for (letter, detail) in [
        (earztbrief("", &[PDF]), "0 eAB-XML parts instead of one"),
        (
            earztbrief(&medical, &[PDF, CDA]),
            "289 characters of text outside the eAB parts (at most 200: no medical text in the body)",
        ),
        (
            earztbrief("", &[PDF, CDA, ("image/png", "eAB-Anhang-00")]),
            "an eAB-Anhang part is not numbered 01 to 99",
        ),
        // The letter's own words are not repeated in its trail.
        (
            earztbrief("", &[PDF, CDA, ("image/png", "eAB-Anhang-Befund Mueller")]),
            "an eAB-Anhang part is not numbered 01 to 99",
        ),
    ] {
        let id = server.send_to_member(&install, &install.practice_letter(&letter, "eab"));
        let trail = wait_final(&install, &id);
        assert_eq!(trail["submission"]["state"], "failed", "{trail}");
        let last = trail["events"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["reason"], "earztbrief-profile", "{trail}");
        assert_eq!(
            last["detail"],
            format!("the eArztbrief breaks the KBV profile: {detail}"),
            "{trail}"
        );
    }
}

/// The one event of `kind` in a trail.
fn the_event(trail: &serde_json::Value, kind: &str) -> serde_json::Value {
    let found: Vec<_> = trail["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .collect();
    assert_eq!(found.len(), 1, "{kind}: {trail}");
    found[0].clone()
}

/// The delivery status part of the DSN about submission `id` that reached `relay`
/// (the Maildir keeps lines ending in LF).
fn dsn_for(install: &Install, relay: &back_office::Relay, id: &str) -> String {
    let marker = format!("X-Kvgate-Tracking-Id: {id}\n");
    let found = || {
        relay
            .messages()
            .into_iter()
            .map(|m| String::from_utf8_lossy(&m).replace("\r\n", "\n"))
            .find(|m| m.contains(&marker))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(dsn) = found() {
            let status = dsn.split("Content-Type: message/delivery-status").nth(1);
            return status.unwrap_or_else(|| panic!("{dsn}")).to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no DSN about {id} reached the relay: {:?} {}",
            relay.messages().len(),
            install.track(id)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn dienstkennung_decides_the_inbox_of_an_address_that_names_none() {
    require(&["openssl", "gpg", "python3"]);
    let install = Install::new();
    let relay = back_office::Relay::start(&install);
    back_office::configure(&install, &relay);
    let server = install.serve(&[]);
    let session = member_session(&install, &server);
    let bare = format!("{MEMBER}@{DOMAIN}");
    let send = |to: &str, headers: &str, subject: &str| {
        let letter = install.practice_letter(
            format!(
                "From: <{PRACTICE}>\r\n{headers}To: <{to}>\r\nSubject: {subject}\r\n\
                 MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nBefund {subject}\r\n"
            )
            .as_bytes(),
            subject,
        );
        let id = tracking_id(&server.send(install.practice_tls(), PRACTICE, &[to], &letter));
        let trail = wait_final(&install, &id);
        (id, trail)
    };

    // A physician's letter: smarthealth, and the trail says why.
    let (id, trail) = send(
        &bare,
        "X-KIM-Dienstkennung: Arztbrief;Entlassbrief;V1.0\r\n",
        "entlassbrief",
    );
    assert_eq!(trail["submission"]["state"], "delivered", "{trail}");
    let routed = the_event(&trail, "routed");
    assert_eq!(routed["recipient"], bare.as_str());
    assert_eq!(
        routed["detail"],
        "to smarthealth: the address named no inbox; X-KIM-Dienstkennung \
         Arztbrief;Entlassbrief;V1.0 is a physician's letter"
    );
    assert_eq!(
        event_kinds(&trail),
        ["accepted", "verified", "routed", "encrypted", "delivered"],
        "{trail}"
    );
    let (status, list) = session.json("GET", "/v1/messages?mailbox=smarthealth", None);
    assert_eq!(status, 200);
    assert!(
        list["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["tracking_id"] == id.as_str() && m["mailbox"] == "smarthealth"),
        "{list}"
    );
    let plaintext =
        gpg_decrypt(&install, &install.work("gnupg"), &letter_of(&session, &id)).unwrap();
    assert!(
        String::from_utf8_lossy(&plaintext).contains("\r\n\r\nBefund entlassbrief\r\n"),
        "{}",
        String::from_utf8_lossy(&plaintext)
    );

    // No Dienstkennung: refused, not guessed, and the sender is told.
    let (id, trail) = send(&bare, "", "ohne");
    assert_eq!(trail["submission"]["state"], "failed", "{trail}");
    let failed = the_event(&trail, "failed");
    assert_eq!(failed["recipient"], bare.as_str());
    assert_eq!(failed["reason"], "inbox-undetermined");
    let detail = format!(
        "the address <{bare}> names no inbox and the letter carries no X-KIM-Dienstkennung; \
         name one: {MEMBER}@smarthealth.{DOMAIN} or {MEMBER}@postfach.{DOMAIN}"
    );
    assert_eq!(failed["detail"], detail.as_str());
    let dsn = dsn_for(&install, &relay, &id);
    assert!(
        dsn.contains(&format!(
            "\nFinal-Recipient: rfc822; {bare}\nAction: failed\nStatus: 5.1.0\n\
             Diagnostic-Code: smtp; 550 5.1.0 inbox-undetermined: {detail}\n"
        )),
        "{dsn}"
    );

    // A member who has not activated smarthealth: the reason RCPT gives for
    // smarthealth, now as a failure DSN.
    account::add_member(&install, &server, "B987654320", "n", &[]);
    let inactive = format!("B987654320@{DOMAIN}");
    let (id, trail) = send(
        &inactive,
        "X-KIM-Dienstkennung: Arztbrief;Entlassbrief;V1.0\r\n",
        "inaktiv",
    );
    assert_eq!(trail["submission"]["state"], "failed", "{trail}");
    let failed = the_event(&trail, "failed");
    assert_eq!(failed["reason"], "smarthealth-inactive");
    assert_eq!(
        failed["detail"],
        "member B987654320 has not activated smarthealth"
    );
    let dsn = dsn_for(&install, &relay, &id);
    assert!(
        dsn.contains(&format!(
            "\nFinal-Recipient: rfc822; {inactive}\nAction: failed\nStatus: 5.1.1\n\
             Diagnostic-Code: smtp; 550 5.1.1 smarthealth-inactive: \
             member B987654320 has not activated smarthealth\n"
        )),
        "{dsn}"
    );

    // The insurer's back office writes to the Postfach, no Dienstkennung needed; with
    // app communication off, the reason RCPT gives for the Postfach.
    let insurer = account::add_insurer(&install);
    let by_insurer = |subject: &str| {
        let inner = format!(
            "From: <{}>\r\nTo: <{bare}>\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\nIhr Bescheid\r\n",
            account::INSURER
        );
        let (cert, key) = (install.work("insurer.pem"), install.work("insurer.key"));
        let letter = install.openssl_letter(inner.as_bytes(), Some((&cert, &key)), subject);
        let reply = server.send(insurer.clone(), account::INSURER, &[&bare], &letter);
        let id = tracking_id(&reply);
        let trail = wait_final(&install, &id);
        (id, trail)
    };
    let (id, trail) = by_insurer("bescheid");
    assert_eq!(trail["submission"]["state"], "delivered", "{trail}");
    assert_eq!(
        the_event(&trail, "routed")["detail"],
        "to postfach: the address named no inbox; the letter is from the insurer's back office"
    );
    let (_, list) = session.json("GET", "/v1/messages?mailbox=postfach", None);
    assert!(
        list["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["tracking_id"] == id.as_str()),
        "{list}"
    );
    let off = serde_json::json!({"app_communication": false});
    assert_eq!(session.json("PUT", "/v1/settings", Some(&off)).0, 200);
    let (id, trail) = by_insurer("aus");
    assert_eq!(trail["submission"]["state"], "failed", "{trail}");
    let failed = the_event(&trail, "failed");
    assert_eq!(failed["reason"], "app-communication-off");
    let dsn = dsn_for(&install, &relay, &id);
    assert!(
        dsn.contains(&format!(
            "\nFinal-Recipient: rfc822; {bare}\nAction: failed\nStatus: 5.7.1\n\
             Diagnostic-Code: smtp; 550 5.7.1 app-communication-off: \
             member {MEMBER} has not turned on app communication; deliver by post\n"
        )),
        "{dsn}"
    );
}

#[test]
fn a_letter_co_signed_by_another_practice_is_its_senders_whatever_the_order() {
    require(&["openssl", "gpg", "curl"]);
    let install = Install::new();
    install.issue_practice("second", "praxis@second.test");
    let server = install.serve(&[]);
    let session = member_session(&install, &server);
    let own = [
        install.pki("demo-practice.pem"),
        install.pki("demo-practice.key"),
    ];
    let other = [install.work("second.pem"), install.work("second.key")];
    // The SignerInfos are sorted by their encoding, so try both orders on the line.
    for signers in [[&own, &other], [&other, &own]] {
        let (input, signed, encrypted) = (
            install.work("cosigned.eml"),
            install.work("cosigned.p7m"),
            install.work("cosigned.enc"),
        );
        std::fs::write(&input, letter_with(&format!("From: <{PRACTICE}>\r\n"))).unwrap();
        let mut sign = Command::new("openssl");
        sign.args(["cms", "-sign", "-md", "sha256", "-in"])
            .arg(&input);
        for [cert, key] in signers {
            sign.arg("-signer").arg(cert).arg("-inkey").arg(key);
        }
        run(sign.arg("-out").arg(&signed));
        run(Command::new("openssl")
            .args(["cms", "-encrypt", "-aes-256-gcm", "-in"])
            .arg(&signed)
            .arg("-out")
            .arg(&encrypted)
            .arg(install.pki("gateway.pem")));
        let (id, trail) = file_letter(&install, &server, &std::fs::read(&encrypted).unwrap());
        let verified = verified_detail(&trail);
        let (signer, rest) = verified.split_once("; co-signed by ").unwrap();
        assert!(signer.contains("Demo Practice"), "{verified}");
        assert!(rest.starts_with("O=Test, CN=second (sha256 "), "{verified}");
        let delivered = letter_of(&session, &id);
        let plaintext = gpg_decrypt(&install, &install.work("gnupg"), &delivered).unwrap();
        let text = String::from_utf8_lossy(&plaintext);
        let field = |name: &str| {
            text.lines()
                .find(|line| line.starts_with(name))
                .unwrap_or_else(|| panic!("no {name}: {text}"))
                .to_owned()
        };
        assert!(
            field("X-Kvgate-Signature: ").contains("Demo Practice"),
            "{text}"
        );
        assert!(
            field("X-Kvgate-Co-Signer: ").contains("CN=second"),
            "{text}"
        );
    }
}
