//! One scenario: a letter size at one concurrency, from the first connection until
//! every accepted letter is in its inbox, with the server's CPU time and peak memory.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use serde::Serialize;

use crate::delivery;
use crate::letters::Letter;
use crate::limits::Limits;
use crate::load::{self, Plan};
use crate::members::Member;
use crate::server::Server;

/// Everything the scenarios share.
pub struct Setup<'a> {
    /// The gateway under test.
    pub server: &'a Server,
    /// TLS for SMTP submission, with the practice's client certificate.
    pub smtp_tls: Arc<ClientConfig>,
    /// TLS for the member API.
    pub api_tls: Arc<ClientConfig>,
    /// The enrolled members.
    pub members: &'a [Member],
    /// The machine's limits, for the ratio.
    pub limits: &'a Limits,
    /// How long to wait for the last delivery after the last acceptance.
    pub delivery_timeout: Duration,
}

/// p50, p95 and p99 of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Percentiles {
    /// The percentiles of `samples` (nearest rank); `None` when there are none.
    pub fn of(mut samples: Vec<f64>) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            samples[((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1]
        };
        Some(Percentiles {
            p50: rank(0.50),
            p95: rank(0.95),
            p99: rank(0.99),
        })
    }
}

/// The figures of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Nominal letter size in KiB (before signing and encryption).
    pub size_kib: usize,
    /// Connections submitting at once.
    pub concurrency: usize,
    /// Letters per second the load was paced at, if it was.
    pub paced_per_s: Option<f64>,
    /// Letters submitted.
    pub letters: usize,
    /// Letters answered with 250.
    pub accepted: usize,
    /// Accepted letters found in an inbox before the timeout.
    pub delivered: usize,
    /// Refusals (reply lines), if any.
    pub refused: Vec<String>,
    /// Accepted letters per second, first connection to last 250.
    pub accepted_per_s: f64,
    /// Delivered letters per second, first connection to last delivery.
    pub delivered_per_s: f64,
    /// MAIL FROM to 250 after the final dot, ms.
    pub accept_ms: Option<Percentiles>,
    /// 250 to filed in the inbox, ms (the gateway stores milliseconds).
    pub accept_to_delivered_ms: Option<Percentiles>,
    /// Server CPU (user + system) per delivered letter, ms.
    pub server_cpu_ms_per_letter: Option<f64>,
    /// Server peak RSS during the scenario, MiB.
    pub server_peak_rss_mib: f64,
    /// Letter data (before signing and encryption) delivered per second, MB (10^6).
    pub delivered_mb_per_s: f64,
    /// Delivered letters/s divided by private-key operations/s on all cores.
    pub ratio_to_crypto_limit: f64,
    /// Delivered letters/s divided by the letter work of this size on all cores
    /// ([`crate::limits::LetterWork`]): the share of the machine that went to the
    /// letters' own unwrapping and re-encryption.
    pub ratio_to_letter_work: Option<f64>,
    /// CPU seconds the load generator (this process) used, polling included.
    pub client_cpu_s: f64,
}

/// Runs one scenario: letters of `size_kib` from `letters` as `plan` says.
pub async fn run(
    setup: &Setup<'_>,
    letters: Arc<Vec<Letter>>,
    size_kib: usize,
    plan: Plan,
) -> anyhow::Result<Row> {
    setup.server.reset_peak()?;
    let before = setup.server.usage()?;
    let client_before = own_cpu_seconds();
    let sent = load::send(setup.server.smtps, setup.smtp_tls.clone(), letters, plan).await?;
    let expected: HashSet<String> = sent
        .accepted
        .iter()
        .map(|a| a.tracking_id.clone())
        .collect();
    let delivered = delivery::wait(
        setup.server.api,
        setup.api_tls.clone(),
        setup.members,
        &expected,
        setup.delivery_timeout,
        sent.started,
    )
    .await?;
    let after = setup.server.usage()?;
    let client_cpu_s = own_cpu_seconds() - client_before;

    let mut in_transit = Vec::new();
    let mut delivered_octets = 0;
    let mut last = sent.started;
    for accepted in &sent.accepted {
        if let Some(&at) = delivered.get(&accepted.tracking_id) {
            in_transit.push(millis(at.duration_since(accepted.at).unwrap_or_default()));
            delivered_octets += accepted.plain_octets;
            last = last.max(at);
        }
    }
    let window = last
        .duration_since(sent.started)
        .unwrap_or_default()
        .as_secs_f64();
    let per_second = |n: f64| if window > 0.0 { n / window } else { 0.0 };
    let delivered_per_s = per_second(delivered.len() as f64);
    Ok(Row {
        size_kib,
        concurrency: plan.concurrency,
        paced_per_s: plan.pace,
        letters: plan.count,
        accepted: sent.accepted.len(),
        delivered: delivered.len(),
        refused: sent.refused,
        accepted_per_s: sent.accepted.len() as f64 / sent.elapsed.as_secs_f64().max(1e-9),
        delivered_per_s,
        accept_ms: Percentiles::of(sent.accepted.iter().map(|a| millis(a.latency)).collect()),
        accept_to_delivered_ms: Percentiles::of(in_transit),
        server_cpu_ms_per_letter: (!delivered.is_empty())
            .then(|| (after.cpu_seconds - before.cpu_seconds) * 1e3 / delivered.len() as f64),
        server_peak_rss_mib: after.peak_rss_bytes as f64 / f64::from(1 << 20),
        delivered_mb_per_s: per_second(delivered_octets as f64 / 1e6),
        ratio_to_crypto_limit: delivered_per_s / setup.limits.private_ops_per_s,
        ratio_to_letter_work: setup
            .limits
            .letter_work(size_kib)
            .map(|work| delivered_per_s / work.letters_per_s),
        client_cpu_s,
    })
}

/// A duration in milliseconds.
fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// User plus system CPU seconds of this process so far.
pub fn own_cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    #[allow(unsafe_code)]
    // SAFETY: getrusage writes one rusage into the buffer we pass and keeps no pointer.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return 0.0;
        }
        usage.assume_init()
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
