//! The physical limit of this machine for kvgate's work: private-key operations of the
//! gateway's own key (same vendored OpenSSL as the gateway), durable commits of a redb
//! store with one writer, and AES-256-GCM throughput; and the letter work: the
//! gateway's own unwrap and re-encryption of a practice's letter, in process.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use kvgate_certs::openpgp::{self, Recipients};
use kvgate_certs::smime::{self, DecryptionKey, TrustAnchors};
use kvgate_certs::x509;
use openssl::pkey::PKey;
use openssl::rsa::Padding;
use openssl::symm::{Cipher, Crypter, Mode};
use redb::{Database, TableDefinition};
use serde::Serialize;

use crate::letters::{PRACTICE, Practice};
use crate::members::{self, DOMAIN};
use crate::scenario::own_cpu_seconds;
use crate::server::Installation;

/// The table the commit measurement writes to.
const COMMITS: TableDefinition<u64, &[u8]> = TableDefinition::new("commits");
/// Bytes written per commit: about one tracking event with its record.
const COMMIT_PAYLOAD: usize = 1024;
/// Bytes per AES-GCM update call.
const AES_CHUNK: usize = 1 << 20;
/// Bytes per AES-GCM message: each is sealed under a nonce of its own.
const AES_MESSAGE: usize = 64 << 20;

/// What this machine can do at most, measured.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    /// Cores the private-key operations ran on (one thread each).
    pub cores: usize,
    /// The gateway key, e.g. `RSA-2048`.
    pub key: String,
    /// Private-key operations (RSA PKCS#1 v1.5 decryptions, as in CMS key transport)
    /// per second on all cores together.
    pub private_ops_per_s: f64,
    /// The same on one core.
    pub private_ops_per_s_one_core: f64,
    /// Durable (fsynced) redb commits per second with one writer.
    pub fsync_commits_per_s: f64,
    /// AES-256-GCM encryption throughput on one core, in MB (10^6 bytes) per second.
    pub aes_256_gcm_mb_per_s: f64,
    /// The letter work per letter size, on all cores.
    pub letter_work: Vec<LetterWork>,
}

/// How many letters of one size the gateway's own code unwraps (decrypts the
/// envelope, verifies the signature and the signer's chain) and re-encrypts as
/// PGP/MIME to a member's two keys per second on all cores: kvgate's work on a letter
/// without SMTP, TLS, the store or the disk. Delivered letters/s against this is the
/// share of the server's time that goes to the letter itself.
#[derive(Debug, Clone, Serialize)]
pub struct LetterWork {
    /// Letter size before signing and encryption, KiB.
    pub size_kib: usize,
    /// Letters per second on all cores (one thread each).
    pub letters_per_s: f64,
    /// CPU milliseconds (user and system, of this process) per letter.
    pub cpu_ms_per_letter: f64,
}

impl Limits {
    /// The letter work for letters of `size_kib`, if measured.
    pub fn letter_work(&self, size_kib: usize) -> Option<&LetterWork> {
        self.letter_work.iter().find(|w| w.size_kib == size_kib)
    }
}

/// Measures every limit, each for `window` (the letter work for each of `sizes` KiB);
/// the store file goes into `scratch`.
pub fn measure(
    installation: &Installation,
    sizes: &[usize],
    scratch: &Path,
    window: Duration,
) -> anyhow::Result<Limits> {
    let gateway_key_pem = installation.pki("gateway.key")?;
    let key = PKey::private_key_from_pem(&gateway_key_pem).context("reading the gateway key")?;
    let Ok(rsa) = key.rsa() else {
        bail!(
            "only RSA gateway keys can be measured (this key is {:?})",
            key.id()
        );
    };
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let private_ops_per_s_one_core = private_ops_per_s(&rsa, 1, window)?;
    let private_ops_per_s = private_ops_per_s(&rsa, cores, window)?;
    Ok(Limits {
        cores,
        key: format!("RSA-{}", rsa.size() * 8),
        private_ops_per_s,
        private_ops_per_s_one_core,
        fsync_commits_per_s: fsync_commits_per_s(scratch, window)?,
        aes_256_gcm_mb_per_s: aes_256_gcm_mb_per_s(window)?,
        letter_work: {
            let bench = Workbench::new(installation, &gateway_key_pem)?;
            sizes
                .iter()
                .map(|&size_kib| bench.letter_work(size_kib, cores, window))
                .collect::<anyhow::Result<_>>()?
        },
    })
}

/// What the letter work needs, made once for every size: the gateway's keys and trust
/// anchors as `serve` loads them, a member as the bench enrols them (a recovery key
/// and one device key), and the demo practice.
struct Workbench {
    keys: [DecryptionKey; 1],
    anchors: TrustAnchors,
    recipients: Recipients,
    recipient: String,
    practice: Practice,
}

