//! The member's whole account through the API, against the real binary over HTTPS
//! with `curl`, the archive read by `tar` and the letters by `gpg`: the export holds
//! every letter and nothing of another member's; cancellation needs the member's KVNR
//! as confirmation and leaves none of the member's bytes in the data directory.

mod common;

use std::path::Path;
use std::process::Command;

use common::account::*;
use common::*;
use serde_json::{Value, json};

/// Downloads the member's export to `file`; returns the status and headers.
fn export(session: &Session<'_>, file: &Path) -> (u16, String) {
    let headers = session.install.work("export.headers");
    let out = run(Command::new("curl")
        .args(["-sS", "--max-time", "60", "--cacert"])
        .arg(session.install.pki("ca.pem"))
        .arg("--resolve")
        .arg(format!("localhost:{}:127.0.0.1", session.server.api.port()))
        .args(["-H", &session.auth, "-D"])
        .arg(&headers)
        .arg("-o")
        .arg(file)
        .args(["-w", "%{http_code}"])
        .arg(format!(
            "https://localhost:{}/v1/export",
            session.server.api.port()
        )));
    let status = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (
        status,
        std::fs::read_to_string(headers)
            .unwrap()
            .to_ascii_lowercase(),
    )
}

/// Unpacks an archive with `tar` into a fresh directory; returns it.
fn unpack(install: &Install, archive: &Path, name: &str) -> std::path::PathBuf {
    let dir = install.work(name);
    std::fs::create_dir_all(&dir).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(&dir));
    dir
}

#[test]
fn the_export_holds_every_letter_of_the_member_and_nothing_of_anothers() {
    require(&["openssl", "gpg", "curl", "tar"]);
    let install = Install::new();
    let server = install.serve(&[]);
    let (home, key) = gpg_member(&install);
    let alice = Session {
        install: &install,
        server: &server,
        auth: enrol(&install, &server, &key),
    };
    let (bob, _) = second_member(&install, &server);
    let (first, _) = deliver(&install, &server, "Befund 1");
    let (second, _) = deliver(&install, &server, "Befund 2");
    let bobs = deliver_to(&install, &server, BOB, "Bobs Befund");
    assert_eq!(alice.put_backup(b"opaque backup"), 204);
    let (status, _) = alice.json(
        "POST",
        "/v1/family",
        Some(&json!({"kvnr": CAROL, "name": "Carol"})),
    );
    assert_eq!(status, 201);

    let archive = install.work("alice.tar");
    let (status, headers) = export(&alice, &archive);
    assert_eq!(status, 200);
    assert!(
        headers.contains("content-type: application/x-tar"),
        "{headers}"
    );
    assert!(headers.contains("cache-control: no-store"), "{headers}");
    assert!(
        headers.contains(&format!("filename=\"kvgate-export-{MEMBER}.tar\"").to_ascii_lowercase()),
        "{headers}"
    );
    let dir = unpack(&install, &archive, "alice-export");
    let root = dir.join(format!("kvgate-export-{MEMBER}"));
    let listed = files(&root);
    let (_, list) = alice.json("GET", "/v1/messages", None);
    let mut expected = vec!["account.json".to_owned(), "keys/backup.bin".to_owned()];
    for m in list["messages"].as_array().unwrap() {
        let base = format!("messages/smarthealth/{}", m["id"].as_str().unwrap());
        expected.push(format!("{base}.json"));
        expected.push(format!("{base}.pgp.eml"));
    }
    expected.extend([first.clone(), second.clone()].map(|t| format!("tracking/{t}.json")));
    expected.sort();
    assert_eq!(listed, expected);

    for (tracking, subject) in [(&first, "Befund 1"), (&second, "Befund 2")] {
        let meta = list["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["tracking_id"] == *tracking)
            .unwrap();
        let base = root.join(format!(
            "messages/smarthealth/{}",
            meta["id"].as_str().unwrap()
        ));
        let stored: Value =
            serde_json::from_slice(&std::fs::read(base.with_extension("json")).unwrap()).unwrap();
        assert_eq!(
            (
                &stored["tracking_id"],
                &stored["sender_id"],
                &stored["size"]
            ),
            (&meta["tracking_id"], &json!("demo-practice"), &meta["size"])
        );
        let ciphertext = std::fs::read(base.with_extension("pgp.eml")).unwrap();
        assert_eq!(ciphertext, letter_of(&alice, tracking));
        let plain = gpg_decrypt(&install, &home, &ciphertext).unwrap();
        assert!(String::from_utf8_lossy(&plain).contains(subject));
        let events: Value = serde_json::from_slice(
            &std::fs::read(root.join(format!("tracking/{tracking}.json"))).unwrap(),
        )
        .unwrap();
        let kinds: Vec<&str> = events
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds.first(), Some(&"accepted"), "{events}");
        assert!(kinds.contains(&"delivered"), "{events}");
    }
    let account: Value =
        serde_json::from_slice(&std::fs::read(root.join("account.json")).unwrap()).unwrap();
    assert_eq!(account["member"]["kvnr"], json!(MEMBER));
    assert_eq!(account["member"]["birth_date"], json!("1980-05-17"));
    assert_eq!(account["settings"], json!({"app_communication": true}));
    assert_eq!(account["family"][0]["kvnr"], json!(CAROL));
    assert_eq!(account["devices"].as_array().unwrap().len(), 1);
    // No conversation yet: the list is there, empty.
    assert_eq!(account["threads"], json!([]));
    assert_eq!(
        std::fs::read(root.join("keys/backup.bin")).unwrap(),
        b"opaque backup"
    );
    assert_eq!(
        occurrences(&dir, bobs.as_bytes()),
        0,
        "Bob's letter is not in Alice's export"
    );
    assert_eq!(occurrences(&dir, BOB.as_bytes()), 0);

    // Bob's export is his: his one letter, none of Alice's.
    let archive = install.work("bob.tar");
    assert_eq!(export(&bob, &archive).0, 200);
    let dir = unpack(&install, &archive, "bob-export");
    let root = dir.join(format!("kvgate-export-{BOB}"));
    let listed = files(&root);
    assert_eq!(listed.iter().filter(|f| f.ends_with(".pgp.eml")).count(), 1);
    assert_eq!(
        listed.iter().filter(|f| f.starts_with("tracking/")).count(),
        1
    );
    assert_eq!(occurrences(&dir, MEMBER.as_bytes()), 0);
    assert_eq!(occurrences(&dir, first.as_bytes()), 0);

    let anonymous = Session {
        auth: "X-No-Token: 1".into(),
        ..bob
    };
    anonymous.refused("GET", "/v1/export", None, 401, "unauthorized");
}

