//! Device credentials of the member API against the real binary over HTTPS with
//! `curl`: enrolment codes that expire and die after five wrong tries, enrolment rate
//! limits per client address and per device key (429 with `Retry-After`), tokens that
//! expire and rotate.

mod common;

use std::process::Command;

use common::*;
use serde_json::{Value, json};

/// One enrolment attempt: (status, response headers, body as JSON).
fn try_enrol(
    install: &Install,
    server: &Server,
    kvnr: &str,
    code: &str,
    key: &str,
) -> (u16, String, Value) {
    let request = json!({"kvnr": kvnr, "code": code, "device_name": "d", "public_key": key});
    let file = install.work("attempt.json");
    std::fs::write(&file, request.to_string()).unwrap();
    let headers = install.work("attempt.headers");
    let (status, body) = curl(
        install,
        server,
        &[
            "-D",
            headers.to_str().unwrap(),
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!("@{}", file.display()),
        ],
        "/v1/enroll",
    );
    let headers = std::fs::read_to_string(&headers)
        .unwrap()
        .to_ascii_lowercase();
    (status, headers, serde_json::from_slice(&body).unwrap())
}

/// The problem type slug of a problem+json body.
fn slug(problem: &Value) -> &str {
    problem["type"]
        .as_str()
        .and_then(|t| t.strip_prefix("urn:kvgate:problem:"))
        .unwrap_or_else(|| panic!("not a problem: {problem}"))
}

/// Configures the member API section of the installation.
fn member_api(install: &Install, table: &str) {
    install.set_config_table("member_api", table);
}

#[test]
fn five_wrong_codes_void_the_open_code_so_guessing_fails_even_without_rate_limits() {
    require(&["openssl", "gpg", "curl"]);
    let install = Install::new();
    member_api(
        &install,
        "enrollment_per_ip = 1000\nenrollment_per_device = 1000\n",
    );
    let server = install.serve(&[]);
    let (_, key) = gpg_member(&install);
    for guess in [
        "00000-00000-00000-00000",
        "x",
        "",
        "11111-22222-33333-44444",
        "abc",
    ] {
        let (status, _, problem) = try_enrol(&install, &server, MEMBER, guess, &key);
        assert_eq!((status, slug(&problem)), (403, "enrollment-code-invalid"));
    }
    let right = install.enrollment_code.clone();
    let (status, _, problem) = try_enrol(&install, &server, MEMBER, &right, &key);
    assert_eq!(
        (status, slug(&problem)),
        (403, "enrollment-code-invalid"),
        "the right code after five wrong ones is void"
    );
    // The member is identified again and gets a new code, which works.
    let code = new_code(&install, MEMBER);
    let (status, _, enrolled) = try_enrol(&install, &server, MEMBER, &code, &key);
    assert_eq!(status, 201, "{enrolled}");
    assert_eq!(enrolled["token"].as_str().unwrap().len(), 64);
}

#[test]
fn a_code_is_refused_once_its_lifetime_is_over() {
    require(&["openssl", "gpg", "curl"]);
    let install = Install::new();
    member_api(&install, "enrollment_code_lifetime_secs = 1\n");
    let server = install.serve(&[]);
    let (_, key) = gpg_member(&install);
    // The code from `init` was issued before this; wait out its one second.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (status, _, problem) = try_enrol(&install, &server, MEMBER, &install.enrollment_code, &key);
    assert_eq!((status, slug(&problem)), (403, "enrollment-code-invalid"));
}

#[test]
fn enrolment_is_rate_limited_per_client_address_and_per_device_key() {
    require(&["openssl", "gpg", "curl"]);
    let install = Install::new();
    member_api(
        &install,
        "enrollment_per_ip = 4\nenrollment_per_device = 2\nenrollment_window_secs = 600\n",
    );
    let server = install.serve(&[]);
    let (_, phone) = gpg_member(&install);
    let (_, tablet) = gpg_key(&install, "tablet");

    // Per device key: the third attempt with the same key is refused.
    for _ in 0..2 {
        let (status, _, _) = try_enrol(&install, &server, MEMBER, "wrong", &phone);
        assert_eq!(status, 403);
    }
    let (status, headers, problem) = try_enrol(&install, &server, MEMBER, "wrong", &phone);
    assert_eq!((status, slug(&problem)), (429, "rate-limited"));
    assert!(
        headers.contains("content-type: application/problem+json"),
        "{headers}"
    );
    assert!(headers.contains("cache-control: no-store"), "{headers}");
    let retry_after: u64 = headers
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .expect("a Retry-After header")
        .trim()
        .parse()
        .unwrap();
    assert!((1..=600).contains(&retry_after), "{retry_after}");

    // Another key from the same address still gets through, up to the address limit
    // (four attempts in all, counting the refused one).
    let (status, _, problem) = try_enrol(&install, &server, MEMBER, "wrong", &tablet);
    assert_eq!((status, slug(&problem)), (403, "enrollment-code-invalid"));
    let code = new_code(&install, MEMBER);
    let (status, _, problem) = try_enrol(&install, &server, MEMBER, &code, &tablet);
    assert_eq!((status, slug(&problem)), (429, "rate-limited"));
}

