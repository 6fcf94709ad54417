//! The messenger and replies through the real binary: the member writes over HTTPS,
//! aiosmtpd (the relay) receives what goes to the back office and `openssl cms` opens
//! it as the back office; the back office answers over SMTPS with its own certificate
//! (an insurer sender) and `In-Reply-To`, and the answer appears in the thread, which
//! `gpg` decrypts with the member's key.

mod common;

use common::back_office::*;
use common::*;
use serde_json::{Value, json};

/// Registers the back office's certificate as the insurer sender.
fn register_insurer(install: &Install) {
    let cert = install.work("backoffice.pem");
    install.admin_ok(&[
        "sender",
        "add",
        "--id",
        "backoffice",
        "--cert",
        cert.to_str().unwrap(),
        "--from",
        BACK_OFFICE,
        "--kind",
        "insurer",
    ]);
}

/// The back office writes to `kvnr`'s Postfach over SMTPS: a text letter signed with
/// its certificate and encrypted to the gateway, with the given extra headers. Waits
/// until it is filed; returns its tracking ID.
fn insurer_letter(
    install: &Install,
    server: &Server,
    kvnr: &str,
    headers: &str,
    body: &str,
) -> String {
    let inner = format!(
        "From: Back Office <{BACK_OFFICE}>\r\nTo: <{kvnr}@postfach.{DOMAIN}>\r\nSubject: Ihre Nachricht\r\n\
         {headers}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    );
    let message = install.openssl_letter(
        inner.as_bytes(),
        Some((
            &install.work("backoffice.pem"),
            &install.work("backoffice.key"),
        )),
        "Ihre Nachricht",
    );
    let reply = server.send(
        install.tls_as("backoffice.pem", "backoffice.key"),
        BACK_OFFICE,
        &[&format!("{kvnr}@postfach.{DOMAIN}")],
        &message,
    );
    let id = tracking_id(&reply);
    let trail = wait_final(install, &id);
    assert_eq!(trail["submission"]["state"], "delivered", "{trail}");
    id
}

/// Posts a message form (`text`, files by path) to `path` as `session`.
fn write(
    session: &Session<'_>,
    path: &str,
    text: Option<&str>,
    files: &[&std::path::Path],
) -> (u16, Value) {
    let specs: Vec<String> = files
        .iter()
        .map(|f| format!("file=@{};filename=scan.pdf", f.display()))
        .collect();
    let mut args = vec!["-H", session.auth.as_str()];
    for spec in &specs {
        args.extend(["-F", spec.as_str()]);
    }
    let fields: Vec<(&str, &str)> = text.map(|t| ("text", t)).into_iter().collect();
    post_form(session.install, session.server, &args, path, &fields, None)
}

/// The back office's view of the `n`-th message the relay received: its raw headers
/// and the decrypted inner entity.
fn at_back_office(
    install: &Install,
    relay: &Relay,
    tracking_id: &str,
    count: usize,
) -> (String, Vec<u8>) {
    let raw = wait_for_messages(relay, count)
        .into_iter()
        .find(|raw| {
            String::from_utf8_lossy(raw).contains(&format!("X-Kvgate-Tracking-Id: {tracking_id}"))
        })
        .unwrap_or_else(|| panic!("{tracking_id} never reached the back office"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let headers = text.split("\r\n\r\n").next().unwrap().to_owned();
    (headers, open_as_back_office(install, &raw))
}

/// The header `name` of a header block.
fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    })
}

