//! Which of a member's inboxes a letter goes to, and whether that inbox takes it now.
//!
//! An address names the inbox (`<KVNR>@postfach.<domain>`, `<KVNR>@smarthealth.<domain>`)
//! and is checked at `RCPT`; or it names none (`<KVNR>@<domain>`), and the pipeline
//! decides the inbox once the letter is verified ([`decide`]) and checks it then. Both
//! use the same rules and the same refusals ([`Closed`]), so a sender hears the same
//! reason and status either way: at `RCPT` as the SMTP reply, later in a failure DSN.

use kvgate_connectors::smtp::Reply;
use kvgate_store::{Kvnr, Mailbox, Member, QuotaRefusal, SenderKind, Store, StoreError, now};

use crate::lifecycle::{POSTFACH_GRACE_MONTHS, SMARTHEALTH_GRACE_MONTHS};

/// The KIM applications (first field of `X-KIM-Dienstkennung`) that are a physician's
/// letter to the patient and so belong in smarthealth (see README.md, "Inbox by
/// Dienstkennung").
const PHYSICIAN_SERVICES: [&str; 1] = ["Arztbrief"];

/// Why a member's inbox does not take a letter. The sentence is the `Display`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Closed {
    /// No member has this KVNR.
    #[error("no member with KVNR {0}")]
    NoMember(Kvnr),
    /// The membership ended longer ago than this inbox's grace period.
    #[error("the membership of {0} has ended and its {1} is closed")]
    Ended(Kvnr, Mailbox),
    /// A practice named the Postfach.
    #[error("only the insurer writes to the Postfach; practices send to smarthealth")]
    PostfachInsurerOnly,
    /// The member has not turned on app communication.
    #[error("member {0} has not turned on app communication; deliver by post")]
    NoAppCommunication(Kvnr),
    /// The member has not activated smarthealth.
    #[error("member {0} has not activated smarthealth")]
    SmarthealthInactive(Kvnr),
    /// The letter does not fit the member's smarthealth storage.
    #[error("the smarthealth storage of member {0} is full; the member is told in the app")]
    QuotaFull(Kvnr),
    /// The `sent` mailbox is filled by the member's own app only.
    #[error("a member's sent mailbox takes no mail")]
    Sent,
    /// The address named no inbox and the letter does not say which one it is for.
    #[error(
        "the address <{kvnr}@{domain}> names no inbox and {why}; name one: {kvnr}@smarthealth.{domain} or {kvnr}@postfach.{domain}"
    )]
    Undetermined {
        /// The member.
        kvnr: Kvnr,
        /// The gateway's mail domain.
        domain: String,
        /// Why the letter decides nothing.
        why: String,
    },
}

impl Closed {
    /// The stable reason code (tracking events, DSNs).
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Closed::NoMember(_) => "member-unknown",
            Closed::Ended(..) => "membership-ended",
            Closed::PostfachInsurerOnly => "postfach-insurer-only",
            Closed::NoAppCommunication(_) => "app-communication-off",
            Closed::SmarthealthInactive(_) => "smarthealth-inactive",
            Closed::QuotaFull(_) => "quota-full",
            Closed::Sent => "sent-mailbox",
            Closed::Undetermined { .. } => "inbox-undetermined",
        }
    }

    /// The SMTP reply code and the enhanced status (RFC 3463), also as text for a DSN.
    /// `inbox-undetermined` is 5.1.0 ("other address status"): the member exists
    /// (not 5.1.1) and the address is well formed (not 5.1.3), but the address alone
    /// does not say which mailbox it is, which is what X.1.0 covers.
    fn status(&self) -> (u16, (u8, u16, u16), &'static str) {
        match self {
            Closed::NoMember(_)
            | Closed::Ended(..)
            | Closed::SmarthealthInactive(_)
            | Closed::Sent => (550, (5, 1, 1), "5.1.1"),
            Closed::PostfachInsurerOnly | Closed::NoAppCommunication(_) => {
                (550, (5, 7, 1), "5.7.1")
            }
            Closed::QuotaFull(_) => (552, (5, 2, 2), "5.2.2"),
            Closed::Undetermined { .. } => (550, (5, 1, 0), "5.1.0"),
        }
    }

    /// The enhanced status a DSN reports.
    pub(crate) fn enhanced(&self) -> &'static str {
        self.status().2
    }

    /// The SMTP reply refusing the recipient.
    pub(crate) fn reply(&self) -> Reply {
        let (code, status, _) = self.status();
        Reply::new(code, status, self.to_string())
    }
}

/// Whether `member`'s `mailbox` takes a letter from a sender of `kind` now.
pub(crate) fn admit(kind: SenderKind, member: &Member, mailbox: Mailbox) -> Result<(), Closed> {
    let kvnr = &member.kvnr;
    let grace = match mailbox {
        Mailbox::Postfach => POSTFACH_GRACE_MONTHS,
        Mailbox::Smarthealth => SMARTHEALTH_GRACE_MONTHS,
        Mailbox::Sent => return Err(Closed::Sent),
    };
    if let Some(ended) = member.ended_at
        && now() >= ended.plus_months(grace)
    {
        return Err(Closed::Ended(kvnr.clone(), mailbox));
    }
    match mailbox {
        Mailbox::Postfach if kind != SenderKind::Insurer => Err(Closed::PostfachInsurerOnly),
        Mailbox::Postfach if !member.app_communication => {
            Err(Closed::NoAppCommunication(kvnr.clone()))
        }
        Mailbox::Smarthealth if !member.smarthealth => {
            Err(Closed::SmarthealthInactive(kvnr.clone()))
        }
        _ => Ok(()),
    }
}

