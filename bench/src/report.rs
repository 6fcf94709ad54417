//! The result of one run: a table on stdout and the same as JSON in
//! `<out>/<date>.json`, with the targets checked against the figures.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::limits::Limits;
use crate::postfix::{Comparison, Round};
use crate::scenario::{Percentiles, Row};

/// The letter size (KiB) the targets are stated for.
pub const TARGET_SIZE_KIB: usize = 4;

/// The concurrency the throughput targets are stated for.
pub const TARGET_CONCURRENCY: usize = 32;

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// When the run started, RFC 3339 UTC.
    pub started_at: String,
    /// Members letters went to.
    pub members: usize,
    /// The machine the figures are of.
    pub host: Host,
    /// /proc/loadavg at the start and at the end of the run: how busy the machine was
    /// with other work, which the figures share it with.
    pub load_average: [String; 2],
    /// The machine's limits.
    pub limits: Limits,
    /// One row per letter size and concurrency.
    pub scenarios: Vec<Row>,
    /// Postfix beside kvgate.
    pub postfix: Comparison,
    /// The targets, checked.
    pub targets: Vec<Target>,
}

/// One target of the issue and whether this run meets it.
#[derive(Debug, Serialize)]
pub struct Target {
    /// The target as the issue states it.
    pub target: &'static str,
    /// Met, missed, or not measured (`None`).
    pub holds: Option<bool>,
    /// The figures it was judged by.
    pub detail: String,
}

/// The machine a run measured: the same kind of VM has come with CPUs whose
/// RSA-2048 speed differs fourfold, and a VM's model name may be as short as
/// "AMD EPYC", so the CPU features the crypto code picks its paths by go with it.
#[derive(Debug, Serialize)]
pub struct Host {
    /// The CPU's model name, as /proc/cpuinfo has it.
    pub cpu: String,
    /// Which of [`CRYPTO_FEATURES`] the CPU has.
    pub crypto_features: Vec<&'static str>,
    /// The kernel's release, as uname has it.
    pub kernel: String,
}

/// CPU features OpenSSL, ring and the RustCrypto crates choose faster code by:
/// AVX-512 IFMA (OpenSSL's RSA), AVX2, AES-NI, VAES, carry-less multiply (GCM), SHA
/// extensions, ADX and BMI2 (big-number arithmetic).
const CRYPTO_FEATURES: [&str; 8] = [
    "avx512ifma",
    "avx2",
    "aes",
    "vaes",
    "pclmulqdq",
    "sha_ni",
    "adx",
    "bmi2",
];

impl Host {
    /// This machine.
    pub fn this() -> Host {
        Host::of(
            &std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default(),
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .as_deref()
                .unwrap_or("unknown"),
        )
    }

    /// The machine that `cpuinfo` (as /proc/cpuinfo has it) and `kernel` describe.
    fn of(cpuinfo: &str, kernel: &str) -> Host {
        let field = |name: &str| {
            cpuinfo.lines().find_map(|l| {
                let (key, value) = l.split_once(':')?;
                (key.trim() == name).then(|| value.trim())
            })
        };
        let flags: Vec<&str> = field("flags").unwrap_or("").split_whitespace().collect();
        Host {
            cpu: field("model name").unwrap_or("unknown").to_owned(),
            crypto_features: CRYPTO_FEATURES
                .into_iter()
                .filter(|f| flags.contains(f))
                .collect(),
            kernel: kernel.trim().to_owned(),
        }
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.crypto_features.as_slice() {
            [] => write!(f, "{} with none of {}", self.cpu, CRYPTO_FEATURES.join(" "))?,
            features => write!(f, "{} with {}", self.cpu, features.join(" "))?,
        }
        write!(f, ", Linux {}", self.kernel)
    }
}

