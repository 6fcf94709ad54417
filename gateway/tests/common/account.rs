//! Helpers for the member-account tests: more members, an insurer sender, SMTP
//! probes that stop at RCPT, and problem+json checks.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use kvgate::client::smtp::{Reply, SmtpClient};
use serde_json::Value;

use super::*;

/// An adult member (born 1990) without smarthealth, used by the account tests.
pub const CAROL: &str = "C123456784";
/// A member under 18, registered with their birth date.
pub const DAVE: &str = "D123456786";
/// The insurer's back office address, registered by [`add_insurer`].
pub const INSURER: &str = "post@insurer.test";

/// Registers a member with `kvgate member add` plus `extra` arguments and enrols a
/// device for them with a fresh gpg key named `name`; returns the session and the
/// device ID.
pub fn add_member<'a>(
    install: &'a Install,
    server: &'a Server,
    kvnr: &str,
    name: &str,
    extra: &[&str],
) -> (Session<'a>, String) {
    let mut args = vec!["member", "add", "--kvnr", kvnr, "--name", name];
    args.extend_from_slice(extra);
    let out = install.admin(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("enrollment-code: "))
        .unwrap()
        .to_owned();
    let (_, key) = gpg_key(install, name);
    let (auth, device) = enrol_device(install, server, kvnr, &code, name, &key);
    let session = Session {
        install,
        server,
        auth,
    };
    (session, device)
}

/// Sends a text letter from the demo practice to `kvnr`'s smarthealth inbox and waits
/// until it is processed; returns its tracking ID.
pub fn deliver_to(install: &Install, server: &Server, kvnr: &str, subject: &str) -> String {
    let letter = install.practice_letter(&text_letter(subject, "Befund"), subject);
    let to = format!("{kvnr}@smarthealth.{DOMAIN}");
    let id = tracking_id(&server.send(install.practice_tls(), PRACTICE, &[&to], &letter));
    wait_final(install, &id);
    id
}

/// Registers the insurer's back office as a sender (certificate from the development
/// CA, issued with openssl); returns its client TLS configuration.
pub fn add_insurer(install: &Install) -> Arc<rustls::ClientConfig> {
    install.issue_practice("insurer", INSURER);
    let cert = install.work("insurer.pem");
    install.admin_ok(&[
        "sender",
        "add",
        "--id",
        "insurer",
        "--cert",
        cert.to_str().unwrap(),
        "--from",
        INSURER,
        "--kind",
        "insurer",
    ]);
    install.tls_as("insurer.pem", "insurer.key")
}

/// Opens an SMTP session as `tls`, says EHLO and `MAIL FROM:<from>` with `size` as
/// SIZE= if given, and returns the reply to `RCPT TO:<to>`.
pub fn rcpt(
    server: &Server,
    tls: Arc<rustls::ClientConfig>,
    from: &str,
    to: &str,
    size: Option<u64>,
) -> Reply {
    block_on(async {
        let (mut client, greeting) = SmtpClient::connect(server.smtps, "localhost", tls)
            .await
            .unwrap();
        assert_eq!(greeting.code, 220);
        assert_eq!(
            client.command("EHLO probe.localhost").await.unwrap().code,
            250
        );
        let mail = match size {
            Some(size) => format!("MAIL FROM:<{from}> SIZE={size}"),
            None => format!("MAIL FROM:<{from}>"),
        };
        let reply = client.command(&mail).await.unwrap();
        assert_eq!(reply.code, 250, "{reply}");
        let reply = client.command(&format!("RCPT TO:<{to}>")).await.unwrap();
        let _ = client.command("QUIT").await;
        reply
    })
}

/// Every file under `dir`, relative, sorted.
pub fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// How many times `needle` occurs in the files under `dir`.
pub fn occurrences(dir: &Path, needle: &[u8]) -> usize {
    files(dir)
        .iter()
        .map(|f| {
            let hay = std::fs::read(dir.join(f)).unwrap_or_default();
            hay.windows(needle.len()).filter(|w| *w == needle).count()
        })
        .sum()
}

/// 48 octets from the middle of a letter's OpenPGP message (the letter as fetched;
/// kvgate stores the message unarmored): a needle to look for the stored letter with.
pub fn ciphertext_sample(letter: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(letter).to_string();
    let (_, armor) = text
        .split_once("-----BEGIN PGP MESSAGE-----\r\n\r\n")
        .unwrap();
    // The checksum line is the first to start with '='.
    let (lines, _) = armor.split_once("\r\n=").unwrap();
    let binary = base64::engine::general_purpose::STANDARD
        .decode(lines.replace("\r\n", ""))
        .unwrap();
    let middle = binary.len() / 2;
    binary[middle - 24..middle + 24].to_vec()
}

/// The type slug of a problem+json body.
pub fn slug(problem: &Value) -> &str {
    problem["type"]
        .as_str()
        .and_then(|t| t.strip_prefix("urn:kvgate:problem:"))
        .unwrap_or_else(|| panic!("not a problem: {problem}"))
}

/// Asserts that a JSON route refuses malformed JSON, unknown fields and wrong types
/// with 400 `invalid-request`, and a missing token with 401.
pub fn refuses_bad_json(session: &Session<'_>, method: &str, path: &str, unknown: &Value) {
    let file = session.install.work("bad.json");
    std::fs::write(&file, "{\"app_communication\": tru").unwrap();
    let data = format!("@{}", file.display());
    let (status, body) = curl(
        session.install,
        session.server,
        &[
            "-X",
            method,
            "-H",
            &session.auth,
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &data,
        ],
        path,
    );
    let problem: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, slug(&problem)), (400, "invalid-request"), "{path}");
    session.refused(method, path, Some(unknown), 400, "invalid-request");
    session.refused(
        method,
        path,
        Some(&serde_json::json!([1, 2])),
        400,
        "invalid-request",
    );
    let anonymous = Session {
        install: session.install,
        server: session.server,
        auth: "X-No-Token: 1".into(),
    };
    anonymous.refused(method, path, Some(unknown), 401, "unauthorized");
}
