//! Tracking as operators see it: the admin HTTPS endpoint and `kvgate track`, both
//! reporting whether a history's hash chain is intact.

mod common;

use std::process::Command;

use common::*;

/// Enables the admin endpoint with a fresh token; returns the token.
fn enable_admin(install: &Install) -> String {
    let out = run(Command::new("openssl").args(["rand", "-hex", "32"]));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let token_file = install.pki("admin.token");
    std::fs::write(&token_file, &token).unwrap();
    install.set_config_table(
        "admin",
        "listen = \"127.0.0.1:0\"\ntoken_file = \"pki/admin.token\"\n",
    );
    token
}

#[test]
fn operators_read_tracking_and_queue_over_https_with_their_token() {
    require(&["openssl", "curl"]);
    let install = Install::new();
    let token = enable_admin(&install);
    let server = install.serve(&["--admin", "127.0.0.1:0"]);
    let admin = server.admin.expect("the admin endpoint listens");

    let letter = install.practice_letter(&text_letter("x", "y"), "Befund");
    let id = server.send_to_member(&install, &letter);
    wait_final(&install, &id);

    let auth = format!("Authorization: Bearer {token}");
    let (status, body) = curl_at(
        &install,
        admin,
        &["-H", &auth],
        &format!("/admin/v1/tracking/{id}"),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["submission"]["state"], "delivered");
    assert_eq!(body["chain"]["intact"], true);
    let kinds: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["accepted", "verified", "encrypted", "delivered"]);
    // Each event points to the one before.
    let events = body["events"].as_array().unwrap();
    for pair in events.windows(2) {
        assert_eq!(pair[1]["prev"], pair[0]["hash"]);
    }

    let (status, body) = curl_at(&install, admin, &["-H", &auth], "/admin/v1/queue");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        serde_json::json!({ "queue": [] })
    );

    // A letter that fails (not signed), and a recipient refused at RCPT (a KVNR whose
    // check digit is wrong).
    let unsigned = install.openssl_letter(&text_letter("x", "unsigned"), None, "x");
    let failed = server.send_to_member(&install, &unsigned);
    wait_final(&install, &failed);
    let bad_kvnr = format!("M123456786@smarthealth.{DOMAIN}");
    let refused = server.send(install.practice_tls(), PRACTICE, &[&bad_kvnr], &unsigned);
    assert_eq!(
        (refused.code, refused.text().get(..5)),
        (553, Some("5.1.3"))
    );

    // Metrics in the Prometheus text format: one letter delivered, one failed (its
    // DSN waits: no relay here), and the SMTP sessions and refusal.
    let (status, body) = curl_at(&install, admin, &["-H", &auth], "/admin/v1/metrics");
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    for line in [
        "# TYPE kvgate_submissions_accepted_total counter",
        "kvgate_submissions_accepted_total 2",
        "kvgate_submissions_ended_total{state=\"delivered\"} 1",
        "kvgate_submissions_ended_total{state=\"failed\"} 1",
        "kvgate_submissions_ended_total{state=\"quarantined\"} 0",
        "# TYPE kvgate_recipient_failures_total counter",
        "kvgate_recipient_failures_total{reason=\"not-signed\"} 1",
        "kvgate_smtp_sessions_total{listener=\"smtp\"} 0",
        "kvgate_smtp_sessions_total{listener=\"smtps\"} 3",
        "kvgate_smtp_turned_away_total 0",
        "kvgate_smtp_refusals_total{code=\"553\",status=\"5.1.3\"} 1",
        "# TYPE kvgate_queued_submissions gauge",
        "kvgate_queued_submissions 0",
        "kvgate_quarantined_submissions 0",
        "kvgate_outbound_messages 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} is missing:\n{text}"
        );
    }
    for family in [
        "kvgate_smtp_open_sessions ",
        "kvgate_outbound_oldest_seconds ",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(family)),
            "{family}\n{text}"
        );
    }
    let (status, _) = curl_at(&install, admin, &[], "/admin/v1/metrics");
    assert_eq!(status, 401);

    // Without the token, with a wrong one, and for an unknown ID.
    let (status, body) = curl_at(&install, admin, &[], &format!("/admin/v1/tracking/{id}"));
    assert_eq!(status, 401);
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["status"], 401);
    let wrong = format!("Authorization: Bearer {}", "0".repeat(64));
    let (status, _) = curl_at(
        &install,
        admin,
        &["-H", &wrong],
        &format!("/admin/v1/tracking/{id}"),
    );
    assert_eq!(status, 401);
    let (status, _) = curl_at(
        &install,
        admin,
        &["-H", &auth],
        "/admin/v1/tracking/01M8M8DAAH12BMK8YTJ6EBSRS4",
    );
    assert_eq!(status, 404);
    // The member API does not serve it.
    let (status, _) = curl(
        &install,
        &server,
        &["-H", &auth],
        &format!("/admin/v1/tracking/{id}"),
    );
    assert_eq!(status, 404);

    // The CLI prints the trail and checks it.
    let out = install.admin(&["track", &id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("delivered"), "{text}");
    let out = install.admin(&["track", &id, "--verify"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 events, hash chain intact"));
}