/// The machine's load averages now (1, 5, 15 minutes), as /proc/loadavg has them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// The current time as RFC 3339 UTC.
pub fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Checks the targets (4 KiB letters unless said otherwise).
pub fn targets(limits: &Limits, rows: &[Row], postfix: &Comparison) -> Vec<Target> {
    let at = |concurrency: usize| {
        rows.iter().find(|r| {
            r.size_kib == TARGET_SIZE_KIB && r.concurrency == concurrency && r.paced_per_s.is_none()
        })
    };
    let ratio = match at(TARGET_CONCURRENCY) {
        Some(r) => Target {
            target: "delivered letters/s >= 50% of the crypto limit at concurrency 32",
            holds: Some(r.ratio_to_crypto_limit >= 0.5),
            detail: format!(
                "{:.1} delivered/s vs {:.0} private-key ops/s: {:.1}% (load generator used {:.2} CPU s){}",
                r.delivered_per_s,
                limits.private_ops_per_s,
                r.ratio_to_crypto_limit * 100.0,
                r.client_cpu_s,
                limits
                    .letter_work(r.size_kib)
                    .zip(r.ratio_to_letter_work)
                    .map(|(w, ratio)| format!(
                        "; {:.1}% of the letter work ({:.1} letters/s unwrapped and re-encrypted in process)",
                        ratio * 100.0,
                        w.letters_per_s
                    ))
                    .unwrap_or_default()
            ),
        },
        None => not_measured("delivered letters/s >= 50% of the crypto limit at concurrency 32"),
    };
    let ahead_target = "ahead of Postfix's accepted messages/s at concurrency 32";
    let ahead = match (postfix, at(TARGET_CONCURRENCY)) {
        (Comparison::Ran { rounds, .. }, _) if !rounds.is_empty() => {
            let ratio = median(rounds.iter().map(Round::ratio).collect());
            let to_done = median(rounds.iter().map(Round::ratio_to_done).collect());
            let each: Vec<String> = rounds
                .iter()
                .map(|r| {
                    format!(
                        "{:.1}/{:.1}",
                        r.kvgate.delivered_per_s, r.postfix.accepted_per_s
                    )
                })
                .collect();
            Target {
                target: ahead_target,
                holds: Some(ratio > 1.0),
                detail: format!(
                    "median of {} interleaved rounds: kvgate at {:.1}% of Postfix (kvgate delivered/s / Postfix accepted/s: {}); {:.1}% of the messages/s Postfix queued and discarded (its done/s)",
                    rounds.len(),
                    ratio * 100.0,
                    each.join(", "),
                    to_done * 100.0
                ),
            }
        }
        (Comparison::Ran { rows: postfix, .. }, Some(k)) => match postfix
            .iter()
            .find(|p| p.size_kib == TARGET_SIZE_KIB && p.concurrency == TARGET_CONCURRENCY)
        {
            Some(p) => Target {
                target: ahead_target,
                holds: Some(k.delivered_per_s > p.accepted_per_s),
                detail: format!(
                    "kvgate {:.1} delivered/s, Postfix {:.1} accepted/s (one run each, minutes apart)",
                    k.delivered_per_s, p.accepted_per_s
                ),
            },
            None => not_measured(ahead_target),
        },
        _ => not_measured(ahead_target),
    };
    let large = rows
        .iter()
        .filter(|r| r.size_kib == 2048)
        .max_by(|a, b| a.delivered_mb_per_s.total_cmp(&b.delivered_mb_per_s));
    let throughput = match large {
        Some(r) => Target {
            target: "2 MiB letters: >= 150 MB/s of letter data delivered",
            holds: Some(r.delivered_mb_per_s >= 150.0),
            detail: format!(
                "best {:.1} MB/s at concurrency {}",
                r.delivered_mb_per_s, r.concurrency
            ),
        },
        None => not_measured("2 MiB letters: >= 150 MB/s of letter data delivered"),
    };
    let paced: Vec<(f64, f64, usize)> = rows
        .iter()
        .filter(|r| r.size_kib == TARGET_SIZE_KIB)
        .filter_map(|r| Some((r.accept_ms?.p99, r.paced_per_s?, r.concurrency)))
        .collect();
    let latency = match paced.first() {
        Some(&(_, rate, concurrency)) => {
            let p99s: Vec<f64> = paced.iter().map(|(p99, _, _)| *p99).collect();
            let middle = median(p99s.clone());
            let each: Vec<String> = p99s.iter().map(|p| format!("{p:.2}")).collect();
            Target {
                target: "p99 accept latency <= 25 ms at half of the peak rate",
                holds: Some(middle <= 25.0),
                detail: format!(
                    "median p99 {middle:.2} ms of {} runs paced at {rate:.1} letters/s (half the best delivered rate) on {concurrency} connections (p99 of each: {} ms)",
                    p99s.len(),
                    each.join(", ")
                ),
            }
        }
        None => not_measured("p99 accept latency <= 25 ms at half of the peak rate"),
    };
    vec![ratio, latency, ahead, throughput]
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[middle],
        _ => (values[middle - 1] + values[middle]) / 2.0,
    }
}

