//! One letter end to end through the real binary: made by `openssl cms`, sent over
//! implicit TLS with the practice's client certificate, re-encrypted to a device key
//! made by `gpg`, pulled with `curl`, decrypted by `gpg`.

mod common;

use base64::Engine;
use common::*;

fn pdf_bytes() -> Vec<u8> {
    let mut pdf = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
    pdf.extend((0..=255u8).cycle().take(70_000));
    pdf.extend_from_slice(b"\n%%EOF\n");
    pdf
}

fn letter_with_pdf(subject: &str, pdf: &[u8]) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(pdf);
    let mut out = format!(
        "From: Demo Practice <{PRACTICE}>\r\nTo: <{MEMBER}@smarthealth.{DOMAIN}>\r\nSubject: {subject}\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nIhr Befund liegt bei.\r\n\
         --b1\r\nContent-Type: application/pdf; name=\"befund.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"befund.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    );
    for line in encoded.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push_str("\r\n");
    }
    out.push_str("--b1--\r\n");
    out.into_bytes()
}

#[test]
fn openssl_letter_reaches_gpg_member_intact() {
    require(&["openssl", "gpg", "curl"]);
    let install = Install::new();
    let server = install.serve(&[]);
    let (home, public_key) = gpg_member(&install);

    // Enrol the gpg key as a device.
    let auth = enrol(&install, &server, &public_key);
    let body = install.work("enrol.json");

    // The code is single use.
    let (status, problem) = curl(
        &install,
        &server,
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!("@{}", body.display()),
        ],
        "/v1/enroll",
    );
    assert_eq!(status, 403);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&problem).unwrap()["type"],
        "urn:kvgate:problem:enrollment-code-invalid"
    );

    let pdf = pdf_bytes();
    let message = install.practice_letter(&letter_with_pdf("Befund", &pdf), "Befund");
    let (id, trail) = file_letter(&install, &server, &message);
    assert_eq!(
        event_kinds(&trail),
        ["accepted", "verified", "encrypted", "delivered"]
    );

    let (status, list) = curl(
        &install,
        &server,
        &["-H", &auth],
        "/v1/messages?mailbox=smarthealth",
    );
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_slice(&list).unwrap();
    let messages = list["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{list}");
    assert_eq!(messages[0]["tracking_id"], id.as_str());
    assert_eq!(messages[0]["mailbox"], "smarthealth");
    assert_eq!(messages[0]["read"], false);
    let message_id = messages[0]["id"].as_str().unwrap().to_owned();
    let (status, postfach) = curl(
        &install,
        &server,
        &["-H", &auth],
        "/v1/messages?mailbox=postfach",
    );
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&postfach).unwrap()["messages"],
        serde_json::json!([])
    );

    let (status, pgp_mime) = curl(
        &install,
        &server,
        &["-H", &auth],
        &format!("/v1/messages/{message_id}"),
    );
    assert_eq!(status, 200);
    // The size listed is the size fetched (the store keeps the OpenPGP part unarmored).
    assert_eq!(messages[0]["size"], pgp_mime.len());
    let text = String::from_utf8(pgp_mime.clone()).unwrap();
    assert!(
        text.contains("Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\""),
        "{text}"
    );
    assert!(text.contains("Subject: [...]"));
    assert!(
        !text.contains("Befund"),
        "the subject must not be visible outside the encryption"
    );

    // gpg decrypts the armored part of the PGP/MIME message.
    let plaintext = gpg_decrypt(&install, &home, &pgp_mime).expect("gpg decrypts the letter");
    let parsed = mail_parser::MessageParser::default()
        .parse(plaintext.as_slice())
        .unwrap();
    assert_eq!(parsed.subject(), Some("Befund"));
    // The From address is the one in the practice's signing certificate (RFC 8550 §3).
    let verification = parsed.header_raw("X-Kvgate-Verification").unwrap();
    assert!(
        verification.trim_end().ends_with("from-in-certificate=yes"),
        "{verification}"
    );
    assert_eq!(
        parsed
            .header("X-Kvgate-Tracking-Id")
            .and_then(|h| h.as_text()),
        Some(id.as_str())
    );
    let attachment = parsed
        .attachments()
        .find(|a| mail_parser::MimeHeaders::attachment_name(*a) == Some("befund.pdf"))
        .unwrap();
    assert_eq!(
        attachment.contents(),
        pdf.as_slice(),
        "attachment bytes differ"
    );

    let (status, _) = curl(
        &install,
        &server,
        &["-X", "POST", "-H", &auth],
        &format!("/v1/messages/{message_id}/read"),
    );
    assert_eq!(status, 204);
    let trail = install.track(&id);
    assert_eq!(
        event_kinds(&trail),
        [
            "accepted",
            "verified",
            "encrypted",
            "delivered",
            "fetched",
            "read"
        ]
    );

    // Without a token, and with another member's view, nothing is disclosed.
    let (status, _) = curl(&install, &server, &[], "/v1/messages");
    assert_eq!(status, 401);
    let (status, _) = curl(
        &install,
        &server,
        &["-H", &auth],
        "/v1/messages/01ARZ3NDEKTSV4RRFFQ69G5FAV",
    );
    assert_eq!(status, 404);

    assert!(
        server.terminate().success(),
        "SIGTERM must stop serve with exit 0"
    );
}
