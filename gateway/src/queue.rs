//! `kvgate queue`: the operator's view of the outbound queue (reports waiting for the
//! relay), with retry now and drop. Works whether or not `serve` runs; a running
//! server sees a retried entry at its next look (within 30 s).

use std::io::Write;

use anyhow::{Context, bail};
use clap::Subcommand;
use kvgate_store::{Event, EventKind, OutboundId, QueueRequest, now};

use crate::admin::ConfigArg;
use crate::runtime::Installation;

/// `kvgate queue …`
#[derive(Subcommand)]
pub enum QueueCommand {
    /// List every queued outbound message.
    List {
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Make a queued message due now.
    Retry {
        /// The outbound ID from `kvgate queue list`.
        id: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Remove a queued message without sending it (recorded in tracking).
    Drop {
        /// The outbound ID from `kvgate queue list`.
        id: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

impl QueueCommand {
    /// Its `--config`.
    pub(crate) fn config(&self) -> &ConfigArg {
        match self {
            QueueCommand::List { config, .. }
            | QueueCommand::Retry { config, .. }
            | QueueCommand::Drop { config, .. } => config,
        }
    }
}

/// Runs a `queue` command.
pub fn queue(
    command: QueueCommand,
    installation: &Installation,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let store = &installation.store;
    match command {
        QueueCommand::List { json, .. } => {
            let entries = store.outbound()?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&entries)?)?;
                return Ok(());
            }
            if entries.is_empty() {
                writeln!(out, "the outbound queue is empty")?;
            }
            for e in entries {
                writeln!(
                    out,
                    "{}  {:<4} tracking {}  to <{}>  queued {}  attempts {}  next {}{}",
                    e.id,
                    e.purpose,
                    e.tracking_id,
                    e.rcpt_to,
                    e.created_at.to_rfc3339(),
                    e.attempts,
                    e.next_attempt_at.to_rfc3339(),
                    e.last_error
                        .map(|m| format!("  last error: {m}"))
                        .unwrap_or_default()
                )?;
            }
            Ok(())
        }
        QueueCommand::Retry { id, .. } => {
            let id = parse(&id)?;
            match store.retry_outbound(&id, now())? {
                QueueRequest::Done => writeln!(out, "{id} is due now")?,
                QueueRequest::AtAttemptEnd => writeln!(
                    out,
                    "{id} is being handed to the relay right now; should this attempt fail, the next is made at once"
                )?,
                QueueRequest::NotQueued => bail!("no queued outbound message {id}"),
            }
            Ok(())
        }
        QueueCommand::Drop { id, .. } => {
            let id = parse(&id)?;
            let entry = store
                .outbound_entry(&id)?
                .with_context(|| format!("no queued outbound message {id}"))?;
            let event = Event::new(EventKind::Failed)
                .recipient(&entry.rcpt_to)
                .reason("dropped-by-operator")
                .detail(format!(
                    "the {} was removed from the queue by an operator",
                    entry.purpose
                ));
            match store.drop_outbound(&id, event)? {
                QueueRequest::Done => writeln!(out, "dropped {id}")?,
                QueueRequest::AtAttemptEnd => writeln!(
                    out,
                    "{id} is being handed to the relay right now: it is dropped when this attempt ends, unless the relay accepts it (kvgate track {} says which)",
                    entry.tracking_id
                )?,
                QueueRequest::NotQueued => bail!("{id} left the queue meanwhile"),
            }
            Ok(())
        }
    }
}

fn parse(id: &str) -> anyhow::Result<OutboundId> {
    id.parse()
        .with_context(|| format!("{id:?} is not an outbound ID"))
}
