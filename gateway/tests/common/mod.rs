//! Test harness: a real `kvgate` binary on loopback ports chosen at run time, letters
//! made by the `openssl` CLI, members played by `gpg`, the API spoken by `curl`.

#![allow(dead_code)]

pub mod back_office;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod account;

use kvgate::client::{smtp, tls_config};
use serde_json::{Value, json};

pub const KVGATE: &str = env!("CARGO_BIN_EXE_kvgate");
pub const DOMAIN: &str = "kvgate.test";
pub const PRACTICE: &str = "praxis@demo-practice.test";
pub const MEMBER: &str = "A123456780";
/// A second member, registered by the tests that need one.
pub const BOB: &str = "X110411319";

/// Fails the test unless the independent implementations it uses are installed.
///
/// `.ci/run` installs them; a missing tool is a broken machine, never a skipped test.
pub fn require(tools: &[&str]) {
    for tool in tools {
        let version_arg = if *tool == "openssl" {
            "version"
        } else {
            "--version"
        };
        let found = Command::new(tool)
            .arg(version_arg)
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "`{tool}` is not installed; this test needs it as an independent implementation"
        );
    }
}

/// Runs a command, panicking with its output if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An initialised data directory.
pub struct Install {
    pub dir: tempfile::TempDir,
    pub enrollment_code: String,
}

