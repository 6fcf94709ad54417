//! Device credentials of the member API against the real binary over HTTPS with
//! `curl`: enrolment codes that expire and die after five wrong tries, enrolment rate
//! limits per client address and per device key (429 with `Retry-After`), tokens that
//! expire and rotate; and the API's transport: bodies that stall, connection limits,
//! TLS sessions resumed by ticket.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::sync::Arc;

use common::*;
use rustls::HandshakeKind;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
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

/// (status, response headers in lower case, body as JSON) of a curl call.
fn answer(install: &Install, server: &Server, args: &[&str], path: &str) -> (u16, String, Value) {
    let headers = install.work("answer.headers");
    let mut all = vec!["-D", headers.to_str().unwrap()];
    all.extend_from_slice(args);
    let (status, body) = curl(install, server, &all, path);
    let headers = std::fs::read_to_string(&headers)
        .unwrap()
        .to_ascii_lowercase();
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{path}: {e}: {}", String::from_utf8_lossy(&body)));
    (status, headers, body)
}

/// Asserts a problem+json answer with this status and type slug.
fn assert_problem(got: (u16, String, Value), status: u16, expected: &str) {
    let (code, headers, problem) = got;
    assert_eq!((code, slug(&problem)), (status, expected), "{problem}");
    assert!(
        headers.contains("content-type: application/problem+json"),
        "{headers}"
    );
    assert!(!problem["detail"].as_str().unwrap().is_empty());
}

#[test]
fn a_path_parameter_that_is_not_utf8_is_refused_as_problem_json_after_the_token_check() {
    require(&["openssl", "gpg", "curl"]);
    let install = Install::new();
    let server = install.serve(&[]);
    let delete = ["-X", "DELETE"];
    // A stranger learns nothing: 401, as for any other ID.
    for (args, path) in [
        (&[][..], "/v1/messages/%FF"),
        (&delete[..], "/v1/family/%FF%FE"),
        (&[][..], "/v1/tracking/a%C3"),
    ] {
        assert_problem(answer(&install, &server, args, path), 401, "unauthorized");
    }
    let session = member_session(&install, &server);
    let auth = ["-H", session.auth.as_str()];
    let auth_delete = ["-X", "DELETE", "-H", session.auth.as_str()];
    assert_problem(
        answer(&install, &server, &auth, "/v1/messages/%FF"),
        404,
        "not-found",
    );
    assert_problem(
        answer(&install, &server, &auth, "/v1/tracking/a%C3"),
        404,
        "not-found",
    );
    assert_problem(
        answer(&install, &server, &auth_delete, "/v1/family/%FF%FE"),
        422,
        "invalid-kvnr",
    );
}

#[test]
fn a_json_body_not_declared_as_json_is_415_problem_json() {
    require(&["openssl", "gpg", "curl"]);
    let install = Install::new();
    let server = install.serve(&[]);
    let body = r#"{"app_communication": true}"#;
    // curl -d declares application/x-www-form-urlencoded; a stranger still gets 401.
    let form = ["-X", "PUT", "-d", body];
    assert_problem(
        answer(&install, &server, &form, "/v1/settings"),
        401,
        "unauthorized",
    );
    let session = member_session(&install, &server);
    let auth = session.auth.as_str();
    for declared in [
        "Content-Type: application/x-www-form-urlencoded",
        "Content-Type: text/plain",
        // No Content-Type at all, with a body.
        "Content-Type:",
    ] {
        let args = [
            "-X",
            "PUT",
            "-H",
            auth,
            "-H",
            declared,
            "--data-binary",
            body,
        ];
        assert_problem(
            answer(&install, &server, &args, "/v1/settings"),
            415,
            "unsupported-media-type",
        );
    }
    let json = [
        "-X",
        "PUT",
        "-H",
        auth,
        "-H",
        "Content-Type: application/json; charset=utf-8",
        "--data-binary",
        body,
    ];
    let (status, _, settings) = answer(&install, &server, &json, "/v1/settings");
    assert_eq!(
        (status, &settings["app_communication"]),
        (200, &json!(true))
    );
    // A request without a body is not refused for its missing Content-Type: it is
    // taken as an empty body (which this route finds invalid).
    session.refused("DELETE", "/v1/account", None, 400, "invalid-request");
}

