//! What members send from the app, through the real binary over HTTPS: the copy in
//! `sent` (which `gpg` opens with the member's key), the basic tier without enrolment
//! (rate limits, tracking for the sending install only, no hint whether a KVNR is a
//! member's) and requests to the insurer. aiosmtpd plays the relay and `openssl cms`
//! the back office that opens what arrives.

mod common;

use common::back_office::*;
use common::*;
use serde_json::{Value, json};

/// An install ID as the app generates it.
const INSTALL_A: &str = "install-aaaaaaaaaaaaaaaa";
const INSTALL_B: &str = "install-bbbbbbbbbbbbbbbb";
/// A valid KVNR that belongs to no member.
const STRANGER: &str = "C000000006";

/// An installation with a relay and a back office; the basic tier allows 2 uploads per
/// install and 6 per address.
fn setup() -> (Install, Relay) {
    let install = Install::new();
    let relay = Relay::start(&install);
    configure(&install, &relay);
    install.set_config_table(
        "basic_tier",
        "uploads_per_install = 2\nuploads_per_ip = 6\nwindow_secs = 3600\n",
    );
    (install, relay)
}

/// The metadata the back office reads in a sealed message.
fn metadata(install: &Install, raw: &[u8]) -> Value {
    let inner = open_as_back_office(install, raw);
    let parsed = mail_parser::MessageParser::default()
        .parse(inner.as_slice())
        .unwrap();
    let first = parsed.attachments().next().unwrap();
    serde_json::from_slice(first.contents()).unwrap()
}

/// The metadata of the message the back office got for `tracking_id`.
fn received(install: &Install, relay: &Relay, count: usize, tracking_id: &str) -> Value {
    wait_for_messages(relay, count)
        .iter()
        .map(|raw| metadata(install, raw))
        .find(|m| m["tracking_id"] == tracking_id)
        .unwrap_or_else(|| panic!("{tracking_id} never reached the back office"))
}

/// The member's `sent` mailbox.
fn sent(session: &Session<'_>) -> Vec<Value> {
    let (status, list) = session.json("GET", "/v1/messages?mailbox=sent", None);
    assert_eq!(status, 200, "{list}");
    list["messages"].as_array().unwrap().clone()
}

#[test]
fn an_upload_leaves_a_copy_in_sent_that_only_its_member_reads() {
    require(&["openssl", "gpg", "curl", "python3"]);
    let (install, _relay) = setup();
    let server = install.serve(&[]);
    let (_, key) = gpg_member(&install);
    let alice = Session {
        install: &install,
        server: &server,
        auth: enrol(&install, &server, &key),
    };
    let document = pdf(5_000);
    let file = install.work("scan.pdf");
    std::fs::write(&file, &document).unwrap();
    let fields = [
        ("type", "invoice"),
        ("note", "Rechnung Mai"),
        ("kvnr", MEMBER),
    ];
    let (status, queued) = upload(&alice, &fields, Some((&file, "scan.pdf")));
    assert_eq!(status, 201, "{queued}");
    let id = queued["tracking_id"].as_str().unwrap();

    // Nothing readable of it is on disk: the queue holds S/MIME, `sent` PGP.
    let hits = files_containing(&install.data(), b"Rechnung Mai");
    assert!(hits.is_empty(), "the note is readable in {hits:?}");

    let copies = sent(&alice);
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(copies[0]["tracking_id"], id);
    assert_eq!(copies[0]["mailbox"], "sent");
    assert_eq!(copies[0]["read"], true);
    let (_, postfach) = alice.json("GET", "/v1/messages?mailbox=postfach", None);
    assert_eq!(postfach["messages"], json!([]));
    let (_, all) = alice.json("GET", "/v1/messages", None);
    assert_eq!(all["messages"].as_array().unwrap().len(), 1);

    // Ciphertext on the wire and on disk; the member's key opens it, and it is the
    // message the back office got: note, type and the document itself.
    let copy_id = copies[0]["id"].as_str().unwrap();
    let (status, ciphertext) = alice.call("GET", &format!("/v1/messages/{copy_id}"), None);
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&ciphertext);
    assert!(text.contains("multipart/encrypted"), "{text}");
    assert!(!text.contains("Rechnung") && !text.contains("invoice"));
    let home = install.work("gnupg");
    let plain = gpg_decrypt(&install, &home, &ciphertext).expect("the member's key opens it");
    let parsed = mail_parser::MessageParser::default()
        .parse(plain.as_slice())
        .unwrap();
    assert_eq!(
        parsed.to().unwrap().first().unwrap().address(),
        Some(BACK_OFFICE)
    );
    assert_eq!(
        parsed.header_raw("X-Kvgate-Tracking-Id").map(str::trim),
        Some(id)
    );
    let parts: Vec<_> = parsed.attachments().collect();
    let meta: Value = serde_json::from_slice(parts[0].contents()).unwrap();
    assert_eq!(meta["note"], "Rechnung Mai");
    assert_eq!(meta["type"], "invoice");
    assert!(parts[1].contents() == document.as_slice());

    // Another member can neither list, fetch nor delete it.
    let (bob, _) = second_member(&install, &server);
    assert_eq!(sent(&bob), Vec::<Value>::new());
    let path = format!("/v1/messages/{copy_id}");
    bob.refused("GET", &path, None, 404, "not-found");
    bob.refused("DELETE", &path, None, 404, "not-found");
    alice.refused(
        "GET",
        "/v1/messages?mailbox=outbox",
        None,
        400,
        "invalid-parameter",
    );

    // The member deletes the copy: gone; the upload itself stays tracked.
    let (status, _) = alice.call("DELETE", &path, None);
    assert_eq!(status, 204);
    assert_eq!(sent(&alice), Vec::<Value>::new());
    let (status, _) = alice.call("GET", &format!("/v1/tracking/{id}"), None);
    assert_eq!(status, 200);
}

