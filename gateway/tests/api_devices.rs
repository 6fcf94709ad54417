//! The member API's devices, recovery key and key backup, against the real binary over
//! HTTPS with `curl`; keys made and used by `gpg`.

mod common;

use common::*;
use serde_json::json;

#[test]
fn devices_are_listed_renamed_and_removed_and_a_removed_key_gets_no_new_letters() {
    require(&["openssl", "gpg", "curl"]);
    let install = Install::new();
    let server = install.serve(&[]);
    let (phone_home, phone_key) = gpg_member(&install);
    let (phone_auth, phone_id) = enrol_device(
        &install,
        &server,
        MEMBER,
        &install.enrollment_code,
        "phone",
        &phone_key,
    );
    let phone = Session {
        install: &install,
        server: &server,
        auth: phone_auth,
    };

    // A second device needs a new code; the used one is refused.
    let (tablet_home, tablet_key) = gpg_key(&install, "tablet");
    let code = new_code(&install, MEMBER);
    // And a key of its own: the phone's is refused, and the code stays usable.
    let enrol = |key: &str| json!({"kvnr": MEMBER, "code": code, "device_name": "tablet", "public_key": key});
    phone.refused(
        "POST",
        "/v1/enroll",
        Some(&enrol(&phone_key)),
        409,
        "key-in-use",
    );
    // Nor can the phone's key become the recovery key.
    phone.refused(
        "PUT",
        "/v1/keys/recovery",
        Some(&json!({"public_key": phone_key})),
        409,
        "key-in-use",
    );
    let (tablet_auth, tablet_id) =
        enrol_device(&install, &server, MEMBER, &code, "tablet", &tablet_key);
    let tablet = Session {
        install: &install,
        server: &server,
        auth: tablet_auth,
    };

    let (status, list) = phone.json("GET", "/v1/devices", None);
    assert_eq!(status, 200);
    let devices = list["devices"].as_array().unwrap();
    let summary: Vec<(&str, &str, bool)> = devices
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap(),
                d["name"].as_str().unwrap(),
                d["current"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (phone_id.as_str(), "phone", true),
            (tablet_id.as_str(), "tablet", false)
        ]
    );
    assert_eq!(devices[0]["key_fingerprint"].as_str().unwrap().len(), 40);

    let path = format!("/v1/devices/{tablet_id}");
    let (status, renamed) = phone.json("PATCH", &path, Some(&json!({"name": "  old tablet "})));
    assert_eq!(status, 200);
    assert_eq!(
        (renamed["name"].as_str(), renamed["current"].as_bool()),
        (Some("old tablet"), Some(false))
    );
    phone.refused(
        "PATCH",
        &path,
        Some(&json!({"name": " "})),
        422,
        "invalid-device-name",
    );
    phone.refused(
        "PATCH",
        &path,
        Some(&json!({"name": "x".repeat(101)})),
        422,
        "invalid-device-name",
    );
    phone.refused(
        "PATCH",
        &path,
        Some(&json!({"name": "a", "colour": "red"})),
        400,
        "invalid-request",
    );
    phone.refused(
        "PATCH",
        "/v1/devices/01ARZ3NDEKTSV4RRFFQ69G5FAV",
        Some(&json!({"name": "a"})),
        404,
        "not-found",
    );

    // The demo member's provisioned key and both devices' keys receive a letter.
    let (first, keys) = deliver(&install, &server, "Vorher");
    assert_eq!(keys, "to 3 key(s)");
    assert!(gpg_decrypt(&install, &tablet_home, &letter_of(&phone, &first)).is_some());

    let (status, _) = phone.call("DELETE", &path, None);
    assert_eq!(status, 204);
    tablet.refused("GET", "/v1/devices", None, 401, "unauthorized");
    phone.refused("DELETE", &path, None, 404, "not-found");
    let (_, list) = phone.json("GET", "/v1/devices", None);
    assert_eq!(list["devices"].as_array().unwrap().len(), 1);

    // The next letter is not encrypted to the removed device's key.
    let (second, keys) = deliver(&install, &server, "Nachher");
    assert_eq!(keys, "to 2 key(s)");
    let letter = letter_of(&phone, &second);
    assert!(gpg_decrypt(&install, &tablet_home, &letter).is_none());
    assert!(gpg_decrypt(&install, &phone_home, &letter).is_some());

    // Another member sees none of it and can change none of it.
    let (bob, bob_id) = second_member(&install, &server);
    let (_, list) = bob.json("GET", "/v1/devices", None);
    assert_eq!(list["devices"].as_array().unwrap().len(), 1);
    assert_eq!(list["devices"][0]["id"], bob_id.as_str());
    let phone_path = format!("/v1/devices/{phone_id}");
    bob.refused(
        "PATCH",
        &phone_path,
        Some(&json!({"name": "mine"})),
        404,
        "not-found",
    );
    bob.refused("DELETE", &phone_path, None, 404, "not-found");
    let (_, list) = phone.json("GET", "/v1/devices", None);
    assert_eq!(list["devices"][0]["name"], "phone");

    // A device may remove itself; its token is then dead.
    let (status, _) = phone.call("DELETE", &phone_path, None);
    assert_eq!(status, 204);
    phone.refused("GET", "/v1/devices", None, 401, "unauthorized");
    // No code for a member who is not registered.
    let out = install.admin(&["member", "code", "--kvnr", "C000000006"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no member C000000006 is registered"));
}

#[test]
fn the_recovery_key_receives_every_new_letter_and_the_backup_is_kept_as_given() {
    require(&["openssl", "gpg", "curl"]);
    let install = Install::new();
    let server = install.serve(&[]);
    let phone = member_session(&install, &server);

    phone.refused("GET", "/v1/keys/recovery", None, 404, "not-found");
    // Without a configured back office, uploads are refused up front.
    phone.refused("POST", "/v1/documents", None, 503, "uploads-unavailable");
    phone.refused(
        "PUT",
        "/v1/keys/recovery",
        Some(&json!({"public_key": "not a key"})),
        422,
        "invalid-public-key",
    );
    phone.refused(
        "PUT",
        "/v1/keys/recovery",
        Some(&json!({"key": "x"})),
        400,
        "invalid-request",
    );
    let (recovery_home, recovery_key) = gpg_key(&install, "recovery");
    let (status, stored) = phone.json(
        "PUT",
        "/v1/keys/recovery",
        Some(&json!({"public_key": recovery_key})),
    );
    assert_eq!(status, 200, "{stored}");
    let (status, shown) = phone.json("GET", "/v1/keys/recovery", None);
    assert_eq!(status, 200);
    assert_eq!(shown["fingerprint"], stored["fingerprint"]);
    assert!(
        shown["public_key"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    );

    // A letter filed now can be read with the recovery key alone (a new device that
    // restored it).
    let (id, keys) = deliver(&install, &server, "Wiederherstellung");
    assert_eq!(keys, "to 3 key(s)");
    let plaintext = gpg_decrypt(&install, &recovery_home, &letter_of(&phone, &id))
        .expect("the recovery key decrypts");
    let parsed = mail_parser::MessageParser::default()
        .parse(plaintext.as_slice())
        .unwrap();
    assert_eq!(parsed.subject(), Some("Wiederherstellung"));

    // A new recovery key replaces the old one.
    let (_, second_key) = gpg_key(&install, "recovery2");
    let (status, replaced) = phone.json(
        "PUT",
        "/v1/keys/recovery",
        Some(&json!({"public_key": second_key})),
    );
    assert_eq!(status, 200);
    assert_ne!(replaced["fingerprint"], stored["fingerprint"]);
    let (_, keys) = deliver(&install, &server, "Ersetzt");
    assert_eq!(keys, "to 3 key(s)");

    // The backup: kept byte for byte, up to exactly 64 KiB.
    phone.refused("GET", "/v1/keys/backup", None, 404, "not-found");
    let blob: Vec<u8> = (0..65_536u32).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(phone.put_backup(&blob), 204);
    let (status, got) = phone.call("GET", "/v1/keys/backup", None);
    assert_eq!((status, got.len()), (200, blob.len()));
    assert!(got == blob, "the backup came back changed");
    let mut too_big = blob.clone();
    too_big.push(0);
    assert_eq!(phone.put_backup(&too_big), 413);
    phone.refused("PUT", "/v1/keys/backup", None, 422, "backup-empty");
    let (_, still) = phone.call("GET", "/v1/keys/backup", None);
    assert!(
        still == blob,
        "a refused backup must not replace the stored one"
    );

    // Another member sees neither.
    let (bob, _) = second_member(&install, &server);
    bob.refused("GET", "/v1/keys/backup", None, 404, "not-found");
    bob.refused("GET", "/v1/keys/recovery", None, 404, "not-found");
}

#[test]
fn every_answer_is_no_store_and_unknown_routes_and_methods_are_problems() {
    require(&["curl"]);
    let install = Install::new();
    let server = install.serve(&[]);
    let headers = install.work("headers.txt");
    let dump = headers.display().to_string();
    let (status, _) = curl(&install, &server, &["-D", &dump], "/v1/openapi.json");
    assert_eq!(status, 200);
    let text = std::fs::read_to_string(&headers)
        .unwrap()
        .to_ascii_lowercase();
    assert!(text.contains("\r\ncache-control: no-store\r\n"), "{text}");

    let anonymous = Session {
        install: &install,
        server: &server,
        auth: "X-None: 1".into(),
    };
    anonymous.refused("PUT", "/v1/devices", None, 405, "method-not-allowed");
    anonymous.refused("GET", "/v1/nothing", None, 404, "no-such-route");
    anonymous.refused("GET", "/v1/devices", None, 401, "unauthorized");
    // Request bodies are bounded (64 KiB) and malformed ones refused, as problems.
    let huge =
        json!({"kvnr": MEMBER, "code": "x", "device_name": "x", "public_key": "k".repeat(70_000)});
    anonymous.refused("POST", "/v1/enroll", Some(&huge), 413, "body-too-large");
    anonymous.refused(
        "POST",
        "/v1/enroll",
        Some(&json!("not an object")),
        400,
        "invalid-request",
    );
    let unknown =
        json!({"kvnr": MEMBER, "code": "x", "device_name": "x", "public_key": "k", "admin": true});
    anonymous.refused("POST", "/v1/enroll", Some(&unknown), 400, "invalid-request");
    let wrong = json!({"kvnr": "A123456781", "code": "x", "device_name": "x", "public_key": "k"});
    anonymous.refused("POST", "/v1/enroll", Some(&wrong), 422, "invalid-kvnr");
    let (status, _) = curl(&install, &server, &["-D", &dump], "/v1/devices");
    assert_eq!(status, 401);
    let text = std::fs::read_to_string(&headers)
        .unwrap()
        .to_ascii_lowercase();
    assert!(text.contains("\r\ncache-control: no-store\r\n"), "{text}");
    assert!(
        text.contains("\r\ncontent-type: application/problem+json\r\n"),
        "{text}"
    );
}
