//! The physical limit of this machine for kvgate's work: private-key operations of the
//! gateway's own key (same vendored OpenSSL as the gateway), durable commits of a redb
//! store with one writer, and AES-256-GCM throughput.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use openssl::pkey::PKey;
use openssl::rsa::Padding;
use openssl::symm::{Cipher, Crypter, Mode};
use redb::{Database, TableDefinition};
use serde::Serialize;

/// The table the commit measurement writes to.
const COMMITS: TableDefinition<u64, &[u8]> = TableDefinition::new("commits");
/// Bytes written per commit: about one tracking event with its record.
const COMMIT_PAYLOAD: usize = 1024;
/// Bytes per AES-GCM update call.
const AES_CHUNK: usize = 1 << 20;

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
}

/// Measures every limit, each for `window`; the store file goes into `scratch`.
pub fn measure(gateway_key_pem: &[u8], scratch: &Path, window: Duration) -> anyhow::Result<Limits> {
    let key = PKey::private_key_from_pem(gateway_key_pem).context("reading the gateway key")?;
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
    })
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
    let started = Instant::now();
    let counts = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<u64> {
                    let mut out = vec![0; rsa.size() as usize];
                    let mut ops = 0;
                    while started.elapsed() < window {
                        rsa.private_decrypt(&ciphertext, &mut out, Padding::PKCS1)
                            .context("RSA decryption")?;
                        ops += 1;
                    }
                    Ok(ops)
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
    Ok(counts.iter().sum::<u64>() as f64 / started.elapsed().as_secs_f64())
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

/// AES-256-GCM encryption throughput of one core.
fn aes_256_gcm_mb_per_s(window: Duration) -> anyhow::Result<f64> {
    let cipher = Cipher::aes_256_gcm();
    let mut crypter = Crypter::new(cipher, Mode::Encrypt, &[7; 32], Some(&[9; 12]))?;
    let input = vec![0x3c_u8; AES_CHUNK];
    let mut output = vec![0; AES_CHUNK + cipher.block_size()];
    let started = Instant::now();
    let mut bytes = 0_u64;
    while started.elapsed() < window {
        crypter.update(&input, &mut output)?;
        bytes += AES_CHUNK as u64;
    }
    crypter.finalize(&mut output)?;
    Ok(bytes as f64 / 1e6 / started.elapsed().as_secs_f64())
}
