//! `kvgate init` and the admin commands.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;

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
    let out = install.admin(&["track", "nonsense"]);
    assert!(!out.status.success());
    let out = install.admin(&["trust", "add", install.pki("ca.pem").to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("trusted "));
}
