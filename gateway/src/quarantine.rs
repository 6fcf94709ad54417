//! `kvgate quarantine`: the operator's view of poison letters (see
//! [`crate::supervise`]): list, show, release (back on the pipeline's queue) and drop.
//! Works whether or not `serve` runs; a running server takes a released letter at its
//! next look at the queue (within 30 s).

use std::io::Write;

use anyhow::{Context, bail};
use clap::Subcommand;
use kvgate_store::TrackingId;

use crate::admin::{ConfigArg, print_events};
use crate::runtime::Installation;

/// Who an operator's action is recorded as.
const OPERATOR: &str = "an operator (kvgate quarantine)";

/// `kvgate quarantine …`
#[derive(Subcommand)]
pub enum QuarantineCommand {
    /// List every quarantined letter.
    List {
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show why a letter is quarantined, with its tracking history.
    Show {
        /// The tracking ID.
        tracking_id: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Put a quarantined letter back on the pipeline's queue (e.g. after an upgrade
    /// that fixes what it tripped over).
    Release {
        /// The tracking ID.
        tracking_id: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Delete a quarantined letter for good (recorded in tracking; its sender was
    /// told of the failure when it was quarantined).
    Drop {
        /// The tracking ID.
        tracking_id: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

impl QuarantineCommand {
    /// Its `--config`.
    pub(crate) fn config(&self) -> &ConfigArg {
        match self {
            QuarantineCommand::List { config, .. }
            | QuarantineCommand::Show { config, .. }
            | QuarantineCommand::Release { config, .. }
            | QuarantineCommand::Drop { config, .. } => config,
        }
    }
}

/// Runs a `quarantine` command.
pub fn quarantine(
    command: QuarantineCommand,
    installation: &Installation,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let store = &installation.store;
    match command {
        QuarantineCommand::List { json, .. } => {
            let entries = store.quarantined()?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&entries)?)?;
                return Ok(());
            }
            if entries.is_empty() {
                writeln!(out, "the quarantine is empty")?;
            }
            for e in entries {
                writeln!(
                    out,
                    "{}  [{}]  since {}  attempts {}  {}",
                    e.tracking_id,
                    e.reason,
                    e.at.to_rfc3339(),
                    e.attempts,
                    e.detail
                )?;
            }
            Ok(())
        }
        QuarantineCommand::Show { tracking_id, .. } => {
            let id = parse(&tracking_id)?;
            let entry = store
                .quarantined()?
                .into_iter()
                .find(|e| e.tracking_id == id)
                .with_context(|| format!("{id} is not quarantined"))?;
            let submission = store
                .submission(&id)?
                .with_context(|| format!("no submission {id}"))?;
            writeln!(
                out,
                "tracking {id}: quarantined {} [{}] after {} attempt(s): {}",
                entry.at.to_rfc3339(),
                entry.reason,
                entry.attempts,
                entry.detail
            )?;
            writeln!(
                out,
                "from {} (sender {}), {} octets, received {}",
                submission.mail_from,
                submission.sender_id,
                submission.size,
                submission.received_at.to_rfc3339()
            )?;
            print_events(&store.events(&id)?, out)?;
            Ok(())
        }
        QuarantineCommand::Release { tracking_id, .. } => {
            let id = parse(&tracking_id)?;
            if !store.release(&id, OPERATOR)? {
                bail!("{id} is not quarantined");
            }
            writeln!(out, "released {id}: back on the queue")?;
            Ok(())
        }
        QuarantineCommand::Drop { tracking_id, .. } => {
            let id = parse(&tracking_id)?;
            if !store.drop_quarantined(&id, OPERATOR)? {
                bail!("{id} is not quarantined");
            }
            writeln!(out, "dropped {id}: the letter is deleted")?;
            Ok(())
        }
    }
}

fn parse(id: &str) -> anyhow::Result<TrackingId> {
    id.parse()
        .with_context(|| format!("{id:?} is not a tracking ID"))
}
