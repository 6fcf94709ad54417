//! `kvgate-bench`: where kvgate stands against this machine's physical limit and
//! against Postfix.
//!
//! One run measures the limits (private-key operations of the gateway's key, fsynced
//! store commits, AES-256-GCM), starts a real `kvgate serve` on a fresh data directory
//! with N members, submits pre-made S/MIME letters of several sizes over implicit TLS
//! at several concurrencies, waits until each is in its inbox, and reports the
//! figures as a table and as JSON. The gateway is driven from outside only: its CLI,
//! SMTPS and the member API.
//!
//! `kvgate-bench memory` instead measures the server's peak RSS for one very large
//! letter and for a batch of concurrent 1 MiB letters (see [`memory`]).

#![deny(unsafe_code)]

mod delivery;
mod letters;
mod limits;
mod load;
mod members;
mod memory;
mod postfix;
mod report;
mod scenario;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use clap::{Parser, Subcommand};

use crate::load::Plan;
use crate::postfix::Comparison;
use crate::report::Report;
use crate::scenario::Setup;
use crate::server::{Installation, Server};

/// Benchmark kvgate against the machine's limit and against Postfix.
#[derive(Debug, Parser)]
#[command(name = "kvgate-bench")]
struct Args {
    /// Run the memory benchmark instead of the throughput one.
    #[command(subcommand)]
    mode: Option<Mode>,
    /// The kvgate binary to run (build it with `cargo build --release` first).
    #[arg(long, global = true, default_value = "target/release/kvgate")]
    kvgate: PathBuf,
    /// Members to register; letters go to them round-robin (in `memory`, the batch's).
    #[arg(long, global = true, default_value_t = 8)]
    members: usize,
    /// Letters per scenario (at least one per connection).
    #[arg(long, default_value_t = 200)]
    letters: usize,
    /// Concurrencies (SMTPS connections at once), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128")]
    concurrency: Vec<usize>,
    /// Letter sizes in KiB before signing and encryption, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "4,100,2048")]
    sizes: Vec<usize>,
    /// Seconds each limit is measured for.
    #[arg(long, default_value_t = 2.0)]
    limit_seconds: f64,
    /// Seconds to wait for the last delivery of a scenario.
    #[arg(long, global = true, default_value_t = 300)]
    delivery_timeout: u64,
    /// Also run Postfix with smtp-source at the same sizes and concurrencies.
    #[arg(long)]
    compare_postfix: bool,
    /// With --compare-postfix: rounds of Postfix and kvgate in turn at 4 KiB and
    /// concurrency 32, `--letters` each; the target is judged on their median ratio.
    #[arg(long, default_value_t = 9)]
    rounds: usize,
    /// Runs at 4 KiB paced at half the best delivered rate, `--letters` each; the
    /// latency target is judged on the median of their p99s.
    #[arg(long, default_value_t = 5)]
    paced_runs: usize,
    /// Where the JSON result goes.
    #[arg(long, global = true, default_value = "bench/results")]
    out: PathBuf,
}

