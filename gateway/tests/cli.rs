//! `kvgate init` and the admin commands.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use kvgate::client::smtp;
use kvgate_certs::devpki;

#[test]
fn init_writes_keys_private_and_never_overwrites() {
    let install = Install::new();
    for key in [
        "ca.key",
        "gateway.key",
        "demo-practice.key",
        "demo-member.sec.asc",
    ] {
        let mode = std::fs::metadata(install.pki(key))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    // Nobody else may look into the data directory, nor read the store.
    let data = install.data();
    for (path, wanted) in [
        (data.clone(), 0o700),
        (data.join("pki"), 0o700),
        (data.join("kvgate.redb"), 0o600),
    ] {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, wanted, "{}", path.display());
    }
    let before = std::fs::read(install.pki("gateway.key")).unwrap();
    let out = run(Command::new(KVGATE)
        .arg("init")
        .arg("--dir")
        .arg(install.data()));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("already holds a kvgate configuration; nothing was changed"),
        "{stdout}"
    );
    assert_eq!(std::fs::read(install.pki("gateway.key")).unwrap(), before);
    let config = std::fs::read_to_string(install.config()).unwrap();
    assert!(config.contains("domain = \"kvgate.test\""), "{config}");
}

#[test]
fn demo_member_key_is_usable_by_gnupg() {
    require(&["gpg"]);
    let install = Install::new();
    let home = install.work("gnupg");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    run(Command::new("gpg")
        .env("GNUPGHOME", &home)
        .args(["--batch", "--import"])
        .arg(install.pki("demo-member.sec.asc")));
    let out = run(Command::new("gpg").env("GNUPGHOME", &home).args([
        "--batch",
        "--with-colons",
        "--list-secret-keys",
    ]));
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(
        listing.contains(&format!("Demo Member <{MEMBER}@smarthealth.{DOMAIN}>")),
        "{listing}"
    );
}

