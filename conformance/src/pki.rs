//! `kvgate-conformance pki`: prepares a PKI directory for a deployment and prints the
//! `kvgate` admin commands that register it. It reads the deployment's configuration
//! for the domain and the gateway's certificates only; it never touches the store.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use kvgate_certs::devpki::{self, Issued, Profile};
use kvgate_certs::{openpgp, x509};
use serde::Deserialize;

use crate::kvnr::random_kvnr;
use crate::manifest::{self, Identity, Manifest, Member};

const DAY: Duration = Duration::from_secs(24 * 3600);

/// The parts of a `kvgate.toml` this command reads.
#[derive(Deserialize)]
struct GatewayConfig {
    domain: String,
    tls: Pair,
    smime: Smime,
    #[serde(default)]
    trust: Trust,
}

#[derive(Deserialize)]
struct Pair {
    cert: PathBuf,
}

#[derive(Deserialize)]
struct Smime {
    decryption_keys: Vec<Pair>,
}

#[derive(Deserialize, Default)]
struct Trust {
    #[serde(default)]
    anchors: Vec<PathBuf>,
}

/// The directory could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// The configuration is not usable.
    #[error("{0}: {1}")]
    Config(PathBuf, String),
    /// The directory already holds a conformance PKI.
    #[error("{0} already holds a conformance.json; use a new directory")]
    Exists(PathBuf),
    /// No CA for the gateway's TLS certificate was found.
    #[error(
        "no CA certificate among the TLS chain and the trust anchors issued {0}; name it with --server-ca"
    )]
    NoServerCa(String),
    /// Making certificates or keys failed.
    #[error("{0}")]
    Material(String),
    /// Writing the manifest.
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
}

/// Options of `pki`.
pub struct Options<'a> {
    /// The directory to create.
    pub out: &'a Path,
    /// The deployment's `kvgate.toml`.
    pub config: &'a Path,
    /// The CA of the gateway's TLS certificate, when it cannot be found.
    pub server_ca: Option<&'a Path>,
    /// How to spell the `kvgate` binary in the printed commands.
    pub kvgate: &'a str,
}

/// Writes the PKI directory and returns the commands to run, one a line, with `#`
/// comment lines.
pub fn prepare(options: &Options<'_>) -> Result<String, PkiError> {
    let config_path = options.config;
    let text = std::fs::read_to_string(config_path)
        .map_err(|e| PkiError::Io(config_path.to_owned(), e))?;
    let config: GatewayConfig = toml::from_str(&text)
        .map_err(|e| PkiError::Config(config_path.to_owned(), e.to_string()))?;
    let base = config_path.parent().unwrap_or(Path::new("."));
    let resolve = |p: &Path| base.join(p);
    let out = options.out;
    if out.join(manifest::FILE_NAME).exists() {
        return Err(PkiError::Exists(out.to_owned()));
    }
    std::fs::create_dir_all(out).map_err(|e| PkiError::Io(out.to_owned(), e))?;
    let out = out
        .canonicalize()
        .map_err(|e| PkiError::Io(out.to_owned(), e))?;
    let write =
        |name: &str, contents: &[u8], mode: u32| write_file(&out.join(name), contents, mode);
    let material = |e: &dyn std::fmt::Display| PkiError::Material(e.to_string());

    let server_ca = server_ca(
        &resolve(&config.tls.cert),
        &config.trust.anchors,
        &resolve,
        options.server_ca,
    )?;
    write("server-ca.pem", &server_ca, 0o644)?;
    let smime = config.smime.decryption_keys.first().ok_or_else(|| {
        PkiError::Config(
            config_path.to_owned(),
            "no smime.decryption_keys".to_owned(),
        )
    })?;
    let smime_path = resolve(&smime.cert);
    let smime_pem = std::fs::read(&smime_path).map_err(|e| PkiError::Io(smime_path.clone(), e))?;
    let gateway = x509::parse_pem_chain(&smime_pem).map_err(|e| material(&e))?;
    let gateway = gateway
        .first()
        .ok_or_else(|| PkiError::Config(smime_path.clone(), "holds no certificate".to_owned()))?;
    write(
        "gateway-smime.pem",
        &gateway.to_pem().map_err(|e| material(&e))?,
        0o644,
    )?;

    let practice_a = "praxis-a@conformance.test";
    let practice_b = "praxis-b@conformance.test";
    let practice_expired = "praxis-expired@conformance.test";
    let dev = devpki::generate(&config.domain, practice_a).map_err(|e| material(&e))?;
    let second = devpki::issue(
        &dev.ca,
        &Profile::practice("Conformance Practice B", practice_b),
    )
    .map_err(|e| material(&e))?;
    let mut expired_profile = Profile::practice("Conformance Practice (expired)", practice_expired);
    expired_profile.not_before = SystemTime::now() - 60 * DAY;
    expired_profile.not_after = SystemTime::now() - DAY;
    let expired = devpki::issue(&dev.ca, &expired_profile).map_err(|e| material(&e))?;
    let identity = |name: &str, issued: &Issued, from: &str| -> Result<Identity, PkiError> {
        write(&format!("{name}.pem"), issued.cert_pem.as_bytes(), 0o644)?;
        write(&format!("{name}.key"), issued.key_pem.as_bytes(), 0o600)?;
        Ok(Identity {
            cert: format!("{name}.pem").into(),
            key: format!("{name}.key").into(),
            from: from.to_owned(),
        })
    };
    let test_ca = identity("test-ca", &dev.ca, "")?;
    let practice = identity("practice", &dev.practice, practice_a)?;
    let second_practice = identity("practice2", &second, practice_b)?;
    let expired_practice = identity("expired", &expired, practice_expired)?;

    let member = |name: &str| -> Result<Member, PkiError> {
        let kvnr = random_kvnr().map_err(|e| material(&e))?;
        let (secret, public) = openpgp::generate_member_key(&format!(
            "Conformance {name} <{kvnr}@smarthealth.{}>",
            config.domain
        ))
        .map_err(|e| material(&e))?;
        write(&format!("{name}.pub.asc"), public.armored.as_bytes(), 0o644)?;
        write(&format!("{name}.sec.asc"), secret.as_bytes(), 0o600)?;
        Ok(Member {
            kvnr,
            secret_key: format!("{name}.sec.asc").into(),
            enrollment: format!("{name}.enroll").into(),
            token: format!("{name}.token").into(),
        })
    };
    let manifest = Manifest {
        domain: config.domain.clone(),
        server_ca: "server-ca.pem".into(),
        gateway_smime: "gateway-smime.pem".into(),
        test_ca,
        practice,
        second_practice,
        expired_practice,
        member: member("member")?,
        second_member: member("member2")?,
        smarthealth_off_kvnr: random_kvnr().map_err(|e| material(&e))?,
        keyless_kvnr: random_kvnr().map_err(|e| material(&e))?,
    };
    let (_, off_key) = openpgp::generate_member_key("Conformance member without smarthealth")
        .map_err(|e| material(&e))?;
    write("member3.pub.asc", off_key.armored.as_bytes(), 0o644)?;
    manifest.save(&out)?;
    Ok(commands(&manifest, &out, config_path, options.kvgate))
}

