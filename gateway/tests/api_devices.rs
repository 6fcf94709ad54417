//! The member API's devices, recovery key and key backup, against the real binary over
//! HTTPS with `curl`; keys made and used by `gpg`.

mod common;

use common::*;
use serde_json::{Value, json};

const BOB: &str = "X110411319";

/// A member's API session: one device's `Authorization` header.
struct Session<'a> {
    install: &'a Install,
    server: &'a Server,
    auth: String,
}

impl Session<'_> {
    /// `curl -X method path` with an optional JSON body; (status, body).
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Vec<u8>) {
        let file = self.install.work("request.json");
        let data = format!("@{}", file.display());
        let mut args = vec!["-X", method, "-H", &self.auth];
        if let Some(body) = body {
            std::fs::write(&file, body.to_string()).unwrap();
            args.extend([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &data,
            ]);
        }
        curl(self.install, self.server, &args, path)
    }

    /// Like `call`, parsing the answer as JSON.
    fn json(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let (status, answer) = self.call(method, path, body);
        let value = if answer.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&answer)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&answer)))
        };
        (status, value)
    }

    /// Asserts a problem+json refusal with this status and type slug.
    fn refused(&self, method: &str, path: &str, body: Option<&Value>, status: u16, slug: &str) {
        let (got, problem) = self.json(method, path, body);
        assert_eq!(
            (got, &problem["type"]),
            (status, &json!(format!("urn:kvgate:problem:{slug}"))),
            "{method} {path}: {problem}"
        );
        assert!(!problem["detail"].as_str().unwrap().is_empty());
    }

    /// Uploads `bytes` as the key backup; the status.
    fn put_backup(&self, bytes: &[u8]) -> u16 {
        let file = self.install.work("backup.bin");
        std::fs::write(&file, bytes).unwrap();
        let data = format!("@{}", file.display());
        let args = [
            "-X",
            "PUT",
            "-H",
            &self.auth,
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &data,
        ];
        curl(self.install, self.server, &args, "/v1/keys/backup").0
    }
}

/// A new enrolment code for `kvnr` from `kvgate member code`.
fn new_code(install: &Install, kvnr: &str) -> String {
    let out = install.admin(&["member", "code", "--kvnr", kvnr]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .strip_prefix("enrollment-code: ")
        .unwrap()
        .to_owned()
}

/// Sends a letter to the demo member's smarthealth inbox and waits until it is filed;
/// returns its tracking trail and the number of keys it was encrypted to.
fn deliver(install: &Install, server: &Server, subject: &str) -> (String, String) {
    let message = install.practice_letter(&text_letter(subject, "Befund"), subject);
    let reply = server.send(
        install.practice_tls(),
        PRACTICE,
        &[&format!("{MEMBER}@smarthealth.{DOMAIN}")],
        &message,
    );
    let id = tracking_id(&reply);
    let trail = wait_final(install, &id);
    assert_eq!(trail["submission"]["state"], "delivered", "{trail}");
    let encrypted = trail["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "encrypted")
        .unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    (id, encrypted)
}

/// The ciphertext of the member's message from submission `tracking_id`.
fn letter_of(session: &Session<'_>, tracking_id: &str) -> Vec<u8> {
    let (status, list) = session.json("GET", "/v1/messages", None);
    assert_eq!(status, 200);
    let id = list["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["tracking_id"] == tracking_id)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = session.call("GET", &format!("/v1/messages/{id}"), None);
    assert_eq!(status, 200);
    body
}

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
    let out = install.admin(&[
        "member",
        "add",
        "--kvnr",
        BOB,
        "--name",
        "Bob",
        "--smarthealth",
    ]);
    assert!(out.status.success());
    let code = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("enrollment-code: "))
        .unwrap()
        .to_owned();
    let (_, bob_key) = gpg_key(&install, "bob");
    let (bob_auth, bob_id) = enrol_device(&install, &server, BOB, &code, "bob", &bob_key);
    let bob = Session {
        install: &install,
        server: &server,
        auth: bob_auth,
    };
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
    let (_, phone_key) = gpg_member(&install);
    let phone = Session {
        install: &install,
        server: &server,
        auth: enrol(&install, &server, &phone_key),
    };

    phone.refused("GET", "/v1/keys/recovery", None, 404, "not-found");
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
    let out = install.admin(&["member", "add", "--kvnr", BOB, "--name", "Bob"]);
    let code = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("enrollment-code: "))
        .unwrap()
        .to_owned();
    let (_, bob_key) = gpg_key(&install, "bob");
    let bob = Session {
        install: &install,
        server: &server,
        auth: enrol_device(&install, &server, BOB, &code, "bob", &bob_key).0,
    };
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
