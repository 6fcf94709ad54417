//! The retention rules against the real binary, with the time chosen by the test
//! (`kvgate lifecycle run --now`): after `kvgate member end`, smarthealth goes after a
//! month and the whole account after three; twelve months without access plus twelve
//! retained, and the account goes. Each deleted letter's tracking says so, without
//! content.

mod common;

use std::process::Command;

use common::account::{ciphertext_sample, occurrences};
use common::*;
use serde_json::json;

/// `kvgate lifecycle run --now AT [FLAGS]`; its output.
fn lifecycle_with(install: &Install, at: &str, flags: &[&str]) -> String {
    let mut args = vec!["lifecycle", "run", "--now", at];
    args.extend(flags);
    let out = install.admin(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `kvgate lifecycle run --now AT`; its output.
fn lifecycle(install: &Install, at: &str) -> String {
    lifecycle_with(install, at, &[])
}

/// Whether the member is still registered (`kvgate member code` works).
fn registered(install: &Install, kvnr: &str) -> bool {
    install
        .admin(&["member", "code", "--kvnr", kvnr])
        .status
        .success()
}

/// The last tracking event of a submission.
fn last_event(install: &Install, id: &str) -> serde_json::Value {
    install.track(id)["events"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone()
}

#[test]
fn after_membership_ends_smarthealth_goes_after_a_month_and_the_account_after_three() {
    require(&["openssl", "gpg", "curl"]);
    let install = Install::new();
    let server = install.serve(&[]);
    let alice = member_session(&install, &server);
    let (letter, _) = deliver(&install, &server, "Befund");
    let needle = ciphertext_sample(&letter_of(&alice, &letter));
    assert_eq!(occurrences(&install.data(), &needle), 1);

    // A date this long ago means deleting at once: the operator must say so.
    let out = install.admin(&["member", "end", MEMBER, "--date", "2025-01-01"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "is past its grace period: the next retention run (within the hour while serve runs) deletes the whole account of"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = install.admin(&[
        "member",
        "end",
        MEMBER,
        "--date",
        "2025-01-01",
        "--confirm-deletion",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = install.admin(&["member", "end", "A123456781", "--date", "2025-01-01"]);
    assert!(!out.status.success(), "a wrong check digit is refused");

    assert_eq!(
        lifecycle(&install, "2025-01-31T23:59:59Z"),
        "nothing due at 2025-01-31T23:59:59.000Z\n"
    );
    assert_eq!(
        lifecycle(&install, "2025-02-01"),
        format!("{MEMBER}: smarthealth closed\n")
    );
    let deleted = last_event(&install, &letter);
    assert_eq!(
        (&deleted["kind"], &deleted["detail"]),
        (
            &json!("deleted"),
            &json!("membership ended over a month ago; smarthealth letter deleted")
        )
    );
    let (status, list) = alice.json("GET", "/v1/messages", None);
    assert_eq!((status, &list["messages"]), (200, &json!([])));
    assert_eq!(
        occurrences(&install.data(), &needle),
        0,
        "the letter's bytes are gone"
    );
    assert_eq!(
        alice.json("GET", "/v1/smarthealth", None).1["active"],
        json!(false)
    );

    // The Postfach's three calendar months end on 1 April.
    assert!(lifecycle(&install, "2025-03-31T23:59:59Z").starts_with("nothing due"));
    assert!(registered(&install, MEMBER));
    assert_eq!(
        lifecycle(&install, "2025-04-01"),
        format!("{MEMBER}: account deleted (membership ended over three months ago; deleted)\n")
    );
    assert!(!registered(&install, MEMBER));
    alice.refused("GET", "/v1/messages", None, 401, "unauthorized");
}

#[test]
fn twelve_months_without_access_and_twelve_retained_delete_the_account() {
    require(&["openssl", "gpg", "curl"]);
    let install = Install::new();
    let server = install.serve(&[]);
    let alice = member_session(&install, &server);
    let (letter, _) = deliver(&install, &server, "Befund");
    // The app's access (today) is what the rule counts from.
    assert_eq!(alice.json("GET", "/v1/messages", None).0, 200);
    let (bob, _) = second_member(&install, &server);
    let day = |offset: &str| {
        let out = run(Command::new("date").args(["-u", "-d", offset, "+%F"]));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    // Calendar months from the day of access: the day before is not yet due, the day
    // after is (whatever leap days lie between).
    let (before, after) = (day("+24 months -1 day"), day("+24 months +1 day"));
    let early = ["--delete-early"];
    assert!(lifecycle_with(&install, &before, &early).starts_with("nothing due"));
    // A time to come is looked at only when asked for plainly: a dry run does nothing.
    let preview = lifecycle_with(&install, &after, &["--dry-run"]);
    assert_eq!(preview.lines().count(), 2, "{preview}");
    assert!(preview.starts_with("would be done: "), "{preview}");
    assert!(registered(&install, MEMBER));
    let refused = install.admin(&["lifecycle", "run", "--now", &after]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is later than the current time"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(registered(&install, MEMBER));
    let out = lifecycle_with(&install, &after, &early);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    let reason = "no access for 24 months (12 without, 12 retained); deleted";
    assert_eq!(
        lines,
        [
            format!("{MEMBER}: account deleted ({reason})"),
            format!("{BOB}: account deleted ({reason})"),
        ]
    );
    assert_eq!(last_event(&install, &letter)["detail"], json!(reason));
    assert!(!registered(&install, MEMBER));
    bob.refused("GET", "/v1/devices", None, 401, "unauthorized");
}

#[test]
fn serve_applies_the_rules_itself() {
    require(&["openssl", "gpg", "curl"]);
    let install = Install::new();
    let out = install.admin(&[
        "member",
        "end",
        MEMBER,
        "--date",
        "2020-01-01",
        "--confirm-deletion",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(registered(&install, MEMBER));
    let server = install.serve(&[]);
    wait_until("serve deletes the ended membership", 30, || {
        !registered(&install, MEMBER)
    });
    // The deletion is logged once the file is compacted too, a moment after the commit,
    // without naming the member: the log outlives the account.
    let line = "reason=\"membership ended over three months ago; deleted\"";
    wait_until("serve logs the deletion", 30, || {
        server.log.lock().unwrap().iter().any(|l| l.contains(line))
    });
    let log = server.log.lock().unwrap().join("\n");
    assert!(!log.contains(MEMBER), "the log names the member: {log}");
}

#[test]
fn a_letter_accepted_before_the_membership_ended_is_not_filed_after_its_grace() {
    require(&["openssl"]);
    let install = Install::new();
    let to = format!("{MEMBER}@smarthealth.{DOMAIN}");
    let server = install.serve(&["--hold-queue"]);
    let message = install.practice_letter(&text_letter("Befund", "late"), "Befund");
    let id = tracking_id(&server.send(install.practice_tls(), PRACTICE, &[&to], &message));
    assert!(server.terminate().success());

    // Processed only after the smarthealth grace (a month) of a membership that
    // ended, within the Postfach's (three): the member is still there, smarthealth
    // closed at the server's start.
    let ended = Command::new("date")
        .args(["-u", "-d", "45 days ago", "+%F"])
        .output()
        .unwrap();
    let ended = String::from_utf8(ended.stdout).unwrap();
    let out = install.admin(&["member", "end", MEMBER, "--date", ended.trim()]);
    assert!(!out.status.success(), "smarthealth's grace has passed");
    let out = install.admin(&[
        "member",
        "end",
        MEMBER,
        "--date",
        ended.trim(),
        "--confirm-deletion",
    ]);
    assert!(out.status.success());
    let _server = install.serve(&[]);
    let trail = wait_final(&install, &id);
    assert_eq!(trail["submission"]["state"], "failed", "{trail}");
    let last = last_event(&install, &id);
    assert_eq!(
        (&last["kind"], &last["reason"], &last["recipient"]),
        (&json!("failed"), &json!("membership-ended"), &json!(to))
    );
}