/// Posts to the basic tier; (status, answer, `Retry-After` if any).
fn basic_upload(
    install: &Install,
    server: &Server,
    fields: &[(&str, &str)],
    file: &std::path::Path,
) -> (u16, Value, Option<String>) {
    let headers = install.work("basic.headers");
    let dump = headers.display().to_string();
    let (status, answer) = post_form(
        install,
        server,
        &["-D", &dump],
        "/v1/basic/documents",
        fields,
        Some((file, "scan.pdf")),
    );
    let retry_after = std::fs::read_to_string(&headers)
        .unwrap()
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("retry-after:")
                .map(|v| v.trim().to_owned())
        });
    (status, answer, retry_after)
}

/// `GET /v1/basic/tracking/{id}` with `install` as `X-Install-Id` (none if `None`).
fn basic_tracking(
    install: &Install,
    server: &Server,
    id: &str,
    install_id: Option<&str>,
) -> (u16, Value) {
    let header = install_id.map(|i| format!("X-Install-Id: {i}"));
    let mut args = Vec::new();
    if let Some(h) = &header {
        args.extend(["-H", h.as_str()]);
    }
    let (status, body) = curl(install, server, &args, &format!("/v1/basic/tracking/{id}"));
    (status, serde_json::from_slice(&body).unwrap())
}

