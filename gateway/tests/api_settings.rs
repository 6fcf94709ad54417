//! The member's settings and smarthealth record through the API, against the real
//! binary over HTTPS with `curl`, with their effect on SMTP: app communication decides
//! whether the insurer reaches the Postfach; smarthealth opens only for an adult with
//! a recovery key who accepts the current terms; a full smarthealth inbox refuses
//! letters with 552 5.2.2 at RCPT (SIZE=) and after DATA, and the app sees why.

mod common;

use common::account::*;
use common::*;
use serde_json::json;

#[test]
fn app_communication_decides_whether_the_insurer_reaches_the_postfach() {
    require(&["openssl", "gpg", "curl"]);
    let install = Install::new();
    let insurer = add_insurer(&install);
    let server = install.serve(&[]);
    let alice = member_session(&install, &server);
    let (bob, _) = second_member(&install, &server);
    let postfach = format!("{MEMBER}@postfach.{DOMAIN}");

    assert_eq!(
        alice.json("GET", "/v1/settings", None),
        (200, json!({"app_communication": true}))
    );
    assert_eq!(
        rcpt(&server, insurer.clone(), INSURER, &postfach, None).code,
        250
    );

    let off = json!({"app_communication": false});
    assert_eq!(
        alice.json("PUT", "/v1/settings", Some(&off)),
        (200, off.clone())
    );
    assert_eq!(alice.json("GET", "/v1/settings", None), (200, off.clone()));
    let refused = rcpt(&server, insurer.clone(), INSURER, &postfach, None);
    assert_eq!(
        refused.to_string(),
        format!("550 5.7.1 member {MEMBER} has not turned on app communication; deliver by post")
    );

    // Bob's settings are his own: turning his on leaves Alice's off, and his GET
    // shows his.
    let on = json!({"app_communication": true});
    assert_eq!(bob.json("GET", "/v1/settings", None), (200, off.clone()));
    assert_eq!(
        bob.json("PUT", "/v1/settings", Some(&on)),
        (200, on.clone())
    );
    assert_eq!(alice.json("GET", "/v1/settings", None), (200, off));

    assert_eq!(alice.json("PUT", "/v1/settings", Some(&on)), (200, on));
    assert_eq!(rcpt(&server, insurer, INSURER, &postfach, None).code, 250);

    refuses_bad_json(
        &alice,
        "PUT",
        "/v1/settings",
        &json!({"app_communication": true, "x": 1}),
    );
    alice.refused(
        "PUT",
        "/v1/settings",
        Some(&json!({})),
        400,
        "invalid-request",
    );
    alice.refused(
        "PUT",
        "/v1/settings",
        Some(&json!({"app_communication": "yes"})),
        400,
        "invalid-request",
    );
}

#[test]
fn smarthealth_opens_for_an_adult_with_a_recovery_key_who_accepts_the_current_terms() {
    require(&["openssl", "gpg", "curl"]);
    let install = Install::new();
    install.set_config_table("member_api", "smarthealth_terms_version = \"T-7\"\n");
    let server = install.serve(&[]);
    let (carol, _) = add_member(
        &install,
        &server,
        CAROL,
        "carol",
        &["--birth-date", "1990-01-01"],
    );
    let smarthealth = format!("{CAROL}@smarthealth.{DOMAIN}");
    let refused = rcpt(
        &server,
        install.practice_tls(),
        PRACTICE,
        &smarthealth,
        None,
    );
    assert_eq!(
        refused.to_string(),
        format!("550 5.1.1 member {CAROL} has not activated smarthealth")
    );
    let (status, record) = carol.json("GET", "/v1/smarthealth", None);
    assert_eq!(status, 200);
    assert_eq!(
        (
            &record["active"],
            &record["current_terms_version"],
            &record["accepted_terms_version"]
        ),
        (&json!(false), &json!("T-7"), &json!(null))
    );
    assert_eq!(record["quota_bytes"], json!(1u64 << 30));

    let activate = |session: &Session<'_>, terms: &str| {
        session.json(
            "POST",
            "/v1/smarthealth/activate",
            Some(&json!({"terms_version": terms})),
        )
    };
    let (status, problem) = activate(&carol, "T-6");
    assert_eq!((status, slug(&problem)), (409, "terms-not-current"));
    assert!(problem["detail"].as_str().unwrap().contains("T-7"));
    let (status, problem) = activate(&carol, "T-7");
    assert_eq!((status, slug(&problem)), (409, "recovery-key-required"));

    let (_, recovery) = gpg_key(&install, "carol-recovery");
    let (status, _) = carol.json(
        "PUT",
        "/v1/keys/recovery",
        Some(&json!({"public_key": recovery})),
    );
    assert_eq!(status, 200);
    let (status, record) = activate(&carol, "T-7");
    assert_eq!(status, 200, "{record}");
    assert_eq!(
        (
            &record["active"],
            &record["accepted_terms_version"],
            &record["used_bytes"]
        ),
        (&json!(true), &json!("T-7"), &json!(0))
    );
    assert!(record["activated_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        rcpt(
            &server,
            install.practice_tls(),
            PRACTICE,
            &smarthealth,
            None
        )
        .code,
        250
    );

    // A minor cannot open it, nor a member whose birth date the insurer never gave.
    let born = format!("{}-01-01", this_year() - 17);
    let (dave, _) = add_member(&install, &server, DAVE, "dave", &["--birth-date", &born]);
    let (status, problem) = activate(&dave, "T-7");
    assert_eq!((status, slug(&problem)), (403, "smarthealth-minor"));
    let (bob, _) = add_member(&install, &server, BOB, "bob", &[]);
    let (status, problem) = activate(&bob, "T-7");
    assert_eq!((status, slug(&problem)), (403, "birth-date-unknown"));
    let (status, record) = dave.json("GET", "/v1/smarthealth", None);
    assert_eq!((status, &record["active"]), (200, &json!(false)));

    refuses_bad_json(
        &carol,
        "POST",
        "/v1/smarthealth/activate",
        &json!({"terms_version": "T-7", "for": DAVE}),
    );
    let anonymous = Session {
        auth: "X-No-Token: 1".into(),
        ..carol
    };
    anonymous.refused("GET", "/v1/smarthealth", None, 401, "unauthorized");
    anonymous.refused("GET", "/v1/settings", None, 401, "unauthorized");
}

