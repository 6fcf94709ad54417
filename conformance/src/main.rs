//! `kvgate-conformance`: checks a running kvgate deployment from the outside.
//!
//! It speaks only the public protocols (SMTP, TLS, HTTPS) to the deployment under
//! test and uses no kvgate library but `certs`, to make test material.

mod cases;
mod delivery;
mod endpoint;
mod https;
mod kvnr;
mod letter;
mod manifest;
mod pki;
mod relay;
mod report;
mod signed;
mod target;
mod wire;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Black-box conformance suite for kvgate deployments.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every case with its ID, section and the clause it checks.
    List,
    /// Prepare a PKI directory for a deployment and print the `kvgate` admin
    /// commands that register it.
    Pki {
        /// The directory to create.
        #[arg(long)]
        out: PathBuf,
        /// The deployment's kvgate.toml (read for the domain and the gateway's
        /// certificates only).
        #[arg(long = "for")]
        config: PathBuf,
        /// The CA of the gateway's TLS certificate, if neither the certificate file
        /// nor the configured trust anchors hold it.
        #[arg(long)]
        server_ca: Option<PathBuf>,
        /// How to spell the kvgate binary in the printed commands.
        #[arg(long, default_value = "kvgate")]
        kvgate: String,
    },
    /// Run the suite against a deployment.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// SMTP with STARTTLS, HOST:PORT.
    #[arg(long)]
    smtp: String,
    /// SMTP with implicit TLS, HOST:PORT.
    #[arg(long)]
    smtps: Option<String>,
    /// The member API, https://HOST:PORT.
    #[arg(long)]
    api: String,
    /// The PKI directory made by `kvgate-conformance pki`.
    #[arg(long)]
    pki: PathBuf,
    /// The deployment's mail domain (default: the one in the PKI directory).
    #[arg(long)]
    domain: Option<String>,
    /// Run an SMTP receiver here for the receipts the gateway sends (configure it as
    /// the gateway's outbound relay, without TLS).
    #[arg(long)]
    relay_listen: Option<std::net::SocketAddr>,
    /// The name the gateway's TLS certificate must carry (default: the host as given).
    #[arg(long)]
    tls_name: Option<String>,
    /// Run only cases whose ID matches one of these globs (`*`, `?`).
    #[arg(long)]
    only: Vec<String>,
    /// Leave out cases whose ID matches one of these globs.
    #[arg(long)]
    skip: Vec<String>,
    /// Write JUnit XML here.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::List => {
            let width = cases::all().map(|c| c.id.len()).max().unwrap_or(0);
            for case in cases::all() {
                println!("{:<width$}  {:<9} {}", case.id, case.section, case.clause);
            }
            ExitCode::SUCCESS
        }
        Command::Pki {
            out,
            config,
            server_ca,
            kvgate,
        } => {
            let options = pki::Options {
                out: &out,
                config: &config,
                server_ca: server_ca.as_deref(),
                kvgate: &kvgate,
            };
            match pki::prepare(&options) {
                Ok(commands) => {
                    print!("{commands}");
                    ExitCode::SUCCESS
                }
                Err(e) => fatal(&e),
            }
        }
        Command::Run(args) => run(&args),
    }
}

fn fatal(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("kvgate-conformance: {e}");
    ExitCode::from(2)
}

fn run(args: &RunArgs) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let selected: Vec<&'static cases::Case> = cases::all()
        .filter(|c| args.only.is_empty() || args.only.iter().any(|g| cases::glob(g, c.id)))
        .filter(|c| !args.skip.iter().any(|g| cases::glob(g, c.id)))
        .collect();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fatal(&format!("cannot start the runtime: {e}")),
    };
    let results = runtime.block_on(async {
        let listeners = target::Listeners {
            smtp: &args.smtp,
            smtps: args.smtps.as_deref(),
            api: &args.api,
            tls_name: args.tls_name.as_deref(),
            relay_listen: args.relay_listen,
        };
        let target = target::Target::load(listeners, &args.pki, args.domain.as_deref())
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(report::run(&selected, &target).await)
    });
    let results = match results {
        Ok(r) => r,
        Err(e) => return fatal(&e),
    };
    print!("{}", report::summary(&results));
    let writes = [
        (&args.junit, report::junit(&results)),
        (
            &args.json,
            serde_json::to_string_pretty(&report::json(&results)).unwrap_or_default(),
        ),
    ];
    for (path, text) in writes {
        if let Some(path) = path
            && let Err(e) = std::fs::write(path, text)
        {
            return fatal(&format!("writing {}: {e}", path.display()));
        }
    }
    if report::any_failed(&results) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