#[test]
fn the_basic_tier_sends_for_any_kvnr_alike_is_rate_limited_and_tracked_for_its_install_only() {
    require(&["openssl", "gpg", "curl", "python3"]);
    let (install, relay) = setup();
    let server = install.serve(&[]);
    let file = install.work("scan.pdf");
    std::fs::write(&file, pdf(3_000)).unwrap();
    let exe = install.work("scan.exe");
    std::fs::write(
        &exe,
        b"MZ\x90\0\x03\0\0\0 This program cannot be run in DOS mode",
    )
    .unwrap();
    let form = |kvnr: &'static str, install_id: &'static str| {
        vec![
            ("type", "sick-note"),
            ("kvnr", kvnr),
            ("install_id", install_id),
        ]
    };

    // Bad input: each refused with its own problem type (3 of the address's 6).
    let cases: [Refusal<'_>; 3] = [
        (
            form("A123456781", INSTALL_A),
            Some((&file, "a.pdf")),
            422,
            "invalid-kvnr",
        ),
        (
            vec![("type", "sick-note"), ("kvnr", MEMBER)],
            Some((&file, "a.pdf")),
            422,
            "invalid-install-id",
        ),
        (
            form(MEMBER, INSTALL_A),
            Some((&exe, "a.pdf")),
            415,
            "unsupported-document-type",
        ),
    ];
    for (fields, file, status, slug) in cases {
        let (got, problem, _) = basic_upload(&install, &server, &fields, file.unwrap().0);
        assert_eq!(
            (got, problem["type"].as_str()),
            (status, Some(format!("urn:kvgate:problem:{slug}").as_str())),
            "{fields:?}: {problem}"
        );
    }

    // A member's KVNR and a stranger's get the same answer; both reach the back office.
    let (status, member, _) = basic_upload(&install, &server, &form(MEMBER, INSTALL_A), &file);
    assert_eq!(status, 201, "{member}");
    let (status, stranger, _) = basic_upload(&install, &server, &form(STRANGER, INSTALL_A), &file);
    assert_eq!(status, 201, "{stranger}");
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&member), ["tracking_id"]);
    assert_eq!(keys(&stranger), ["tracking_id"]);
    let member_id = member["tracking_id"].as_str().unwrap();
    let stranger_id = stranger["tracking_id"].as_str().unwrap();
    let meta = received(&install, &relay, 2, stranger_id);
    assert_eq!(meta["kvnr"], STRANGER);
    assert_eq!(meta["basic_tier"], true);
    assert_eq!(meta["uploader"], Value::Null);
    assert_eq!(meta["type"], "sick-note");

    // The third from the same install: 429 with Retry-After, nothing queued.
    let (status, problem, retry) = basic_upload(&install, &server, &form(MEMBER, INSTALL_A), &file);
    assert_eq!(status, 429, "{problem}");
    assert_eq!(problem["type"], "urn:kvgate:problem:rate-limited");
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((3500..=3600).contains(&retry), "{retry}");
    // Another install from the same address: the address's 7th upload, refused.
    let (status, problem, retry) = basic_upload(&install, &server, &form(MEMBER, INSTALL_B), &file);
    assert_eq!(status, 429, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("address"));
    assert!(retry.is_some());

    // Tracking: only this ID with the install that sent it.
    let (status, trail) = basic_tracking(&install, &server, stranger_id, Some(INSTALL_A));
    assert_eq!(status, 200, "{trail}");
    assert_eq!(trail["tracking_id"], stranger_id);
    assert_eq!(trail["events"][0]["kind"], "accepted");
    for (id, install_id) in [
        (stranger_id, Some(INSTALL_B)),
        (stranger_id, None),
        (stranger_id, Some("short")),
        ("not-an-id", Some(INSTALL_A)),
    ] {
        let (status, problem) = basic_tracking(&install, &server, id, install_id);
        assert_eq!(
            (status, &problem["type"]),
            (404, &json!("urn:kvgate:problem:not-found"))
        );
    }
    // A member's own tracking does not show basic-tier uploads for their KVNR, and the
    // member's session cannot follow them either.
    let alice = member_session(&install, &server);
    alice.refused(
        "GET",
        &format!("/v1/tracking/{member_id}"),
        None,
        404,
        "not-found",
    );
    let (_, documents) = alice.json("GET", "/v1/documents", None);
    assert_eq!(documents["documents"], json!([]));
    assert_eq!(sent(&alice), Vec::<Value>::new());
}

