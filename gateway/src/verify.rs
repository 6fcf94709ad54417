//! `kvgate verify`: the whole S/MIME unwrap of the pipeline on one letter file,
//! as of a chosen instant, with the verdict and its reasons printed.
//!
//! Keys and trust come from the configuration (decryption keys, anchors incl.
//! those added with `kvgate trust add`, intermediates, CRLs, revocation mode),
//! or from `--cert/--key` and `--trust`, so a letter can be checked without an
//! installation (e.g. gematik's KIM sample with its recipients' keys).

use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context, bail};
use clap::Args;
use kvgate_certs::smime::{self, DecryptionKey, TrustAnchors};
use kvgate_certs::x509;
use kvgate_store::Timestamp;

use crate::config::Unauthenticated;
use crate::input_file::InputFile;
use crate::letter::{FromCheck, LetterHeaders};
use crate::pipeline::signed_and_encrypted;
use crate::runtime::Installation;
use crate::serve::{crl_files, decryption_keys, signer_trust, trust_anchor_pems};
use crate::verdict::{self, Verdict};

/// Options of `kvgate verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The letter as received (an RFC 5322 message, CRLF or LF).
    pub file: InputFile,
    /// Validate the signer's chain as of this instant: RFC 3339
    /// (`2020-06-20T12:58:26+02:00`) or a date (`2020-06-20`, noon UTC).
    /// Default: now.
    #[arg(long)]
    pub at: Option<String>,
    /// A decryption certificate (PEM), paired in order with `--key`; replaces
    /// the configured decryption keys. Repeatable.
    #[arg(long = "cert")]
    pub certs: Vec<InputFile>,
    /// The private key (PEM) of the `--cert` at the same position. Repeatable.
    #[arg(long = "key")]
    pub keys: Vec<InputFile>,
    /// A certificate to trust (PEM, every certificate in the file): a root, an
    /// intermediate or the signer's own certificate; replaces the configured
    /// trust (then revocation is checked hard-fail, without CRL files). Repeatable.
    #[arg(long = "trust")]
    pub trust: Vec<InputFile>,
    /// The configuration file, for what the flags do not give (default:
    /// ./kvgate-data/kvgate.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl VerifyArgs {
    /// The files it reads.
    pub(crate) fn files(&mut self) -> impl Iterator<Item = &mut InputFile> {
        std::iter::once(&mut self.file)
            .chain(&mut self.certs)
            .chain(&mut self.keys)
            .chain(&mut self.trust)
    }
}

