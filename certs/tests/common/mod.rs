//! Helpers shared by the integration tests: external tools and temp files.

#![allow(dead_code)]

pub mod der;
pub mod pki;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kvgate_certs::smime::{UnwrapError, Unwrapped};

/// Whether `tool version` (OpenSSL) or `tool --version` (others) runs; prints
/// why a test is skipped otherwise.
pub fn have(tool: &str) -> bool {
    let ok = ["version", "--version"].iter().any(|arg| {
        Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !ok {
        eprintln!(
            "SKIPPED: `{tool}` is not installed; this test needs it as an independent implementation"
        );
    }
    ok
}

/// Runs `program args` in `dir` with `envs`, asserts success, returns stdout.
pub fn run(dir: &Path, program: &str, args: &[&str], envs: &[(&str, &Path)]) -> Vec<u8> {
    let mut command = Command::new(program);
    command.current_dir(dir).args(args);
    for (name, value) in envs {
        command.env(name, value);
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Runs `openssl args` in `dir`, asserting success.
pub fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    run(dir, "openssl", args, &[])
}

/// Runs `openssl args` in `dir`; returns whether it succeeded and its stderr+stdout.
pub fn openssl_status(dir: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("running openssl");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// Writes `contents` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("writing a test file");
    path
}

/// `bytes` with every CRLF turned into LF.
pub fn lf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// `der` (CMS) as an `application/pkcs7-mime` entity of `smime_type`, base64.
pub fn pkcs7_entity(der: &[u8], smime_type: &str) -> Vec<u8> {
    let mut entity = format!(
        "Content-Type: application/pkcs7-mime; smime-type={smime_type}; name=smime.p7m\r\n\
Content-Transfer-Encoding: base64\r\n\r\n"
    )
    .into_bytes();
    for line in openssl::base64::encode_block(der).as_bytes().chunks(76) {
        entity.extend_from_slice(line);
        entity.extend_from_slice(b"\r\n");
    }
    entity
}

/// The reason code of a refused unwrap (printing the sentence); panics if it succeeded.
pub fn reason(result: Result<Unwrapped, UnwrapError>) -> &'static str {
    match result {
        Ok(_) => panic!("unwrap succeeded where it should fail"),
        Err(e) => {
            assert!(!e.to_string().is_empty());
            eprintln!("{}: {e}", e.reason());
            e.reason()
        }
    }
}
