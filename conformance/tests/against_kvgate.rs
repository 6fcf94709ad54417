//! The suite against real servers: it must pass against a `kvgate serve` set up the
//! way the README's "Operators" section says, and it must fail where a careless
//! server (a fake that accepts everything) breaks the rules.
//!
//! The `kvgate` binary is taken from the same target directory as this test
//! (`target/debug/kvgate`); `cargo test --workspace` builds it. When only this
//! package is tested, build it first with `cargo build -p kvgate`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use kvgate_certs::devpki;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader as AsyncBufReader,
};
use tokio::net::TcpListener;

const SUITE: &str = env!("CARGO_BIN_EXE_kvgate-conformance");

/// `target/debug/kvgate`, next to this test's own directory.
fn kvgate() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps");
    let binary = dir.join("kvgate");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build -p kvgate` (or `cargo test --workspace`, which builds it)",
        binary.display()
    );
    binary
}

/// The standard output of `cmd`, which must succeed.
fn stdout_of(cmd: &mut Command) -> String {
    match cmd.output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => panic!(
            "{cmd:?} exited with {}:\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("{cmd:?} did not start: {e}"),
    }
}

/// Reads `config`, lets `change` edit it, and writes it back.
fn edit_config(config: &Path, change: impl FnOnce(&mut toml::Table)) {
    let mut table: toml::Table = std::fs::read_to_string(config).unwrap().parse().unwrap();
    change(&mut table);
    std::fs::write(config, toml::to_string(&table).unwrap()).unwrap();
}

/// A second S/MIME decryption key for the installation in `data`, with a P-256 key
/// issued by its development CA, as an operator adds one during a key rollover.
fn add_ecc_decryption_key(data: &Path) {
    let ca = devpki::Issued {
        cert_pem: std::fs::read_to_string(data.join("pki/ca.pem")).unwrap(),
        key_pem: std::fs::read_to_string(data.join("pki/ca.key"))
            .unwrap()
            .into(),
    };
    let mut profile = devpki::Profile::gateway("kvgate.test");
    profile.key = devpki::KeyKind::EcP256;
    let ecc = devpki::issue(&ca, &profile).unwrap();
    std::fs::write(data.join("pki/gateway-ecc.pem"), &ecc.cert_pem).unwrap();
    std::fs::write(data.join("pki/gateway-ecc.key"), ecc.key_pem.as_bytes()).unwrap();
    edit_config(&data.join("kvgate.toml"), |config| {
        let mut pair = toml::Table::new();
        pair.insert("cert".into(), "pki/gateway-ecc.pem".into());
        pair.insert("key".into(), "pki/gateway-ecc.key".into());
        config["smime"]["decryption_keys"]
            .as_array_mut()
            .unwrap()
            .push(pair.into());
    });
}

/// `kvgate init` in `root/data` (plus an ECC decryption key) and
/// `kvgate-conformance pki` in `root/pki`; with `register`, the printed admin
/// commands are run as an operator would.
fn prepare(root: &Path, register: bool) -> (PathBuf, PathBuf) {
    let data = root.join("data");
    let pki = root.join("pki");
    stdout_of(Command::new(kvgate()).arg("init").arg("--dir").arg(&data));
    add_ecc_decryption_key(&data);
    let config = data.join("kvgate.toml");
    let commands = stdout_of(
        Command::new(SUITE)
            .arg("pki")
            .arg("--out")
            .arg(&pki)
            .arg("--for")
            .arg(&config)
            .arg("--kvgate")
            .arg(kvgate()),
    );
    let lines: Vec<&str> = commands
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        12,
        "trust, 3 senders, 3 more signing certificates, 4 members, 1 device code: {commands}"
    );
    assert!(commands.contains("crls = ["), "{commands}");
    if register {
        for line in lines {
            stdout_of(Command::new("sh").arg("-c").arg(line));
        }
    }
    (config, pki)
}

/// A running `kvgate serve`, killed when dropped.
struct Serve {
    child: Child,
    smtp: String,
    smtps: String,
    api: String,
}

impl Serve {
    fn start(config: &Path) -> Serve {
        let mut command = Command::new(kvgate());
        command.arg("serve").arg("--config").arg(config);
        // Every listener on a loopback port the kernel picks; the log names it.
        for listener in ["--smtp", "--smtps", "--api"] {
            command.arg(listener).arg("127.0.0.1:0");
        }
        command.env("RUST_LOG", "info");
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kvgate serve starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = mpsc::channel();
        // Keeps draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some((_, rest)) = line.split_once(" listening on ") {
                    let kind = line
                        .split_whitespace()
                        .rev()
                        .nth(3)
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send((kind, rest.trim().to_owned()));
                }
            }
        });
        let mut serve = Serve {
            child,
            smtp: String::new(),
            smtps: String::new(),
            api: String::new(),
        };
        while serve.smtp.is_empty() || serve.smtps.is_empty() || serve.api.is_empty() {
            let (kind, addr) = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("kvgate serve announces its listeners within 60 s");
            match kind.as_str() {
                "smtp" => serve.smtp = addr,
                "smtps" => serve.smtps = addr,
                "api" => serve.api = format!("https://{addr}"),
                _ => {}
            }
        }
        serve
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the suite with `args` and returns its exit status, stdout and JSON report.
fn suite(pki: &Path, json: &Path, args: &[&str]) -> (bool, String, serde_json::Value) {
    let out = Command::new(SUITE)
        .arg("run")
        .arg("--pki")
        .arg(pki)
        .arg("--json")
        .arg(json)
        .args(args)
        .output()
        .expect("the suite runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = std::fs::read(json).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let report = serde_json::from_slice(&text).expect("the JSON report parses");
    (out.status.success(), stdout, report)
}

/// Runs the cases `only` selects against the SMTP listeners `smtp` and `smtps` (plain,
/// implicit TLS); no API case may be among them: the API named answers nothing.
fn smtp_only(
    pki: &Path,
    json: &Path,
    (smtp, smtps): (&str, &str),
    only: &[&str],
) -> (bool, String, serde_json::Value) {
    let mut args = vec![
        "--smtp",
        smtp,
        "--smtps",
        smtps,
        "--api",
        "https://127.0.0.1:9",
    ];
    for pattern in only {
        args.extend(["--only", pattern]);
    }
    suite(pki, json, &args)
}

fn statuses(report: &serde_json::Value) -> Vec<(String, String)> {
    report["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap_or_default().to_owned(),
                c["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn kvgate_passes_the_suite() {
    let root = tempfile::tempdir().unwrap();
    let (config, pki) = prepare(root.path(), true);
    // The suite's own receiver is the gateway's relay, for the receipt cases.
    let relay = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .to_string();
    edit_config(&config, |config| {
        let mut table = toml::Table::new();
        table.insert("address".into(), relay.clone().into());
        table.insert("tls".into(), "none".into());
        config.insert("relay".into(), table.into());
        // The CRL, as the printed instructions say.
        let crl = pki.join("test-ca.crl").to_string_lossy().into_owned();
        config["trust"]["crls"] = vec![toml::Value::from(crl)].into();
        // A limit the suite sends a body over (it skips that case above 64 MiB).
        config["limits"]["max_message_size"] = toml::Value::from(8 * 1024 * 1024);
    });
    let serve = Serve::start(&config);
    let json = root.path().join("report.json");
    let junit = root.path().join("report.xml");
    let args = [
        "--smtp",
        &serve.smtp,
        "--smtps",
        &serve.smtps,
        "--api",
        &serve.api,
        "--junit",
        junit.to_str().unwrap(),
        "--relay-listen",
        &relay,
    ];
    let (ok, stdout, report) = suite(&pki, &json, &args);
    assert!(ok, "the suite failed against kvgate:\n{stdout}");
    let listed = stdout_of(Command::new(SUITE).arg("list")).lines().count();
    let summary = &report["summary"];
    assert_eq!(summary["failed"], 0, "{stdout}");
    assert_eq!(summary["total"], listed, "{stdout}");
    for (id, status) in statuses(&report) {
        assert_eq!(status, "pass", "{id}\n{stdout}");
    }
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<testsuites name=\"kvgate-conformance\""),
        "{xml}"
    );
    assert!(xml.contains("failures=\"0\""), "{xml}");

    // A second run reuses the saved device tokens (enrolment codes work once).
    let (ok, stdout, report) = suite(
        &pki,
        &json,
        &[
            "--smtp",
            &serve.smtp,
            "--api",
            &serve.api,
            "--only",
            "API-*",
        ],
    );
    assert!(ok, "a second run failed:\n{stdout}");
    // The second device's code was used by the first run: that case now skips.
    assert!(
        statuses(&report).contains(&("API-REMOVED-DEVICE-TOKEN".to_owned(), "skip".to_owned())),
        "{stdout}"
    );
}

/// A deployment that was not told the test CA's CRL delivers the revoked signer's
/// letter: the revocation case fails, while an ECC letter of the same practice
/// still passes.
#[test]
fn a_deployment_without_the_crl_fails_the_revocation_case() {
    let root = tempfile::tempdir().unwrap();
    let (config, pki) = prepare(root.path(), true);
    let serve = Serve::start(&config);
    let json = root.path().join("report.json");
    let (ok, stdout, report) = suite(
        &pki,
        &json,
        &[
            "--smtp",
            &serve.smtp,
            "--smtps",
            &serve.smtps,
            "--api",
            &serve.api,
            "--only",
            "SMIME-SIGNER-REVOKED",
            "--only",
            "SMIME-SIGN-THEN-ENCRYPT-ECDSA-P256",
        ],
    );
    assert!(!ok, "{stdout}");
    assert_eq!(
        statuses(&report),
        [
            (
                "SMIME-SIGN-THEN-ENCRYPT-ECDSA-P256".to_owned(),
                "pass".to_owned()
            ),
            ("SMIME-SIGNER-REVOKED".to_owned(), "fail".to_owned()),
        ],
        "{stdout}"
    );
    let revoked = &report["cases"][1];
    assert!(
        revoked["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"kind\":\"delivered\"")),
        "{revoked}"
    );
}

/// A careless server: no client certificates, every command 250, and a line with
/// a lone dot ends DATA whatever ends that line.
async fn careless<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    plain: bool,
) -> Option<AsyncBufReader<S>> {
    let mut io = AsyncBufReader::new(io);
    io.write_all(b"220 careless ESMTP\r\n").await.ok()?;
    loop {
        let mut line = String::new();
        if io.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let verb = line
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" if plain => b"250-careless\r\n250-SIZE 1000000\r\n250 STARTTLS\r\n",
            "EHLO" => b"250-careless\r\n250-SIZE 1000000\r\n250 PIPELINING\r\n",
            "STARTTLS" if plain => {
                io.write_all(b"220 go ahead\r\n").await.ok()?;
                return Some(io);
            }
            "DATA" => {
                io.write_all(b"354 go ahead\r\n").await.ok()?;
                loop {
                    let mut body = String::new();
                    if io.read_line(&mut body).await.ok()? == 0 {
                        return None;
                    }
                    if body.trim_end_matches(['\r', '\n']) == "." {
                        break;
                    }
                }
                b"250 2.0.0 CARELESS queued\r\n"
            }
            "HELP" => b"214 2.0.0 careless\r\n",
            "QUIT" => return None,
            _ => b"250 2.0.0 OK\r\n",
        };
        io.write_all(reply).await.ok()?;
    }
}

/// Serves the careless server on `listener`: after STARTTLS (`starttls`) or with
/// implicit TLS.
async fn accept_careless(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    starttls: bool,
) {
    while let Ok((tcp, _)) = listener.accept().await {
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let tcp = if starttls {
                match careless(tcp, true).await {
                    Some(io) => io.into_inner(),
                    None => return,
                }
            } else {
                tcp
            };
            if let Ok(tls) = acceptor.accept(tcp).await {
                careless(tls, false).await;
            }
        });
    }
}

#[test]
fn a_careless_server_fails_the_suite() {
    let root = tempfile::tempdir().unwrap();
    let (config, pki) = prepare(root.path(), false);
    let data = config.parent().unwrap().join("pki");
    let chain = CertificateDer::pem_file_iter(data.join("gateway.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(data.join("gateway.key")).unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (plain, implicit) = runtime.block_on(async {
        (
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
        )
    });
    let smtp = plain.local_addr().unwrap().to_string();
    let smtps = implicit.local_addr().unwrap().to_string();
    runtime.spawn(accept_careless(plain, acceptor.clone(), true));
    runtime.spawn(accept_careless(implicit, acceptor, false));
    let json = root.path().join("report.json");
    let (ok, stdout, report) = smtp_only(&pki, &json, (&smtp, &smtps), &["TLS-*", "SMTP-*"]);
    assert!(!ok, "the suite passed a careless server:\n{stdout}");
    let statuses = statuses(&report);
    for id in [
        "TLS-CLIENT-CERT-REQUIRED",
        "TLS-UNTRUSTED-CLIENT-CERT",
        "TLS-EXPIRED-CLIENT-CERT",
        "SMTP-STARTTLS-REQUIRED",
        "SMTP-VRFY-NO-DISCLOSURE",
        "SMTP-SMUGGLE-LF-DOT-LF",
        "SMTP-SIZE-OVER-LIMIT",
        "SMTP-SIZE-BODY-OVER-LIMIT",
        "SMTP-RCPT-INVALID-KVNR",
        "SMTP-RCPT-UNKNOWN-MEMBER",
        "SMTP-MAIL-FROM-NOT-ALLOWED",
        "TLS-STARTTLS-CLIENT-CERT-REQUIRED",
        "SMTP-DATA-WITHOUT-VALID-RCPT",
        "SMTP-RECIPIENT-LIMIT",
        "SMTP-ERROR-LIMIT",
    ] {
        assert!(
            statuses.iter().any(|(i, s)| i == id && s == "fail"),
            "{id} should fail against the careless server:\n{stdout}"
        );
    }
    // What the careless server does right still passes: the suite is not just red.
    for id in [
        "TLS-1.0-REFUSED",
        "TLS-1.2-ACCEPTED",
        "SMTP-SMUGGLE-CR-DOT-CR",
    ] {
        assert!(
            statuses.iter().any(|(i, s)| i == id && s == "pass"),
            "{id} should pass against the careless server:\n{stdout}"
        );
    }
}

#[test]
fn nothing_listening_passes_no_refusal_case() {
    let root = tempfile::tempdir().unwrap();
    let (_, pki) = prepare(root.path(), false);
    // Two ports nobody listens on: bound, then let go.
    let closed = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string()
    };
    let (smtp, smtps) = (closed(), closed());
    let json = root.path().join("report.json");
    let (ok, stdout, report) = smtp_only(&pki, &json, (&smtp, &smtps), &["TLS-*CLIENT-CERT*"]);
    assert!(
        !ok,
        "the suite passed a deployment that is not there:\n{stdout}"
    );
    let statuses = statuses(&report);
    assert!(statuses.len() >= 5, "{stdout}");
    for (id, status) in statuses {
        assert_eq!(
            status, "fail",
            "{id} passed with nothing listening:\n{stdout}"
        );
    }
}
