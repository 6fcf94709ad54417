//! The memory benchmark: peak RSS (VmHWM) of `kvgate serve` for one very large
//! letter and for a batch of concurrent 1 MiB letters, each on a fresh server.
//!
//! A run that the gateway refuses, or that ends the server, is a result too: the
//! reply lines, the exit status and the server's warnings are recorded, not raised.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::load::{self, Plan};
use crate::members::Member;
use crate::server::{Installation, Server};
use crate::{delivery, letters, members, report};

/// One mebibyte.
const MIB: usize = 1 << 20;

/// The batch's peak RSS target of the issue, MiB.
const BATCH_TARGET_MIB: f64 = 300.0;

/// The large letter's target of the issue: peak RSS below this times its size.
const LARGE_TARGET_RATIO: f64 = 2.5;

/// Server log lines kept in a result.
const LOG_LINES: usize = 20;

/// What to send.
pub struct Options<'a> {
    /// The `kvgate` binary.
    pub kvgate: &'a Path,
    /// Size of the large letter as submitted (signed and encrypted), MiB.
    pub large_mib: usize,
    /// Letters in the concurrent batch.
    pub batch: usize,
    /// Size of each batch letter as submitted, MiB.
    pub batch_mib: usize,
    /// Members the batch goes to, round-robin.
    pub batch_members: usize,
    /// How long to wait for delivery after the last acceptance.
    pub delivery_timeout: Duration,
}

/// Both runs.
#[derive(Debug, Serialize)]
pub struct MemoryReport {
    /// When the benchmark started, RFC 3339 UTC.
    pub started_at: String,
    /// The machine the figures are of.
    pub host: report::Host,
    /// /proc/loadavg at the start and at the end.
    pub load_average: [String; 2],
    /// One large letter, delivered and fetched once.
    pub large: Run,
    /// Many letters at once, delivered.
    pub batch: Run,
}

/// What one run on a fresh server measured and what the server did.
#[derive(Debug, Serialize)]
pub struct Run {
    /// Letters submitted, all at once on their own connections.
    pub letters: usize,
    /// Octets of each message as submitted (headers and S/MIME entity).
    pub message_octets: usize,
    /// Letters answered with 250.
    pub accepted: usize,
    /// Accepted letters found in an inbox before the timeout.
    pub delivered: usize,
    /// Octets of the PGP/MIME letter fetched over the member API, if one was.
    pub fetched_octets: Option<usize>,
    /// Refusals, as the gateway's reply lines.
    pub refused: Vec<String>,
    /// What failed on the client side (connection lost, fetch failed), if anything.
    pub error: Option<String>,
    /// The server's exit status if it ended during the run.
    pub server_exit: Option<String>,
    /// Peak RSS once every letter was delivered, before any fetch, MiB.
    pub peak_rss_delivered_mib: Option<f64>,
    /// Peak RSS of `kvgate serve` since it started, MiB (`None` if it ended).
    pub peak_rss_mib: Option<f64>,
    /// Peak RSS divided by the octets of all messages submitted (for one letter,
    /// its size).
    pub ratio_to_octets_sent: Option<f64>,
    /// Seconds from the first connection to the end of delivery (and fetch).
    pub seconds: f64,
    /// The last warnings and errors of the server's log.
    pub server_log: Vec<String>,
}

/// Runs the large letter, then the batch, each on a fresh server.
pub fn run(options: &Options<'_>) -> anyhow::Result<MemoryReport> {
    let started_at = report::now();
    let load_at_start = report::load_average();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    eprintln!("one letter of {} MiB…", options.large_mib);
    let large = runtime.block_on(on_fresh_server(options, 1, options.large_mib, 1, true))?;
    eprintln!(
        "{} letters of {} MiB at once…",
        options.batch, options.batch_mib
    );
    let batch = runtime.block_on(on_fresh_server(
        options,
        options.batch_members,
        options.batch_mib,
        options.batch,
        false,
    ))?;
    Ok(MemoryReport {
        started_at,
        host: report::Host::this(),
        load_average: [load_at_start, report::load_average()],
        large,
        batch,
    })
}

/// Sets up a fresh installation with `member_count` members, submits `count`
/// letters of `mib` MiB at once, waits for delivery, fetches the first one if `fetch`,
/// and reads the server's peak RSS.
async fn on_fresh_server(
    options: &Options<'_>,
    member_count: usize,
    mib: usize,
    count: usize,
    fetch: bool,
) -> anyhow::Result<Run> {
    let scratch = tempfile::tempdir().context("creating a data directory")?;
    let installation = Installation::init(options.kvgate, &scratch.path().join("kvgate"))?;
    let registered = members::register(&installation, member_count)?;
    let (smtp_tls, api_tls) = installation.client_tls()?;
    let mut server = Server::start(&installation)?;
    let members = members::enroll(server.api, api_tls.clone(), &registered).await?;
    eprintln!("  composing…");
    let letters = letters::compose(&installation, &members, letters::plain_size_for(mib * MIB))?;
    let message_octets = letters.first().map_or(0, |l| l.message.len());
    let mut run = Run {
        letters: count,
        message_octets,
        accepted: 0,
        delivered: 0,
        fetched_octets: None,
        refused: Vec::new(),
        error: None,
        server_exit: None,
        peak_rss_delivered_mib: None,
        peak_rss_mib: None,
        ratio_to_octets_sent: None,
        seconds: 0.0,
        server_log: Vec::new(),
    };
    eprintln!("  sending {count} × {message_octets} octets…");
    let clock = Instant::now();
    let plan = Plan {
        count,
        concurrency: count,
        pace: None,
    };
    let outcome = deliver(
        &server,
        &members,
        (smtp_tls, api_tls),
        Arc::new(letters),
        plan,
        fetch,
        options.delivery_timeout,
        &mut run,
    )
    .await;
    run.seconds = clock.elapsed().as_secs_f64();
    if let Err(e) = outcome {
        run.error = Some(format!("{e:#}"));
    }
    match server.exit_status()? {
        Some(status) => run.server_exit = Some(status.to_string()),
        None => {
            let peak = server.usage()?.peak_rss_bytes as f64;
            run.peak_rss_mib = Some(peak / MIB as f64);
            let sent = message_octets * count;
            run.ratio_to_octets_sent = (sent > 0).then(|| peak / sent as f64);
        }
    }
    let stopped = server.stop();
    run.server_log = warnings(&installation.serve_log());
    stopped?;
    Ok(run)
}