impl Install {
    /// `kvgate init --dir <tmp>`.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = run(Command::new(KVGATE)
            .arg("init")
            .arg("--dir")
            .arg(dir.path().join("data")));
        let stdout = String::from_utf8(out.stdout).unwrap();
        let enrollment_code = stdout
            .lines()
            .find_map(|l| l.strip_prefix("enrollment-code: "))
            .expect("init prints the enrolment code")
            .to_owned();
        Install {
            dir,
            enrollment_code,
        }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn config(&self) -> PathBuf {
        self.data().join("kvgate.toml")
    }

    pub fn pki(&self, name: &str) -> PathBuf {
        self.data().join("pki").join(name)
    }

    pub fn work(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Sets `key` of table `table` of `kvgate.toml` to the string `value`.
    pub fn set_config_value(&self, table: &str, key: &str, value: &str) {
        let path = self.config();
        let mut config: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
        config[table]
            .as_table_mut()
            .unwrap()
            .insert(key.into(), value.into());
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    }

    /// Sets table `name` of `kvgate.toml` to `table` (TOML text).
    pub fn set_config_table(&self, name: &str, table: &str) {
        let path = self.config();
        let mut config: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
        config.insert(name.into(), table.parse::<toml::Table>().unwrap().into());
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    }

    /// Runs an admin command against this installation.
    pub fn admin(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(KVGATE);
        cmd.args(args).arg("--config").arg(self.config());
        cmd.output().unwrap()
    }

    /// Registers `cert` as one more certificate of the demo practice.
    pub fn add_practice_cert(&self, cert: &Path) {
        self.admin_ok(&[
            "sender",
            "add",
            "--id",
            "demo-practice",
            "--cert",
            cert.to_str().unwrap(),
        ]);
    }

    /// Runs an admin command that must succeed; returns what it printed.
    pub fn admin_ok(&self, args: &[&str]) -> String {
        let out = self.admin(args);
        assert!(
            out.status.success(),
            "kvgate {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `kvgate track ID --json`, parsed.
    pub fn track(&self, id: &str) -> serde_json::Value {
        let out = self.admin(&["track", id, "--json"]);
        assert!(
            out.status.success(),
            "track failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Starts `kvgate serve` on free loopback ports.
    pub fn serve(&self, extra: &[&str]) -> Server {
        let mut child = Command::new(KVGATE)
            .arg("serve")
            .arg("--config")
            .arg(self.config())
            .args([
                "--smtp",
                "127.0.0.1:0",
                "--smtps",
                "127.0.0.1:0",
                "--api",
                "127.0.0.1:0",
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::<String>::new()));
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line.clone());
                sink.lock().unwrap().push(line);
            }
        });
        let mut addrs = std::collections::HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let expected = if extra.contains(&"--admin") { 4 } else { 3 };
        while addrs.len() < expected {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| {
                    panic!("serve did not log its addresses: {:?}", log.lock().unwrap())
                });
            for name in ["smtp", "smtps", "api", "admin"] {
                if let Some(rest) = line.split(&format!(" {name} listening on ")).nth(1) {
                    addrs.insert(name, rest.trim().parse::<SocketAddr>().unwrap());
                }
            }
        }
        Server {
            child,
            smtp: addrs["smtp"],
            smtps: addrs["smtps"],
            api: addrs["api"],
            admin: addrs.get("admin").copied(),
            log,
        }
    }

    /// The demo practice's client TLS configuration.
    pub fn practice_tls(&self) -> Arc<rustls::ClientConfig> {
        self.tls_as("demo-practice.pem", "demo-practice.key")
    }

    /// A client TLS configuration presenting `cert`/`key` from the pki directory or
    /// the work directory.
    pub fn tls_as(&self, cert: &str, key: &str) -> Arc<rustls::ClientConfig> {
        let find = |name: &str| {
            let p = self.pki(name);
            if p.exists() { p } else { self.work(name) }
        };
        tls_config(
            &std::fs::read(self.pki("ca.pem")).unwrap(),
            Some((
                &std::fs::read(find(cert)).unwrap(),
                &std::fs::read(find(key)).unwrap(),
            )),
        )
        .unwrap()
    }

    /// Issues a practice certificate from the development CA with the `openssl` CLI;
    /// writes `<name>.pem` and `<name>.key` to the work directory.
    pub fn issue_practice(&self, name: &str, email: &str) {
        self.issue_practice_with(name, email, "");
    }

    /// [`Install::issue_practice`] with more extension lines for `openssl x509 -extfile`.
    pub fn issue_practice_with(&self, name: &str, email: &str, extensions: &str) {
        let ca = (self.pki("ca.pem"), self.pki("ca.key"));
        self.issue_practice_by(name, email, extensions, (&ca.0, &ca.1));
    }

    /// [`Install::issue_practice_with`] from the CA certificate and key `ca`.
    pub fn issue_practice_by(&self, name: &str, email: &str, extensions: &str, ca: (&Path, &Path)) {
        let ext = self.work(&format!("{name}.ext"));
        std::fs::write(
            &ext,
            format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,nonRepudiation,keyEncipherment\n\
                 extendedKeyUsage=clientAuth,emailProtection\nsubjectAltName=email:{email}\n{extensions}"
            ),
        )
        .unwrap();
        let key = self.work(&format!("{name}.key"));
        let csr = self.work(&format!("{name}.csr"));
        run(Command::new("openssl")
            .args(["req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj"])
            .arg(format!("/O=Test/CN={name}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr));
        run(Command::new("openssl")
            .args([
                "x509",
                "-req",
                "-days",
                "30",
                "-sha256",
                "-CAcreateserial",
                "-in",
            ])
            .arg(&csr)
            .arg("-CA")
            .arg(ca.0)
            .arg("-CAkey")
            .arg(ca.1)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(self.work(&format!("{name}.pem"))));
    }

    /// Makes a letter as a practice system does, with the `openssl` CLI: `inner` signed
    /// by `signer` (a pem/key pair name, unless None), then encrypted with AES-256-GCM
    /// (AuthEnvelopedData) to the gateway certificate. Returns the message to send.
    pub fn openssl_letter(
        &self,
        inner: &[u8],
        signer: Option<(&Path, &Path)>,
        subject: &str,
    ) -> Vec<u8> {
        self.openssl_letter_with("-aes-256-gcm", inner, signer, subject)
    }

    /// [`Self::openssl_letter`] encrypted with `cipher`, an `openssl cms` option such
    /// as `-aes-256-cbc` (EnvelopedData).
    pub fn openssl_letter_with(
        &self,
        cipher: &str,
        inner: &[u8],
        signer: Option<(&Path, &Path)>,
        subject: &str,
    ) -> Vec<u8> {
        let input = self.work("letter.eml");
        std::fs::write(&input, inner).unwrap();
        let to_encrypt = match signer {
            Some((cert, key)) => {
                let signed = self.work("signed.eml");
                run(Command::new("openssl")
                    .args(["cms", "-sign", "-md", "sha256", "-in"])
                    .arg(&input)
                    .arg("-signer")
                    .arg(cert)
                    .arg("-inkey")
                    .arg(key)
                    .arg("-out")
                    .arg(&signed));
                signed
            }
            None => input,
        };
        let encrypted = self.work("encrypted.eml");
        run(Command::new("openssl")
            .args(["cms", "-encrypt", cipher, "-in"])
            .arg(&to_encrypt)
            .args(["-from", PRACTICE, "-to"])
            .arg(format!("{MEMBER}@smarthealth.{DOMAIN}"))
            .arg("-subject")
            .arg(subject)
            .arg("-out")
            .arg(&encrypted)
            .arg(self.pki("gateway.pem")));
        std::fs::read(&encrypted).unwrap()
    }

    /// A letter signed by the demo practice.
    pub fn practice_letter(&self, inner: &[u8], subject: &str) -> Vec<u8> {
        self.openssl_letter(
            inner,
            Some((
                &self.pki("demo-practice.pem"),
                &self.pki("demo-practice.key"),
            )),
            subject,
        )
    }
}

/// A running `kvgate serve`.
pub struct Server {
    pub child: Child,
    pub smtp: SocketAddr,
    pub smtps: SocketAddr,
    pub api: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Sends a letter over SMTPS as `tls`; returns the final reply.
    pub fn send(
        &self,
        tls: Arc<rustls::ClientConfig>,
        from: &str,
        to: &[&str],
        message: &[u8],
    ) -> smtp::Reply {
        block_on(smtp::submit(self.smtps, tls, from, to, message)).unwrap()
    }

    /// Sends `message` from the demo practice to the demo member's smarthealth inbox;
    /// returns the tracking ID of the 250 reply.
    pub fn send_to_member(&self, install: &Install, message: &[u8]) -> String {
        let reply = self.send(
            install.practice_tls(),
            PRACTICE,
            &[&format!("{MEMBER}@smarthealth.{DOMAIN}")],
            message,
        );
        tracking_id(&reply)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        self.child.wait().unwrap()
    }

    /// Kills the process with SIGKILL.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a future to completion on a fresh runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The tracking ID in a `250 2.0.0 <id> queued` reply.
pub fn tracking_id(reply: &smtp::Reply) -> String {
    assert_eq!(reply.code, 250, "expected 250, got {reply}");
    let mut words = reply.text().split_whitespace();
    assert_eq!(words.next(), Some("2.0.0"), "{reply}");
    let id = words.next().unwrap().to_owned();
    assert_eq!(words.next(), Some("queued"), "{reply}");
    id
}

/// Polls `kvgate track` until the submission reached a final state.
pub fn wait_final(install: &Install, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = install.track(id);
        let state = t["submission"]["state"].as_str().unwrap().to_owned();
        if state != "accepted" {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "submission {id} still not processed: {t}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The kinds of a tracking trail's events, in order.
pub fn event_kinds(trail: &serde_json::Value) -> Vec<String> {
    trail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// A simple plain-text letter from the demo practice to the demo member.
pub fn text_letter(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Demo Practice <{PRACTICE}>\r\nTo: <{MEMBER}@smarthealth.{DOMAIN}>\r\nSubject: {subject}\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// curl against the member API: returns (status, body).
pub fn curl(install: &Install, server: &Server, args: &[&str], path: &str) -> (u16, Vec<u8>) {
    curl_at(install, server.api, args, path)
}

/// curl against an HTTPS listener of the gateway: returns (status, body).
pub fn curl_at(install: &Install, addr: SocketAddr, args: &[&str], path: &str) -> (u16, Vec<u8>) {
    let port = addr.port();
    let out_file = install.work("curl.out");
    let out = run(Command::new("curl")
        .args(["-sS", "--max-time", "30", "--cacert"])
        .arg(install.pki("ca.pem"))
        .arg("--resolve")
        .arg(format!("localhost:{port}:127.0.0.1"))
        .arg("-o")
        .arg(&out_file)
        .args(["-w", "%{http_code}"])
        .args(args)
        .arg(format!("https://localhost:{port}{path}")));
    let status = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (status, std::fs::read(&out_file).unwrap_or_default())
}

/// A GnuPG home with a fresh key; returns (home, armored public key).
pub fn gpg_member(install: &Install) -> (std::path::PathBuf, String) {
    gpg_key(install, "phone")
}

/// A GnuPG home `gnupg-<name>` (plain `gnupg` for "phone") with a fresh key for
/// `<name>@member.test`; returns (home, armored public key).
pub fn gpg_key(install: &Install, name: &str) -> (std::path::PathBuf, String) {
    let home = if name == "phone" {
        install.work("gnupg")
    } else {
        install.work(&format!("gnupg-{name}"))
    };
    std::fs::create_dir_all(&home).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let email = format!("{name}@member.test");
    let gpg = |args: &[&str]| {
        run(Command::new("gpg")
            .env("GNUPGHOME", &home)
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args))
    };
    gpg(&[
        "--quick-gen-key",
        &format!("Member {name} <{email}>"),
        "default",
        "default",
        "never",
    ]);
    let public = gpg(&["--armor", "--export", &email]);
    (home, String::from_utf8(public.stdout).unwrap())
}

/// Decrypts the armored part of a PGP/MIME message with the key in `home`; `None` if
/// gpg cannot (the message was not encrypted to that key).
pub fn gpg_decrypt(install: &Install, home: &Path, pgp_mime: &[u8]) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(pgp_mime);
    let start = text.find("-----BEGIN PGP MESSAGE-----")?;
    let end = text.find("-----END PGP MESSAGE-----")? + "-----END PGP MESSAGE-----".len();
    let encrypted = install.work("to-decrypt.asc");
    std::fs::write(&encrypted, &text[start..end]).unwrap();
    let out = Command::new("gpg")
        .env("GNUPGHOME", home)
        .args([
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--decrypt",
        ])
        .arg(&encrypted)
        .output()
        .unwrap();
    out.status.success().then_some(out.stdout)
}

/// Enrols a device with `public_key` using the installation's enrolment code; returns
/// the `Authorization` header for it.
pub fn enrol(install: &Install, server: &Server, public_key: &str) -> String {
    enrol_device(
        install,
        server,
        MEMBER,
        &install.enrollment_code,
        "phone",
        public_key,
    )
    .0
}

/// Enrols a device of `kvnr` with `code`; returns the `Authorization` header for it
/// and the device ID.
pub fn enrol_device(
    install: &Install,
    server: &Server,
    kvnr: &str,
    code: &str,
    name: &str,
    public_key: &str,
) -> (String, String) {
    let enrol = serde_json::json!({
        "kvnr": kvnr, "code": code, "device_name": name, "public_key": public_key,
    });
    let body = install.work("enrol.json");
    std::fs::write(&body, enrol.to_string()).unwrap();
    let (status, answer) = curl(
        install,
        server,
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!("@{}", body.display()),
        ],
        "/v1/enroll",
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&answer));
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    (
        format!(
            "Authorization: Bearer {}",
            answer["token"].as_str().unwrap()
        ),
        answer["device_id"].as_str().unwrap().to_owned(),
    )
}

/// A member's API session: one device's `Authorization` header.
pub struct Session<'a> {
    pub install: &'a Install,
    pub server: &'a Server,
    pub auth: String,
}

impl Session<'_> {
    /// `curl -X method path` with an optional JSON body; (status, body).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Vec<u8>) {
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
    pub fn json(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
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
    pub fn refused(&self, method: &str, path: &str, body: Option<&Value>, status: u16, slug: &str) {
        let (got, problem) = self.json(method, path, body);
        assert_eq!(
            (got, &problem["type"]),
            (status, &json!(format!("urn:kvgate:problem:{slug}"))),
            "{method} {path}: {problem}"
        );
        assert!(!problem["detail"].as_str().unwrap().is_empty());
    }

    /// Uploads `bytes` as the key backup; the status.
    pub fn put_backup(&self, bytes: &[u8]) -> u16 {
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
pub fn new_code(install: &Install, kvnr: &str) -> String {
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

/// Sends `message` from the demo practice to the demo member's smarthealth inbox and
/// waits until it is filed; returns its tracking ID and trail.
pub fn file_letter(install: &Install, server: &Server, message: &[u8]) -> (String, Value) {
    let id = server.send_to_member(install, message);
    let trail = wait_final(install, &id);
    assert_eq!(trail["submission"]["state"], "delivered", "{trail}");
    (id, trail)
}

/// Sends a text letter to the demo member and waits until it is filed; returns its
/// tracking ID and what its `encrypted` event says (e.g. `to 2 key(s)`).
pub fn deliver(install: &Install, server: &Server, subject: &str) -> (String, String) {
    let message = install.practice_letter(&text_letter(subject, "Befund"), subject);
    let (id, trail) = file_letter(install, server, &message);
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
pub fn letter_of(session: &Session<'_>, tracking_id: &str) -> Vec<u8> {
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

/// A session of a device of the demo member, enrolled with a fresh `gpg` key.
pub fn member_session<'a>(install: &'a Install, server: &'a Server) -> Session<'a> {
    let (_, key) = gpg_member(install);
    Session {
        install,
        server,
        auth: enrol(install, server, &key),
    }
}

/// Registers the second member [`BOB`] (smarthealth active) and enrols a device of
/// theirs; returns the session and the device ID.
pub fn second_member<'a>(install: &'a Install, server: &'a Server) -> (Session<'a>, String) {
    account::add_member(
        install,
        server,
        BOB,
        "bob",
        &["--smarthealth", "--birth-date", "1980-05-17"],
    )
}

/// The regular files below `dir` whose bytes contain `needle` (sockets are not read).
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            hits.extend(files_containing(&path, needle));
        } else if path.is_file()
            && std::fs::read(&path)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
        {
            hits.push(path.display().to_string());
        }
    }
    hits
}

/// A loopback port that accepts connections and never writes a byte (a hung peer);
/// the connections stay open for the rest of the test.
pub fn silent_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    port
}

/// Polls `done` every 50 ms until it holds; fails with `what` after `secs` seconds.
pub fn wait_until(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
