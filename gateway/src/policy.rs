//! The SMTP policy: who may send, to whom, and how an accepted letter is made durable.
//!
//! The connector runs the protocol; this module answers its questions. A sender is the
//! owner of the TLS client certificate; `MAIL FROM` must be one of its addresses; each
//! `RCPT TO` must name a member's inbox that can take the letter now (DESIGN.md, step
//! 2), or name only the member (`<KVNR>@<domain>`), whose inbox the pipeline decides
//! (see [`crate::inbox`]). DATA goes to the spool (a small letter stays in memory and
//! commits with its submission; a larger one goes to a file that is fsynced, with its
//! directory), and the submission is committed with its `accepted` event before the
//! sender hears 250.
//! A smarthealth inbox takes a letter only while it fits the configured quota: checked
//! at RCPT against `SIZE=` and again after DATA against the size received (552 5.2.2,
//! recorded for the member's app).

use std::sync::Arc;

use kvgate_certs::smime::{self, Screening};
use kvgate_certs::x509;
use kvgate_connectors::smtp::{
    Handler, MailParams, Notify as DsnNotify, Peer, RcptParams, Reply, Ret,
};
use kvgate_store::{
    Addressee, Kvnr, Mailbox, Recipient, Sender, SenderKind, Spool, SpoolFile, Store, Submission,
    SubmissionState, TrackingId, now,
};

use crate::inbox::{self, Closed, inbox_of};
use crate::supervise::Intake;

/// Whether a practice's letter may be kept, by its first octets: its content must be
/// encrypted, at its top or under signatures (encrypt-then-sign). Where those octets
/// cannot tell, the pipeline judges the whole letter. A refusal is the reply's text.
fn encrypted(head: &[u8]) -> Result<(), &'static str> {
    match smime::screen(head) {
        Screening::Encrypted | Screening::Undecided => Ok(()),
        Screening::NotSmime => Err(
            "not-smime: a practice's letter must be S/MIME, signed and encrypted to the \
             gateway; it is not S/MIME, and nothing of it was kept",
        ),
        Screening::NotEncrypted => Err(
            "not-encrypted: a practice's letter must be S/MIME, signed and encrypted to the \
             gateway; it is signed, but what is signed is readable, and nothing of it was kept",
        ),
    }
}

/// The gateway's answers to the SMTP connector.
pub struct Policy {
    store: Arc<Store>,
    spool: Spool,
    domain: String,
    /// Where accepted letters go at once; none while the queue is held.
    intake: Option<Intake>,
    /// Octets each member's smarthealth inbox may hold.
    smarthealth_quota: u64,
}

/// One SMTP connection's state: the authenticated sender and the envelope so far.
pub struct Session {
    sender: Sender,
    mail_from: Option<String>,
    /// `RET=` of the current transaction.
    ret: Option<String>,
    /// `ENVID=` of the current transaction.
    envid: Option<String>,
    /// `SIZE=` of the current transaction (0 if not declared).
    declared_size: u64,
    recipients: Vec<Recipient>,
}

impl Policy {
    /// A policy for mail to `<KVNR>@{postfach,smarthealth}.<domain>` and
    /// `<KVNR>@<domain>`; accepted letters go straight to the pipeline's `intake`
    /// (without one, they wait on the queue); a smarthealth inbox holds at most
    /// `smarthealth_quota` octets.
    pub fn new(
        store: Arc<Store>,
        spool: Spool,
        domain: &str,
        intake: Option<Intake>,
        smarthealth_quota: u64,
    ) -> Self {
        Policy {
            store,
            spool,
            domain: domain.to_ascii_lowercase(),
            intake,
            smarthealth_quota,
        }
    }

