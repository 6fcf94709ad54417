//! The admin commands for trust anchors, senders, members and tracking (the command
//! line is in [`crate::cli`]; where they run, in [`crate::control`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use kvgate_certs::{openpgp, x509};
use kvgate_store::{
    BirthDate, Event, Kvnr, NewMember, SMARTHEALTH_MIN_AGE, SenderKind, StoreError, TrackingId, now,
};

use crate::input_file::InputFile;
use crate::lifecycle::{POSTFACH_GRACE_MONTHS, SMARTHEALTH_GRACE_MONTHS};
use crate::runtime::Installation;

/// Which configuration to use.
#[derive(Args)]
pub struct ConfigArg {
    /// The configuration file (default: ./kvgate-data/kvgate.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
}

impl ConfigArg {
    /// The configuration file given, if one was.
    pub fn path(&self) -> Option<&Path> {
        self.config.as_deref()
    }
}

/// `kvgate trust …`
#[derive(Subcommand)]
pub enum TrustCommand {
    /// Trust a CA certificate (PEM; every certificate in the file) for sender certificates.
    Add {
        /// The PEM file.
        file: InputFile,
        #[command(flatten)]
        config: ConfigArg,
    },
}

impl TrustCommand {
    /// Its `--config`.
    pub(crate) fn config(&self) -> &ConfigArg {
        let TrustCommand::Add { config, .. } = self;
        config
    }

    /// The files it reads.
    pub(crate) fn files(&mut self) -> impl Iterator<Item = &mut InputFile> {
        let TrustCommand::Add { file, .. } = self;
        std::iter::once(file)
    }
}

/// `kvgate sender …`
#[derive(Subcommand)]
pub enum SenderCommand {
    /// Register a sender, or add a certificate (and address) to one. Repeat with the same
    /// ID for the sender's TLS and S/MIME certificates.
    Add {
        /// The sender's ID.
        #[arg(long)]
        id: String,
        /// A certificate of the sender (PEM).
        #[arg(long)]
        cert: InputFile,
        /// An address the sender may use in MAIL FROM and From.
        #[arg(long)]
        from: Option<String>,
        /// What kind of sender this is.
        #[arg(long, value_enum, default_value_t = Kind::Practice)]
        kind: Kind,
        #[command(flatten)]
        config: ConfigArg,
    },
}

impl SenderCommand {
    /// Its `--config`.
    pub(crate) fn config(&self) -> &ConfigArg {
        let SenderCommand::Add { config, .. } = self;
        config
    }

    /// The files it reads.
    pub(crate) fn files(&mut self) -> impl Iterator<Item = &mut InputFile> {
        let SenderCommand::Add { cert, .. } = self;
        std::iter::once(cert)
    }
}

/// Kinds of sender, as typed on the command line.
#[derive(Clone, Copy, ValueEnum)]
pub enum Kind {
    /// A physician's practice.
    Practice,
    /// The insurer's back office.
    Insurer,
}

/// `kvgate member add …`
#[derive(Args)]
pub struct AddMember {
    /// The member's KVNR.
    #[arg(long)]
    kvnr: String,
    /// The member's name.
    #[arg(long)]
    name: String,
    /// An OpenPGP public key (armored) letters are encrypted to.
    #[arg(long)]
    key: Option<InputFile>,
    /// Activate smarthealth.
    #[arg(long)]
    smarthealth: bool,
    /// Turn on app communication (Postfach letters from the insurer).
    #[arg(long)]
    app_communication: bool,
    /// The member's date of birth, YYYY-MM-DD (smarthealth needs 18 or over).
    #[arg(long)]
    birth_date: Option<BirthDate>,
    #[command(flatten)]
    config: ConfigArg,
}