/// The admin commands that register the directory's material.
fn commands(m: &Manifest, out: &Path, config: &Path, kvgate: &str) -> String {
    let config = config.canonicalize().unwrap_or_else(|_| config.to_owned());
    let path = |p: &Path| quote(&out.join(p).to_string_lossy());
    let cfg = format!("--config {}", quote(&config.to_string_lossy()));
    let kv = quote(kvgate);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Register the conformance material in {} with the deployment:",
        out.display()
    );
    let _ = writeln!(s, "{kv} trust add {} {cfg}", path(&m.test_ca.cert));
    for (id, who) in [
        ("conformance-practice-a", &m.practice),
        ("conformance-practice-b", &m.second_practice),
        ("conformance-practice-expired", &m.expired_practice),
    ] {
        let _ = writeln!(
            s,
            "{kv} sender add --id {id} --cert {} --from {} --kind practice {cfg}",
            path(&who.cert),
            quote(&who.from)
        );
    }
    for (member, name, pubkey) in [
        (&m.member, "Conformance Member A", "member.pub.asc"),
        (&m.second_member, "Conformance Member B", "member2.pub.asc"),
    ] {
        let _ = writeln!(
            s,
            "{kv} member add --kvnr {} --name {} --key {} --smarthealth --app-communication {cfg} > {}",
            member.kvnr,
            quote(name),
            path(Path::new(pubkey)),
            path(&member.enrollment)
        );
    }
    let _ = writeln!(
        s,
        "{kv} member add --kvnr {} --name {} --key {} {cfg}",
        m.smarthealth_off_kvnr,
        quote("Conformance Member (smarthealth off)"),
        path(Path::new("member3.pub.asc"))
    );
    let _ = writeln!(
        s,
        "{kv} member add --kvnr {} --name {} --smarthealth {cfg}",
        m.keyless_kvnr,
        quote("Conformance Member (no key)")
    );
    let _ = writeln!(
        s,
        "# Then restart `kvgate serve` so that it loads the new trust anchor, and run:"
    );
    let _ = writeln!(
        s,
        "# kvgate-conformance run --pki {} --smtp HOST:PORT --smtps HOST:PORT --api https://HOST:PORT",
        quote(&out.to_string_lossy())
    );
    s
}

/// The CA certificate (PEM) that issued the TLS leaf in `tls_cert`: `explicit` if
/// given, else the first certificate of the chain or the trust anchors whose key
/// verifies the leaf's signature.
fn server_ca(
    tls_cert: &Path,
    anchors: &[PathBuf],
    resolve: &dyn Fn(&Path) -> PathBuf,
    explicit: Option<&Path>,
) -> Result<Vec<u8>, PkiError> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| PkiError::Io(p.to_owned(), e));
    if let Some(path) = explicit {
        return read(path);
    }
    let material = |e: &dyn std::fmt::Display| PkiError::Material(e.to_string());
    let chain = x509::parse_pem_chain(&read(tls_cert)?).map_err(|e| material(&e))?;
    let (leaf, rest) = chain
        .split_first()
        .ok_or_else(|| PkiError::Config(tls_cert.to_owned(), "holds no certificate".to_owned()))?;
    let mut candidates = rest.to_vec();
    for anchor in anchors {
        candidates
            .extend(x509::parse_pem_chain(&read(&resolve(anchor))?).map_err(|e| material(&e))?);
    }
    for ca in candidates {
        let issued = ca
            .public_key()
            .and_then(|key| leaf.verify(&key))
            .unwrap_or(false);
        if issued {
            return ca.to_pem().map_err(|e| material(&e));
        }
    }
    Err(PkiError::NoServerCa(x509::subject_line(leaf)))
}

/// Writes a new file with `mode`.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    manifest::write_file(path, contents, mode, false).map_err(|e| PkiError::Io(path.to_owned(), e))
}

/// `s` quoted for a POSIX shell where needed.
fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(quote("/tmp/a-b.pem"), "/tmp/a-b.pem");
        assert_eq!(quote("Member A"), "'Member A'");
        assert_eq!(quote("it's"), "'it'\\''s'");
    }
}