    /// After DATA: the check whether the letter as received still fits a smarthealth
    /// recipient's quota (SIZE= may have been missing or wrong), to run on the blocking
    /// thread that accepts it. The letter is refused only if it fits no recipient's
    /// inbox: refusals are per recipient, so a letter that one of them can take is
    /// accepted, and the pipeline fails the recipients whose inbox it does not fit
    /// (each with its DSN).
    fn still_fits(&self, session: &Session) -> impl Fn(u64) -> Result<(), Reply> + Send + 'static {
        let store = self.store.clone();
        let quota = self.smarthealth_quota;
        let sender = session.sender.id.clone();
        let members: Vec<Kvnr> = session
            .recipients
            .iter()
            .filter(|r| r.mailbox == Some(Mailbox::Smarthealth))
            .map(|r| r.kvnr.clone())
            .collect();
        let others = session.recipients.len() > members.len();
        move |size| {
            let Some(first) = members.first().filter(|_| !others) else {
                return Ok(());
            };
            for kvnr in &members {
                let used = store
                    .smarthealth_used(kvnr)
                    .map_err(|e| store_failure(&e))?;
                if used.saturating_add(size) <= quota {
                    return Ok(());
                }
            }
            fits_quota(&store, quota, &sender, first, size)
        }
    }

    /// Maps a recipient address to a member's inbox, or says exactly why not. An
    /// address naming no inbox (`<KVNR>@<domain>`) is taken for a member with a key;
    /// the pipeline decides and checks its inbox once the letter is verified. A
    /// smarthealth inbox must have room for `declared_size` octets.
    fn route(
        &self,
        sender: &Sender,
        address: &str,
        declared_size: u64,
    ) -> Result<Recipient, Reply> {
        if address.eq_ignore_ascii_case("postmaster") {
            return Err(no_postmaster());
        }
        let (local, domain) = address.rsplit_once('@').ok_or_else(|| {
            Reply::new(501, (5, 1, 3), format!("<{address}> is not a mail address"))
        })?;
        let domain = domain.to_ascii_lowercase();
        let mailbox = inbox_of(&self.domain, &domain).ok_or_else(|| {
                Reply::new(
                    550,
                    (5, 1, 2),
                    format!(
                        "this gateway takes mail for {0}, postfach.{0} and smarthealth.{0} only, not {domain}",
                        self.domain
                    ),
                )
            })?;
        if local.eq_ignore_ascii_case("postmaster") {
            return Err(no_postmaster());
        }
        let kvnr = Kvnr::parse(local).map_err(|e| {
            Reply::new(
                553,
                (5, 1, 3),
                format!("{local:?} is not a valid KVNR: {e}"),
            )
        })?;
        let addressee = self.addressee(&kvnr)?;
        let member = &addressee.member;
        if let Some(mailbox) = mailbox {
            inbox::admit(sender.kind, member, mailbox).map_err(|closed| closed.reply())?;
        }
        if !addressee.has_key {
            return Err(Reply::new(
                550,
                (5, 1, 1),
                format!(
                    "member {kvnr} has no active OpenPGP key yet, so nothing could be encrypted to them; send by post"
                ),
            ));
        }
        if mailbox == Some(Mailbox::Smarthealth)
            && let Some(refusal) = inbox::over_quota(
                self.smarthealth_quota,
                &sender.id,
                declared_size,
                addressee.smarthealth_used,
            )
        {
            // A commit: off the async workers.
            let closed = tokio::task::block_in_place(|| {
                inbox::refuse_over_quota(&self.store, &kvnr, refusal)
            })
            .map_err(|e| store_failure(&e))?;
            return Err(closed.reply());
        }
        Ok(Recipient {
            address: format!("{kvnr}@{domain}"),
            kvnr,
            mailbox,
            notify: None,
            orcpt: None,
        })
    }

    /// The member `kvnr` as a letter's addressee, read on the async worker unless a
    /// compaction holds the store (for as long as it rewrites the file): then off it.
    fn addressee(&self, kvnr: &Kvnr) -> Result<Addressee, Reply> {
        let read = match self.store.addressee_at_once(kvnr) {
            Some(read) => read,
            None => tokio::task::block_in_place(|| self.store.addressee(kvnr)),
        };
        read.map_err(|e| store_failure(&e))?
            .ok_or_else(|| Closed::NoMember(kvnr.clone()).reply())
    }
}

/// [`inbox::fits_quota`] as the SMTP connector needs it: a full inbox or a store
/// failure as the reply.
fn fits_quota(
    store: &Store,
    quota: u64,
    sender_id: &str,
    kvnr: &Kvnr,
    size: u64,
) -> Result<(), Reply> {
    inbox::fits_quota(store, quota, sender_id, kvnr, size)
        .map_err(|e| store_failure(&e))?
        .map_err(|closed| closed.reply())
}

/// The answer to `RCPT TO:<Postmaster>` and `postmaster@` a served domain. RFC 5321
/// §4.5.1 wants postmaster taken, but the gateway has no mailbox of its own to file
/// it in: it says so plainly, and where to turn instead, rather than calling the
/// address malformed.
fn no_postmaster() -> Reply {
    Reply::new(
        550,
        (5, 1, 1),
        "this gateway delivers only to members' inboxes and has no postmaster mailbox; \
         please contact the insurer's support for senders instead",
    )
}

/// The reply for a store failure: temporary, so the sender retries.
fn store_failure(error: &dyn std::fmt::Display) -> Reply {
    tracing::error!(%error, "store failure during SMTP session");
    Reply::new(
        451,
        (4, 3, 0),
        "the gateway cannot reach its store; try again later",
    )
}

/// `NOTIFY` as the comma list RFC 3461 writes (stored with the submission).
fn notify_list(notify: DsnNotify) -> String {
    match notify {
        DsnNotify::Never => "NEVER".to_owned(),
        DsnNotify::On {
            success,
            failure,
            delay,
        } => [(success, "SUCCESS"), (failure, "FAILURE"), (delay, "DELAY")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, word)| *word)
            .collect::<Vec<_>>()
            .join(","),
    }
}

impl Handler for Policy {
    type Session = Session;
    type Sink = SpoolFile;

