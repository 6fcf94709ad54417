//! The insurer's back office as the upload tests see it: aiosmtpd (its stock Maildir
//! handler) plays the relay, and `openssl cms` plays the back office that decrypts
//! what members send and checks the gateway's signature.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

pub const BACK_OFFICE: &str = "eingang@backoffice.test";
/// The configured upload limit of these tests.
pub const MAX_UPLOAD: usize = 200_000;

/// aiosmtpd's stock Maildir handler on a free port; killed on drop.
pub struct Relay {
    pub port: u16,
    maildir: PathBuf,
    child: Child,
}

impl Relay {
    pub fn start(install: &Install) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let maildir = install.work("maildir");
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .spawn()
            .expect("python3 runs");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not start (pip install aiosmtpd)"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Relay {
            port,
            maildir,
            child,
        }
    }

    /// The messages received so far.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        entries
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Points the installation at the relay and the back office (a certificate from the
/// development CA, made with `openssl`).
pub fn configure(install: &Install, relay: &Relay) {
    install.issue_practice("backoffice", BACK_OFFICE);
    let path = install.config();
    let mut config: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    let extra: toml::Table = format!(
        "[relay]\naddress = \"127.0.0.1:{port}\"\ntls = \"none\"\n\
         [queue]\nfirst_retry_secs = 1\nmax_retry_secs = 1\n\
         [back_office]\naddress = \"{BACK_OFFICE}\"\ncertificate = \"{cert}\"\nmax_upload_size = {MAX_UPLOAD}\n",
        port = relay.port,
        cert = install.work("backoffice.pem").display(),
    )
    .parse()
    .unwrap();
    config.extend(extra);
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
}

/// An upload that must be refused: text fields, file (path, name), status, problem slug.
pub type Refusal<'a> = (
    Vec<(&'a str, &'a str)>,
    Option<(&'a Path, &'a str)>,
    u16,
    &'a str,
);

/// Uploads with `curl -F` as `session`: text fields as given, the file from `file`
/// under `name`.
pub fn upload(
    session: &Session<'_>,
    fields: &[(&str, &str)],
    file: Option<(&Path, &str)>,
) -> (u16, Value) {
    let args = ["-H", session.auth.as_str()];
    post_form(
        session.install,
        session.server,
        &args,
        "/v1/documents",
        fields,
        file,
    )
}

/// Posts a form with `curl -F` to `path` with extra curl `args`: text fields as given,
/// the file from `file` under `name`; (status, JSON answer or null).
pub fn post_form(
    install: &Install,
    server: &Server,
    args: &[&str],
    path: &str,
    fields: &[(&str, &str)],
    file: Option<(&Path, &str)>,
) -> (u16, Value) {
    let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    for (name, value) in fields {
        args.extend(["--form-string".into(), format!("{name}={value}")]);
    }
    if let Some((path, name)) = file {
        args.extend([
            "-F".into(),
            format!("file=@{};filename={name}", path.display()),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, body) = curl(install, server, &args, path);
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// A PDF of exactly `size` octets.
pub fn pdf(size: usize) -> Vec<u8> {
    let mut pdf = b"%PDF-1.4\n".to_vec();
    pdf.extend((0..=255u8).cycle().take(size - pdf.len() - 6));
    pdf.extend_from_slice(b"%%EOF\n");
    assert_eq!(pdf.len(), size);
    pdf
}

/// The back office's view: decrypts with its key, verifies the gateway's signature
/// against the development CA; returns the inner entity.
pub fn open_as_back_office(install: &Install, raw: &[u8]) -> Vec<u8> {
    let sealed = install.work("upload.eml");
    std::fs::write(&sealed, raw).unwrap();
    let signed = install.work("upload.signed");
    run(Command::new("openssl")
        .args(["cms", "-decrypt", "-in"])
        .arg(&sealed)
        .arg("-recip")
        .arg(install.work("backoffice.pem"))
        .arg("-inkey")
        .arg(install.work("backoffice.key"))
        .arg("-out")
        .arg(&signed));
    let inner = install.work("upload.inner");
    run(Command::new("openssl")
        .args(["cms", "-verify", "-in"])
        .arg(&signed)
        .arg("-CAfile")
        .arg(install.pki("ca.pem"))
        .arg("-out")
        .arg(&inner));
    std::fs::read(inner).unwrap()
}

/// Waits until the relay holds `n` messages; returns them.
pub fn wait_for_messages(relay: &Relay, n: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let received = relay.messages();
        if received.len() >= n {
            return received;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} messages reached the relay",
            received.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