/// Benchmarks other than the default throughput run.
#[derive(Debug, Subcommand)]
enum Mode {
    /// Peak RSS of the server for one large letter and for concurrent 1 MiB letters,
    /// each on a fresh server; written to `<out>/<date>-memory.json`.
    Memory {
        /// Size of the large letter as submitted (signed and encrypted), MiB.
        #[arg(long, default_value_t = 200)]
        large_mib: usize,
        /// Letters in the concurrent batch, each on its own connection.
        #[arg(long, default_value_t = 50)]
        batch: usize,
        /// Size of each batch letter as submitted, MiB.
        #[arg(long, default_value_t = 1)]
        batch_mib: usize,
    },
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvgate-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    ensure!(args.members > 0, "--members must be at least 1");
    if let Some(Mode::Memory {
        large_mib,
        batch,
        batch_mib,
    }) = args.mode
    {
        ensure!(
            large_mib > 0 && batch > 0 && batch_mib > 0,
            "--large-mib, --batch and --batch-mib must be at least 1"
        );
        let report = memory::run(&memory::Options {
            kvgate: &args.kvgate,
            large_mib,
            batch,
            batch_mib,
            batch_members: args.members,
            delivery_timeout: Duration::from_secs(args.delivery_timeout),
        })?;
        print!("{}", memory::render(&report));
        let path = report::write_json(&report, &report.started_at, "-memory", &args.out)?;
        println!("\nwritten to {}", path.display());
        return Ok(());
    }
    ensure!(
        args.concurrency.iter().chain(&args.sizes).all(|&n| n > 0),
        "concurrencies and sizes must be at least 1"
    );
    let window = Duration::try_from_secs_f64(args.limit_seconds)
        .context("--limit-seconds must be a non-negative number of seconds")?;
    let started_at = report::now();
    let load_at_start = report::load_average();
    let scratch = tempfile::tempdir().context("creating a data directory")?;
    let installation = Installation::init(&args.kvgate, &scratch.path().join("kvgate"))?;
    eprintln!("measuring the limits ({} s each)…", args.limit_seconds);
    let limits = limits::measure(&installation, &args.sizes, scratch.path(), window)?;
    eprintln!("registering {} members…", args.members);
    let registered = members::register(&installation, args.members)?;
    // Every delivered letter stays in its member's inbox: each member gets room for
    // its share of the run (armored ciphertext is under twice the letter).
    let scenarios_per_size = (args.concurrency.len() + args.paced_runs) as u64;
    let rounds = if args.compare_postfix { args.rounds } else { 0 };
    let run_octets: u64 = (args.sizes.iter().map(|&kib| kib as u64 * 1024).sum::<u64>()
        * scenarios_per_size
        + (report::TARGET_SIZE_KIB * 1024 * rounds) as u64)
        * args.letters.max(report::TARGET_CONCURRENCY) as u64;
    let quota = (2 * run_octets).div_ceil(args.members.max(1) as u64);
    installation.fit_limits(
        args.concurrency.iter().copied().max().unwrap_or(1),
        args.members,
        quota,
    )?;
    let server = Server::start(&installation)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let measured = runtime.block_on(scenarios(
        &args,
        &installation,
        &server,
        &registered,
        &limits,
    ));
    let stopped = server.stop();
    let (scenarios, postfix) = measured?;
    stopped?;

    let targets = report::targets(&limits, &scenarios, &postfix);
    let report = Report {
        started_at,
        members: args.members,
        host: report::Host::this(),
        load_average: [load_at_start, report::load_average()],
        limits,
        scenarios,
        postfix,
        targets,
    };
    print!("{}", report::render(&report));
    let path = report::write(&report, &args.out)?;
    println!("\nwritten to {}", path.display());
    Ok(())
}

/// Enrols the members, makes the letters, runs every size at every concurrency, and
/// then Postfix if asked to.
async fn scenarios(
    args: &Args,
    installation: &Installation,
    server: &Server,
    registered: &[members::Registered],
    limits: &limits::Limits,
) -> anyhow::Result<(Vec<scenario::Row>, Comparison)> {
    let (smtp_tls, api_tls) = installation.client_tls()?;
    let members = members::enroll(server.api, api_tls.clone(), registered).await?;
    let setup = Setup {
        server,
        smtp_tls,
        api_tls,
        members: &members,
        limits,
        delivery_timeout: Duration::from_secs(args.delivery_timeout),
    };
    let mut rows = Vec::new();
    let mut target_letters = None;
    for &size_kib in &args.sizes {
        let letters = Arc::new(letters::compose(installation, &members, size_kib * 1024)?);
        for &concurrency in &args.concurrency {
            let plan = Plan {
                count: args.letters.max(concurrency),
                concurrency,
                pace: None,
            };
            rows.push(one(&setup, &letters, size_kib, plan).await?);
        }
        if size_kib == report::TARGET_SIZE_KIB {
            // Half of the best sustained (delivered) rate, on as many connections as
            // the target's concurrency allows.
            let peak = rows.iter().map(|r| r.delivered_per_s).fold(0.0, f64::max);
            let connections = (args.concurrency.iter().copied())
                .filter(|&c| c <= report::TARGET_CONCURRENCY)
                .max();
            if let (true, Some(concurrency)) = (peak > 0.0, connections) {
                // One run's p99 is its 15th-slowest letter in 1500: a few runs and
                // their median say more on a VM whose speed drifts.
                for _ in 0..args.paced_runs {
                    let plan = Plan {
                        count: args.letters,
                        concurrency,
                        pace: Some(peak / 2.0),
                    };
                    rows.push(one(&setup, &letters, size_kib, plan).await?);
                }
            }
            target_letters = Some(letters);
        }
    }
    let postfix = if args.compare_postfix {
        compare(args, &setup, target_letters).await?
    } else {
        Comparison::NotRequested
    };
    Ok((rows, postfix))
}