    fn connect(&self, peer: &Peer) -> Result<Session, Reply> {
        let leaf = peer
            .client_certs
            .first()
            .ok_or_else(|| Reply::new(530, (5, 7, 0), "a client certificate is required"))?;
        let fingerprint = x509::fingerprint_der(leaf);
        // The store may wait (for a commit, a compaction): off the async workers.
        let sender = tokio::task::block_in_place(|| self.store.sender_by_certificate(&fingerprint))
            .map_err(|e| store_failure(&e))?
            .ok_or_else(|| {
                Reply::new(
                    554,
                    (5, 7, 1),
                    format!("the client certificate (sha256 {fingerprint}) is not registered to any sender"),
                )
            })?;
        tracing::info!(peer = %peer.addr, sender = %sender.id, "sender connected");
        Ok(Session {
            sender,
            mail_from: None,
            ret: None,
            envid: None,
            declared_size: 0,
            recipients: Vec::new(),
        })
    }

    fn mail_from(
        &self,
        session: &mut Session,
        reverse_path: &str,
        params: &MailParams,
    ) -> Result<(), Reply> {
        if !session.sender.may_use(reverse_path) {
            return Err(Reply::new(
                553,
                (5, 7, 1),
                format!(
                    "sender {} may not use the address <{reverse_path}>",
                    session.sender.id
                ),
            ));
        }
        session.mail_from = Some(reverse_path.to_ascii_lowercase());
        session.ret = params.ret.map(|ret| {
            match ret {
                Ret::Full => "FULL",
                Ret::Headers => "HDRS",
            }
            .to_owned()
        });
        session.envid = params.envid.clone();
        session.declared_size = params.size.unwrap_or(0);
        Ok(())
    }

    fn rcpt_to(
        &self,
        session: &mut Session,
        forward_path: &str,
        params: &RcptParams,
    ) -> Result<(), Reply> {
        let routed = self.route(&session.sender, forward_path, session.declared_size)?;
        let recipient = Recipient {
            notify: params.notify.map(notify_list),
            orcpt: params
                .orcpt
                .as_ref()
                .map(|o| format!("{};{}", o.addr_type, o.address)),
            ..routed
        };
        if !session
            .recipients
            .iter()
            .any(|r| r.address == recipient.address)
        {
            session.recipients.push(recipient);
        }
        Ok(())
    }

    async fn data_start(&self, session: &mut Session) -> Result<SpoolFile, Reply> {
        if session.mail_from.is_none() || session.recipients.is_empty() {
            return Err(Reply::new(
                503,
                (5, 5, 1),
                "MAIL and at least one valid RCPT first",
            ));
        }
        let id = TrackingId::generate().map_err(|e| store_failure(&e))?;
        let mut sink = self
            .spool
            .create(&id)
            .await
            .map_err(|e| store_failure(&e))?;
        // A practice's letter must be S/MIME (DESIGN, step 4): one that says otherwise
        // at its top is a patient's letter in the clear, and never reaches the disk.
        if session.sender.kind == SenderKind::Practice {
            sink.keep_only_if(encrypted);
        }
        Ok(sink)
    }

    async fn data_end(&self, session: &mut Session, mut sink: SpoolFile) -> Reply {
        if let Some(refusal) = sink.refused() {
            let reason = refusal.split(':').next().unwrap_or_default();
            tracing::info!(sender = %session.sender.id, reason, "a practice's letter in the clear refused at DATA");
            return Reply::new(554, (5, 7, 1), refusal);
        }
        let spooled = match sink.commit().await {
            Ok(done) => done,
            Err(e) => return store_failure(&e),
        };
        let (tracking_id, size) = (spooled.id, spooled.size);
        let still_fits = self.still_fits(session);
        let submission = Submission {
            tracking_id: tracking_id.clone(),
            sender_id: session.sender.id.clone(),
            mail_from: session.mail_from.clone().unwrap_or_default(),
            recipients: session.recipients.clone(),
            size,
            received_at: now(),
            state: SubmissionState::Accepted,
            ret: session.ret.clone(),
            envid: session.envid.clone(),
            released: false,
        };
        let admission = self
            .intake
            .as_ref()
            .map(|intake| intake.admit(&tracking_id));
        let store = self.store.clone();
        // One trip to a blocking thread a letter: the quota check and the commit.
        let committed = tokio::task::spawn_blocking(move || {
            still_fits(size)?;
            store
                .accept_submission(&submission, spooled.inline)
                .map_err(|e| store_failure(&e))
        })
        .await
        .unwrap_or_else(|e| Err(store_failure(&e)));
        match committed {
            Ok(()) => {
                // Refused while the pipeline shuts down: it stays queued for the next
                // start.
                if let Some(admission) = admission {
                    admission.hand_over();
                }
                tracing::info!(tracking = %tracking_id, sender = %session.sender.id, size, "letter accepted");
                Reply::new(250, (2, 0, 0), format!("{tracking_id} queued"))
            }
            // Refused (over quota) or not committed: the admission, dropped, withdraws
            // the letter from the workers.
            Err(refusal) => {
                let _ = self.spool.remove(&tracking_id);
                refusal
            }
        }
    }

    async fn data_abort(&self, _: &mut Session, sink: SpoolFile) {
        if let Err(e) = sink.discard().await {
            tracing::warn!(error = %e, "could not remove a refused letter's spool file");
        }
    }

    fn reset(&self, session: &mut Session) {
        session.mail_from = None;
        session.ret = None;
        session.envid = None;
        session.declared_size = 0;
        session.recipients.clear();
    }
}