/// `kvgate member …`
#[derive(Subcommand)]
pub enum MemberCommand {
    /// Register a member and print an enrolment code for the first device.
    Add(AddMember),
    /// Record the day a membership ended: the Postfach stays 3 months, smarthealth 1
    /// month, then `kvgate lifecycle run` (and `serve`, hourly) deletes the data.
    End {
        /// The member's KVNR.
        kvnr: String,
        /// When it ended: YYYY-MM-DD (midnight UTC) or RFC 3339.
        #[arg(long)]
        date: String,
        /// Confirm a date so long ago that data is due for deletion at once (the next
        /// retention run, within the hour while `serve` runs, deletes it irrecoverably).
        #[arg(long)]
        confirm_deletion: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print a new single-use enrolment code for a registered member's next device
    /// (a device change needs one: the member is identified again).
    Code {
        /// The member's KVNR.
        #[arg(long)]
        kvnr: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

impl MemberCommand {
    /// Its `--config`.
    pub(crate) fn config(&self) -> &ConfigArg {
        match self {
            MemberCommand::Add(add) => &add.config,
            MemberCommand::End { config, .. } | MemberCommand::Code { config, .. } => config,
        }
    }

    /// The files it reads.
    pub(crate) fn files(&mut self) -> impl Iterator<Item = &mut InputFile> {
        match self {
            MemberCommand::Add(add) => add.key.as_mut(),
            MemberCommand::End { .. } | MemberCommand::Code { .. } => None,
        }
        .into_iter()
    }
}

/// `kvgate track …`
#[derive(Args)]
pub struct TrackArgs {
    /// The tracking ID from the SMTP reply.
    tracking_id: String,
    /// Print JSON instead of lines.
    #[arg(long)]
    json: bool,
    /// Check the hash chain of the history instead of printing it: exit 0 only if no
    /// event was changed, removed or reordered.
    #[arg(long, conflicts_with = "json")]
    verify: bool,
    #[command(flatten)]
    pub(crate) config: ConfigArg,
}

/// Runs a `trust` command.
pub fn trust(
    command: TrustCommand,
    installation: &Installation,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let TrustCommand::Add { file, .. } = command;
    let pem = file.read()?;
    let certs = x509::parse_pem_chain(&pem)?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", file.path().display());
    }
    for cert in &certs {
        let fingerprint = x509::fingerprint(cert)?;
        let pem = String::from_utf8(cert.to_pem()?)?;
        let added = installation.store.add_trust_anchor(&fingerprint, &pem)?;
        let subject = x509::subject_line(cert);
        if added {
            writeln!(out, "trusted {subject} (sha256 {fingerprint})")?;
        } else {
            writeln!(out, "already trusted: {subject} (sha256 {fingerprint})")?;
        }
    }
    Ok(())
}

/// Runs a `sender` command.
pub fn sender(
    command: SenderCommand,
    installation: &Installation,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let SenderCommand::Add {
        id,
        cert,
        from,
        kind,
        ..
    } = command;
    let pem = cert.read()?;
    let chain = x509::parse_pem_chain(&pem)?;
    let leaf = chain
        .first()
        .with_context(|| format!("{} holds no PEM certificate", cert.path().display()))?;
    if let Some(address) = &from
        && (!address.contains('@') || address.contains(['<', '>', ' ']))
    {
        bail!("{address:?} is not a mail address");
    }
    let kind = match kind {
        Kind::Practice => SenderKind::Practice,
        Kind::Insurer => SenderKind::Insurer,
    };
    let fingerprint = x509::fingerprint(leaf)?;
    let sender =
        installation
            .store
            .add_sender_certificate(&id, kind, &fingerprint, from.as_deref())?;
    writeln!(
        out,
        "sender {} ({}): {} certificate(s), addresses {}",
        sender.id,
        match sender.kind {
            SenderKind::Practice => "practice",
            SenderKind::Insurer => "insurer",
        },
        sender.certificates.len(),
        sender.addresses.join(", ")
    )?;
    Ok(())
}

/// Runs a `member` command.
pub fn member(
    command: MemberCommand,
    installation: &Installation,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let AddMember {
        kvnr,
        name,
        key,
        smarthealth,
        app_communication,
        birth_date,
        ..
    } = match command {
        MemberCommand::Add(add) => add,
        MemberCommand::Code { kvnr, .. } => return enrollment_code(&kvnr, installation, out),
        MemberCommand::End {
            kvnr,
            date,
            confirm_deletion,
            ..
        } => {
            return end_membership(&kvnr, &date, confirm_deletion, installation, out);
        }
    };
    let kvnr = Kvnr::parse(&kvnr).with_context(|| format!("{kvnr:?} is not a valid KVNR"))?;
    if smarthealth && birth_date.is_none_or(|born| born.age_at(now()) < SMARTHEALTH_MIN_AGE) {
        anyhow::bail!(
            "--smarthealth needs the --birth-date of a member aged {SMARTHEALTH_MIN_AGE} or over: smarthealth is for adults, and nobody opens it for someone else"
        );
    }
    let key = match key {
        Some(file) => {
            let key = openpgp::parse_public_key(&file.read()?).with_context(|| {
                format!("{} is not a usable OpenPGP key", file.path().display())
            })?;
            Some((key.fingerprint, key.armored))
        }
        None => None,
    };
    let code = installation.store.add_member(
        NewMember {
            kvnr: kvnr.clone(),
            name,
            smarthealth,
            app_communication,
            birth_date,
        },
        key,
    )?;
    writeln!(out, "member {kvnr} registered")?;
    writeln!(out, "enrollment-code: {code}")?;
    Ok(())
}

/// Runs `member end`: records the day the membership ended.
fn end_membership(
    kvnr: &str,
    date: &str,
    confirmed: bool,
    installation: &Installation,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let kvnr = Kvnr::parse(kvnr).with_context(|| format!("{kvnr:?} is not a valid KVNR"))?;
    let at = crate::lifecycle::parse_when(date)?;
    let Some(member) = installation.store.member(&kvnr)? else {
        bail!("no member {kvnr} is registered");
    };
    let smarthealth_until = at.plus_months(SMARTHEALTH_GRACE_MONTHS);
    let account_until = at.plus_months(POSTFACH_GRACE_MONTHS);
    let today = now();
    let due = if account_until <= today {
        Some("the whole account")
    } else if member.smarthealth && smarthealth_until <= today {
        Some("the smarthealth inbox")
    } else {
        None
    };
    if let Some(what) = due
        && !confirmed
    {
        bail!(
            "a membership ended {} is past its grace period: the next retention run (within the hour while serve runs) deletes {what} of {kvnr} irrecoverably; add --confirm-deletion if that is meant",
            at.to_rfc3339()
        );
    }
    if installation.store.end_membership(&kvnr, at)?.is_none() {
        bail!("no member {kvnr} is registered");
    }
    writeln!(out, "membership of {kvnr} ended {}", at.to_rfc3339())?;
    if member.smarthealth {
        writeln!(out, "smarthealth closes {}", smarthealth_until.to_rfc3339())?;
    }
    writeln!(out, "the account is deleted {}", account_until.to_rfc3339())?;
    Ok(())
}

/// Runs `member code`: a new enrolment code for an existing member.
fn enrollment_code(
    kvnr: &str,
    installation: &Installation,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let kvnr = Kvnr::parse(kvnr).with_context(|| format!("{kvnr:?} is not a valid KVNR"))?;
    let code = match installation.store.add_enrollment_code(&kvnr) {
        Err(StoreError::NotFound(_)) => bail!("no member {kvnr} is registered"),
        other => other?,
    };
    writeln!(out, "enrollment-code: {code}")?;
    Ok(())
}

/// Runs `track`.
pub fn track(
    args: TrackArgs,
    installation: &Installation,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let id: TrackingId = args
        .tracking_id
        .parse()
        .with_context(|| format!("{:?} is not a tracking ID", args.tracking_id))?;
    // A member's upload has a history but no SMTP submission.
    let submission = installation.store.submission(&id)?;
    let events = installation.store.events(&id)?;
    if submission.is_none() && events.is_empty() {
        bail!("no submission with tracking ID {id}");
    }
    if args.verify {
        return match kvgate_store::verify_chain(&events) {
            Ok(()) => {
                let head = events.last().map_or("", |e| e.hash.as_str());
                writeln!(
                    out,
                    "tracking {id}: {} events, hash chain intact (head {head})",
                    events.len()
                )?;
                Ok(())
            }
            Err(broken) => bail!(
                "tracking {id}: the history was altered at event {}: {}",
                broken.seq,
                broken.problem
            ),
        };
    }
    if args.json {
        let value = serde_json::json!({ "submission": submission, "events": events });
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(());
    }
    match &submission {
        Some(submission) => writeln!(
            out,
            "tracking {id}: from {} (sender {}), {} octets, received {}",
            submission.mail_from,
            submission.sender_id,
            submission.size,
            submission.received_at.to_rfc3339()
        ),
        None => writeln!(out, "tracking {id}: a member's upload from the app"),
    }?;
    print_events(&events, out)?;
    Ok(())
}

/// Prints tracking events, one line each.
pub(crate) fn print_events(events: &[Event], out: &mut dyn Write) -> std::io::Result<()> {
    for event in events {
        let mut line = format!("{}  {:<11}", event.at.to_rfc3339(), event.kind.as_str());
        if let Some(recipient) = &event.recipient {
            line.push_str(&format!("  {recipient}"));
        }
        if let Some(reason) = &event.reason {
            line.push_str(&format!("  [{reason}]"));
        }
        if let Some(detail) = &event.detail {
            line.push_str(&format!("  {detail}"));
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}