#[test]
fn requests_reach_the_back_office_with_their_rules() {
    require(&["openssl", "gpg", "curl", "python3"]);
    let (install, relay) = setup();
    let server = install.serve(&[]);
    let alice = member_session(&install, &server);
    let (bob, _) = second_member(&install, &server);
    let request =
        |session: &Session<'_>, body: Value| session.json("POST", "/v1/requests", Some(&body));

    // The member's own certificate comes to the Postfach; another person's by post.
    let (status, own) = request(&alice, json!({"type": "insurance-certificate"}));
    assert_eq!(status, 201, "{own}");
    assert_eq!(own["answer_by"], "postfach");
    let (status, same) = request(
        &alice,
        json!({"type": "insurance-certificate", "kvnr": MEMBER}),
    );
    assert_eq!((status, &same["answer_by"]), (201, &json!("postfach")));
    let (status, other) = request(
        &alice,
        json!({"type": "insurance-certificate", "kvnr": STRANGER}),
    );
    assert_eq!(status, 201, "{other}");
    assert_eq!(other["answer_by"], "post");
    assert!(other["notice"].as_str().unwrap().contains("by post"));
    let other_id = other["tracking_id"].as_str().unwrap();
    let meta = received(&install, &relay, 3, other_id);
    assert_eq!(meta["kind"], "request");
    assert_eq!(meta["type"], "insurance-certificate");
    assert_eq!(meta["uploader"], MEMBER);
    assert_eq!(meta["kvnr"], STRANGER);

    // Replacement cards: valid 14 days, 4 a calendar year, then the hotline.
    for _ in 0..4 {
        let (status, card) = request(&alice, json!({"type": "replacement-card"}));
        assert_eq!(status, 201, "{card}");
        let until: kvgate_store::Timestamp = card["valid_until"].as_str().unwrap().parse().unwrap();
        let ahead = until.as_millis() - kvgate_store::now().as_millis();
        let fortnight = 14 * 86_400_000;
        assert!(ahead <= fortnight && ahead > fortnight - 60_000, "{card}");
    }
    let (status, problem) = request(&alice, json!({"type": "replacement-card"}));
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["type"], "urn:kvgate:problem:replacement-card-limit");
    assert!(problem["detail"].as_str().unwrap().contains("08000213213"));
    // The limit is the member's own: another member still gets theirs.
    let (status, _) = request(&bob, json!({"type": "replacement-card"}));
    assert_eq!(status, 201);

    // Health data for smarthealth, with what the member must know about it.
    let (status, health) = request(
        &alice,
        json!({"type": "health-data", "categories": ["physician", "medication"]}),
    );
    assert_eq!(status, 201, "{health}");
    assert_eq!(health["answer_by"], "smarthealth");
    let notice = health["notice"].as_str().unwrap();
    assert!(
        notice.contains("four years") && notice.contains("six") && notice.contains("6 to 9 months")
    );
    let health_id = health["tracking_id"].as_str().unwrap();
    let meta = received(&install, &relay, 9, health_id);
    assert_eq!(
        meta["details"],
        json!({"categories": ["physician", "medication"]})
    );

    // Every request is tracked for its member, and copied to their sent mailbox.
    let (status, trail) = alice.json("GET", &format!("/v1/tracking/{health_id}"), None);
    assert_eq!(status, 200, "{trail}");
    assert_eq!(sent(&alice).len(), 8);
    bob.refused(
        "GET",
        &format!("/v1/tracking/{health_id}"),
        None,
        404,
        "not-found",
    );
    assert_eq!(sent(&bob).len(), 1);
    let (_, documents) = alice.json("GET", "/v1/documents", None);
    assert_eq!(
        documents["documents"],
        json!([]),
        "requests are not documents"
    );

    // Bad input.
    let cases = [
        (
            json!({"type": "insurance-certificate", "kvnr": "A123456781"}),
            422,
            "invalid-kvnr",
        ),
        (
            json!({"type": "health-data", "categories": []}),
            422,
            "missing-categories",
        ),
        (
            json!({"type": "health-data", "categories": ["dentist", "dentist"]}),
            422,
            "duplicate-categories",
        ),
        (
            json!({"type": "health-data", "categories": ["x-ray"]}),
            400,
            "invalid-request",
        ),
        (json!({"type": "passport"}), 400, "invalid-request"),
        (
            json!({"type": "replacement-card", "colour": "red"}),
            400,
            "invalid-request",
        ),
        (json!({"kvnr": MEMBER}), 400, "invalid-request"),
    ];
    for (body, status, slug) in cases {
        alice.refused("POST", "/v1/requests", Some(&body), status, slug);
    }
    let malformed = install.work("malformed.json");
    std::fs::write(&malformed, "{\"type\": ").unwrap();
    let data = format!("@{}", malformed.display());
    let (status, _) = curl(
        &install,
        &server,
        &[
            "-H",
            &alice.auth,
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &data,
        ],
        "/v1/requests",
    );
    assert_eq!(status, 400);
    let (status, _) = curl(
        &install,
        &server,
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "{\"type\":\"replacement-card\"}",
        ],
        "/v1/requests",
    );
    assert_eq!(status, 401);

    // After the membership ended, the Postfach stays readable, but nothing more is
    // asked of the insurer.
    let yesterday = run(std::process::Command::new("date").args(["-u", "-d", "yesterday", "+%F"]));
    let yesterday = String::from_utf8(yesterday.stdout).unwrap();
    install.admin_ok(&["member", "end", MEMBER, "--date", yesterday.trim()]);
    alice.refused(
        "POST",
        "/v1/requests",
        Some(&json!({"type": "replacement-card"})),
        403,
        "membership-ended",
    );
    assert_eq!(alice.json("GET", "/v1/messages", None).0, 200);
}