/// Submits the letters, waits for their delivery and fetches the first if asked,
/// filling in `run` as it goes.
#[allow(clippy::too_many_arguments)]
async fn deliver(
    server: &Server,
    members: &[Member],
    (smtp_tls, api_tls): (Arc<rustls::ClientConfig>, Arc<rustls::ClientConfig>),
    letters: Arc<Vec<letters::Letter>>,
    plan: Plan,
    fetch: bool,
    timeout: Duration,
    run: &mut Run,
) -> anyhow::Result<()> {
    let sent = load::send(server.smtps, smtp_tls, letters, plan).await?;
    run.accepted = sent.accepted.len();
    run.refused = sent.refused;
    let expected: HashSet<String> = sent
        .accepted
        .iter()
        .map(|a| a.tracking_id.clone())
        .collect();
    eprintln!("  {} accepted; waiting for delivery…", run.accepted);
    let delivered = delivery::wait(
        server.api,
        api_tls.clone(),
        members,
        &expected,
        timeout,
        sent.started,
    )
    .await?;
    run.delivered = delivered.len();
    run.peak_rss_delivered_mib = Some(server.usage()?.peak_rss_bytes as f64 / MIB as f64);
    if let (true, Some(first), Some(member)) = (fetch, sent.accepted.first(), members.first())
        && delivered.contains_key(&first.tracking_id)
    {
        eprintln!("  fetching…");
        let octets = delivery::fetch(server.api, api_tls, member, &first.tracking_id).await?;
        run.fetched_octets = Some(octets);
    }
    Ok(())
}

/// The last warning and error lines of the server's log (or why it could not be read).
fn warnings(log: &Path) -> Vec<String> {
    match std::fs::read_to_string(log) {
        Ok(text) => {
            let lines: Vec<String> = text
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("panick"))
                .map(str::to_owned)
                .collect();
            lines[lines.len().saturating_sub(LOG_LINES)..].to_vec()
        }
        Err(e) => vec![format!("could not read {}: {e}", log.display())],
    }
}

/// The report as a short table.
pub fn render(report: &MemoryReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "kvgate-bench memory, {} on {} (load average {} → {})\n",
        report.started_at, report.host, report.load_average[0], report.load_average[1]
    );
    let _ = writeln!(
        out,
        "{:<10} {:>7} {:>12} {:>5} {:>5} {:>10} {:>9} {:>9} {:>7} {:>8}",
        "run",
        "letters",
        "octets each",
        "acc",
        "dlvd",
        "fetched",
        "HWM dlvd",
        "HWM end",
        "÷ sent",
        "seconds"
    );
    for (name, run) in [("large", &report.large), ("batch", &report.batch)] {
        let _ = writeln!(
            out,
            "{:<10} {:>7} {:>12} {:>5} {:>5} {:>10} {:>9} {:>9} {:>7} {:>8.1}",
            name,
            run.letters,
            run.message_octets,
            run.accepted,
            run.delivered,
            run.fetched_octets
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            mib(run.peak_rss_delivered_mib),
            mib(run.peak_rss_mib),
            run.ratio_to_octets_sent
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}")),
            run.seconds
        );
        for refusal in run.refused.iter().take(3) {
            let _ = writeln!(out, "      refused: {refusal}");
        }
        if let Some(error) = &run.error {
            let _ = writeln!(out, "      error: {error}");
        }
        if let Some(exit) = &run.server_exit {
            let _ = writeln!(out, "      server ended: {exit}");
        }
    }
    let verdict = |holds: Option<bool>| match holds {
        Some(true) => "holds ",
        Some(false) => "MISSED",
        None => "  n/a ",
    };
    let large = &report.large;
    let large_holds = large
        .ratio_to_octets_sent
        .map(|r| r < LARGE_TARGET_RATIO && large.delivered == 1 && large.fetched_octets.is_some());
    let batch = &report.batch;
    let batch_holds = batch
        .peak_rss_mib
        .map(|m| m < BATCH_TARGET_MIB && batch.delivered == batch.letters);
    let _ = writeln!(out, "\ntargets:");
    let _ = writeln!(
        out,
        "  [{}] large letter accepted, delivered and fetched with VmHWM < {LARGE_TARGET_RATIO}× its size",
        verdict(large_holds)
    );
    let _ = writeln!(
        out,
        "  [{}] {} concurrent letters delivered with VmHWM < {BATCH_TARGET_MIB} MiB",
        verdict(batch_holds),
        batch.letters
    );
    out
}

/// MiB without decimals, or `-`.
fn mib(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |m| format!("{m:.0}"))
}