/// Runs Postfix at every size and concurrency, then `--rounds` rounds of Postfix and
/// kvgate in turn at the target's size and concurrency (with `target_letters`, the target
/// size's letters; no rounds if that size was not run). A kvgate round that fails fails the run;
/// Postfix failing is the comparison's verdict.
async fn compare(
    args: &Args,
    setup: &Setup<'_>,
    target_letters: Option<Arc<Vec<letters::Letter>>>,
) -> anyhow::Result<Comparison> {
    eprintln!("running Postfix…");
    // Room for the sweep's sessions and the rounds'.
    let sessions: Vec<usize> = (args.concurrency.iter().copied())
        .chain([report::TARGET_CONCURRENCY])
        .collect();
    let mut instance = match postfix::Instance::start(&sessions) {
        Ok(instance) => instance,
        Err(verdict) => return Ok(verdict),
    };
    let postfix_failed = |e: anyhow::Error| Comparison::Failed {
        error: format!("{e:#}"),
    };
    // smtp-source runs to the end before anything else does: block this worker.
    let rows = match tokio::task::block_in_place(|| {
        instance.sweep(&args.sizes, &args.concurrency, args.letters)
    }) {
        Ok(rows) => rows,
        Err(e) => return Ok(postfix_failed(e)),
    };
    let mut rounds = Vec::new();
    let (size_kib, concurrency) = (report::TARGET_SIZE_KIB, report::TARGET_CONCURRENCY);
    let (letters, rounds_to_run) = match target_letters {
        Some(letters) => (letters, args.rounds),
        None => (Arc::default(), 0),
    };
    // Each round's Postfix run is the second on a fresh instance, after one as long
    // that is not counted (see `postfix::Instance::renew`).
    let mut measure = |size_kib, concurrency| {
        tokio::task::block_in_place(|| {
            instance.renew(size_kib, concurrency, args.letters)?;
            instance.measure(size_kib, concurrency, args.letters)
        })
    };
    for n in 0..rounds_to_run {
        eprintln!(
            "round {} of {}: Postfix and kvgate in turn…",
            n + 1,
            args.rounds
        );
        let plan = Plan {
            count: args.letters.max(concurrency),
            concurrency,
            pace: None,
        };
        // Alternate which goes first, so a drift within a round favours neither.
        let postfix_first = n % 2 == 0;
        let (postfix, kvgate) = if postfix_first {
            let postfix = measure(size_kib, concurrency);
            (
                postfix,
                scenario::run(setup, letters.clone(), size_kib, plan).await?,
            )
        } else {
            let kvgate = scenario::run(setup, letters.clone(), size_kib, plan).await?;
            (measure(size_kib, concurrency), kvgate)
        };
        match postfix {
            Ok(postfix) => rounds.push(postfix::Round {
                postfix_first,
                postfix,
                kvgate,
            }),
            Err(e) => return Ok(postfix_failed(e)),
        }
    }
    Ok(match instance.stop() {
        Ok(()) => Comparison::Ran { rows, rounds },
        Err(e) => postfix_failed(e),
    })
}

/// Runs one scenario, saying so on stderr.
async fn one(
    setup: &Setup<'_>,
    letters: &Arc<Vec<letters::Letter>>,
    size_kib: usize,
    plan: Plan,
) -> anyhow::Result<scenario::Row> {
    let pace = plan
        .pace
        .map_or_else(String::new, |rate| format!(", paced at {rate:.1}/s"));
    eprintln!(
        "{size_kib} KiB × {} at concurrency {}{pace}…",
        plan.count, plan.concurrency
    );
    scenario::run(setup, letters.clone(), size_kib, plan).await
}
