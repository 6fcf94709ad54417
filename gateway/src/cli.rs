//! The `kvgate` command line: what each subcommand takes and which of them are admin
//! commands (those a running server also takes over its control socket, see
//! [`crate::control`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::admin::{self, ConfigArg, MemberCommand, SenderCommand, TrackArgs, TrustCommand};
use crate::input_file::InputFile;
use crate::lifecycle::{self, LifecycleCommand};
use crate::quarantine::{self, QuarantineCommand};
use crate::queue::{self, QueueCommand};
use crate::runtime::Installation;
use crate::{init, serve, verify};

/// kvgate: a secure mail gateway from S/MIME practice mail to members' OpenPGP inboxes.
#[derive(Parser)]
#[command(name = "kvgate", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
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
    /// An admin command.
    #[command(flatten)]
    Admin(AdminCommand),
}

/// The admin commands: they work on the store, opened here when no server has it, or
/// run by the server that has it.
#[derive(Subcommand)]
pub enum AdminCommand {
    /// Manage trust anchors for sender certificates.
    Trust {
        #[command(subcommand)]
        command: TrustCommand,
    },
    /// Manage senders (practices and the insurer's back office).
    Sender {
        #[command(subcommand)]
        command: SenderCommand,
    },
    /// Manage members.
    Member {
        #[command(subcommand)]
        command: MemberCommand,
    },
    /// Print the tracking events of one submission, or check their hash chain.
    Track(TrackArgs),
    /// Inspect and steer the outbound queue (reports waiting for the relay).
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Inspect, release and drop quarantined (poison) letters.
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
    /// Apply the retention rules (membership end, long absence).
    Lifecycle {
        #[command(subcommand)]
        command: LifecycleCommand,
    },
    /// Decrypt and verify a letter file as the pipeline does, as of a given instant;
    /// prints the verdict and exits 1 if the letter is refused.
    Verify(verify::VerifyArgs),
}

impl AdminCommand {
    /// The configuration file it names (`--config`), if any.
    pub fn config(&self) -> Option<&Path> {
        let arg: &ConfigArg = match self {
            AdminCommand::Trust { command } => command.config(),
            AdminCommand::Sender { command } => command.config(),
            AdminCommand::Member { command } => command.config(),
            AdminCommand::Track(args) => &args.config,
            AdminCommand::Queue { command } => command.config(),
            AdminCommand::Quarantine { command } => command.config(),
            AdminCommand::Lifecycle { command } => command.config(),
            AdminCommand::Verify(args) => return args.config.as_deref(),
        };
        arg.path()
    }

    /// Its name (the first word after `kvgate`), for the log.
    pub fn name(&self) -> &'static str {
        match self {
            AdminCommand::Trust { .. } => "trust",
            AdminCommand::Sender { .. } => "sender",
            AdminCommand::Member { .. } => "member",
            AdminCommand::Track(_) => "track",
            AdminCommand::Queue { .. } => "queue",
            AdminCommand::Quarantine { .. } => "quarantine",
            AdminCommand::Lifecycle { .. } => "lifecycle",
            AdminCommand::Verify(_) => "verify",
        }
    }

    /// Whether it needs the installation (a `verify` given its keys and trust does not).
    pub fn needs_installation(&self) -> bool {
        match self {
            AdminCommand::Verify(args) => args.certs.is_empty() || args.trust.is_empty(),
            _ => true,
        }
    }

    /// The files it reads, in the order of the command line.
    pub fn files(&mut self) -> Box<dyn Iterator<Item = &mut InputFile> + '_> {
        match self {
            AdminCommand::Trust { command } => Box::new(command.files()),
            AdminCommand::Sender { command } => Box::new(command.files()),
            AdminCommand::Member { command } => Box::new(command.files()),
            AdminCommand::Verify(args) => Box::new(args.files()),
            AdminCommand::Track(_)
            | AdminCommand::Queue { .. }
            | AdminCommand::Quarantine { .. }
            | AdminCommand::Lifecycle { .. } => Box::new(std::iter::empty()),
        }
    }

    /// Runs it on `installation` (which [`Self::needs_installation`] says whether it
    /// needs), printing to `out`; `Ok(false)` when it ran and its answer is no (a
    /// refused letter).
    pub fn run(
        self,
        installation: Option<&Installation>,
        out: &mut dyn Write,
    ) -> anyhow::Result<bool> {
        let installed =
            || installation.ok_or_else(|| anyhow::anyhow!("this command needs the installation"));
        match self {
            AdminCommand::Verify(args) => return verify::run(args, installation, out),
            AdminCommand::Trust { command } => admin::trust(command, installed()?, out),
            AdminCommand::Sender { command } => admin::sender(command, installed()?, out),
            AdminCommand::Member { command } => admin::member(command, installed()?, out),
            AdminCommand::Track(args) => admin::track(args, installed()?, out),
            AdminCommand::Queue { command } => queue::queue(command, installed()?, out),
            AdminCommand::Quarantine { command } => {
                quarantine::quarantine(command, installed()?, out)
            }
            AdminCommand::Lifecycle { command } => lifecycle::lifecycle(command, installed()?, out),
        }?;
        Ok(true)
    }
}
