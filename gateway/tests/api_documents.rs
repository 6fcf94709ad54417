//! Document uploads through the real binary: `curl -F` uploads over HTTPS, aiosmtpd
//! (its stock Maildir handler) plays the relay, and `openssl cms` plays the back office
//! that decrypts the upload and checks the gateway's signature.

mod common;

use std::time::{Duration, Instant};

use common::back_office::*;
use common::*;
use serde_json::Value;

#[test]
fn an_upload_reaches_the_back_office_sealed_and_is_tracked_for_its_uploader_only() {
    require(&["openssl", "gpg", "curl", "python3"]);
    let install = Install::new();
    let relay = Relay::start(&install);
    configure(&install, &relay);
    let server = install.serve(&[]);
    let alice = member_session(&install, &server);

    // A PDF called .png is a PDF.
    let document = pdf(100_000);
    let file = install.work("scan.png");
    std::fs::write(&file, &document).unwrap();
    let fields = [
        ("type", "invoice"),
        ("note", "Rechnung März"),
        ("kvnr", MEMBER),
    ];
    let (status, queued) = upload(&alice, &fields, Some((&file, "scan.png")));
    assert_eq!(status, 201, "{queued}");
    let id = queued["tracking_id"].as_str().unwrap().to_owned();

    // The back office gets it sealed, and only the back office can open it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while relay.messages().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the upload never reached the relay"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let received = relay.messages();
    assert_eq!(received.len(), 1);
    let raw = &received[0];
    let outer = mail_parser::MessageParser::default()
        .parse(raw.as_slice())
        .unwrap();
    assert_eq!(
        outer.header_raw("X-Kvgate-Tracking-Id").map(str::trim),
        Some(id.as_str())
    );
    assert_eq!(
        outer.to().unwrap().first().unwrap().address(),
        Some(BACK_OFFICE)
    );
    let text = String::from_utf8_lossy(raw);
    assert!(text.contains("smime-type=authEnveloped-data"), "{text}");
    assert!(
        !text.contains("invoice") && !text.contains(MEMBER),
        "metadata leaked outside the encryption"
    );
    let inner = open_as_back_office(&install, raw);
    let parsed = mail_parser::MessageParser::default()
        .parse(inner.as_slice())
        .unwrap();
    let parts: Vec<_> = parsed.attachments().collect();
    assert_eq!(parts.len(), 2, "{}", String::from_utf8_lossy(&inner));
    let metadata: Value = serde_json::from_slice(parts[0].contents()).unwrap();
    assert_eq!(metadata["tracking_id"], id.as_str());
    assert_eq!(metadata["type"], "invoice");
    assert_eq!(metadata["note"], "Rechnung März");
    assert_eq!(metadata["kvnr"], MEMBER);
    assert_eq!(metadata["content_type"], "application/pdf");
    assert!(
        parts[1].contents() == document.as_slice(),
        "the document arrived changed"
    );
    assert_eq!(
        mail_parser::MimeHeaders::attachment_name(parts[1]),
        Some("document.pdf")
    );

    // The uploader follows it; the relay's 250 is its delivery.
    let deadline = Instant::now() + Duration::from_secs(30);
    let trail = loop {
        let (status, trail) = alice.json("GET", &format!("/v1/tracking/{id}"), None);
        assert_eq!(status, 200);
        if trail["state"] == "delivered" {
            break trail;
        }
        assert!(Instant::now() < deadline, "never delivered: {trail}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let kinds: Vec<&str> = trail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["accepted", "delivered"]);
    let (status, list) = alice.json("GET", "/v1/documents", None);
    assert_eq!(status, 200);
    assert_eq!(
        list["documents"],
        serde_json::json!([{
            "tracking_id": id, "type": "invoice", "kvnr": MEMBER, "content_type": "application/pdf",
            "size": 100_000, "uploaded_at": list["documents"][0]["uploaded_at"], "state": "delivered",
        }])
    );
    let out = install.admin(&["track", &id]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .starts_with(&format!("tracking {id}: a member's upload from the app\n"))
    );
    let out = install.admin(&["track", &id, "--verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Nobody else's tracking: another member sees neither this upload nor a
    // practice's letter to this member; this member follows that letter to delivery.
    let (bob, _) = second_member(&install, &server);
    bob.refused("GET", &format!("/v1/tracking/{id}"), None, 404, "not-found");
    let (_, theirs) = bob.json("GET", "/v1/documents", None);
    assert_eq!(theirs["documents"], serde_json::json!([]));
    let (letter, _) = deliver(&install, &server, "Befund");
    let (status, trail) = alice.json("GET", &format!("/v1/tracking/{letter}"), None);
    assert_eq!(status, 200, "{trail}");
    assert_eq!(trail["tracking_id"], letter.as_str());
    assert_eq!(trail["state"], "delivered", "{trail}");
    let kinds: Vec<&str> = trail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["accepted", "verified", "encrypted", "delivered"]);
    bob.refused(
        "GET",
        &format!("/v1/tracking/{letter}"),
        None,
        404,
        "not-found",
    );
    alice.refused("GET", "/v1/tracking/not-an-id", None, 404, "not-found");

    // Exactly at the limit, with a note of exactly 2000 characters (not octets).
    let at_limit = install.work("at-limit.pdf");
    std::fs::write(&at_limit, pdf(MAX_UPLOAD)).unwrap();
    let long_note = "ä".repeat(2000);
    let (status, answer) = upload(
        &alice,
        &[("type", "other"), ("note", &long_note), ("kvnr", MEMBER)],
        Some((&at_limit, "a.pdf")),
    );
    assert_eq!(status, 201, "{answer}");

    // Refusals, each with its own problem type; none of them is queued.
    let over = install.work("over.pdf");
    std::fs::write(&over, pdf(MAX_UPLOAD + 1)).unwrap();
    let exe = install.work("invoice.pdf");
    std::fs::write(
        &exe,
        b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0This program cannot be run in DOS mode",
    )
    .unwrap();
    let too_long = "a".repeat(2001);
    let own = [("type", "invoice"), ("kvnr", MEMBER)];
    let cases: Vec<Refusal<'_>> = vec![
        (
            own.to_vec(),
            Some((&exe, "invoice.pdf")),
            415,
            "unsupported-document-type",
        ),
        (
            own.to_vec(),
            Some((&over, "over.pdf")),
            413,
            "document-too-large",
        ),
        (
            vec![("type", "invoice"), ("note", &too_long), ("kvnr", MEMBER)],
            Some((&file, "a.pdf")),
            422,
            "note-too-long",
        ),
        (
            vec![("type", "sick-note"), ("note", "x"), ("kvnr", MEMBER)],
            Some((&file, "a.pdf")),
            422,
            "note-not-allowed",
        ),
        (
            vec![("type", "invoice"), ("kvnr", "A123456781")],
            Some((&file, "a.pdf")),
            422,
            "invalid-kvnr",
        ),
        (
            vec![("type", "invoice"), ("kvnr", BOB)],
            Some((&file, "a.pdf")),
            422,
            "kvnr-not-allowed",
        ),
        (
            vec![("type", "invoice"), ("kvnr", "C000000006")],
            Some((&file, "a.pdf")),
            422,
            "kvnr-not-allowed",
        ),
        (
            vec![("type", "passport"), ("kvnr", MEMBER)],
            Some((&file, "a.pdf")),
            422,
            "invalid-document-type",
        ),
        (own.to_vec(), None, 422, "missing-field"),
        (
            vec![("type", "invoice"), ("kvnr", MEMBER), ("colour", "red")],
            Some((&file, "a.pdf")),
            400,
            "invalid-form",
        ),
    ];
    let mut refusals = Vec::new();
    for (fields, file, status, slug) in cases {
        let (got, problem) = upload(&alice, &fields, file);
        assert_eq!(
            (got, problem["type"].as_str()),
            (status, Some(format!("urn:kvgate:problem:{slug}").as_str())),
            "{fields:?}: {problem}"
        );
        refusals.push(problem["detail"].as_str().unwrap().to_owned());
    }
    // Bob's KVNR and one nobody has are refused alike: nothing tells them apart.
    assert_eq!(refusals[5], refusals[6]);
    alice.refused(
        "POST",
        "/v1/documents",
        Some(&serde_json::json!({"type": "invoice"})),
        415,
        "not-multipart",
    );
    let (_, list) = alice.json("GET", "/v1/documents", None);
    assert_eq!(list["documents"].as_array().unwrap().len(), 2);
    let (status, _) = curl(&install, &server, &["-F", "type=invoice"], "/v1/documents");
    assert_eq!(status, 401);
}
