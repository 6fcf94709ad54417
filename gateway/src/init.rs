//! `kvgate init`: a working configuration and a development PKI in one directory.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use kvgate_certs::{devpki, openpgp, x509};
use kvgate_store::{Kvnr, NewMember, SenderKind};

use crate::config::{self, Config};
use crate::runtime::Installation;

/// The data directory used when none is given.
pub const DEFAULT_DIR: &str = "kvgate-data";
/// The development mail domain (reserved by RFC 2606, never routed).
pub const DEMO_DOMAIN: &str = "kvgate.test";
/// The demo practice's sender ID.
pub const DEMO_PRACTICE_ID: &str = "demo-practice";
/// The address the demo practice sends from.
pub const DEMO_PRACTICE_ADDRESS: &str = "praxis@demo-practice.test";
/// The demo member's KVNR.
pub const DEMO_KVNR: &str = "A123456780";
/// The demo member's date of birth (an adult, so smarthealth can be activated).
const DEMO_BIRTH_DATE: &str = "1980-05-17";

/// What `init` did.
pub enum Outcome {
    /// A new installation was written.
    Created {
        /// The data directory.
        dir: PathBuf,
        /// The demo member's enrolment code.
        enrollment_code: String,
    },
    /// The directory already held a configuration; nothing was touched.
    AlreadyInitialised(PathBuf),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Created {
                dir,
                enrollment_code,
            } => write!(
                f,
                "initialised {dir}: configuration {dir}/{config}, development PKI in {dir}/pki\n\
                 demo practice {DEMO_PRACTICE_ID} <{DEMO_PRACTICE_ADDRESS}> registered\n\
                 demo member {DEMO_KVNR} registered (smarthealth active, app communication on)\n\
                 enrollment-code: {enrollment_code}",
                dir = dir.display(),
                config = config::FILE_NAME,
            ),
            Outcome::AlreadyInitialised(dir) => write!(
                f,
                "{} already holds a kvgate configuration; nothing was changed",
                dir.display()
            ),
        }
    }
}

/// Writes `dir/kvgate.toml` and `dir/pki/*`, creates the store and registers the demo
/// practice and member. Never overwrites: an initialised directory is left alone.
pub fn run(dir: &Path) -> anyhow::Result<Outcome> {
    let config_path = dir.join(config::FILE_NAME);
    if config_path.exists() {
        return Ok(Outcome::AlreadyInitialised(dir.to_owned()));
    }
    // The data directory holds the store, letters waiting and keys: the gateway's user
    // alone may look into it.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let pki = dir.join("pki");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&pki)
        .with_context(|| format!("creating {}", pki.display()))?;

    let dev = devpki::generate(DEMO_DOMAIN, DEMO_PRACTICE_ADDRESS)?;
    let (member_secret, member_key) = openpgp::generate_member_key(&format!(
        "Demo Member <{DEMO_KVNR}@smarthealth.{DEMO_DOMAIN}>"
    ))?;
    write_new(&pki.join("ca.pem"), dev.ca.cert_pem.as_bytes(), 0o644)?;
    write_new(&pki.join("ca.key"), dev.ca.key_pem.as_bytes(), 0o600)?;
    write_new(
        &pki.join("gateway.pem"),
        dev.gateway.cert_pem.as_bytes(),
        0o644,
    )?;
    write_new(
        &pki.join("gateway.key"),
        dev.gateway.key_pem.as_bytes(),
        0o600,
    )?;
    write_new(
        &pki.join("demo-practice.pem"),
        dev.practice.cert_pem.as_bytes(),
        0o644,
    )?;
    write_new(
        &pki.join("demo-practice.key"),
        dev.practice.key_pem.as_bytes(),
        0o600,
    )?;
    write_new(
        &pki.join("demo-member.pub.asc"),
        member_key.armored.as_bytes(),
        0o644,
    )?;
    write_new(
        &pki.join("demo-member.sec.asc"),
        member_secret.as_bytes(),
        0o600,
    )?;

    let config = Config::development(DEMO_DOMAIN);
    let text = format!(
        "# kvgate configuration written by `kvgate init`. Paths are relative to this file.\n{}",
        toml::to_string(&config).context("encoding the configuration")?
    );
    // The configuration is written last: its presence marks a complete installation.
    let installation = {
        let tmp = dir.join(".kvgate.toml.new");
        write_new(&tmp, text.as_bytes(), 0o644)?;
        std::fs::rename(&tmp, &config_path)?;
        Installation::open(&config_path)?
    };
    let store = &installation.store;

    let practice = x509::parse_pem_chain(dev.practice.cert_pem.as_bytes())?;
    let leaf = practice
        .first()
        .context("the demo practice certificate is missing")?;
    store.add_sender_certificate(
        DEMO_PRACTICE_ID,
        SenderKind::Practice,
        &x509::fingerprint(leaf)?,
        Some(DEMO_PRACTICE_ADDRESS),
    )?;
    let enrollment_code = store.add_member(
        NewMember {
            kvnr: Kvnr::parse(DEMO_KVNR)?,
            name: "Demo Member".to_owned(),
            smarthealth: true,
            app_communication: true,
            birth_date: Some(DEMO_BIRTH_DATE.parse()?),
        },
        Some((member_key.fingerprint, member_key.armored)),
    )?;
    Ok(Outcome::Created {
        dir: dir.to_owned(),
        enrollment_code,
    })
}

/// Writes a new file with the given mode; refuses to replace an existing one.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}
