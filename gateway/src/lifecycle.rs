//! The retention rules (DESIGN.md, "Member facts"): after a membership ends, the
//! smarthealth inbox stays reachable one month and the Postfach three, then the data
//! is deleted; a member whose app has not used the API for twelve months is kept
//! twelve months more, then deleted. Every deletion is tracked without content.
//! Months are calendar months in UTC (an end on 31 January closes smarthealth on 28
//! or 29 February), not a fixed number of days: 730 days would delete a day early
//! across a leap day.
//!
//! `kvgate lifecycle run [--now DATE]` applies the rules once (a test or an operator
//! chooses the time); `kvgate serve` applies them at start and every hour.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use kvgate_store::{Kvnr, Retention, Store, StoreError, Timestamp, now};
use tokio::sync::watch;

use crate::admin::ConfigArg;
use crate::runtime::Installation;

/// How long after membership ends the Postfach stays, in calendar months.
pub const POSTFACH_GRACE_MONTHS: u32 = 3;
/// How long after membership ends smarthealth stays, in calendar months.
pub const SMARTHEALTH_GRACE_MONTHS: u32 = 1;
/// Without access for this many months, a member's data is only retained …
const DORMANT_MONTHS: u32 = 12;
/// … for this many months more, then deleted.
const RETAINED_MONTHS: u32 = 12;
/// How often `serve` applies the rules.
const INTERVAL: Duration = Duration::from_secs(3600);

/// What the rules call for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Delete the member's smarthealth inbox (membership ended over a month ago).
    CloseSmarthealth(Kvnr),
    /// Delete the member's whole account, for this reason.
    DeleteAccount(Kvnr, &'static str),
}

impl Action {
    /// The sentence recorded in the tracking of each deleted letter.
    fn reason(&self) -> &'static str {
        match self {
            Action::CloseSmarthealth(_) => {
                "membership ended over a month ago; smarthealth letter deleted"
            }
            Action::DeleteAccount(_, reason) => reason,
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::CloseSmarthealth(kvnr) => write!(f, "{kvnr}: smarthealth closed"),
            Action::DeleteAccount(kvnr, reason) => write!(f, "{kvnr}: account deleted ({reason})"),
        }
    }
}

/// What the rules call for at `at`, for these members.
pub fn due(members: &[Retention], at: Timestamp) -> Vec<Action> {
    let past = |since: Timestamp, months: u32| at >= since.plus_months(months);
    let mut actions = Vec::new();
    for Retention {
        member,
        last_access,
    } in members
    {
        let kvnr = member.kvnr.clone();
        if let Some(ended) = member.ended_at {
            if past(ended, POSTFACH_GRACE_MONTHS) {
                actions.push(Action::DeleteAccount(
                    kvnr,
                    "membership ended over three months ago; deleted",
                ));
                continue;
            }
            if member.smarthealth && past(ended, SMARTHEALTH_GRACE_MONTHS) {
                actions.push(Action::CloseSmarthealth(kvnr));
                continue;
            }
        }
        if past(*last_access, DORMANT_MONTHS + RETAINED_MONTHS) {
            actions.push(Action::DeleteAccount(
                member.kvnr.clone(),
                "no access for 24 months (12 without, 12 retained); deleted",
            ));
        }
    }
    actions
}

/// Applies the rules at `at`; returns what was done.
pub fn apply(store: &Store, at: Timestamp) -> Result<Vec<Action>, StoreError> {
    let actions = due(&store.retention()?, at);
    // Memberships often end together (at a quarter's end): compact once for them all.
    store.deferring_scrub(|| apply_each(store, &actions))?;
    Ok(actions)
}

/// Carries out `actions`, one after another.
fn apply_each(store: &Store, actions: &[Action]) -> Result<(), StoreError> {
    for action in actions {
        match action {
            Action::CloseSmarthealth(kvnr) => {
                store.close_smarthealth(kvnr, action.reason())?;
            }
            Action::DeleteAccount(kvnr, reason) => {
                store.delete_account(kvnr, reason)?;
            }
        }
        // The log outlives the account: it does not name the member.
        tracing::info!(reason = action.reason(), "retention rule applied");
    }
    Ok(())
}

/// Applies the rules at start and every hour until `stop` turns true.
pub async fn run(store: Arc<Store>, mut stop: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(INTERVAL);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let store = store.clone();
        match tokio::task::spawn_blocking(move || apply(&store, now())).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!(%error, "applying the retention rules failed"),
            Err(error) => tracing::error!(%error, "the retention task failed"),
        }
    }
}

