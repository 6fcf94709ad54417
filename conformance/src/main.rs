//! `kvgate-conformance`: checks a running kvgate deployment from the outside.
//!
//! It speaks only the public protocols (SMTP, TLS) to the deployment under test and
//! uses no kvgate library but `certs`, to make test material. This first version holds
//! the transport cases; the SMTP-torture, S/MIME, receipt and API sections grow with
//! their issues.

mod cases;
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

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
    /// Run the suite against a deployment.
    Run {
        /// SMTP with STARTTLS.
        #[arg(long)]
        smtp: SocketAddr,
        /// SMTP with implicit TLS.
        #[arg(long)]
        smtps: Option<SocketAddr>,
        /// Directory with `ca.pem` (the gateway's CA) and a practice certificate the
        /// deployment trusts and has registered (`demo-practice.pem`, `.key`), as
        /// `kvgate init` writes them.
        #[arg(long)]
        pki: PathBuf,
        /// The deployment's mail domain.
        #[arg(long)]
        domain: String,
        /// The practice's registered sender address.
        #[arg(long, default_value = "praxis@demo-practice.test")]
        from: String,
        /// Run only cases whose ID starts with this prefix.
        #[arg(long)]
        only: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::List => {
            for case in cases::ALL {
                println!("{:<32} {:<6} {}", case.id, case.section, case.clause);
            }
            ExitCode::SUCCESS
        }
        Command::Run {
            smtp,
            smtps,
            pki,
            domain,
            from,
            only,
        } => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let target = match cases::Target::load(smtp, smtps, &pki, &domain, &from) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("kvgate-conformance: {e}");
                    return ExitCode::from(2);
                }
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("kvgate-conformance: cannot start the runtime: {e}");
                    return ExitCode::from(2);
                }
            };
            let (mut passed, mut failed, mut skipped) = (0, 0, 0);
            for case in cases::ALL
                .iter()
                .filter(|c| only.as_deref().is_none_or(|p| c.id.starts_with(p)))
            {
                let started = Instant::now();
                let outcome = runtime.block_on((case.run)(&target));
                let ms = started.elapsed().as_millis();
                match outcome {
                    cases::Outcome::Pass => {
                        passed += 1;
                        println!("✓ {:<32} {ms:>6} ms", case.id);
                    }
                    cases::Outcome::Skip(why) => {
                        skipped += 1;
                        println!("- {:<32} {ms:>6} ms  skipped: {why}", case.id);
                    }
                    cases::Outcome::Fail(why) => {
                        failed += 1;
                        println!("✗ {:<32} {ms:>6} ms  {why}", case.id);
                    }
                }
            }
            println!("conformance: {passed} passed, {failed} failed, {skipped} skipped");
            if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
