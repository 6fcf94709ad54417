//! `kvgate-conformance pki`: prepares a PKI directory for a deployment and prints the
//! `kvgate` admin commands that register it. It reads the deployment's configuration
//! for the domain and the gateway's certificates only; it never touches the store.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use kvgate_certs::devpki::{self, Issued, KeyKind, Profile};
use kvgate_certs::{openpgp, x509};
use serde::Deserialize;

use crate::kvnr::random_kvnr;
use crate::manifest::{self, Identity, Manifest, Member};

const DAY: Duration = Duration::from_secs(24 * 3600);
/// The test CA's CRL, in the PKI directory.
const CRL_FILE: &str = "test-ca.crl";
/// How long the CRL is current: a deployment that checks revocation hard refuses
/// the test practice's letters once it is stale, so it outlives a usual test cycle.
const CRL_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

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
    let mut gateway_certs = Vec::new();
    for pair in &config.smime.decryption_keys {
        let path = resolve(&pair.cert);
        let pem = std::fs::read(&path).map_err(|e| PkiError::Io(path.clone(), e))?;
        let chain = x509::parse_pem_chain(&pem).map_err(|e| material(&e))?;
        let leaf = chain
            .into_iter()
            .next()
            .ok_or_else(|| PkiError::Config(path, "holds no certificate".to_owned()))?;
        gateway_certs.push(leaf);
    }
    let gateway = gateway_certs.first().ok_or_else(|| {
        PkiError::Config(
            config_path.to_owned(),
            "no smime.decryption_keys".to_owned(),
        )
    })?;
    write(
        "gateway-smime.pem",
        &gateway.to_pem().map_err(|e| material(&e))?,
        0o644,
    )?;
    let gateway_ecc = gateway_certs
        .iter()
        .find(|cert| cert.public_key().is_ok_and(|key| key.ec_key().is_ok()));
    let gateway_smime_ecc = match gateway_ecc {
        Some(cert) => {
            let name = "gateway-smime-ecc.pem";
            write(name, &cert.to_pem().map_err(|e| material(&e))?, 0o644)?;
            Some(name.into())
        }
        None => None,
    };

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
    // Further signing certificates of practice A: ECC ones, and one the CA revokes.
    let signing = |what: &str, key: KeyKind| {
        let mut profile =
            Profile::practice(&format!("Conformance Practice A ({what})"), practice_a);
        profile.key = key;
        devpki::issue(&dev.ca, &profile).map_err(|e| material(&e))
    };
    let p256 = signing("P-256 signature", KeyKind::EcP256)?;
    let brainpool = signing("brainpoolP256r1 signature", KeyKind::BrainpoolP256r1)?;
    let revoked = signing("revoked signature", KeyKind::Rsa2048)?;
    let crl = devpki::crl(&dev.ca, &[&revoked.cert_pem], CRL_VALIDITY).map_err(|e| material(&e))?;
    write(CRL_FILE, crl.as_bytes(), 0o644)?;
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
    let p256_signer = identity("practice-p256", &p256, practice_a)?;
    let brainpool_signer = identity("practice-brainpool", &brainpool, practice_a)?;
    let revoked_signer = identity("practice-revoked", &revoked, practice_a)?;

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
            next_device: Some(format!("{name}.device.enroll").into()),
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
        p256_signer: Some(p256_signer),
        brainpool_signer: Some(brainpool_signer),
        revoked_signer: Some(revoked_signer),
        crl: Some(CRL_FILE.into()),
        gateway_smime_ecc,
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
    let practice_a_signers = [&m.p256_signer, &m.brainpool_signer, &m.revoked_signer];
    for signer in practice_a_signers.into_iter().flatten() {
        let _ = writeln!(
            s,
            "{kv} sender add --id conformance-practice-a --cert {} {cfg}",
            path(&signer.cert)
        );
    }
    for (member, name, pubkey) in [
        (&m.member, "Conformance Member A", "member.pub.asc"),
        (&m.second_member, "Conformance Member B", "member2.pub.asc"),
    ] {
        let _ = writeln!(
            s,
            "{kv} member add --kvnr {} --name {} --key {} --smarthealth --birth-date 1980-05-17 --app-communication {cfg} > {}",
            member.kvnr,
            quote(name),
            path(Path::new(pubkey)),
            path(&member.enrollment)
        );
    }
    if let Some(next) = &m.second_member.next_device {
        let _ = writeln!(
            s,
            "{kv} member code --kvnr {} {cfg} > {}",
            m.second_member.kvnr,
            path(next)
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
        "{kv} member add --kvnr {} --name {} --smarthealth --birth-date 1980-05-17 {cfg}",
        m.keyless_kvnr,
        quote("Conformance Member (no key)")
    );
    if let Some(crl) = &m.crl {
        let _ = writeln!(
            s,
            "# Let the deployment know the test CA's CRL (it revokes practice-revoked.pem):\n\
             # in {}, add its path to the [trust] table's crls list:\n\
             #   crls = [{}]",
            config.display(),
            toml_string(&out.join(crl).to_string_lossy())
        );
    }
    let _ = writeln!(
        s,
        "# Then restart `kvgate serve` so that it loads the new trust anchor and CRL, and run:"
    );
    let _ = writeln!(
        s,
        "# kvgate-conformance run --pki {} --smtp HOST:PORT --smtps HOST:PORT --api https://HOST:PORT",
        quote(&out.to_string_lossy())
    );
    s
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
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
