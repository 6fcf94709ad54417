//! The `kvgate` command: serve, initialise, administer, demonstrate.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kvgate::{admin, demo, init, lifecycle, quarantine, queue, serve, verify};

/// kvgate: a secure mail gateway from S/MIME practice mail to members' OpenPGP inboxes.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a configuration and a development PKI, and register a demo practice and member.
    Init {
        /// The data directory to create.
        #[arg(long, default_value = init::DEFAULT_DIR)]
        dir: PathBuf,
    },
    /// Run the SMTP listeners, the pipeline and the member API.
    Serve(serve::ServeArgs),
    /// Run one letter end to end on a throw-away gateway and print its tracking trail.
    Demo,
    /// Manage trust anchors for sender certificates.
    Trust {
        #[command(subcommand)]
        command: admin::TrustCommand,
    },
    /// Manage senders (practices and the insurer's back office).
    Sender {
        #[command(subcommand)]
        command: admin::SenderCommand,
    },
    /// Manage members.
    Member {
        #[command(subcommand)]
        command: admin::MemberCommand,
    },
    /// Print the tracking events of one submission, or check their hash chain.
    Track(admin::TrackArgs),
    /// Inspect and steer the outbound queue (reports waiting for the relay).
    Queue {
        #[command(subcommand)]
        command: queue::QueueCommand,
    },
    /// Inspect, release and drop quarantined (poison) letters.
    Quarantine {
        #[command(subcommand)]
        command: quarantine::QuarantineCommand,
    },
    /// Apply the retention rules (membership end, long absence).
    Lifecycle {
        #[command(subcommand)]
        command: lifecycle::LifecycleCommand,
    },
    /// Decrypt and verify a letter file as the pipeline does, as of a given instant;
    /// prints the verdict and exits 1 if the letter is refused.
    Verify(verify::VerifyArgs),
}

fn main() -> ExitCode {
    kvgate::logging::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init { dir } => init::run(&dir).map(|outcome| println!("{outcome}")),
        Command::Serve(args) => serve::run(args),
        Command::Demo => demo::run(),
        Command::Trust { command } => admin::trust(command),
        Command::Sender { command } => admin::sender(command),
        Command::Member { command } => admin::member(command),
        Command::Track(args) => admin::track(args),
        Command::Queue { command } => queue::queue(command),
        Command::Quarantine { command } => quarantine::quarantine(command),
        Command::Lifecycle { command } => lifecycle::lifecycle(command),
        Command::Verify(args) => match verify::run(args) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE,
            Err(error) => Err(error),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kvgate: {error:#}");
            ExitCode::FAILURE
        }
    }
}