/// Runs `kvgate verify` (with the installation for what the flags do not give):
/// prints the verdict; `Ok(false)` when the letter is refused.
pub fn run(
    args: VerifyArgs,
    installation: Option<&Installation>,
    out: &mut dyn Write,
) -> anyhow::Result<bool> {
    let at = match &args.at {
        Some(text) => instant(text)?,
        None => SystemTime::now(),
    };
    let letter = args.file.read()?;
    let keys = match installation {
        Some(installation) if args.certs.is_empty() => decryption_keys(&installation.config)?,
        _ => flag_keys(&args)?,
    };
    let anchors = match installation {
        Some(installation) if args.trust.is_empty() => {
            let config = &installation.config;
            signer_trust(
                config,
                &trust_anchor_pems(config, &installation.store)?,
                &crl_files(config)?,
            )?
        }
        _ => flag_trust(&args.trust)?,
    };

    let policy = installation.map_or_else(Unauthenticated::default, |installation| {
        installation.config.smime.unauthenticated_encryption
    });

    writeln!(out, "verified as of: {}", rfc3339(at))?;
    let unwrapping = smime::unwrap_letter(letter.to_vec(), &keys, &anchors, at);
    let unwrapped = match verdict::judge(unwrapping, policy) {
        Ok(unwrapped) => unwrapped,
        Err(Verdict::RevocationUnknown(e)) => return refused(out, e.reason(), &e.to_string()),
        Err(Verdict::Refused { refusal, cause }) => {
            refused(out, refusal.reason, &refusal.detail)?;
            // The operator may see what the sender is not told.
            if let Some(cause) = cause {
                writeln!(out, "cause: {cause}")?;
            }
            return Ok(false);
        }
    };
    let signer = match signed_and_encrypted(&unwrapped) {
        Ok(signer) => signer,
        Err(refusal) => return refused(out, refusal.reason, &refusal.detail),
    };
    writeln!(out, "verdict: verified")?;
    writeln!(out, "signer: {}", signer.subject)?;
    writeln!(out, "signer-sha256: {}", signer.fingerprint)?;
    writeln!(out, "signer-serial: {}", signer.serial)?;
    writeln!(out, "signer-issuer: {}", signer.issuer)?;
    writeln!(
        out,
        "signature: {} with {}",
        signer.signature_algorithm, signer.digest_algorithm
    )?;
    writeln!(out, "revocation: {}", signer.revocation)?;
    let from = LetterHeaders::parse(&unwrapped.content).from_address();
    if let Some(from) = &from {
        writeln!(out, "from: {from}")?;
    }
    let from_check = FromCheck::of(from.as_deref(), &signer.emails);
    writeln!(out, "from-in-certificate: {}", from_check.describe())?;
    for recipient in &unwrapped.recipients {
        writeln!(
            out,
            "kim-recipient: <{}> = serial {} of {} ({}{})",
            recipient.address,
            recipient.serial,
            recipient.issuer,
            if recipient.signed {
                "signed"
            } else {
                "unauthenticated"
            },
            if recipient.decrypting {
                ", decrypted with"
            } else {
                ""
            }
        )?;
    }
    writeln!(out, "content: {} octets", unwrapped.content.len())?;
    Ok(true)
}

/// Prints the verdict of a refused letter.
fn refused(out: &mut dyn Write, reason: &str, detail: &str) -> anyhow::Result<bool> {
    writeln!(out, "verdict: refused")?;
    writeln!(out, "reason: {reason}")?;
    writeln!(out, "detail: {detail}")?;
    Ok(false)
}

/// `--at`: an RFC 3339 instant, or a date meaning noon UTC.
fn instant(text: &str) -> anyhow::Result<SystemTime> {
    let full = if text.len() == 10 {
        format!("{text}T12:00:00Z")
    } else {
        text.to_owned()
    };
    let at: Timestamp = full.parse().with_context(|| {
        format!("--at {text:?} is neither an RFC 3339 instant nor a date (YYYY-MM-DD)")
    })?;
    Ok(at.to_system_time())
}

/// RFC 3339 form of `at` (UTC, milliseconds).
fn rfc3339(at: SystemTime) -> String {
    Timestamp::from_system_time(at).to_rfc3339()
}

/// The decryption keys given as `--cert`/`--key` pairs.
fn flag_keys(args: &VerifyArgs) -> anyhow::Result<Vec<DecryptionKey>> {
    if args.certs.len() != args.keys.len() {
        bail!(
            "{} --cert but {} --key: give each certificate its key",
            args.certs.len(),
            args.keys.len()
        );
    }
    let mut keys = Vec::new();
    for (cert, key) in args.certs.iter().zip(&args.keys) {
        keys.push(DecryptionKey::from_pem(&cert.read()?, &key.read()?)?);
    }
    Ok(keys)
}

/// The anchors given as `--trust` files.
fn flag_trust(files: &[InputFile]) -> anyhow::Result<TrustAnchors> {
    let mut anchors = Vec::new();
    for file in files {
        let certs = x509::parse_pem_chain(&file.read()?)?;
        if certs.is_empty() {
            bail!("{} holds no PEM certificate", file.path().display());
        }
        anchors.extend(certs);
    }
    Ok(TrustAnchors::new(&anchors)?)
}
