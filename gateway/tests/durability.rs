//! Acknowledged letters survive SIGKILL; nothing readable reaches the disk.

mod common;

use common::*;

#[test]
fn letter_acknowledged_before_a_kill_is_delivered_once_after_restart() {
    require(&["openssl"]);
    let install = Install::new();
    let to = format!("{MEMBER}@smarthealth.{DOMAIN}");
    let server = install.serve(&["--hold-queue"]);
    let message = install.practice_letter(&text_letter("Befund", "durable"), "Befund");
    let id = tracking_id(&server.send(install.practice_tls(), PRACTICE, &[&to], &message));
    server.kill();

    let trail = install.track(&id);
    assert_eq!(trail["submission"]["state"], "accepted");
    assert_eq!(event_kinds(&trail), ["accepted"]);

    let server = install.serve(&[]);
    let trail = wait_final(&install, &id);
    assert_eq!(trail["submission"]["state"], "delivered");
    assert_eq!(
        event_kinds(&trail),
        ["accepted", "verified", "encrypted", "delivered"]
    );
    drop(server);
    // A third start finds nothing to do again.
    let server = install.serve(&[]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(event_kinds(&install.track(&id)).len(), 4);
    assert!(server.terminate().success());
}

#[test]
fn no_plaintext_marker_reaches_the_data_directory() {
    require(&["openssl"]);
    let install = Install::new();
    let server = install.serve(&[]);
    let marker = format!("PRIVACY-MARKER-{}", std::process::id());
    let letter = text_letter(
        &format!("Diagnose {marker}"),
        &format!("Befund {marker} vertraulich"),
    );
    let message = install.practice_letter(&letter, &format!("Diagnose {marker}"));
    let id = tracking_id(&server.send(
        install.practice_tls(),
        PRACTICE,
        &[&format!("{MEMBER}@smarthealth.{DOMAIN}")],
        &message,
    ));
    assert_eq!(
        wait_final(&install, &id)["submission"]["state"],
        "delivered"
    );
    assert!(server.terminate().success());
    let hits = files_containing(&install.data(), marker.as_bytes());
    assert!(hits.is_empty(), "plaintext marker found in {hits:?}");
}