#[test]
fn a_refreshed_token_replaces_the_old_one_for_the_same_device() {
    require(&["openssl", "gpg", "curl"]);
    let install = Install::new();
    let server = install.serve(&[]);
    let (_, key) = gpg_member(&install);
    let (status, _, enrolled) =
        try_enrol(&install, &server, MEMBER, &install.enrollment_code, &key);
    assert_eq!(status, 201);
    let device_id = enrolled["device_id"].as_str().unwrap().to_owned();
    let bearer = |token: &Value| format!("Authorization: Bearer {}", token.as_str().unwrap());
    let old = Session {
        install: &install,
        server: &server,
        auth: bearer(&enrolled["token"]),
    };

    let (status, fresh) = old.json("POST", "/v1/token/refresh", None);
    assert_eq!(status, 200, "{fresh}");
    assert_ne!(fresh["token"], enrolled["token"]);
    assert_eq!(fresh["token"].as_str().unwrap().len(), 64);
    assert!(fresh["expires_at"].as_str().unwrap() >= enrolled["expires_at"].as_str().unwrap());

    old.refused("GET", "/v1/devices", None, 401, "unauthorized");
    old.refused("POST", "/v1/token/refresh", None, 401, "unauthorized");
    let new = Session {
        auth: bearer(&fresh["token"]),
        ..old
    };
    let (status, list) = new.json("GET", "/v1/devices", None);
    assert_eq!(status, 200);
    assert_eq!(list["devices"][0]["id"], json!(device_id));
    assert_eq!(list["devices"][0]["current"], json!(true));

    // Another member's refresh gives a token for their own device only.
    let (bob, bobs_device) = second_member(&install, &server);
    let (status, bobs) = bob.json("POST", "/v1/token/refresh", None);
    assert_eq!(status, 200);
    let bob = Session {
        auth: bearer(&bobs["token"]),
        ..bob
    };
    let (_, list) = bob.json("GET", "/v1/devices", None);
    let ids: Vec<&Value> = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["id"])
        .collect();
    assert_eq!(ids, [&json!(bobs_device)]);

    let anonymous = Session {
        auth: "X-Nothing: 1".into(),
        ..new
    };
    anonymous.refused("POST", "/v1/token/refresh", None, 401, "unauthorized");
}

#[test]
fn an_expired_token_is_refused_and_cannot_be_refreshed() {
    require(&["openssl", "gpg", "curl"]);
    let install = Install::new();
    member_api(&install, "token_lifetime_secs = 2\n");
    let server = install.serve(&[]);
    let (_, key) = gpg_member(&install);
    let before = now_rfc3339();
    let (status, _, enrolled) =
        try_enrol(&install, &server, MEMBER, &install.enrollment_code, &key);
    assert_eq!(status, 201);
    let expires = enrolled["expires_at"].as_str().unwrap().to_owned();
    assert!(expires > before, "{expires} after {before}");
    let session = Session {
        install: &install,
        server: &server,
        auth: format!(
            "Authorization: Bearer {}",
            enrolled["token"].as_str().unwrap()
        ),
    };
    wait_until("the token expires", 30, || {
        session.json("GET", "/v1/devices", None).0 == 401
    });
    session.refused("GET", "/v1/devices", None, 401, "token-expired");
    session.refused("POST", "/v1/token/refresh", None, 401, "token-expired");
}

/// The current time as `date -u` prints it in the API's RFC 3339 form (seconds).
fn now_rfc3339() -> String {
    let out = run(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%S"]));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A client that sends its whole body before it reads (as Python's http.client does)
/// gets the early refusal, not a reset: the server drains what it did not read.
#[test]
fn an_early_refusal_reaches_a_client_still_sending_its_body() {
    require(&["python3", "openssl"]);
    let install = Install::new();
    let server = install.serve(&[]);
    let script = "import http.client, ssl, sys\n\
        ctx = ssl.create_default_context(cafile=sys.argv[1])\n\
        conn = http.client.HTTPSConnection('localhost', int(sys.argv[2]), context=ctx)\n\
        conn.request('PUT', '/v1/keys/backup', body=b'x' * (8 << 20))\n\
        print(conn.getresponse().status)\n";
    for _ in 0..3 {
        let out = run(Command::new("python3")
            .args(["-c", script])
            .arg(install.pki("ca.pem"))
            .arg(server.api.port().to_string()));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "401");
    }
}