/// Whether a letter of `size` octets from `sender_id` still fits the smarthealth inbox
/// of `kvnr`: what is stored plus the letter may reach `quota` exactly. A refusal is
/// recorded for the member's app to show.
pub(crate) fn fits_quota(
    store: &Store,
    quota: u64,
    sender_id: &str,
    kvnr: &Kvnr,
    size: u64,
) -> Result<Result<(), Closed>, StoreError> {
    let used = store.smarthealth_used(kvnr)?;
    match over_quota(quota, sender_id, size, used) {
        None => Ok(Ok(())),
        Some(refusal) => refuse_over_quota(store, kvnr, refusal).map(Err),
    }
}

/// The refusal to record where a letter of `size` octets from `sender_id` does not
/// fit a smarthealth inbox that holds `used` of its `quota` octets; `None` where it
/// fits (what is stored plus the letter may reach the quota exactly).
pub(crate) fn over_quota(
    quota: u64,
    sender_id: &str,
    size: u64,
    used: u64,
) -> Option<QuotaRefusal> {
    (used.saturating_add(size) > quota).then(|| QuotaRefusal {
        at: now(),
        sender_id: sender_id.to_owned(),
        size,
        used,
        quota,
    })
}

/// Records `refusal` for the member's app to show (in one commit), and says why the
/// letter was refused.
pub(crate) fn refuse_over_quota(
    store: &Store,
    kvnr: &Kvnr,
    refusal: QuotaRefusal,
) -> Result<Closed, StoreError> {
    store.record_quota_refusal(kvnr, refusal)?;
    Ok(Closed::QuotaFull(kvnr.clone()))
}

/// The inbox for a letter to `<kvnr>@<domain>`, an address that named none, and why: the insurer's back
/// office writes to the Postfach; a practice's letter goes to smarthealth when its
/// `X-KIM-Dienstkennung` is a physician's service (see [`PHYSICIAN_SERVICES`]).
/// Anything else is refused rather than guessed.
pub(crate) fn decide(
    (kvnr, domain): (&Kvnr, &str),
    kind: SenderKind,
    dienstkennung: Option<&str>,
) -> Result<(Mailbox, String), Closed> {
    if kind == SenderKind::Insurer {
        return Ok((
            Mailbox::Postfach,
            "the address named no inbox; the letter is from the insurer's back office".to_owned(),
        ));
    }
    let undetermined = |why: String| Closed::Undetermined {
        kvnr: kvnr.clone(),
        domain: domain.to_owned(),
        why,
    };
    let Some(service) = dienstkennung else {
        return Err(undetermined(
            "the letter carries no X-KIM-Dienstkennung".to_owned(),
        ));
    };
    let application = service.split(';').next().unwrap_or_default().trim();
    if PHYSICIAN_SERVICES.contains(&application) {
        Ok((
            Mailbox::Smarthealth,
            format!(
                "the address named no inbox; X-KIM-Dienstkennung {service} is a physician's letter"
            ),
        ))
    } else {
        Err(undetermined(format!(
            "X-KIM-Dienstkennung {service} is not a service for a member's inbox"
        )))
    }
}

/// The inbox a mail domain names at the gateway of `gateway_domain` (both lowercase):
/// `Some(Some(inbox))` for `<inbox>.<domain>`, `Some(None)` for the gateway's domain
/// itself (no inbox named), `None` for a domain this gateway does not serve.
pub(crate) fn inbox_of(gateway_domain: &str, domain: &str) -> Option<Option<Mailbox>> {
    if domain == gateway_domain {
        return Some(None);
    }
    Mailbox::INBOUND
        .into_iter()
        .find(|m| domain == format!("{m}.{gateway_domain}"))
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn physician_services_go_to_smarthealth_and_others_are_refused() {
        let member = Kvnr::parse("X110411319").unwrap();
        let to = (&member, "kvgate.test");
        let (inbox, why) = decide(
            to,
            SenderKind::Practice,
            Some("Arztbrief;Entlassbrief;V1.0"),
        )
        .unwrap();
        assert_eq!(inbox, Mailbox::Smarthealth);
        assert_eq!(
            why,
            "the address named no inbox; X-KIM-Dienstkennung Arztbrief;Entlassbrief;V1.0 is a physician's letter"
        );
        let refused = decide(to, SenderKind::Practice, Some("KIM-Mail;Default;V1.0")).unwrap_err();
        assert_eq!(refused.reason(), "inbox-undetermined");
        assert_eq!(
            refused.to_string(),
            "the address <X110411319@kvgate.test> names no inbox and X-KIM-Dienstkennung KIM-Mail;Default;V1.0 is not a service for a member's inbox; name one: X110411319@smarthealth.kvgate.test or X110411319@postfach.kvgate.test"
        );
        assert_eq!(
            refused.reply().to_string(),
            format!("550 5.1.0 {refused}\r\n")
        );
        assert_eq!(
            decide(to, SenderKind::Insurer, None).unwrap().0,
            Mailbox::Postfach
        );
        assert_eq!(
            inbox_of("kvgate.test", "smarthealth.kvgate.test"),
            Some(Some(Mailbox::Smarthealth))
        );
        assert_eq!(inbox_of("kvgate.test", "kvgate.test"), Some(None));
        assert_eq!(inbox_of("kvgate.test", "sent.kvgate.test"), None);
    }
}