/// A point in time from the command line: `YYYY-MM-DD` (midnight UTC) or RFC 3339.
pub fn parse_when(text: &str) -> anyhow::Result<Timestamp> {
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    };
    full.parse()
        .with_context(|| format!("{text:?} is not a date (YYYY-MM-DD) or an RFC 3339 time"))
}

/// `kvgate lifecycle …`
#[derive(Subcommand)]
pub enum LifecycleCommand {
    /// Apply the retention rules once and print what was deleted.
    Run {
        /// Apply them as at this time (YYYY-MM-DD or RFC 3339; default: now). A time
        /// later than now needs --dry-run or --delete-early.
        #[arg(long)]
        now: Option<String>,
        /// Print what would be done, and do nothing.
        #[arg(long)]
        dry_run: bool,
        /// With a --now later than now: delete what is due only then, data members may
        /// still use (for rehearsals on test installations).
        #[arg(long, requires = "now", conflicts_with = "dry_run")]
        delete_early: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

impl LifecycleCommand {
    /// Its `--config`.
    pub(crate) fn config(&self) -> &ConfigArg {
        let LifecycleCommand::Run { config, .. } = self;
        config
    }
}

/// Runs a `lifecycle` command.
pub fn lifecycle(
    command: LifecycleCommand,
    installation: &Installation,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let LifecycleCommand::Run {
        now: at,
        dry_run,
        delete_early,
        ..
    } = command;
    let at = match at {
        Some(text) => parse_when(&text)?,
        None => now(),
    };
    if at > now() && !dry_run && !delete_early {
        bail!(
            "--now {} is later than the current time: what is due only then would be deleted irrecoverably now, while members may still use it; add --dry-run to see what would be done, or --delete-early to do it",
            at.to_rfc3339()
        );
    }
    let actions = if dry_run {
        due(&installation.store.retention()?, at)
    } else {
        apply(&installation.store, at)?
    };
    if actions.is_empty() {
        writeln!(out, "nothing due at {}", at.to_rfc3339())?;
    }
    for action in actions {
        if dry_run {
            writeln!(out, "would be done: {action}")?;
        } else {
            writeln!(out, "{action}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use kvgate_store::Member;

    use super::*;

    fn member(ended: Option<u64>, smarthealth: bool, last_access: u64) -> Retention {
        Retention {
            member: Member {
                kvnr: Kvnr::parse("A123456780").unwrap(),
                name: "A".into(),
                smarthealth,
                app_communication: true,
                created_at: Timestamp(0),
                ended_at: ended.map(Timestamp),
                birth_date: None,
            },
            last_access: Timestamp(last_access),
        }
    }

    fn kinds(members: &[Retention], at: u64) -> Vec<&'static str> {
        due(members, Timestamp(at))
            .iter()
            .map(|a| match a {
                Action::CloseSmarthealth(_) => "close-smarthealth",
                Action::DeleteAccount(..) => "delete-account",
            })
            .collect()
    }

    #[test]
    fn the_rules_fall_due_exactly_at_their_calendar_months() {
        let at = |s: &str| s.parse::<Timestamp>().unwrap().0;
        let due_at = |members: &[Retention], s: &str| kinds(members, at(s));
        let end = at("2027-01-31T00:00:00Z");
        let ended = [member(Some(end), true, end)];
        assert!(due_at(&ended, "2027-02-27T23:59:59.999Z").is_empty());
        assert_eq!(
            due_at(&ended, "2027-02-28T00:00:00Z"),
            ["close-smarthealth"]
        );
        assert_eq!(
            due_at(&ended, "2027-04-29T23:59:59.999Z"),
            ["close-smarthealth"]
        );
        assert_eq!(due_at(&ended, "2027-04-30T00:00:00Z"), ["delete-account"]);
        // Smarthealth already closed: nothing more until the Postfach's turn.
        let closed = [member(Some(end), false, end)];
        assert!(due_at(&closed, "2027-04-29T23:59:59.999Z").is_empty());

        // 24 months after the last access, across 29 February 2028: 731 days.
        let dormant = [member(None, true, at("2027-03-01T00:00:00Z"))];
        assert!(due_at(&dormant, "2029-02-28T23:59:59.999Z").is_empty());
        assert_eq!(due_at(&dormant, "2029-03-01T00:00:00Z"), ["delete-account"]);
    }

    #[test]
    fn dates_and_times_parse() {
        assert_eq!(
            parse_when("2026-11-29").unwrap(),
            "2026-11-29T00:00:00Z".parse().unwrap()
        );
        assert!(parse_when("29.11.2026").is_err());
    }
}
