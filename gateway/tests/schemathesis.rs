//! schemathesis (PyPI, version pinned in `.ci/run`) against the served OpenAPI document
//! of a real `kvgate serve`: an enrolled member's bearer token, uploads configured,
//! a bounded number of examples per operation. It must find no server error, no
//! undocumented status, content type or response shape.
//!
//! Ignored by a plain `cargo test` (it needs the Python tool and takes minutes);
//! `.ci/run` installs schemathesis and runs it with `--ignored`.

mod common;

use std::process::Command;

use common::account::{self, CAROL};
use common::back_office::post_form;
use common::*;

/// Examples per operation: bounds the run to a few minutes on two cores.
const MAX_EXAMPLES: &str = "50";
/// The checks that must all pass.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";

#[test]
#[ignore = "needs schemathesis (pip); .ci/run runs it"]
fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    require(&["gpg", "curl", "openssl", "st"]);
    let install = Install::new();
    install.issue_practice("backoffice", "eingang@backoffice.test");
    install.set_config_table(
        "back_office",
        &format!(
            "address = \"eingang@backoffice.test\"\ncertificate = \"{}\"\nmax_upload_size = 100000\n",
            install.work("backoffice.pem").display()
        ),
    );
    let server = install.serve(&[]);
    let session = member_session(&install, &server);
    // Data for the operations to find: a filed letter and an upload.
    deliver(&install, &server, "Befund");
    let pdf = install.work("scan.pdf");
    std::fs::write(&pdf, b"%PDF-1.4\n1 0 obj\n%%EOF\n").unwrap();
    let form = format!("file=@{};filename=scan.pdf", pdf.display());
    let (status, body) = curl(
        &install,
        &server,
        &[
            "-H",
            &session.auth,
            "-F",
            &form,
            "-F",
            "type=invoice",
            "-F",
            &format!("kvnr={MEMBER}"),
        ],
        "/v1/documents",
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let upload: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let install_id = "schemathesis-install-1";
    let (status, basic) = post_form(
        &install,
        &server,
        &[],
        "/v1/basic/documents",
        &[
            ("type", "other"),
            ("kvnr", MEMBER),
            ("install_id", install_id),
        ],
        Some((&pdf, "scan.pdf")),
    );
    assert_eq!(status, 201, "{basic}");
    let auth = session.auth.as_str();
    let (status, thread) = post_form(
        &install,
        &server,
        &["-H", auth],
        "/v1/threads",
        &[("text", "Frage")],
        None,
    );
    assert_eq!(status, 201, "{thread}");
    // schemathesis reuses IDs it saw in answers: a device removal would end the run's
    // session, so removals go with another member's token (their 404s are the isolation).
    let (other, _) = second_member(&install, &server);
    // Refreshing the token and cancelling the account end a session too: they go with a
    // third member's token.
    let (third, _) = account::add_member(&install, &server, CAROL, "carol", &[]);
    let config = install.work("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            "[[operations]]\ninclude-name = \"DELETE /v1/devices/{{id}}\"\n\
             headers = {{ Authorization = \"{bearer}\" }}\n\
             [[operations]]\ninclude-path-regex = \"^/v1/(token/refresh|account)$\"\n\
             headers = {{ Authorization = \"{third}\" }}\n\
             [[operations]]\ninclude-name = \"GET /v1/messages/wait\"\n\
             parameters = {{ \"query.timeout\" = 1 }}\n\
             [[operations]]\ninclude-name = \"GET /v1/tracking/{{id}}\"\n\
             parameters = {{ \"path.id\" = \"{tracking}\" }}\n\
             [[operations]]\ninclude-name = \"GET /v1/basic/tracking/{{id}}\"\n\
             parameters = {{ \"path.id\" = \"{basic}\", \"header.X-Install-Id\" = \"{install_id}\" }}\n\
             [[operations]]\ninclude-path-regex = \"^/v1/threads/\\\\{{id\\\\}}\"\n\
             parameters = {{ \"path.id\" = \"{thread}\" }}\n",
            thread = thread["thread_id"].as_str().unwrap(),
            tracking = upload["tracking_id"].as_str().unwrap(),
            basic = basic["tracking_id"].as_str().unwrap(),
            bearer = other.auth.trim_start_matches("Authorization: "),
            third = third.auth.trim_start_matches("Authorization: "),
        ),
    )
    .unwrap();
    let base = format!("https://localhost:{}", server.api.port());
    let report = install.work("junit.xml");
    let out = Command::new("st")
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("{base}/v1/openapi.json"))
        .args(["--url", &base])
        .arg("--tls-verify")
        .arg(install.pki("ca.pem"))
        .args(["--header", &session.auth])
        .args(["--checks", CHECKS])
        .args(["--max-examples", MAX_EXAMPLES])
        // One worker: with two, CPython 3.11's `ast.parse` (which hypothesis calls to
        // describe its filters) sometimes fails across threads, a tool error, not ours.
        .args(["--workers", "1", "--seed", "1", "--no-color"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--generation-database", "none"])
        .args(["--report", "junit", "--report-junit-path"])
        .arg(&report)
        .env("NO_PROXY", "localhost")
        // Its caches go to the test's directory, not the source tree.
        .current_dir(install.dir.path())
        .output()
        .expect("st runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "N generated, N passed": every case ran and passed, and there were cases.
    let counts: Vec<u64> = stdout
        .lines()
        .find(|l| l.contains(" generated, "))
        .expect("schemathesis reports its cases")
        .split(',')
        .map(|part| part.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    let operations = routes_documented();
    assert_eq!(counts.len(), 2, "{stdout}");
    assert_eq!(counts[0], counts[1], "{stdout}");
    assert!(
        counts[0] >= operations,
        "{} cases for {operations} operations",
        counts[0]
    );
}

/// How many operations the served document describes.
fn routes_documented() -> u64 {
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("../../connectors/src/api/openapi.json")).unwrap();
    doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "parameters")
                .count() as u64
        })
        .sum()
}