fn not_measured(target: &'static str) -> Target {
    Target {
        target,
        holds: None,
        detail: "not measured in this run".to_owned(),
    }
}

/// The report as text: limits, the scenario table, Postfix, targets.
pub fn render(report: &Report) -> String {
    let l = &report.limits;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "kvgate-bench {} · {} members · {} cores ({}) · load average {} at start, {} at end\n\n\
         limits: {} private-key ops/s {:.0} (all cores), {:.0} (one core) · \
         fsync commits/s {:.0} (one writer) · AES-256-GCM {:.0} MB/s (one core)",
        report.started_at,
        report.members,
        l.cores,
        report.host,
        report.load_average[0],
        report.load_average[1],
        l.key,
        l.private_ops_per_s,
        l.private_ops_per_s_one_core,
        l.fsync_commits_per_s,
        l.aes_256_gcm_mb_per_s
    );
    let work: Vec<String> = l
        .letter_work
        .iter()
        .map(|w| {
            format!(
                "{}K {:.1}/s ({:.2} ms CPU each)",
                w.size_kib, w.letters_per_s, w.cpu_ms_per_letter
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "letter work (unwrap + re-encrypt to two keys, in process, all cores): {}\n",
        work.join(" · ")
    );
    let _ = writeln!(
        out,
        "{:>5} {:>4} {:>5} {:>5} {:>8} {:>8} {:>20} {:>22} {:>7} {:>7} {:>7} {:>7} {:>6} {:>6}",
        "size",
        "conc",
        "sent",
        "dlvd",
        "acc/s",
        "dlvd/s",
        "accept ms p50/95/99",
        "acc→dlvd ms p50/95/99",
        "cpu ms",
        "RSS MiB",
        "MB/s",
        "limit%",
        "work%",
        "cli s"
    );
    for r in &report.scenarios {
        let _ = writeln!(
            out,
            "{:>4}K {:>4} {:>5} {:>5} {:>8.1} {:>8.1} {:>20} {:>22} {:>7} {:>7.0} {:>7.2} {:>6.1}% {:>6} {:>6.2}",
            r.size_kib,
            r.concurrency,
            r.letters,
            r.delivered,
            r.accepted_per_s,
            r.delivered_per_s,
            triple(r.accept_ms),
            triple(r.accept_to_delivered_ms),
            r.server_cpu_ms_per_letter
                .map_or_else(|| "-".to_owned(), |c| format!("{c:.1}")),
            r.server_peak_rss_mib,
            r.delivered_mb_per_s,
            r.ratio_to_crypto_limit * 100.0,
            r.ratio_to_letter_work
                .map_or_else(|| "-".to_owned(), |w| format!("{:.1}%", w * 100.0)),
            r.client_cpu_s
        );
        if let Some(rate) = r.paced_per_s {
            let _ = writeln!(out, "      (paced at {rate:.1} letters/s)");
        }
        for refusal in r.refused.iter().take(3) {
            let _ = writeln!(out, "      refused: {refusal}");
        }
    }
    let _ = writeln!(out);
    match &report.postfix {
        Comparison::NotRequested => {}
        Comparison::NotInstalled { missing, install } => {
            let _ = writeln!(
                out,
                "Postfix comparison: postfix not installed (missing {}); install with: {install}",
                missing.join(", ")
            );
        }
        Comparison::Failed { error } => {
            let _ = writeln!(out, "Postfix comparison failed: {error}");
        }
        Comparison::Ran { rows, rounds } => {
            let _ = writeln!(
                out,
                "Postfix (plain SMTP, queue + discard) beside kvgate (SMTPS + mTLS, unwrap, re-encrypt, file):"
            );
            let _ = writeln!(
                out,
                "{:>5} {:>4} {:>18} {:>18} {:>18}",
                "size", "conc", "postfix acc/s", "postfix done/s", "kvgate dlvd/s"
            );
            for p in rows {
                let kvgate = report
                    .scenarios
                    .iter()
                    .find(|r| {
                        r.size_kib == p.size_kib
                            && r.concurrency == p.concurrency
                            && r.paced_per_s.is_none()
                    })
                    .map_or_else(|| "-".to_owned(), |r| format!("{:.1}", r.delivered_per_s));
                let _ = writeln!(
                    out,
                    "{:>4}K {:>4} {:>18.1} {:>18.1} {:>18}",
                    p.size_kib, p.concurrency, p.accepted_per_s, p.discarded_per_s, kvgate
                );
            }
            if !rounds.is_empty() {
                let _ = writeln!(
                    out,
                    "\nInterleaved rounds at {TARGET_SIZE_KIB}K × {TARGET_CONCURRENCY}, {} letters each:",
                    rounds[0].postfix.messages
                );
                let _ = writeln!(
                    out,
                    "{:>5} {:>8} {:>14} {:>14} {:>14} {:>7} {:>7} {:>20}",
                    "round",
                    "first",
                    "postfix acc/s",
                    "postfix done/s",
                    "kvgate dlvd/s",
                    "ratio",
                    "cpu ms",
                    "accept ms p50/95/99"
                );
                for (n, r) in rounds.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{:>5} {:>8} {:>14.1} {:>14.1} {:>14.1} {:>6.1}% {:>7} {:>20}",
                        n + 1,
                        if r.postfix_first { "postfix" } else { "kvgate" },
                        r.postfix.accepted_per_s,
                        r.postfix.discarded_per_s,
                        r.kvgate.delivered_per_s,
                        r.ratio() * 100.0,
                        r.kvgate
                            .server_cpu_ms_per_letter
                            .map_or_else(|| "-".to_owned(), |c| format!("{c:.1}")),
                        triple(r.kvgate.accept_ms)
                    );
                }
            }
        }
    }
    let _ = writeln!(out, "\ntargets:");
    for t in &report.targets {
        let verdict = match t.holds {
            Some(true) => "holds ",
            Some(false) => "MISSED",
            None => "  n/a ",
        };
        let _ = writeln!(out, "  [{verdict}] {} — {}", t.target, t.detail);
    }
    out
}