#[test]
fn admin_commands_refuse_bad_input_with_a_reason() {
    let install = Install::new();
    let out = install.admin(&["member", "add", "--kvnr", "a123456780", "--name", "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"a123456780\" is not a valid KVNR"));
    let out = install.admin(&["member", "add", "--kvnr", MEMBER, "--name", "again"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("member already exists"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // smarthealth only for a member known to be 18 or over.
    for born in [None, Some("2015-06-01")] {
        let mut args = vec![
            "member",
            "add",
            "--kvnr",
            BOB,
            "--name",
            "Kid",
            "--smarthealth",
        ];
        args.extend(born.iter().flat_map(|day| ["--birth-date", day]));
        let out = install.admin(&args);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains("--smarthealth needs the --birth-date of a member aged 18 or over"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = install.admin(&["track", "nonsense"]);
    assert!(!out.status.success());
    let out = install.admin(&["trust", "add", install.pki("ca.pem").to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("trusted "));
}

#[test]
fn admin_commands_run_in_the_server_while_it_has_the_store() {
    let install = Install::new();
    let socket = install.data().join("control.sock");
    let server = install.serve(&[]);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // Typed in the data directory with a relative key file: the server reads the file
    // the command names, from where the command was typed.
    let out = run(Command::new(KVGATE)
        .current_dir(install.data())
        .args(["member", "add", "--kvnr", BOB, "--name", "Bob"])
        .args([
            "--key",
            "pki/demo-member.pub.asc",
            "--config",
            "kvgate.toml",
        ]));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with(&format!("member {BOB} registered\nenrollment-code: ")));
    // The command's own process reads the files: the server, whose standard input is
    // not this pipe, registers the key the operator piped in.
    let key = std::fs::read(install.pki("demo-member.pub.asc")).unwrap();
    let mut child = Command::new(KVGATE)
        .args(["member", "add", "--kvnr", "B123456782", "--name", "Carol"])
        .args(["--key", "/dev/stdin", "--config"])
        .arg(install.config())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&key).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("member B123456782 registered\n"));
    // A refusal keeps its message and its exit status.
    let out = install.admin(&["member", "code", "--kvnr", "B123456789"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "kvgate: \"B123456789\" is not a valid KVNR: the KVNR check digit is wrong (expected 2)\n"
    );
    assert!(out.stdout.is_empty());
    let log = server.log.lock().unwrap().join("\n");
    assert!(
        log.contains("admin command over the control socket"),
        "{log}"
    );
    assert!(
        !log.contains("Bob"),
        "a name reached the server's log: {log}"
    );

    // A trust anchor added through the server is taken up at once, and it says so.
    let ca = install.pki("ca.pem");
    let out = install.admin_ok(&["trust", "add", ca.to_str().unwrap()]);
    let (added, taken_up) = out.split_once('\n').unwrap();
    assert!(added.starts_with("trusted "), "{out}");
    assert_eq!(
        taken_up,
        "the running server uses the new trust anchors from now on (connections and letters)\n"
    );
    let out = install.admin_ok(&["trust", "add", ca.to_str().unwrap()]);
    assert!(
        out.starts_with("already trusted: ") && out.lines().count() == 1,
        "{out}"
    );

    // A letter verified through the server says whose configuration was used.
    let letter = install.work("verify.eml");
    std::fs::write(
        &letter,
        install.practice_letter(&text_letter("x", "y"), "x"),
    )
    .unwrap();
    let out = install.admin_ok(&["verify", letter.to_str().unwrap()]);
    assert!(out.starts_with("verified as of: "), "{out}");
    assert!(out.contains("\nverdict: verified\n"), "{out}");
    assert!(
        out.ends_with("configuration: the running server's (it has the store): its keys, trust and CRL files were used\n"),
        "{out}"
    );

    // Once the server is gone, the command opens the store itself.
    assert!(server.terminate().success());
    assert!(!socket.exists());
    let out = install.admin_ok(&["member", "code", "--kvnr", BOB]);
    assert!(out.starts_with("enrollment-code: "), "{out}");
}

#[test]
fn admin_commands_at_once_without_a_server_wait_for_each_other() {
    let install = Install::new();
    let config = install.config();
    let spawned: Vec<_> = (0..4)
        .map(|_| {
            Command::new(KVGATE)
                .args(["member", "code", "--kvnr", MEMBER, "--config"])
                .arg(&config)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in spawned {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("enrollment-code: "));
    }
}

/// A second CA, "Other CA", made with the `openssl` CLI in the work directory:
/// its certificate and key.
fn other_ca(install: &Install) -> (std::path::PathBuf, std::path::PathBuf) {
    let (ca, ca_key) = (install.work("other-ca.pem"), install.work("other-ca.key"));
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
        ])
        .args(["-subj", "/O=Other/CN=Other CA"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .arg("-keyout")
        .arg(&ca_key)
        .arg("-out")
        .arg(&ca));
    (ca, ca_key)
}

#[test]
fn a_trust_anchor_added_while_serving_admits_its_senders_at_once() {
    let install = Install::new();
    // A second CA, unknown to the server, and a practice under it.
    let (ca, ca_key) = other_ca(&install);
    let from = "praxis@other.test";
    install.issue_practice_by("other", from, "", (&ca, &ca_key));
    let (cert, key) = (install.work("other.pem"), install.work("other.key"));
    install.admin_ok(&[
        "sender",
        "add",
        "--id",
        "other-practice",
        "--cert",
        cert.to_str().unwrap(),
        "--from",
        from,
    ]);
    let server = install.serve(&[]);
    let to = format!("{MEMBER}@smarthealth.{DOMAIN}");
    let inner = format!(
        "From: Other Practice <{from}>\r\nTo: <{to}>\r\nSubject: x\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nunder a new CA\r\n"
    );
    let letter = install.openssl_letter(inner.as_bytes(), Some((&cert, &key)), "x");
    let send = || {
        let tls = install.tls_as("other.pem", "other.key");
        block_on(smtp::submit(server.smtps, tls, from, &[&to], &letter))
    };

    // Its TLS client certificate chains to no anchor the server knows.
    assert!(send().is_err(), "a session under an unknown CA was served");

    let out = install.admin_ok(&["trust", "add", ca.to_str().unwrap()]);
    assert!(out.starts_with("trusted O=Other, CN=Other CA"), "{out}");
    // Now its session is served and its letter's signature chains to a trusted anchor.
    let id = tracking_id(&send().unwrap());
    let trail = wait_final(&install, &id);
    assert_eq!(trail["submission"]["state"], "delivered", "{trail}");
    let log = server.log.lock().unwrap().join("\n");
    assert!(log.contains("trust anchors taken up anew"), "{log}");
}

#[test]
fn a_renewed_crl_file_is_in_force_within_seconds() {
    let install = Install::new();
    let ca = devpki::Issued {
        cert_pem: std::fs::read_to_string(install.pki("ca.pem")).unwrap(),
        key_pem: zeroize::Zeroizing::new(std::fs::read_to_string(install.pki("ca.key")).unwrap()),
    };
    let day = Duration::from_secs(86_400);
    let crl = install.work("ca.crl");
    std::fs::write(&crl, devpki::crl(&ca, &[], day).unwrap()).unwrap();
    install.set_config_table(
        "trust",
        &format!(
            "anchors = [\"pki/ca.pem\"]\ncrls = [{:?}]\n",
            crl.to_str().unwrap()
        ),
    );
    // The practice authenticates with a TLS certificate of its own and signs with the
    // demo practice's certificate.
    install.issue_practice("practice-tls", PRACTICE);
    install.add_practice_cert(&install.work("practice-tls.pem"));
    let server = install.serve(&[]);
    let to = format!("{MEMBER}@smarthealth.{DOMAIN}");
    let send = |tls: &str, subject: &str| {
        let letter = install.practice_letter(&text_letter(subject, "x"), subject);
        let tls = install.tls_as(&format!("{tls}.pem"), &format!("{tls}.key"));
        block_on(smtp::submit(server.smtps, tls, PRACTICE, &[&to], &letter))
    };

    let id = tracking_id(&send("practice-tls", "before").unwrap());
    // A session of the demo practice's own, whose client keeps the TLS session to
    // resume it.
    let kept = install.tls_as("demo-practice.pem", "demo-practice.key");
    let resume = || {
        let letter = install.practice_letter(&text_letter("resumed", "x"), "resumed");
        block_on(smtp::submit(
            server.smtps,
            kept.clone(),
            PRACTICE,
            &[&to],
            &letter,
        ))
    };
    assert_eq!(resume().unwrap().code, 250);
    let trail = wait_final(&install, &id);
    assert_eq!(trail["submission"]["state"], "delivered", "{trail}");
    let verified = trail["events"][1]["detail"].as_str().unwrap().to_owned();
    assert!(
        verified.contains("revocation: not revoked (CRL file)"),
        "{verified}"
    );

    // The operator's job puts a renewed CRL in place that revokes the demo practice's
    // certificate (its signing one, and the TLS one of its other sessions).
    let practice = std::fs::read_to_string(install.pki("demo-practice.pem")).unwrap();
    let aside = install.work("ca.crl.new");
    std::fs::write(&aside, devpki::crl(&ca, &[&practice], day).unwrap()).unwrap();
    std::fs::rename(&aside, &crl).unwrap();
    taken_up(&server, 1);

    // A session with the revoked certificate is refused at the handshake, also one
    // that would resume a session from before the renewal ...
    assert!(
        send("demo-practice", "revoked").is_err(),
        "a session with a revoked certificate was served"
    );
    assert!(
        resume().is_err(),
        "a session from before the revocation was resumed"
    );
    // ... and a letter it signed fails, whoever delivers it.
    let id = tracking_id(&send("practice-tls", "after").unwrap());
    let trail = wait_final(&install, &id);
    assert_eq!(trail["submission"]["state"], "failed", "{trail}");
    let last = trail["events"].as_array().unwrap().last().unwrap();
    assert_eq!(last["reason"], "signer-revoked", "{trail}");
}

#[test]
fn an_anchor_taken_out_of_its_file_is_trusted_no_more() {
    let install = Install::new();
    let anchors = install.work("anchors.pem");
    std::fs::copy(install.pki("ca.pem"), &anchors).unwrap();
    install.set_config_table(
        "trust",
        &format!("anchors = [{:?}]\n", anchors.to_str().unwrap()),
    );
    let server = install.serve(&[]);
    let letter = install.practice_letter(&text_letter("x", "x"), "x");
    let id = server.send_to_member(&install, &letter);
    assert_eq!(
        wait_final(&install, &id)["submission"]["state"],
        "delivered"
    );

    // The development CA is replaced by another one in the file.
    let (other, _) = other_ca(&install);
    let aside = install.work("anchors.pem.new");
    std::fs::copy(&other, &aside).unwrap();
    std::fs::rename(&aside, &anchors).unwrap();
    taken_up(&server, 1);
    let practice = install.practice_tls();
    let to = format!("{MEMBER}@smarthealth.{DOMAIN}");
    let refused = block_on(smtp::submit(
        server.smtps,
        practice,
        PRACTICE,
        &[&to],
        &letter,
    ));
    assert!(
        refused.is_err(),
        "a session under a CA no longer trusted was served"
    );
}

/// Waits until the server said `times` times that it took up changed trust files.
fn taken_up(server: &Server, times: usize) {
    let said = || {
        let log = server.log.lock().unwrap();
        log.iter()
            .filter(|line| line.contains("trust files changed"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while said() < times {
        assert!(
            Instant::now() < deadline,
            "the changed trust files were not taken up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
