//! Poison letters: structures built to hurt a parser, and a letter that runs over
//! the processing time limit, end in quarantine between good letters that are
//! delivered as usual; the operator lists, shows, releases and drops them, and the
//! quarantine survives a restart.

mod common;

use std::time::Duration;

use base64::Engine;
use common::*;

/// An `application/pkcs7-mime` letter carrying `der`.
fn pkcs7_letter(der: &[u8]) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(76)
        .map(|line| std::str::from_utf8(line).unwrap())
        .collect();
    format!(
        "From: <{PRACTICE}>\r\nTo: <{MEMBER}@smarthealth.{DOMAIN}>\r\nSubject: x\r\nMIME-Version: 1.0\r\n\
         Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
        lines.join("\r\n")
    )
    .into_bytes()
}

/// A `multipart/signed` entity of `parts` parts, the first of them (as encrypt-then-sign
/// has it) `application/pkcs7-mime`, so that it passes the DATA gate.
fn many_parts(parts: usize) -> Vec<u8> {
    let mut out = format!(
        "From: <{PRACTICE}>\r\nTo: <{MEMBER}@smarthealth.{DOMAIN}>\r\nSubject: x\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\nMAA=\r\n"
    );
    for i in 1..parts {
        out.push_str(&format!("--b\r\nContent-Type: text/plain\r\n\r\n{i}\r\n"));
    }
    out.push_str("--b--\r\n");
    out.into_bytes()
}