#[test]
fn cancellation_needs_the_kvnr_and_leaves_none_of_the_members_bytes() {
    require(&["openssl", "gpg", "curl"]);
    let install = Install::new();
    let server = install.serve(&[]);
    let alice = member_session(&install, &server);
    let (bob, _) = second_member(&install, &server);
    let (first, _) = deliver(&install, &server, "Befund 1");
    let (second, _) = deliver(&install, &server, "Befund 2");
    let ciphertexts = [letter_of(&alice, &first), letter_of(&alice, &second)];
    // A letter the member deleted before leaves no record naming them either.
    let (third, _) = deliver(&install, &server, "Befund 3");
    let (_, list) = alice.json("GET", "/v1/messages", None);
    let third_id = list["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["tracking_id"] == third.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        alice
            .call("DELETE", &format!("/v1/messages/{third_id}"), None)
            .0,
        204
    );
    assert_eq!(alice.put_backup(b"alice's opaque key backup"), 204);
    let bobs = deliver_to(&install, &server, BOB, "Bobs Befund");
    let bobs_ciphertext = letter_of(&bob, &bobs);

    let needle = |letter: &[u8]| ciphertext_sample(letter);
    for letter in &ciphertexts {
        assert_eq!(
            occurrences(&install.data(), &needle(letter)),
            1,
            "stored once before"
        );
    }

    let cancel =
        |session: &Session<'_>, body: Value| session.json("DELETE", "/v1/account", Some(&body));
    let (status, problem) = cancel(&alice, json!({"confirm": BOB}));
    assert_eq!((status, slug(&problem)), (422, "confirmation-mismatch"));
    let (status, problem) = cancel(&alice, json!({"confirm": "yes"}));
    assert_eq!((status, slug(&problem)), (422, "confirmation-mismatch"));
    refuses_bad_json(
        &alice,
        "DELETE",
        "/v1/account",
        &json!({"confirm": MEMBER, "really": true}),
    );
    alice.refused("DELETE", "/v1/account", None, 400, "invalid-request");
    assert_eq!(
        alice.json("GET", "/v1/messages", None).0,
        200,
        "nothing deleted yet"
    );

    let (status, answer) = cancel(&alice, json!({"confirm": MEMBER}));
    assert_eq!(
        (status, answer),
        (200, json!({"deleted_letters": 2, "deleted_uploads": 0}))
    );

    alice.refused("GET", "/v1/messages", None, 401, "unauthorized");
    let out = install.admin(&["member", "code", "--kvnr", MEMBER]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no member A123456780"));
    let refused = rcpt(
        &server,
        install.practice_tls(),
        PRACTICE,
        &format!("{MEMBER}@smarthealth.{DOMAIN}"),
        None,
    );
    assert_eq!(
        refused.to_string(),
        format!("550 5.1.1 no member with KVNR {MEMBER}")
    );
    for id in [&first, &second] {
        let trail = install.track(id);
        let last = trail["events"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(
            (&last["kind"], &last["detail"]),
            (
                &json!("deleted"),
                &json!("the member cancelled the account; deleted")
            )
        );
    }
    // Bob keeps everything.
    assert_eq!(letter_of(&bob, &bobs), bobs_ciphertext);
    server.terminate();

    // None of Alice's bytes is left anywhere in the data directory.
    let data = install.data();
    for letter in &ciphertexts {
        assert_eq!(
            occurrences(&data, &needle(letter)),
            0,
            "a letter's ciphertext is left"
        );
    }
    assert_eq!(occurrences(&data, b"alice's opaque key backup"), 0);
    assert_eq!(
        occurrences(&data, format!("{MEMBER}/").as_bytes()),
        0,
        "a record key is left"
    );
    assert_eq!(occurrences(&data, &needle(&bobs_ciphertext)), 1);
}

#[test]
fn exports_are_bounded_and_one_whose_client_stops_reading_is_dropped() {
    require(&["openssl", "gpg", "curl", "python3"]);
    let install = Install::new();
    install.set_config_table("member_api", "max_exports = 1\nwrite_timeout_secs = 3\n");
    let server = install.serve(&[]);
    let alice = member_session(&install, &server);
    // A letter of 12 MiB: its archive is far more than the sockets' buffers hold.
    let body = format!("{}\r\n", "x".repeat(78)).repeat(12 * 1024 * 1024 / 80);
    let letter = install.practice_letter(&text_letter("Gross", &body), "Gross");
    file_letter(&install, &server, &letter);

    // A client asks for the export, reads its head and stops reading.
    let script = "import socket, ssl, sys, time\n\
        ctx = ssl.create_default_context(cafile=sys.argv[1])\n\
        raw = socket.socket()\n\
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)\n\
        raw.connect(('127.0.0.1', int(sys.argv[2])))\n\
        s = ctx.wrap_socket(raw, server_hostname='localhost')\n\
        s.sendall(('GET /v1/export HTTP/1.1\\r\\nHost: localhost\\r\\n' + sys.argv[3] + '\\r\\n\\r\\n').encode())\n\
        head = b''\n\
        while b'\\r\\n\\r\\n' not in head:\n\
        \x20   head += s.recv(1)\n\
        print(head.split(b' ')[1].decode(), flush=True)\n\
        time.sleep(120)\n";
    let mut stalled = Command::new("python3")
        .args(["-c", script])
        .arg(install.pki("ca.pem"))
        .arg(server.api.port().to_string())
        .arg(&alice.auth)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut status = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(stalled.stdout.take().unwrap()),
        &mut status,
    )
    .unwrap();
    assert_eq!(status.trim(), "200");

    // While it holds the one place, another export is 503 with Retry-After.
    let archive = install.work("second.tar");
    let (status, headers) = export(&alice, &archive);
    assert_eq!(status, 503, "{headers}");
    assert!(headers.contains("retry-after: 60"), "{headers}");
    assert!(
        headers.contains("content-type: application/problem+json"),
        "{headers}"
    );
    let problem: Value = serde_json::from_slice(&std::fs::read(&archive).unwrap()).unwrap();
    assert_eq!(slug(&problem), "busy");

    // Its writes wait three seconds at most; then its connection is dropped and the
    // place is free again.
    wait_until("the stalled export is dropped", 60, || {
        export(&alice, &archive).0 == 200
    });
    let _ = stalled.kill();
    let _ = stalled.wait();
    let dir = unpack(&install, &archive, "export");
    assert_eq!(files(&dir.join(format!("kvgate-export-{MEMBER}"))).len(), 4);
}