#[test]
fn a_conversation_goes_to_the_back_office_and_its_answers_come_back_into_the_thread() {
    require(&["openssl", "gpg", "curl", "python3"]);
    let install = Install::new();
    let relay = Relay::start(&install);
    configure(&install, &relay);
    register_insurer(&install);
    let server = install.serve(&[]);
    let alice = member_session(&install, &server);
    let scan = install.work("scan.pdf");
    std::fs::write(&scan, pdf(2_000)).unwrap();

    // The member begins a conversation, with an attachment.
    let (status, first) = write(&alice, "/v1/threads", Some("Frage zur Rechnung"), &[&scan]);
    assert_eq!(status, 201, "{first}");
    let thread = first["thread_id"].as_str().unwrap().to_owned();
    let first_id = first["tracking_id"].as_str().unwrap();
    let (headers, inner) = at_back_office(&install, &relay, first_id, 1);
    let hits = files_containing(&install.data(), b"Frage zur Rechnung");
    assert!(hits.is_empty(), "the message is readable in {hits:?}");
    assert_eq!(
        header(&headers, "X-Kvgate-Thread-Id"),
        Some(thread.as_str())
    );
    let message_id = header(&headers, "Message-ID").unwrap().to_owned();
    assert_eq!(message_id, format!("<message.{first_id}@{DOMAIN}>"));
    assert!(
        !headers.contains("Frage"),
        "the text leaked outside the encryption"
    );
    let parsed = mail_parser::MessageParser::default()
        .parse(inner.as_slice())
        .unwrap();
    assert_eq!(parsed.body_text(0).unwrap().trim(), "Frage zur Rechnung");
    let parts: Vec<_> = parsed.attachments().collect();
    let meta: Value = serde_json::from_slice(parts[0].contents()).unwrap();
    assert_eq!(meta["kind"], "message");
    assert_eq!(meta["thread_id"], thread.as_str());
    assert_eq!(meta["uploader"], MEMBER);
    assert_eq!(parts.len(), 2);

    // The back office answers by SMTP; the answer joins the thread.
    let answer = insurer_letter(
        &install,
        &server,
        MEMBER,
        &format!("Message-ID: <answer-1@backoffice.test>\r\nIn-Reply-To: {message_id}\r\n"),
        "Antwort der Kasse",
    );
    let (status, view) = alice.json("GET", &format!("/v1/threads/{thread}"), None);
    assert_eq!(status, 200, "{view}");
    let messages = view["messages"].as_array().unwrap();
    let mailboxes: Vec<&str> = messages
        .iter()
        .map(|m| m["mailbox"].as_str().unwrap())
        .collect();
    assert_eq!(mailboxes, ["sent", "postfach"]);
    assert_eq!(messages[1]["tracking_id"], answer.as_str());
    assert_eq!(messages[1]["thread_id"], thread.as_str());
    let answer_message = messages[1]["id"].as_str().unwrap().to_owned();
    let letter = letter_of(&alice, &answer);
    let plain =
        gpg_decrypt(&install, &install.work("gnupg"), &letter).expect("member's key opens it");
    assert!(String::from_utf8_lossy(&plain).contains("Antwort der Kasse"));
    let (_, threads) = alice.json("GET", "/v1/threads", None);
    assert_eq!(threads["threads"].as_array().unwrap().len(), 1);
    assert_eq!(threads["threads"][0]["id"], thread.as_str());

    // Replying to the answer stays in the thread, In-Reply-To the answer.
    let (status, reply) = write(
        &alice,
        &format!("/v1/messages/{answer_message}/reply"),
        Some("Danke"),
        &[],
    );
    assert_eq!(status, 201, "{reply}");
    assert_eq!(reply["thread_id"], thread.as_str());
    let (headers, _) = at_back_office(&install, &relay, reply["tracking_id"].as_str().unwrap(), 2);
    assert_eq!(
        header(&headers, "In-Reply-To"),
        Some("<answer-1@backoffice.test>")
    );
    // Continuing the thread.
    let (status, more) = write(
        &alice,
        &format!("/v1/threads/{thread}/messages"),
        Some("Noch etwas"),
        &[],
    );
    assert_eq!(status, 201, "{more}");
    assert_eq!(more["thread_id"], thread.as_str());
    let (headers, _) = at_back_office(&install, &relay, more["tracking_id"].as_str().unwrap(), 3);
    assert_eq!(
        header(&headers, "X-Kvgate-Thread-Id"),
        Some(thread.as_str())
    );
    assert!(header(&headers, "In-Reply-To").is_some());
    let (_, view) = alice.json("GET", &format!("/v1/threads/{thread}"), None);
    assert_eq!(view["messages"].as_array().unwrap().len(), 4);

    // A reply to a letter outside any thread begins a new one, with the letter as origin.
    let plain_letter = insurer_letter(
        &install,
        &server,
        MEMBER,
        "Message-ID: <news-1@backoffice.test>\r\n",
        "Neuigkeiten",
    );
    let (_, list) = alice.json("GET", "/v1/messages?mailbox=postfach", None);
    let news = list["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["tracking_id"] == plain_letter.as_str())
        .unwrap()
        .clone();
    assert_eq!(news.get("thread_id"), None);
    let news_id = news["id"].as_str().unwrap();
    let (status, answer_to_news) = write(
        &alice,
        &format!("/v1/messages/{news_id}/reply"),
        Some("Gelesen"),
        &[],
    );
    assert_eq!(status, 201, "{answer_to_news}");
    let new_thread = answer_to_news["thread_id"].as_str().unwrap();
    assert_ne!(new_thread, thread);
    let (_, view) = alice.json("GET", &format!("/v1/threads/{new_thread}"), None);
    assert_eq!(view["origin"], news_id);
    let (headers, _) = at_back_office(
        &install,
        &relay,
        answer_to_news["tracking_id"].as_str().unwrap(),
        4,
    );
    assert_eq!(
        header(&headers, "In-Reply-To"),
        Some("<news-1@backoffice.test>")
    );

    // Another member: none of this is theirs, and an answer to Alice's message sent to
    // them does not join Alice's thread.
    let (bob, _) = account::add_member(&install, &server, BOB, "bob", &["--app-communication"]);
    let (_, theirs) = bob.json("GET", "/v1/threads", None);
    assert_eq!(theirs["threads"], json!([]));
    bob.refused(
        "GET",
        &format!("/v1/threads/{thread}"),
        None,
        404,
        "not-found",
    );
    let (status, problem) = write(
        &bob,
        &format!("/v1/threads/{thread}/messages"),
        Some("x"),
        &[],
    );
    assert_eq!(
        (status, &problem["type"]),
        (404, &json!("urn:kvgate:problem:not-found"))
    );
    let (status, _) = write(
        &bob,
        &format!("/v1/messages/{answer_message}/reply"),
        Some("x"),
        &[],
    );
    assert_eq!(status, 404);
    let stray = insurer_letter(
        &install,
        &server,
        BOB,
        &format!("In-Reply-To: {message_id}\r\n"),
        "Irrläufer",
    );
    let (_, bobs) = bob.json("GET", "/v1/messages", None);
    let filed = bobs["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["tracking_id"] == stray.as_str())
        .unwrap()
        .clone();
    assert_eq!(filed.get("thread_id"), None);
    // Nor does a practice's letter to smarthealth that names it.
    let inner = format!(
        "From: Demo Practice <{PRACTICE}>\r\nTo: <{MEMBER}@smarthealth.{DOMAIN}>\r\n\
         Subject: Befund\r\nIn-Reply-To: {message_id}\r\nContent-Type: text/plain\r\n\r\nBefund\r\n"
    );
    let finding = install.practice_letter(inner.as_bytes(), "Befund");
    let (finding, _) = file_letter(&install, &server, &finding);
    let (_, view) = alice.json("GET", &format!("/v1/threads/{thread}"), None);
    assert_eq!(view["messages"].as_array().unwrap().len(), 4);
    let (_, list) = alice.json("GET", "/v1/messages?mailbox=smarthealth", None);
    let filed = list["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["tracking_id"] == finding.as_str())
        .unwrap()
        .clone();
    assert_eq!(filed.get("thread_id"), None);

    // Bad input.
    let exe = install.work("virus.pdf");
    std::fs::write(
        &exe,
        b"MZ\x90\0\x03\0\0\0 This program cannot be run in DOS mode",
    )
    .unwrap();
    let long = "x".repeat(10_001);
    let six = [scan.as_path(); 6];
    let cases: [(Option<&str>, &[&std::path::Path], u16, &str); 5] = [
        (None, &[scan.as_path()], 422, "missing-field"),
        (Some("   "), &[], 422, "missing-field"),
        (Some(&long), &[], 422, "text-too-long"),
        (Some("x"), &six, 422, "too-many-attachments"),
        (
            Some("x"),
            &[exe.as_path()],
            415,
            "unsupported-document-type",
        ),
    ];
    for (text, files, status, slug) in cases {
        let (got, problem) = write(&alice, "/v1/threads", text, files);
        assert_eq!(
            (got, problem["type"].as_str()),
            (status, Some(format!("urn:kvgate:problem:{slug}").as_str())),
            "{problem}"
        );
    }
    let (status, problem) = post_form(
        &install,
        &server,
        &["-H", &alice.auth],
        "/v1/threads",
        &[("text", "x"), ("colour", "red")],
        None,
    );
    assert_eq!(
        (status, &problem["type"]),
        (400, &json!("urn:kvgate:problem:invalid-form"))
    );
    alice.refused(
        "POST",
        "/v1/threads",
        Some(&json!({"text": "x"})),
        415,
        "not-multipart",
    );
    let copy = view["messages"][0]["id"].as_str().unwrap();
    let (status, problem) = write(
        &alice,
        &format!("/v1/messages/{copy}/reply"),
        Some("x"),
        &[],
    );
    assert_eq!(
        (status, &problem["type"]),
        (409, &json!("urn:kvgate:problem:not-replyable"))
    );
    let (smarthealth, _) = deliver(&install, &server, "Befund");
    let (_, list) = alice.json("GET", "/v1/messages?mailbox=smarthealth", None);
    let finding = list["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["tracking_id"] == smarthealth.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = write(
        &alice,
        &format!("/v1/messages/{finding}/reply"),
        Some("x"),
        &[],
    );
    assert_eq!(status, 409);
    alice.refused("GET", "/v1/threads/not-a-thread", None, 404, "not-found");
    let (status, _) = curl(&install, &server, &[], "/v1/threads");
    assert_eq!(status, 401);
    let (_, threads) = alice.json("GET", "/v1/threads", None);
    assert_eq!(
        threads["threads"].as_array().unwrap().len(),
        2,
        "refused messages began no thread"
    );
}
