//! The member API's inboxes: paging, `since`, the long-poll and deletion, against the
//! real binary over HTTPS with `curl`.

mod common;

use std::time::{Duration, Instant};

use common::account::{ciphertext_sample, deliver_to};
use common::*;
use serde_json::Value;

/// The IDs of a message list.
fn ids(list: &Value) -> Vec<String> {
    list["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn inboxes_page_filter_wait_and_delete() {
    require(&["openssl", "gpg", "curl"]);
    let install = Install::new();
    let server = install.serve(&[]);
    let alice = member_session(&install, &server);
    let tracking: Vec<String> = ["eins", "zwei", "drei"]
        .iter()
        .map(|s| deliver(&install, &server, s).0)
        .collect();

    // All three, then in pages of two.
    let (status, all) = alice.json("GET", "/v1/messages", None);
    assert_eq!(status, 200);
    let all_ids = ids(&all);
    let all_tracking: Vec<&str> = all["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["tracking_id"].as_str().unwrap())
        .collect();
    assert_eq!(all_tracking, tracking);
    assert_eq!(all.get("next_cursor"), None);
    let (_, first) = alice.json("GET", "/v1/messages?limit=2", None);
    assert_eq!(ids(&first), all_ids[..2]);
    let cursor = first["next_cursor"].as_str().unwrap();
    assert_eq!(cursor, all_ids[1]);
    let (_, second) = alice.json(
        "GET",
        &format!("/v1/messages?limit=2&cursor={cursor}"),
        None,
    );
    assert_eq!(ids(&second), all_ids[2..]);
    assert_eq!(second.get("next_cursor"), None);
    let (_, postfach) = alice.json("GET", "/v1/messages?mailbox=postfach", None);
    assert_eq!(ids(&postfach), Vec::<String>::new());

    // `since` is exclusive: after the first letter's filing time come the other two.
    let first_at = all["messages"][0]["received_at"].as_str().unwrap();
    let (_, later) = alice.json("GET", &format!("/v1/messages?since={first_at}"), None);
    assert_eq!(ids(&later), all_ids[1..]);

    for (query, detail) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=x", "query"),
        ("cursor=nonsense", "cursor"),
        ("since=yesterday", "since"),
        ("mailbox=outbox", "mailbox"),
        ("colour=red", "query"),
    ] {
        let (status, problem) = alice.json("GET", &format!("/v1/messages?{query}"), None);
        assert_eq!(status, 400, "{query}");
        assert_eq!(
            problem["type"], "urn:kvgate:problem:invalid-parameter",
            "{query}"
        );
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{detail}: ")),
            "{query}: {problem}"
        );
    }

    // The long-poll: nothing new answers empty after the timeout…
    let last_at = all["messages"][2]["received_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let started = Instant::now();
    let (status, nothing) = alice.json(
        "GET",
        &format!("/v1/messages/wait?since={last_at}&timeout=1"),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(ids(&nothing), Vec::<String>::new());
    assert!(started.elapsed() >= Duration::from_secs(1));
    alice.refused(
        "GET",
        "/v1/messages/wait?since=now",
        None,
        400,
        "invalid-parameter",
    );
    alice.refused(
        "GET",
        &format!("/v1/messages/wait?since={last_at}&timeout=61"),
        None,
        400,
        "invalid-parameter",
    );
    alice.refused("GET", "/v1/messages/wait", None, 400, "invalid-parameter");

    // …and a letter filed while it waits ends it at once.
    let (waited, new_tracking, took) = std::thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            let started = Instant::now();
            let answer = alice.json(
                "GET",
                &format!("/v1/messages/wait?since={last_at}&timeout=50"),
                None,
            );
            (answer, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(500));
        let new_tracking = deliver(&install, &server, "vier").0;
        let ((status, waited), took) = waiter.join().unwrap();
        assert_eq!(status, 200);
        (waited, new_tracking, took)
    });
    assert_eq!(waited["messages"].as_array().unwrap().len(), 1, "{waited}");
    assert_eq!(waited["messages"][0]["tracking_id"], new_tracking.as_str());
    assert!(
        took < Duration::from_secs(30),
        "the wait ended only after {took:?}"
    );
    let fourth = waited["messages"][0]["id"].as_str().unwrap().to_owned();

    // Another member can neither see, wait for, read nor delete any of it.
    let (bob, _) = second_member(&install, &server);
    let (_, theirs) = bob.json("GET", "/v1/messages", None);
    assert_eq!(ids(&theirs), Vec::<String>::new());
    let (_, theirs) = bob.json(
        "GET",
        &format!("/v1/messages/wait?since={first_at}&timeout=0"),
        None,
    );
    assert_eq!(ids(&theirs), Vec::<String>::new());
    let path = format!("/v1/messages/{}", all_ids[0]);
    bob.refused("GET", &path, None, 404, "not-found");
    bob.refused("DELETE", &path, None, 404, "not-found");
    bob.refused("POST", &format!("{path}/read"), None, 404, "not-found");

    // Deleting: gone from the inbox, tracked, and a second delete finds nothing.
    let (status, _) = alice.call("DELETE", &path, None);
    assert_eq!(status, 204);
    alice.refused("GET", &path, None, 404, "not-found");
    alice.refused("DELETE", &path, None, 404, "not-found");
    alice.refused("POST", &format!("{path}/read"), None, 404, "not-found");
    let (_, left) = alice.json("GET", "/v1/messages", None);
    assert_eq!(ids(&left), [all_ids[1].clone(), all_ids[2].clone(), fourth]);
    let trail = install.track(&tracking[0]);
    assert_eq!(
        event_kinds(&trail),
        ["accepted", "verified", "encrypted", "delivered", "deleted"]
    );
    let out = install.admin(&["track", &tracking[0], "--verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_deleted_letter_is_gone_from_disk_at_once() {
    require(&["openssl", "gpg", "curl"]);
    let install = Install::new();
    let server = install.serve(&[]);
    let alice = member_session(&install, &server);
    let (bob, _) = second_member(&install, &server);
    let (tracking, _) = deliver(&install, &server, "Befund");
    let bobs_tracking = deliver_to(&install, &server, BOB, "Bobs Befund");
    let letter = letter_of(&alice, &tracking);
    let bobs_letter = letter_of(&bob, &bobs_tracking);
    let (_, list) = alice.json("GET", "/v1/messages", None);
    let [id] = ids(&list).try_into().unwrap();
    let (_, list) = bob.json("GET", "/v1/messages", None);
    assert_eq!(ids(&list).len(), 1);

    // Each letter's OpenPGP message is stored (unarmored) in a body segment and
    // nowhere else.
    let data = install.data();
    let (needle, bobs_needle) = (ciphertext_sample(&letter), ciphertext_sample(&bobs_letter));
    let [segment] = files_containing(&data, &needle).try_into().unwrap();
    assert!(segment.starts_with(&data.join("bodies").display().to_string()));
    assert!(segment.ends_with(".seg"), "{segment}");
    assert_eq!(
        files_containing(&data, &bobs_needle),
        std::slice::from_ref(&segment)
    );

    let (status, _) = alice.call("DELETE", &format!("/v1/messages/{id}"), None);
    assert_eq!(status, 204);
    assert_eq!(files_containing(&data, &needle), Vec::<String>::new());
    assert_eq!(files_containing(&data, &bobs_needle), [segment]);
    assert_eq!(letter_of(&bob, &bobs_tracking), bobs_letter);
}