/// Runs a Python script with the development CA and the API port as arguments;
/// returns what it printed.
fn python(install: &Install, server: &Server, script: &str) -> String {
    let out = run(Command::new("python3")
        .args(["-c", script])
        .arg(install.pki("ca.pem"))
        .arg(server.api.port().to_string()));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_request_body_that_stops_arriving_gets_408_and_the_connection_is_closed() {
    require(&["python3", "openssl"]);
    let install = Install::new();
    member_api(&install, "body_timeout_secs = 1\n");
    let server = install.serve(&[]);
    // Headers promise 100 octets, 9 come, then nothing.
    let script = "import socket, ssl, sys, time\n\
        ctx = ssl.create_default_context(cafile=sys.argv[1])\n\
        raw = socket.create_connection(('127.0.0.1', int(sys.argv[2])))\n\
        s = ctx.wrap_socket(raw, server_hostname='localhost')\n\
        s.settimeout(60)\n\
        s.sendall(b'POST /v1/enroll HTTP/1.1\\r\\nHost: localhost\\r\\nContent-Type: application/json\\r\\nContent-Length: 100\\r\\n\\r\\n{\"kvnr\": ')\n\
        start = time.monotonic()\n\
        data = b''\n\
        while True:\n\
        \x20   chunk = s.recv(65536)\n\
        \x20   if not chunk:\n\
        \x20       break\n\
        \x20   data += chunk\n\
        print(time.monotonic() - start)\n\
        sys.stdout.write(data.decode())\n";
    let out = python(&install, &server, script);
    let (elapsed, response) = out.split_once('\n').unwrap();
    let elapsed: f64 = elapsed.parse().unwrap();
    // The limit is one second; the server closed the connection well within 30.
    assert!((0.9..30.0).contains(&elapsed), "{elapsed} s");
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 408 "), "{head}");
    assert!(
        head.contains("content-type: application/problem+json"),
        "{head}"
    );
    assert!(head.contains("connection: close"), "{head}");
    let problem: Value = serde_json::from_str(body).unwrap();
    assert_eq!(slug(&problem), "body-timeout");
}

#[test]
fn connections_beyond_the_limit_are_closed_and_room_comes_back_when_one_ends() {
    require(&["python3", "openssl", "curl"]);
    let install = Install::new();
    member_api(&install, "max_connections = 2\n");
    let server = install.serve(&[]);
    // Two connections that say nothing hold both places; a third is closed at once
    // (end of stream before any TLS octet), then the two are closed.
    let script = "import socket, sys\n\
        port = int(sys.argv[2])\n\
        held = [socket.create_connection(('127.0.0.1', port)) for _ in range(2)]\n\
        third = socket.create_connection(('127.0.0.1', port))\n\
        third.settimeout(60)\n\
        try:\n\
        \x20   print('closed' if third.recv(1) == b'' else 'open')\n\
        except ConnectionResetError:\n\
        \x20   print('closed')\n\
        for s in held:\n\
        \x20   s.close()\n";
    assert_eq!(python(&install, &server, script).trim(), "closed");
    // The places are free again as soon as the server sees the two ends.
    let port = server.api.port();
    wait_until("a connection is served again", 60, || {
        Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(install.pki("ca.pem"))
            .arg("--resolve")
            .arg(format!("localhost:{port}:127.0.0.1"))
            .arg(format!("https://localhost:{port}/v1/openapi.json"))
            .output()
            .is_ok_and(|o| o.stdout == b"200")
    });
    let log = server.log.lock().unwrap().join("\n");
    assert!(log.contains("API connection limit reached"), "{log}");
}

/// Fetches the OpenAPI document over a new TLS connection made with `tls`; returns
/// how the handshake went. Reading the reply takes in the session tickets sent
/// before it.
fn fetch_openapi(server: &Server, tls: &Arc<rustls::ClientConfig>) -> Option<HandshakeKind> {
    let name = ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(tls.clone(), name).unwrap();
    let tcp = std::net::TcpStream::connect(server.api).unwrap();
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    stream
        .write_all(b"GET /v1/openapi.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200 "),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream.conn.handshake_kind()
}

/// A member app that comes back resumes its TLS session, with TLS 1.3 and 1.2, even
/// after more apps than a server's session cache keeps (rustls's default: 256) have
/// connected in between: the API resumes by ticket.
#[test]
fn a_member_app_resumes_its_tls_session_after_many_other_apps_connected() {
    let install = Install::new();
    let server = install.serve(&[]);
    let ca = std::fs::read(install.pki("ca.pem")).unwrap();
    kvgate::serve::install_crypto_provider();
    let app = |version| {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&ca) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_protocol_versions(&[version])
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    };
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let returning = app(version);
        let first = fetch_openapi(&server, &returning);
        for _ in 0..300 {
            assert_eq!(
                fetch_openapi(&server, &app(version)),
                Some(HandshakeKind::Full)
            );
        }
        let again = fetch_openapi(&server, &returning);
        assert_eq!(
            [first, again],
            [Some(HandshakeKind::Full), Some(HandshakeKind::Resumed)],
            "{version:?}"
        );
    }
}