#[test]
fn a_full_smarthealth_inbox_refuses_at_rcpt_and_after_data_exactly_at_its_quota() {
    require(&["openssl", "gpg", "curl"]);
    let install = Install::new();
    let server = install.serve(&[]);
    let (alice, bob) = {
        let alice = member_session(&install, &server);
        let (bob, _) = second_member(&install, &server);
        (alice.auth, bob.auth)
    };
    deliver(&install, &server, "Befund 1");
    let (status, record) = session(&install, &server, &alice).json("GET", "/v1/smarthealth", None);
    assert_eq!(status, 200);
    let used = record["used_bytes"].as_u64().unwrap();
    assert!(used > 0, "{record}");
    let (_, record) = session(&install, &server, &bob).json("GET", "/v1/smarthealth", None);
    assert_eq!(record["used_bytes"], json!(0));
    server.terminate();

    let letter = install.practice_letter(&text_letter("Befund 2", "Befund"), "Befund 2");
    // What SMTP receives: the letter with CRLF line ends (the client sends it so).
    let size = String::from_utf8(letter.clone())
        .unwrap()
        .replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .len() as u64;
    let smarthealth = format!("{MEMBER}@smarthealth.{DOMAIN}");
    let serve_with_quota = |quota: u64| {
        install.set_config_table(
            "member_api",
            &format!("smarthealth_quota_bytes = {quota}\n"),
        );
        install.serve(&[])
    };

    // At RCPT, by SIZE=: exactly filling the quota is fine, one octet more is not.
    let server = serve_with_quota(used + size);
    assert_eq!(
        rcpt(
            &server,
            install.practice_tls(),
            PRACTICE,
            &smarthealth,
            Some(size)
        )
        .code,
        250
    );
    let over = rcpt(
        &server,
        install.practice_tls(),
        PRACTICE,
        &smarthealth,
        Some(size + 1),
    );
    assert_eq!(
        over.to_string(),
        format!(
            "552 5.2.2 the smarthealth storage of member {MEMBER} is full; the member is told in the app"
        )
    );
    server.terminate();

    // After DATA (no SIZE=): one octet over is refused, and nothing is kept.
    let server = serve_with_quota(used + size - 1);
    let reply = server.send(install.practice_tls(), PRACTICE, &[&smarthealth], &letter);
    assert_eq!(
        (reply.code, reply.text().get(..5)),
        (552, Some("5.2.2")),
        "{reply}"
    );
    let (_, record) = session(&install, &server, &alice).json("GET", "/v1/smarthealth", None);
    assert_eq!(record["used_bytes"], json!(used));
    let refused: Vec<_> = record["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["size"].as_u64().unwrap(),
                r["used_bytes"].as_u64().unwrap(),
                r["quota_bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        refused,
        [(size + 1, used, used + size), (size, used, used + size - 1)]
    );
    assert_eq!(record["refused"][0]["sender_id"], json!("demo-practice"));
    assert!(
        record["refused"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("552 5.2.2")
    );
    let (_, record) = session(&install, &server, &bob).json("GET", "/v1/smarthealth", None);
    assert_eq!(record["refused"], json!([]));

    // Refusals are per recipient: a letter that fits Bob's inbox but not Alice's is
    // accepted, filed for Bob, and failed for Alice with a quota-full DSN status.
    let bobs = format!("{BOB}@smarthealth.{DOMAIN}");
    let reply = server.send(
        install.practice_tls(),
        PRACTICE,
        &[&smarthealth, &bobs],
        &letter,
    );
    let trail = wait_final(&install, &tracking_id(&reply));
    let outcome = |address: &str| {
        trail["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["recipient"] == address)
            .map(|e| (e["kind"].as_str().unwrap(), e["reason"].as_str()))
            .next_back()
            .unwrap()
    };
    assert_eq!(outcome(&bobs), ("delivered", None), "{trail}");
    assert_eq!(
        outcome(&smarthealth),
        ("failed", Some("quota-full")),
        "{trail}"
    );
    server.terminate();

    // Exactly at the quota after DATA: accepted and filed.
    let server = serve_with_quota(used + size);
    let (id, _) = file_letter(&install, &server, &letter);
    assert_eq!(install.track(&id)["submission"]["size"], json!(size));
}

/// A session of the device whose `Authorization` header is `auth` on `server`.
fn session<'a>(install: &'a Install, server: &'a Server, auth: &str) -> Session<'a> {
    Session {
        install,
        server,
        auth: auth.to_owned(),
    }
}

/// The current calendar year (UTC), from `date`.
fn this_year() -> i32 {
    let out = run(std::process::Command::new("date").args(["-u", "+%Y"]));
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}
