//! Receipts through a real relay: `aiosmtpd` (tests/relay/receiver.py) receives what
//! kvgate's outbound queue sends. Each report is checked three ways: Python's `email`
//! package (the receiver's summary), `mail-parser`, and `openssl cms -verify` for the
//! gateway's S/MIME signature.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use common::*;
use kvgate::client::smtp::SmtpClient;
use sha2::{Digest, Sha256};

/// `message` with every line ending CRLF, as SMTP carries it (and the gateway
/// normalises it).
fn crlf(message: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 40);
    for (i, &b) in message.iter().enumerate() {
        if b == b'\n' && (i == 0 || message[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// The aiosmtpd receiver, on a port fixed for the life of the test.
struct Relay {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Relay {
    /// Reserves a port; the receiver is not started yet.
    fn new(install: &Install) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Relay {
            port,
            dir: install.work("relay"),
            child: None,
        }
    }

    fn start(&mut self) {
        self.start_holding(0);
    }

    /// Starts the receiver; it holds each final reply `hold` seconds.
    fn start_holding(&mut self, hold: u32) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/relay/receiver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(self.port.to_string())
            .arg(&self.dir)
            .arg(hold.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert!(
            line.starts_with("listening on"),
            "the aiosmtpd receiver did not start (pip install aiosmtpd): {line:?}"
        );
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The messages received so far.
    fn count(&self) -> usize {
        std::fs::read_dir(&self.dir).map_or(0, |d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".json"))
            })
            .count()
        })
    }

    /// Waits for message `n` (from 1); returns (raw bytes, receiver's summary).
    fn wait_for(&self, n: usize) -> (Vec<u8>, serde_json::Value) {
        let json = self.dir.join(format!("{n}.json"));
        wait_until(&format!("report {n} never reached the relay"), 60, || {
            json.exists()
        });
        let raw = std::fs::read(self.dir.join(format!("{n}.eml"))).unwrap();
        let summary = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
        (raw, summary)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Points the installation at the relay, with retries fast enough for a test and no
/// delay warnings (a letter briefly queued must not draw a delay DSN).
fn configure_relay(install: &Install, relay: &Relay) {
    configure_relay_with(install, relay, 3600, 3600);
}

/// The same, with waits recorded as delayed after `delay_secs` and letters and reports
/// given up after `lifetime_secs`.
fn configure_relay_with(install: &Install, relay: &Relay, delay_secs: u64, lifetime_secs: u64) {
    install.set_config_table(
        "relay",
        &format!("address = \"127.0.0.1:{}\"\ntls = \"none\"\n", relay.port),
    );
    install.set_config_table(
        "queue",
        &format!(
            "first_retry_secs = 1\nmax_retry_secs = 1\ndelay_warning_secs = {delay_secs}\n\
             lifetime_secs = {lifetime_secs}\nper_destination = 2\ntimeout_secs = 10\n"
        ),
    );
}

/// Submits over SMTPS with DSN parameters on MAIL and RCPT.
fn send_with(
    server: &Server,
    install: &Install,
    mail_params: &str,
    rcpt_params: &str,
    message: &[u8],
) -> String {
    let reply = block_on(async {
        let (mut client, _) =
            SmtpClient::connect(server.smtps, "localhost", install.practice_tls())
                .await
                .unwrap();
        for line in [
            "EHLO practice.test".to_owned(),
            format!("MAIL FROM:<{PRACTICE}> {mail_params}"),
            format!("RCPT TO:<{MEMBER}@smarthealth.{DOMAIN}> {rcpt_params}"),
        ] {
            let reply = client.command(&line).await.unwrap();
            assert_eq!(reply.code, 250, "{line}: {reply}");
        }
        client.data(message).await.unwrap()
    });
    tracking_id(&reply)
}

/// `openssl cms -verify` of a signed report against the development CA.
fn assert_signed_by_gateway(install: &Install, raw: &[u8]) {
    let file = install.work("report.eml");
    std::fs::write(&file, raw).unwrap();
    let out = Command::new("openssl")
        .args(["cms", "-verify", "-in"])
        .arg(&file)
        .arg("-CAfile")
        .arg(install.pki("ca.pem"))
        .args(["-out", "/dev/null"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl cms -verify refused the report: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The report entity inside the multipart/signed, as mail-parser reads it.
fn report_text(raw: &[u8]) -> String {
    let parsed = mail_parser::MessageParser::default().parse(raw).unwrap();
    assert_eq!(
        parsed.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied")
    );
    String::from_utf8_lossy(raw).into_owned()
}

fn reported(install: &Install, id: &str) -> usize {
    event_kinds(&install.track(id))
        .iter()
        .filter(|k| *k == "reported")
        .count()
}

#[test]
fn delivery_status_notifications_follow_notify_and_ret() {
    require(&["openssl", "python3"]);
    let install = Install::new();
    let mut relay = Relay::new(&install);
    relay.start();
    configure_relay(&install, &relay);
    let server = install.serve(&[]);

    // An unsigned letter fails; the default NOTIFY (FAILURE,DELAY) asks for a DSN.
    let unsigned = install.openssl_letter(&text_letter("x", "UNSIGNED-MARKER"), None, "Befund");
    let failed_id = server.send_to_member(&install, &unsigned);
    let (raw, summary) = relay.wait_for(1);
    assert_eq!(summary["mail_from"], "<>");
    assert_eq!(summary["rcpt_tos"], serde_json::json!([PRACTICE]));
    let report = &summary["report"];
    assert_eq!(report["content_type"], "multipart/signed");
    assert_eq!(report["protocol"], "application/pkcs7-signature");
    assert_eq!(report["report_type"], "delivery-status");
    assert_eq!(report["auto_submitted"], "auto-replied");
    assert_eq!(
        report["report_parts"],
        serde_json::json!([
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ])
    );
    assert_eq!(report["per_message"]["Reporting-MTA"], "dns; localhost");
    assert!(report["per_message"]["Arrival-Date"].is_string());
    let recipient = &report["per_recipient"][0];
    assert_eq!(
        recipient["Final-Recipient"],
        format!("rfc822; {MEMBER}@smarthealth.{DOMAIN}")
    );
    assert_eq!(recipient["Action"], "failed");
    assert_eq!(recipient["Status"], "5.7.5");
    assert!(
        recipient["Diagnostic-Code"]
            .as_str()
            .unwrap()
            .starts_with("smtp; 550 5.7.5 not-signed: "),
        "{recipient}"
    );
    assert_signed_by_gateway(&install, &raw);
    let text = report_text(&raw);
    assert!(text.contains(&failed_id));
    assert!(
        !text.contains("UNSIGNED-MARKER"),
        "a DSN returned decrypted content"
    );
    assert_eq!(reported(&install, &failed_id), 1);

    // NOTIFY=SUCCESS with RET=FULL, ENVID and ORCPT: a success DSN returns the
    // headers only (RET asks for content in failure reports, RFC 3461 §4.3).
    let letter = crlf(install.practice_letter(&text_letter("x", "SUCCESS-MARKER"), "Befund"));
    let ok_id = send_with(
        &server,
        &install,
        "RET=FULL ENVID=practice+2Denv-7",
        &format!("NOTIFY=SUCCESS ORCPT=rfc822;{MEMBER}@smarthealth.{DOMAIN}"),
        &letter,
    );
    let (raw, summary) = relay.wait_for(2);
    let report = &summary["report"];
    assert_eq!(
        report["report_parts"],
        serde_json::json!([
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ])
    );
    assert_eq!(
        report["per_message"]["Original-Envelope-Id"],
        "practice-env-7"
    );
    let recipient = &report["per_recipient"][0];
    assert_eq!(recipient["Action"], "delivered");
    assert_eq!(recipient["Status"], "2.0.0");
    assert_eq!(
        recipient["Original-Recipient"],
        format!("rfc822;{MEMBER}@smarthealth.{DOMAIN}")
    );
    assert_signed_by_gateway(&install, &raw);
    assert!(!report_text(&raw).contains("SUCCESS-MARKER"));
    assert_eq!(reported(&install, &ok_id), 1);

    // A failure with RET=FULL returns the message's ciphertext as sent, with the
    // header fields that identify it, not its subject (nor is that stored).
    let subject = format!("Befund Hans Mueller {}", std::process::id());
    let named = crlf(install.openssl_letter(&text_letter("x", "UNSIGNED-MARKER"), None, &subject));
    assert!(contains(&named, subject.as_bytes()));
    let full_id = send_with(&server, &install, "RET=FULL", "NOTIFY=FAILURE", &named);
    let (raw, summary) = relay.wait_for(3);
    assert_eq!(
        summary["report"]["report_parts"],
        serde_json::json!(["text/plain", "message/delivery-status", "message/rfc822"])
    );
    let blank = named.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let ciphertext = &named[blank + 4..];
    assert!(
        contains(&raw, ciphertext),
        "RET=FULL must return the ciphertext as sent"
    );
    assert!(contains(&raw, b"smime-type=authEnveloped-data"));
    assert!(
        !contains(&raw, subject.as_bytes()),
        "the subject was returned"
    );
    assert_signed_by_gateway(&install, &raw);
    assert_eq!(reported(&install, &full_id), 1);
    // The letter as received goes within moments of its processing (its blocks are
    // punched); the report kept none of its subject.
    wait_until("the subject stays in the data directory", 20, || {
        files_containing(&install.data(), subject.as_bytes()).is_empty()
    });

    // NOTIFY=NEVER: the failure is tracked, nothing is queued or sent.
    let never_id = send_with(&server, &install, "", "NOTIFY=NEVER", &unsigned);
    let trail = wait_final(&install, &never_id);
    assert_eq!(trail["submission"]["state"], "failed");
    let queue = install.admin(&["queue", "list", "--json"]);
    assert_eq!(String::from_utf8_lossy(&queue.stdout).trim(), "[]");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(relay.count(), 3);
    assert_eq!(reported(&install, &never_id), 0);

    // The histories are intact.
    for id in [&failed_id, &ok_id, &full_id, &never_id] {
        let out = install.admin(&["track", id, "--verify"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("hash chain intact"));
    }
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A letter from the demo practice asking (or not) for a disposition notification.
fn letter_asking(install: &Install, dnt: Option<&str>, message_id: &str) -> Vec<u8> {
    letter_with_body(install, dnt, message_id, "Gute Besserung.\r\n")
}

/// A practice's letter with `body`, asking for a disposition notification to `dnt`.
fn letter_with_body(install: &Install, dnt: Option<&str>, message_id: &str, body: &str) -> Vec<u8> {
    let dnt = dnt.map_or(String::new(), |a| {
        format!("Disposition-Notification-To: <{a}>\r\n")
    });
    let inner = format!(
        "From: Demo Practice <{PRACTICE}>\r\nTo: <{MEMBER}@smarthealth.{DOMAIN}>\r\n\
         Subject: Befund\r\nMessage-ID: {message_id}\r\n{dnt}\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    );
    crlf(install.practice_letter(inner.as_bytes(), "Befund"))
}

/// Delivers a letter and returns (tracking ID, message ID in the inbox).
fn deliver(install: &Install, server: &Server, auth: &str, letter: &[u8]) -> (String, String) {
    let id = server.send_to_member(install, letter);
    assert_eq!(wait_final(install, &id)["submission"]["state"], "delivered");
    let (status, list) = curl(
        install,
        server,
        &["-H", auth],
        "/v1/messages?mailbox=smarthealth",
    );
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_slice(&list).unwrap();
    let message = list["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["tracking_id"] == id.as_str())
        .unwrap();
    (id, message["id"].as_str().unwrap().to_owned())
}

fn mark_read(install: &Install, server: &Server, auth: &str, message: &str, body: &str) {
    let (status, answer) = curl(
        install,
        server,
        &[
            "-H",
            auth,
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ],
        &format!("/v1/messages/{message}/read"),
    );
    assert_eq!(status, 204, "{}", String::from_utf8_lossy(&answer));
}

/// A gateway with a relay for its reports and one enrolled member: the installation,
/// the relay, the server and the member's `Authorization` header.
fn serving_a_member() -> (Install, Relay, Server, String) {
    require(&["openssl", "gpg", "curl", "python3"]);
    let install = Install::new();
    let mut relay = Relay::new(&install);
    relay.start();
    configure_relay(&install, &relay);
    let server = install.serve(&[]);
    let (_home, public_key) = gpg_member(&install);
    let auth = enrol(&install, &server, &public_key);
    (install, relay, server, auth)
}

#[test]
fn disposition_notification_is_sent_once_and_only_when_asked_and_allowed() {
    let (install, relay, server, auth) = serving_a_member();

    let asked = letter_asking(&install, Some(PRACTICE), "<befund-1@demo-practice.test>");
    let (id, message) = deliver(&install, &server, &auth, &asked);
    mark_read(&install, &server, &auth, &message, "");
    let (raw, summary) = relay.wait_for(1);
    assert_eq!(summary["mail_from"], "<>");
    assert_eq!(summary["rcpt_tos"], serde_json::json!([PRACTICE]));
    let report = &summary["report"];
    assert_eq!(report["report_type"], "disposition-notification");
    let fields = &report["disposition"];
    assert_eq!(
        fields["Disposition"],
        "manual-action/MDN-sent-manually; displayed"
    );
    assert_eq!(
        fields["Original-Message-ID"],
        "<befund-1@demo-practice.test>"
    );
    assert_eq!(
        fields["Final-Recipient"],
        format!("rfc822; {MEMBER}@smarthealth.{DOMAIN}")
    );
    let mic = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&asked));
    assert_eq!(fields["Received-content-MIC"], format!("{mic}, sha256"));
    assert_signed_by_gateway(&install, &raw);
    assert!(!report_text(&raw).contains("Gute Besserung"));

    // Reading again sends nothing more.
    mark_read(&install, &server, &auth, &message, "");
    // Declined; not asked; asked for another address than the envelope sender.
    let (declined_id, m) = deliver(
        &install,
        &server,
        &auth,
        &letter_asking(&install, Some(PRACTICE), "<befund-2@demo-practice.test>"),
    );
    mark_read(&install, &server, &auth, &m, r#"{"receipt": false}"#);
    let (unasked_id, m) = deliver(
        &install,
        &server,
        &auth,
        &letter_asking(&install, None, "<befund-3@demo-practice.test>"),
    );
    mark_read(&install, &server, &auth, &m, "");
    let (foreign_id, m) = deliver(
        &install,
        &server,
        &auth,
        &letter_asking(
            &install,
            Some("someone@elsewhere.test"),
            "<befund-4@demo-practice.test>",
        ),
    );
    mark_read(&install, &server, &auth, &m, "");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(relay.count(), 1, "only the first letter's MDN may be sent");
    assert_eq!(reported(&install, &id), 1);
    for other in [&declined_id, &unasked_id, &foreign_id] {
        assert_eq!(reported(&install, other), 0);
        assert!(event_kinds(&install.track(other)).contains(&"read".to_owned()));
    }
}

#[test]
fn a_large_letters_disposition_notification_carries_the_mic_of_the_letter_as_received() {
    let (install, relay, server, auth) = serving_a_member();

    // Over 1 MiB as received: the gateway keeps only its headers for receipts and
    // reads the MIC back from the spool file when the notification is made.
    let body = "Gute Besserung. Die Werte im Anhang sind unauffaellig.\r\n".repeat(24_000);
    let asked = letter_with_body(
        &install,
        Some(PRACTICE),
        "<gross@demo-practice.test>",
        &body,
    );
    assert!(asked.len() > 1024 * 1024, "{}", asked.len());
    let (_, message) = deliver(&install, &server, &auth, &asked);
    mark_read(&install, &server, &auth, &message, "");
    let (_, summary) = relay.wait_for(1);
    let mic = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&asked));
    assert_eq!(
        summary["report"]["disposition"]["Received-content-MIC"],
        format!("{mic}, sha256")
    );
}

/// `kvgate queue retry ENTRY`, then waits until the relay has a report and the
/// submission `id` records exactly one `reported`, with the queue empty. Returns the
/// relay's newest message.
fn retry_until_reported(
    install: &Install,
    relay: &Relay,
    entry: &serde_json::Value,
    id: &str,
) -> (Vec<u8>, serde_json::Value) {
    let out = install.admin(&["queue", "retry", entry.as_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the relay got nothing", 60, || relay.count() >= 1);
    let received = relay.wait_for(relay.count());
    wait_until("the sent report was not recorded", 30, || {
        reported(install, id) == 1
    });
    let queue = install.admin(&["queue", "list", "--json"]);
    assert_eq!(String::from_utf8_lossy(&queue.stdout).trim(), "[]");
    received
}

#[test]
fn a_report_waits_while_the_relay_is_down_and_goes_out_when_it_is_back() {
    require(&["openssl", "python3"]);
    let install = Install::new();
    let mut relay = Relay::new(&install);
    configure_relay_with(&install, &relay, 1, 3600);
    let server = install.serve(&[]);

    let letter = install.practice_letter(&text_letter("x", "y"), "Befund");
    let id = send_with(&server, &install, "", "NOTIFY=SUCCESS", &letter);
    // The relay refuses connections: the DSN waits, and the wait is tracked.
    wait_until("no delayed event for the waiting DSN", 60, || {
        install.track(&id)["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "delayed" && e["reason"] == "relay-unavailable")
    });
    let queue = install.admin(&["queue", "list", "--json"]);
    let queue: serde_json::Value = serde_json::from_slice(&queue.stdout).unwrap();
    let entry = &queue[0];
    assert_eq!(entry["purpose"], "dsn");
    assert_eq!(entry["tracking_id"], id.as_str());
    assert!(entry["attempts"].as_u64().unwrap() >= 1);
    assert!(entry["last_error"].is_string());

    relay.start();
    let (_, summary) = retry_until_reported(&install, &relay, &entry["id"], &id);
    assert_eq!(summary["report"]["per_recipient"][0]["Action"], "delivered");
    drop(server);
}

#[test]
fn a_relay_that_accepts_and_says_nothing_holds_no_report_forever() {
    require(&["openssl", "python3"]);
    let install = Install::new();
    // Accepts connections and never writes a byte.
    let port = silent_port();
    install.set_config_table(
        "relay",
        &format!("address = \"127.0.0.1:{port}\"\ntls = \"none\"\n"),
    );
    install.set_config_table(
        "queue",
        "first_retry_secs = 1\nmax_retry_secs = 1\ntimeout_secs = 2\n",
    );
    let server = install.serve(&[]);
    let letter = install.practice_letter(&text_letter("x", "y"), "Befund");
    send_with(&server, &install, "", "NOTIFY=SUCCESS", &letter);

    // Each attempt ends at the exchange's time limit and is tried again.
    wait_until("no attempt ended at the relay's time limit", 60, || {
        let queue = install.admin(&["queue", "list", "--json"]);
        let queue: serde_json::Value = serde_json::from_slice(&queue.stdout).unwrap();
        queue[0]["attempts"].as_u64().unwrap_or(0) >= 2
            && queue[0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("did not complete the exchange within 2 s"))
    });
    // And stopping does not wait for a hung exchange.
    assert!(server.terminate().success());
}

#[test]
fn a_report_in_flight_when_serve_is_killed_is_sent_after_restart() {
    require(&["openssl", "python3"]);
    let install = Install::new();
    let mut relay = Relay::new(&install);
    relay.start_holding(30);
    configure_relay(&install, &relay);
    let server = install.serve(&[]);

    let letter = install.practice_letter(&text_letter("x", "y"), "Befund");
    let id = send_with(&server, &install, "", "NOTIFY=SUCCESS", &letter);
    // The relay has the whole DSN and holds its 250: kill the gateway now.
    let receiving = relay.dir.join("1.receiving");
    wait_until("the DSN never reached the relay", 60, || receiving.exists());
    server.kill();
    relay.stop();
    assert_eq!(reported(&install, &id), 0);
    let queue = install.admin(&["queue", "list", "--json"]);
    let queue: serde_json::Value = serde_json::from_slice(&queue.stdout).unwrap();
    assert_eq!(
        queue.as_array().unwrap().len(),
        1,
        "the unconfirmed DSN stays queued"
    );

    // Back up: the DSN goes out again (no 250 was recorded) and is recorded once.
    relay.start();
    let server = install.serve(&[]);
    let (raw, _) = retry_until_reported(&install, &relay, &queue[0]["id"], &id);
    assert!(String::from_utf8_lossy(&raw).contains(&id));
    drop(server);
}

#[test]
fn a_report_dropped_while_the_relay_takes_it_is_recorded_as_reported() {
    require(&["openssl", "python3"]);
    let install = Install::new();
    let mut relay = Relay::new(&install);
    relay.start_holding(3);
    configure_relay(&install, &relay);
    let server = install.serve(&[]);

    let letter = install.practice_letter(&text_letter("x", "y"), "Befund");
    let id = send_with(&server, &install, "", "NOTIFY=SUCCESS", &letter);
    wait_until("the DSN never reached the relay", 60, || {
        relay.dir.join("1.receiving").exists()
    });
    // The operator drops it while the relay holds its 250: the drop waits for the
    // attempt, and the relay's 250 wins.
    let queue = install.admin(&["queue", "list", "--json"]);
    let queue: serde_json::Value = serde_json::from_slice(&queue.stdout).unwrap();
    let entry = queue[0]["id"].as_str().unwrap();
    let out = install.admin_ok(&["queue", "drop", entry]);
    assert_eq!(
        out,
        format!(
            "{entry} is being handed to the relay right now: it is dropped when this attempt \
             ends, unless the relay accepts it (kvgate track {id} says which)\n"
        )
    );
    wait_until("the sent report was not recorded", 30, || {
        reported(&install, &id) == 1
    });
    assert!(!event_kinds(&install.track(&id)).contains(&"failed".to_owned()));
    let queue = install.admin(&["queue", "list", "--json"]);
    assert_eq!(String::from_utf8_lossy(&queue.stdout).trim(), "[]");
    let out = install.admin(&["queue", "drop", entry]);
    assert!(!out.status.success());
    drop(server);
}

#[test]
fn a_report_the_relay_is_slow_to_take_holds_back_no_other() {
    require(&["openssl", "python3"]);
    let install = Install::new();
    let mut relay = Relay::new(&install);
    // Holds each message's 250 for 8 s (the attempts' limit is 10 s).
    relay.start_holding(8);
    configure_relay(&install, &relay);
    let server = install.serve(&[]);

    let first = install.practice_letter(&text_letter("x", "y"), "Befund");
    let first = send_with(&server, &install, "", "NOTIFY=SUCCESS", &first);
    wait_until("the first DSN never reached the relay", 60, || {
        relay.dir.join("1.receiving").exists()
    });
    let second = install.practice_letter(&text_letter("x", "z"), "Befund");
    let second = send_with(&server, &install, "", "NOTIFY=SUCCESS", &second);
    // The second report goes out while the relay still holds the first.
    wait_until("the second DSN never reached the relay", 60, || {
        relay.dir.join("2.receiving").exists()
    });
    assert_eq!(
        reported(&install, &first),
        0,
        "the second report waited for the first"
    );
    wait_until("the reports were not recorded", 60, || {
        reported(&install, &first) == 1 && reported(&install, &second) == 1
    });
    drop(server);
}

/// A relay, and a server holding its queue for maintenance (letters accepted and
/// spooled, not processed) that warns of a delay at once and gives up after 4 s.
fn held_with_quick_reports(install: &Install) -> (Relay, Server) {
    let mut relay = Relay::new(install);
    relay.start();
    configure_relay_with(install, &relay, 0, 4);
    (relay, install.serve(&["--hold-queue"]))
}

#[test]
fn a_letter_whose_bytes_are_gone_is_still_given_up_and_reported() {
    require(&["openssl", "python3"]);
    let install = Install::new();
    let (relay, server) = held_with_quick_reports(&install);
    // Over 256 KiB: kept in a spool file of its own, which then goes missing.
    let body = "Befund ".repeat(50_000);
    let letter = install.practice_letter(&text_letter("x", &body), "Befund");
    let id = server.send_to_member(&install, &letter);
    std::fs::remove_file(install.data().join("spool").join(&id)).unwrap();

    let (_, summary) = relay.wait_for(2);
    let recipient = &summary["report"]["per_recipient"][0];
    assert_eq!(recipient["Action"], "failed", "{summary}");
    let trail = install.track(&id);
    assert_eq!(trail["submission"]["state"], "failed", "{trail}");
    assert!(event_kinds(&trail).contains(&"expired".to_owned()));
    drop(server);
}

#[test]
fn a_held_letter_is_reported_delayed_then_expired() {
    require(&["openssl", "python3"]);
    let install = Install::new();
    let (relay, server) = held_with_quick_reports(&install);

    let letter = install.practice_letter(&text_letter("x", "y"), "Befund");
    let id = server.send_to_member(&install, &letter);

    let (raw, summary) = relay.wait_for(1);
    let recipient = &summary["report"]["per_recipient"][0];
    assert_eq!(recipient["Action"], "delayed", "{summary}");
    assert_eq!(recipient["Status"], "4.4.7");
    assert!(
        recipient["Diagnostic-Code"]
            .as_str()
            .unwrap()
            .starts_with("smtp; 450 4.4.7 waiting: ")
    );
    assert!(report_text(&raw).contains("Delivery Status Notification (Delay)"));
    assert_signed_by_gateway(&install, &raw);

    let (_, summary) = relay.wait_for(2);
    let recipient = &summary["report"]["per_recipient"][0];
    assert_eq!(recipient["Action"], "failed", "{summary}");
    assert_eq!(recipient["Status"], "5.4.7");
    assert!(
        recipient["Diagnostic-Code"]
            .as_str()
            .unwrap()
            .contains("queue-lifetime")
    );

    let trail = install.track(&id);
    assert_eq!(trail["submission"]["state"], "failed");
    let kinds = event_kinds(&trail);
    assert_eq!(
        kinds.iter().filter(|k| *k == "delayed").count(),
        1,
        "{kinds:?}"
    );
    assert!(kinds.contains(&"expired".to_owned()), "{kinds:?}");
    // Given up means gone: the spool holds nothing of it.
    let spool: Vec<_> = std::fs::read_dir(install.data().join("spool"))
        .unwrap()
        .collect();
    assert!(spool.is_empty(), "{spool:?}");
    drop(server);
}