fn triple(p: Option<Percentiles>) -> String {
    p.map_or_else(
        || "-".to_owned(),
        |p| format!("{:.0}/{:.0}/{:.0}", p.p50, p.p95, p.p99),
    )
}

/// Writes the report as `<dir>/<YYYY-MM-DD>.json` and returns the path.
pub fn write(report: &Report, dir: &Path) -> anyhow::Result<PathBuf> {
    write_json(report, &report.started_at, "", dir)
}

/// Writes `value` as pretty JSON to `<dir>/<YYYY-MM-DD><suffix>.json`, the date taken
/// from `started_at` (RFC 3339), and returns the path.
pub fn write_json(
    value: &impl Serialize,
    started_at: &str,
    suffix: &str,
    dir: &Path,
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let date = started_at.get(..10).unwrap_or("undated");
    let path = dir.join(format!("{date}{suffix}.json"));
    let json = serde_json::to_string_pretty(value)?;
    std::fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::{Host, median};

    #[test]
    fn a_host_is_named_by_its_model_its_crypto_features_and_its_kernel() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n\
            flags\t\t: fpu sse2 pclmulqdq aes avx avx2 bmi2 adx sha_ni avx512f avx512ifma\n\n\
            processor\t: 1\nmodel name\t: AMD EPYC\n";
        let host = Host::of(cpuinfo, "6.18.44\n");
        assert_eq!(
            host.to_string(),
            "AMD EPYC with avx512ifma avx2 aes pclmulqdq sha_ni adx bmi2, Linux 6.18.44"
        );
        let bare = Host::of("", "6.1");
        assert_eq!(
            bare.to_string(),
            "unknown with none of avx512ifma avx2 aes vaes pclmulqdq sha_ni adx bmi2, Linux 6.1"
        );
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![0.8]), 0.8);
        assert!(median(Vec::new()).is_nan());
    }
}