/// `kvgate quarantine list --json`, parsed.
fn quarantine_list(install: &Install) -> Vec<serde_json::Value> {
    let out = install.admin(&["quarantine", "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The quarantine entry of `id`, once there is one.
fn wait_quarantined(install: &Install, id: &str) -> serde_json::Value {
    let mut found = None;
    wait_until(&format!("{id} was not quarantined"), 60, || {
        found = quarantine_list(install)
            .into_iter()
            .find(|e| e["tracking_id"] == id);
        found.is_some()
    });
    found.unwrap()
}

#[test]
fn crafted_structures_are_quarantined_between_good_letters() {
    require(&["openssl"]);
    let install = Install::new();
    let server = install.serve(&[]);

    let good = |n: u32| install.practice_letter(&text_letter(&format!("Befund {n}"), "gut"), "x");
    let first = server.send_to_member(&install, &good(1));
    // A CMS structure nested 5000 deep, one that declares a length of 4 GiB, and a
    // MIME tree of 100,000 parts.
    let nested = [[0x30u8, 0x80].repeat(5000), [0u8, 0].repeat(5000)].concat();
    let huge = [0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x02, 0x01, 0x00];
    let poisons = [
        server.send_to_member(&install, &pkcs7_letter(&nested)),
        server.send_to_member(&install, &pkcs7_letter(&huge)),
        server.send_to_member(&install, &many_parts(100_000)),
    ];
    let last = server.send_to_member(&install, &good(2));

    for id in [&first, &last] {
        let trail = wait_final(&install, id);
        assert_eq!(trail["submission"]["state"], "delivered", "{trail}");
    }
    for id in &poisons {
        let entry = wait_quarantined(&install, id);
        assert_eq!(entry["reason"], "malformed", "{entry}");
        let trail = install.track(id);
        assert_eq!(trail["submission"]["state"], "quarantined");
        let quarantined = &trail["events"].as_array().unwrap().last().unwrap();
        assert_eq!(quarantined["kind"], "quarantined");
        assert_eq!(quarantined["reason"], "malformed");
    }
    // Each sender is told: a failure DSN waits in the outbound queue (no relay here).
    let queue: serde_json::Value =
        serde_json::from_str(&install.admin_ok(&["queue", "list", "--json"])).unwrap();
    for id in &poisons {
        assert!(
            queue
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["tracking_id"] == id.as_str()),
            "no DSN queued for {id}: {queue}"
        );
    }
    // The large one is kept in its spool file, also across a restart.
    let spooled = install.data().join("spool").join(&poisons[2]);
    assert!(spooled.exists());
    assert!(server.terminate().success());
    let server = install.serve(&[]);
    assert_eq!(quarantine_list(&install).len(), 3);
    assert!(spooled.exists(), "the restart swept a quarantined letter");

    let shown = install.admin_ok(&["quarantine", "show", &poisons[2]]);
    assert!(shown.contains("[malformed]"), "{shown}");
    assert!(
        shown.contains(&format!("from {PRACTICE} (sender demo-practice)")),
        "{shown}"
    );

    // Released, it is processed again and, still poison, quarantined again.
    install.admin_ok(&["quarantine", "release", &poisons[2]]);
    let kinds = || event_kinds(&install.track(&poisons[2]));
    wait_until("the released letter was not quarantined again", 60, || {
        kinds().iter().filter(|k| *k == "quarantined").count() == 1 + 1
    });
    assert!(kinds().contains(&"released".to_owned()));

    // Dropped, it is gone: from the quarantine, the spool and the store.
    let dropped = install.admin_ok(&["quarantine", "drop", &poisons[2]]);
    assert!(dropped.contains("dropped"), "{dropped}");
    assert!(!spooled.exists());
    let trail = install.track(&poisons[2]);
    assert_eq!(trail["submission"]["state"], "failed");
    assert_eq!(kinds().last().unwrap(), "dropped");
    assert_eq!(quarantine_list(&install).len(), 2);
    let again = install.admin(&["quarantine", "drop", &poisons[2]]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not quarantined"));
    drop(server);
}

/// A letter whose processing hangs: its signer's OCSP responder accepts connections
/// and never answers (up to the revocation timeout of 10 s). Its signing certificate
/// is registered for the demo practice.
fn hanging_letter(install: &Install) -> Vec<u8> {
    let port = silent_port();
    install.issue_practice_with(
        "hanging",
        PRACTICE,
        &format!("authorityInfoAccess=OCSP;URI:http://127.0.0.1:{port}/\n"),
    );
    let cert = install.work("hanging.pem");
    install.add_practice_cert(&cert);
    install.openssl_letter(
        &text_letter("Befund", "haengt"),
        Some((&cert, &install.work("hanging.key"))),
        "x",
    )
}

#[test]
fn a_letter_over_the_time_limit_is_quarantined_and_others_go_on() {
    require(&["openssl"]);
    let install = Install::new();
    let hanging = hanging_letter(&install);
    install.set_config_table("pipeline", "time_limit_secs = 1");
    let server = install.serve(&[]);

    let stuck = server.send_to_member(&install, &hanging);
    let good = install.practice_letter(&text_letter("Befund", "gut"), "x");
    let after = server.send_to_member(&install, &good);

    let trail = wait_final(&install, &after);
    assert_eq!(trail["submission"]["state"], "delivered", "{trail}");
    let entry = wait_quarantined(&install, &stuck);
    assert_eq!(entry["reason"], "processing-timeout", "{entry}");
    assert_eq!(
        entry["detail"],
        "processing took longer than the limit of 1 s"
    );
    // The abandoned attempt ends later (the responder times out); its result must not
    // land: the letter stays quarantined, once.
    std::thread::sleep(Duration::from_secs(11));
    let trail = install.track(&stuck);
    assert_eq!(trail["submission"]["state"], "quarantined", "{trail}");
    let kinds = event_kinds(&trail);
    assert_eq!(
        kinds.iter().filter(|k| *k == "quarantined").count(),
        1,
        "{kinds:?}"
    );
    // And the pipeline still works.
    let later = server.send_to_member(&install, &good);
    assert_eq!(
        wait_final(&install, &later)["submission"]["state"],
        "delivered"
    );
}

#[test]
fn only_the_letter_running_when_the_gateway_dies_is_counted_against() {
    require(&["openssl"]);
    let install = Install::new();
    let hanging = hanging_letter(&install);
    // One worker: the letters after the hanging one wait for it.
    install.set_config_table("pipeline", "workers = 1");
    let server = install.serve(&["--hold-queue"]);
    let stuck = server.send_to_member(&install, &hanging);
    let good = install.practice_letter(&text_letter("Befund", "gut"), "x");
    let waiting: Vec<String> = (0..3)
        .map(|_| server.send_to_member(&install, &good))
        .collect();
    server.kill();

    // Three starts, each killed while the hanging letter runs.
    let running = install.data().join("pipeline.running");
    for start in 1..=3 {
        let server = install.serve(&[]);
        wait_until(&format!("start {start}: the letter never ran"), 30, || {
            std::fs::read_to_string(&running).is_ok_and(|slots| slots.contains(&stuck))
        });
        server.kill();
    }
    let _server = install.serve(&[]);
    let entry = wait_quarantined(&install, &stuck);
    assert_eq!(
        (&entry["reason"], &entry["detail"]),
        (
            &serde_json::json!("processing-crashed"),
            &serde_json::json!(
                "3 attempts ended without a result (the gateway stopped while processing it)"
            )
        )
    );
    // The letters that only waited were not counted against.
    for id in &waiting {
        let trail = wait_final(&install, id);
        assert_eq!(trail["submission"]["state"], "delivered", "{trail}");
    }
    assert_eq!(quarantine_list(&install).len(), 1);
}