impl Workbench {
    fn new(installation: &Installation, gateway_key_pem: &[u8]) -> anyhow::Result<Self> {
        let member_keys = ["Member", "Member's phone"]
            .into_iter()
            .map(|name| Ok(openpgp::generate_member_key(name)?.1))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Workbench {
            keys: [DecryptionKey::from_pem(
                &installation.pki("gateway.pem")?,
                gateway_key_pem,
            )?],
            anchors: TrustAnchors::new(&x509::parse_pem_chain(&installation.pki("ca.pem")?)?)?,
            recipients: Recipients::parse(&member_keys)?,
            recipient: format!("{}@smarthealth.{DOMAIN}", members::kvnr(0)),
            practice: Practice::of(installation)?,
        })
    }

    /// The letter work for letters of `size_kib` on `threads` threads together.
    fn letter_work(
        &self,
        size_kib: usize,
        threads: usize,
        window: Duration,
    ) -> anyhow::Result<LetterWork> {
        let letter = self.practice.letter(&self.recipient, size_kib * 1024, 0)?;
        let headers = [("From", PRACTICE), ("To", self.recipient.as_str())];
        let one = || -> anyhow::Result<()> {
            let at = std::time::SystemTime::now();
            let unwrapped =
                smime::unwrap_owned(letter.message.clone(), &self.keys, &self.anchors, at)
                    .context("unwrapping the bench letter")?;
            ensure!(
                unwrapped.encrypted && unwrapped.signer.is_some(),
                "the bench letter was not both encrypted and signed"
            );
            openpgp::pgp_mime_to(&headers, &[&unwrapped.content], &self.recipients)
                .context("re-encrypting the bench letter")?;
            Ok(())
        };
        let cpu_before = own_cpu_seconds();
        let (letters, elapsed) = on_threads(threads, window, one)?;
        let letters = letters as f64;
        Ok(LetterWork {
            size_kib,
            letters_per_s: letters / elapsed,
            cpu_ms_per_letter: (own_cpu_seconds() - cpu_before) * 1000.0 / letters,
        })
    }
}

/// RSA decryptions per second on `threads` threads together.
fn private_ops_per_s(
    rsa: &openssl::rsa::Rsa<openssl::pkey::Private>,
    threads: usize,
    window: Duration,
) -> anyhow::Result<f64> {
    let session_key = [0x5a_u8; 32];
    let mut ciphertext = vec![0; rsa.size() as usize];
    let len = rsa
        .public_encrypt(&session_key, &mut ciphertext, Padding::PKCS1)
        .context("RSA encryption")?;
    ciphertext.truncate(len);
    let (ops, elapsed) = on_threads(threads, window, || {
        let mut out = vec![0; rsa.size() as usize];
        rsa.private_decrypt(&ciphertext, &mut out, Padding::PKCS1)
            .context("RSA decryption")?;
        Ok(())
    })?;
    Ok(ops as f64 / elapsed)
}

/// Runs `op` over and over on `threads` threads for `window` (at least once each);
/// returns how often it ran in all and the seconds that took.
fn on_threads(
    threads: usize,
    window: Duration,
    op: impl Fn() -> anyhow::Result<()> + Sync,
) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let counts = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<u64> {
                    let mut runs = 0;
                    while runs == 0 || started.elapsed() < window {
                        op()?;
                        runs += 1;
                    }
                    Ok(runs)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| bail!("a measuring thread panicked"))
            })
            .collect::<anyhow::Result<Vec<u64>>>()
    })?;
    Ok((counts.iter().sum(), started.elapsed().as_secs_f64()))
}

/// Commits per second of a fresh redb database with immediate durability.
fn fsync_commits_per_s(scratch: &Path, window: Duration) -> anyhow::Result<f64> {
    let path = scratch.join("limit-commits.redb");
    let db = Database::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let payload = vec![0xa5_u8; COMMIT_PAYLOAD];
    let started = Instant::now();
    let mut commits = 0_u64;
    while started.elapsed() < window {
        let tx = db.begin_write()?;
        tx.open_table(COMMITS)?
            .insert(commits, payload.as_slice())?;
        tx.commit()?;
        commits += 1;
    }
    let rate = commits as f64 / started.elapsed().as_secs_f64();
    drop(db);
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    Ok(rate)
}

/// AES-256-GCM encryption throughput of one core, sealing messages of
/// [`AES_MESSAGE`] bytes, each under a nonce of its own (one key and nonce may seal
/// at most 2^32 - 2 blocks, about 64 GiB, which a fast core passes within seconds).
fn aes_256_gcm_mb_per_s(window: Duration) -> anyhow::Result<f64> {
    let cipher = Cipher::aes_256_gcm();
    let input = vec![0x3c_u8; AES_CHUNK];
    let mut output = vec![0; AES_CHUNK + cipher.block_size()];
    let mut tag = [0; 16];
    let started = Instant::now();
    let mut bytes = 0_u64;
    for message in 0_u64.. {
        if started.elapsed() >= window {
            break;
        }
        let mut nonce = [0; 12];
        nonce[4..].copy_from_slice(&message.to_be_bytes());
        let mut crypter = Crypter::new(cipher, Mode::Encrypt, &[7; 32], Some(&nonce))?;
        for _ in 0..AES_MESSAGE / AES_CHUNK {
            crypter.update(&input, &mut output)?;
        }
        crypter.finalize(&mut output)?;
        crypter.get_tag(&mut tag)?;
        bytes += AES_MESSAGE as u64;
    }
    Ok(bytes as f64 / 1e6 / started.elapsed().as_secs_f64())
}
