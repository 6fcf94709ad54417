//! The PKI directory: what the operator provisioned for testing, described by
//! `conformance.json` (written by `kvgate-conformance pki`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Name of the description file inside the PKI directory.
pub const FILE_NAME: &str = "conformance.json";

/// The description of a PKI directory. Paths are relative to the directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The deployment's mail domain.
    pub domain: String,
    /// The CA (PEM) that issued the gateway's TLS server certificate.
    pub server_ca: PathBuf,
    /// The gateway's S/MIME certificate (PEM): letters are encrypted to it.
    pub gateway_smime: PathBuf,
    /// The test CA (certificate and key) the deployment trusts for senders.
    pub test_ca: Identity,
    /// A registered practice: TLS client and S/MIME signing certificate.
    pub practice: Identity,
    /// A second registered practice, trusted too (for signer-mismatch cases).
    pub second_practice: Identity,
    /// A registered practice whose certificate has expired.
    pub expired_practice: Identity,
    /// The test member letters are delivered to.
    pub member: Member,
    /// A second member (for isolation cases).
    pub second_member: Member,
    /// A member with a key whose smarthealth is not activated.
    pub smarthealth_off_kvnr: String,
    /// A member with smarthealth but no OpenPGP key.
    pub keyless_kvnr: String,
    /// An S/MIME signing certificate of the test practice with an ECDSA P-256 key,
    /// registered to it; its case skips without it.
    #[serde(default)]
    pub p256_signer: Option<Identity>,
    /// The same with a brainpoolP256r1 key.
    #[serde(default)]
    pub brainpool_signer: Option<Identity>,
    /// A signing certificate of the test practice that the test CA has revoked; the
    /// revocation case skips without it.
    #[serde(default)]
    pub revoked_signer: Option<Identity>,
    /// The test CA's CRL (PEM) listing `revoked_signer`, for the deployment's
    /// `trust.crls`.
    #[serde(default)]
    pub crl: Option<PathBuf>,
    /// The gateway's S/MIME certificate with an ECC key (PEM), if it has one: letters
    /// are then also encrypted to it by key agreement (ECDH).
    #[serde(default)]
    pub gateway_smime_ecc: Option<PathBuf>,
}

/// A certificate with its key and the address it may send from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// Certificate, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
    /// The registered sender address (empty for a CA).
    #[serde(default)]
    pub from: String,
}

/// A test member.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// The KVNR.
    pub kvnr: String,
    /// The member's OpenPGP secret key (armored), registered with `--key`.
    pub secret_key: PathBuf,
    /// The output of `kvgate member add`, holding the line `enrollment-code: …`.
    pub enrollment: PathBuf,
    /// Where the suite keeps the device token after the first enrolment.
    pub token: PathBuf,
    /// The output of `kvgate member code` (the line `enrollment-code: …`): a code for
    /// a second device, used once by the device-removal case.
    #[serde(default)]
    pub next_device: Option<PathBuf>,
}

/// The PKI directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file could not be read or written.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// `conformance.json` is not valid.
    #[error("{0} is not a valid conformance.json: {1}")]
    Parse(PathBuf, serde_json::Error),
}

impl Manifest {
    /// Reads `dir/conformance.json`.
    pub fn load(dir: &Path) -> Result<Self, ManifestError> {
        let path = dir.join(FILE_NAME);
        let text = std::fs::read(&path).map_err(|e| ManifestError::Io(path.clone(), e))?;
        serde_json::from_slice(&text).map_err(|e| ManifestError::Parse(path, e))
    }

    /// Writes `dir/conformance.json`.
    pub fn save(&self, dir: &Path) -> Result<(), ManifestError> {
        let path = dir.join(FILE_NAME);
        let text =
            serde_json::to_vec_pretty(self).map_err(|e| ManifestError::Parse(path.clone(), e))?;
        std::fs::write(&path, text).map_err(|e| ManifestError::Io(path, e))
    }
}

/// Reads a file of the PKI directory.
pub fn read(dir: &Path, file: &Path) -> Result<Vec<u8>, ManifestError> {
    let path = dir.join(file);
    std::fs::read(&path).map_err(|e| ManifestError::Io(path, e))
}

/// Writes `contents` to `path` with permission `mode`; an existing file is replaced
/// only if `replace`.
pub fn write_file(path: &Path, contents: &[u8], mode: u32, replace: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(mode);
    if replace {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    options.open(path)?.write_all(contents)
}
