//! The pipeline: from a spooled S/MIME letter to OpenPGP ciphertext in the inbox.
//!
//! For each queued submission: decrypt with the gateway's keys, verify the signature
//! (chain to a trust anchor, valid now, signer certificate owned by the connected
//! sender, From address one the sender may use), decide the inbox of a recipient whose
//! address named none (see [`crate::inbox`]), re-encrypt the inner message as
//! PGP/MIME to every active key of each recipient, file it with its `delivered` event,
//! then close the submission and remove the spool file. Plaintext exists only in
//! memory (zeroized on drop). Filing is idempotent per recipient, so a submission
//! replayed after a crash reaches each member once.
//!
//! Submissions are processed on sixteen threads per core (see [`crate::supervise`]): a
//! letter spends most of its time waiting for its body's fdatasync and its commit, and
//! meanwhile others compute; every recipient's message and the submission's end go to
//! the store in one (group) commit.

use kvgate_certs::openpgp;
use kvgate_certs::smime::{self, DecryptionKey, KimRecipient, Signer, TrustAnchors, Unwrapped};
use kvgate_store::{
    Event, EventKind, Mailbox, NewMessage, Outbound, Quarantined, Recipient, SenderKind, Spool,
    Store, StoreError, Submission, SubmissionState, Timestamp, TrackingId, now,
};
use std::num::NonZeroUsize;
use std::sync::{Arc, PoisonError, RwLock};
use tokio::sync::{Notify, watch};

use crate::config::{ProfilePolicy, Unauthenticated, VerifyAt};
use crate::earztbrief;
use crate::inbox::{self, Closed, inbox_of};
use crate::keycache::{KeyCache, member_keys};
use crate::letter::{self, FromCheck, LetterHeaders, Provenance};
use crate::reports::{Action, Dsn, Fate, Mdn, Original, Report, ReportError, status_for};
use crate::verdict::{self, Verdict};

/// Refusals that mark a letter as built to hurt a parser (a structure beyond limits or
/// that cannot be parsed): it is quarantined, kept as received for an operator to
/// look at, rather than only refused.
const POISON: [&str; 2] = ["malformed", "too-deep"];

/// A recipient's letter that is not delivered and will not be.
const FAILED: (Action, EventKind) = (Action::Failed, EventKind::Failed);

/// Processing threads per core: while one waits for its commit, another computes.
const WORKERS_PER_CORE: usize = 16;

/// The pipeline and what it needs.
pub struct Pipeline {
    store: Arc<Store>,
    spool: Spool,
    keys: Vec<DecryptionKey>,
    /// Whom signers must chain to (see [`Pipeline::set_anchors`]).
    anchors: RwLock<Arc<TrustAnchors>>,
    domain: String,
    hostname: String,
    /// Notified when reports were queued.
    outbound: Arc<Notify>,
    /// Rung when letters were filed (wakes the member API's long-polls).
    filed: Arc<watch::Sender<()>>,
    /// Members' parsed OpenPGP certificates.
    member_certs: KeyCache,
    /// How many submissions are processed at once.
    workers: usize,
    /// The instant signer chains are validated for.
    verify_at: VerifyAt,
    /// What a letter breaking the eArztbrief profile gets.
    earztbrief: ProfilePolicy,
    /// What a letter without integrity protection gets.
    unauthenticated: Unauthenticated,
    /// Octets each member's smarthealth inbox may hold (checked here for addresses
    /// that named no inbox).
    smarthealth_quota: u64,
}

/// A letter that passed every check, with its `verified` event and, if it was
/// let through with one, a profile finding (code, sentence).
struct Accepted {
    unwrapped: Unwrapped,
    /// The kind of the sender that submitted it.
    sender_kind: SenderKind,
    events: Vec<Event>,
    finding: Option<(&'static str, String)>,
}

/// Why a submission is refused: a stable reason code and a sentence for the sender.
pub(crate) struct Refusal {
    /// The stable reason code.
    pub reason: &'static str,
    /// The sentence for people.
    pub detail: String,
}

impl Refusal {
    /// A refusal with `reason` and the sentence `detail`.
    pub(crate) fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Refusal {
            reason,
            detail: detail.into(),
        }
    }
}

/// A failure that may pass: the submission stays queued and is tried again.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Transient {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("spool: {0}")]
    Io(#[from] std::io::Error),
    #[error("OpenPGP encryption failed: {0}")]
    Encrypt(String),
    #[error("the signer's revocation status cannot be determined now: {0}")]
    Revocation(String),
    #[error("cannot queue a report: {0}")]
    Report(#[from] ReportError),
}

/// A spooled letter as received: kept in the store (small letters) or in a spool file
/// (then `true`: the file is removed once the submission is finished).
pub(crate) fn received(
    store: &Store,
    spool: &Spool,
    id: &TrackingId,
) -> Result<(Vec<u8>, bool), Transient> {
    Ok(match store.spooled_letter(id)? {
        Some(letter) => (letter, false),
        None => (spool.read(id)?, true),
    })
}

/// What the gateway demands of every unwrapped letter: encrypted to it and signed.
pub(crate) fn signed_and_encrypted(unwrapped: &Unwrapped) -> Result<&Signer, Refusal> {
    if !unwrapped.encrypted {
        return Err(Refusal::new(
            "not-encrypted",
            "the letter was not encrypted to the gateway",
        ));
    }
    unwrapped
        .signer
        .as_ref()
        .ok_or_else(|| Refusal::new("not-signed", "the letter carries no S/MIME signature"))
}

/// Makes the letter's signer the one that belongs to the connected `sender` where the
/// signed layer had several: which SignerInfo comes first is the DER order of their
/// encodings, not the sender's choice, and a letter the sender signed and another
/// co-signed is the sender's all the same. The others stay co-signers.
fn bind_signer(sender: &kvgate_store::Sender, unwrapped: &mut Unwrapped) {
    let Some(first) = &mut unwrapped.signer else {
        return;
    };
    if sender.owns(&first.fingerprint) {
        return;
    }
    if let Some(theirs) = unwrapped
        .co_signers
        .iter_mut()
        .find(|other| sender.owns(&other.fingerprint))
    {
        std::mem::swap(first, theirs);
    }
}

/// Sender integrity (KIM): a `Sender` header names an address the connected sender
/// may use, and the envelope sender is the From or the Sender address.
fn check_sender_integrity(
    sender: &kvgate_store::Sender,
    mail_from: &str,
    from: &str,
    headers: &LetterHeaders<'_>,
) -> Result<(), Refusal> {
    let header_sender = match headers.sender_address() {
        None => None,
        Some(Some(address)) if sender.may_use(&address) => Some(address),
        Some(Some(address)) => {
            return Err(Refusal::new(
                "sender-mismatch",
                format!(
                    "sender {} may not use the Sender address <{address}>",
                    sender.id
                ),
            ));
        }
        Some(None) => {
            return Err(Refusal::new(
                "sender-mismatch",
                "the Sender header of the signed letter does not name exactly one mailbox",
            ));
        }
    };
    let envelope = mail_from.to_ascii_lowercase();
    if envelope != from && header_sender.as_deref() != Some(envelope.as_str()) {
        return Err(Refusal::new(
            "sender-mismatch",
            format!(
                "the envelope sender <{envelope}> is neither the From address <{from}> nor the Sender of the signed letter"
            ),
        ));
    }
    Ok(())
}

impl Pipeline {
    /// A pipeline decrypting with `keys` and trusting `anchors`, for the gateway
    /// `hostname` serving `domain`; `outbound` is notified when reports are queued.
    pub fn new(
        store: Arc<Store>,
        spool: Spool,
        keys: Vec<DecryptionKey>,
        anchors: TrustAnchors,
        (domain, hostname): (&str, &str),
        outbound: Arc<Notify>,
        filed: Arc<watch::Sender<()>>,
    ) -> Self {
        Pipeline {
            store,
            spool,
            keys,
            anchors: RwLock::new(Arc::new(anchors)),
            domain: domain.to_owned(),
            hostname: hostname.to_owned(),
            outbound,
            filed,
            member_certs: KeyCache::default(),
            workers: WORKERS_PER_CORE
                * std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
            verify_at: VerifyAt::default(),
            earztbrief: ProfilePolicy::default(),
            unauthenticated: Unauthenticated::default(),
            smarthealth_quota: u64::MAX,
        }
    }

    /// Refuses a letter to an address that named no inbox when it is decided to be
    /// smarthealth and does not fit the member's `quota` octets there (default: no
    /// limit; `serve` sets the configured one, as for `RCPT`).
    pub fn with_smarthealth_quota(mut self, quota: u64) -> Self {
        self.smarthealth_quota = quota;
        self
    }

    /// Processes `workers` letters at once, if set (default: 16 per core).
    pub fn with_workers(mut self, workers: Option<usize>) -> Self {
        if let Some(workers) = workers {
            self.workers = workers.max(1);
        }
        self
    }

    /// Refuses or accepts letters without integrity protection (EnvelopedData).
    pub fn with_unauthenticated(mut self, policy: Unauthenticated) -> Self {
        self.unauthenticated = policy;
        self
    }

    /// Flags or refuses letters that break the eArztbrief profile.
    pub fn with_earztbrief(mut self, policy: ProfilePolicy) -> Self {
        self.earztbrief = policy;
        self
    }

    /// Trusts `anchors` for the letters processed from now on: for trust anchors
    /// changed while the server runs.
    pub fn set_anchors(&self, anchors: TrustAnchors) {
        *self.anchors.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(anchors);
    }

    /// Validates signer chains for `verify_at` instead of the receipt time.
    pub fn with_verify_at(mut self, verify_at: VerifyAt) -> Self {
        self.verify_at = verify_at;
        self
    }

    /// The disposition notification to queue when the member marks the letter read:
    /// only if the letter asks for one and the address is the envelope sender
    /// (RFC 8098 §2.1).
    fn mdn(
        &self,
        submission: &Submission,
        recipient: &Recipient,
        headers: &LetterHeaders<'_>,
        original: &Original,
    ) -> Result<Option<Outbound>, ReportError> {
        let Some(to) = headers.disposition_notification_to() else {
            return Ok(None);
        };
        if !to.eq_ignore_ascii_case(&submission.mail_from) {
            tracing::info!(tracking = %submission.tracking_id, "disposition notification not offered: the address is not the envelope sender");
            return Ok(None);
        }
        let report = Report::Mdn(Mdn {
            reporting_ua: self.hostname.clone(),
            original_recipient: recipient.orcpt.clone(),
            final_recipient: recipient.address.clone(),
            original_message_id: headers.message_id(),
            received_mic: original.mic()?,
        });
        Ok(Some(report.queue_entry(
            &submission.tracking_id,
            &to,
            now(),
        )?))
    }

    /// How many letters are processed at once.
    pub(crate) fn workers(&self) -> usize {
        self.workers
    }

    /// The store.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Quarantines a queued submission that could not be processed (see
    /// [`Pipeline::set_aside`]).
    pub(crate) fn quarantine(
        &self,
        id: &TrackingId,
        reason: &'static str,
        detail: &str,
        attempts: u32,
    ) -> Result<(), Transient> {
        let submission = self
            .store
            .submission(id)?
            .ok_or(StoreError::NotFound("submission"))?;
        let (raw, _) = received(&self.store, &self.spool, id)?;
        let original = Original::of(&raw);
        drop(raw);
        self.set_aside(&submission, &original, reason, detail, attempts)
    }

    /// Quarantines `submission`: its recipients' `quarantined` events and the failure
    /// DSN its sender asked for commit with it; the letter stays (in the store or its
    /// spool file) until an operator releases or drops it.
    fn set_aside(
        &self,
        submission: &Submission,
        original: &Original,
        reason: &'static str,
        detail: &str,
        attempts: u32,
    ) -> Result<(), Transient> {
        let (events, fates) = Fate::everyone(
            submission,
            (Action::Failed, EventKind::Quarantined),
            reason,
            detail,
        );
        let reports = Dsn::queue_for(&self.hostname, submission, original, &fates)?;
        let reported = !reports.is_empty();
        let id = submission.tracking_id.clone();
        let entry = Quarantined::new(id, reason, detail.to_owned(), attempts);
        self.store.quarantine(entry, events, reports)?;
        self.reported(reported);
        Ok(())
    }

    /// Processes one submission (blocking); `attempt` counts this attempt.
    pub(crate) fn process(&self, id: &TrackingId, attempt: u32) -> Result<(), Transient> {
        let submission = self
            .store
            .submission(id)?
            .ok_or(StoreError::NotFound("submission"))?;
        let (raw, in_file) = received(&self.store, &self.spool, id)?;
        // Reports need little of the message as received; the unwrapping takes it over.
        let original = if in_file {
            Original::of_spooled(&raw, self.spool.path(id))
        } else {
            Original::of(&raw)
        };
        let reported = match self.verify(&submission, raw)? {
            Ok(accepted) => self.deliver(&submission, &original, accepted)?,
            Err(refusal) if POISON.contains(&refusal.reason) => {
                tracing::warn!(tracking = %id, reason = refusal.reason, "letter quarantined");
                let reason = refusal.reason;
                return self.set_aside(&submission, &original, reason, &refusal.detail, attempt);
            }
            Err(refusal) => {
                tracing::info!(tracking = %id, reason = refusal.reason, "letter refused");
                let (events, fates) =
                    Fate::everyone(&submission, FAILED, refusal.reason, &refusal.detail);
                let reports = Dsn::queue_for(&self.hostname, &submission, &original, &fates)?;
                let reported = !reports.is_empty();
                self.store
                    .finish_submission(id, SubmissionState::Failed, events, reports)?;
                reported
            }
        };
        if in_file {
            self.spool.remove(id)?;
        }
        self.reported(reported);
        Ok(())
    }

    /// Wakes the outbound queue where reports were queued (`reported`): most letters
    /// queue none (a DSN goes out on failure unless asked for), and a wake for nothing
    /// cost a look at the whole queue on a blocking thread for every letter.
    fn reported(&self, reported: bool) {
        if reported {
            self.outbound.notify_one();
        }
    }

    /// Unwraps and checks a practice's letter; returns it with its `verified` event.
    fn verify(
        &self,
        submission: &Submission,
        raw: Vec<u8>,
    ) -> Result<Result<Accepted, Refusal>, Transient> {
        let Some(sender) = self.store.sender(&submission.sender_id)? else {
            return Ok(Err(Refusal::new(
                "sender-unknown",
                format!("sender {} is no longer registered", submission.sender_id),
            )));
        };
        let at = self.verify_at.instant(submission.received_at);
        let anchors = Arc::clone(&self.anchors.read().unwrap_or_else(PoisonError::into_inner));
        let unwrapping = smime::unwrap_letter(raw, &self.keys, &anchors, at);
        let unwrapped = match verdict::judge(unwrapping, self.unauthenticated) {
            Ok(unwrapped) => unwrapped,
            // A responder or distribution point that cannot be reached now may answer
            // later: the letter waits (the watchdog reports the delay) instead of failing.
            Err(Verdict::RevocationUnknown(e)) => {
                return Err(Transient::Revocation(e.to_string()));
            }
            Err(Verdict::Refused { refusal, cause }) => {
                if let Some(cause) = cause {
                    tracing::info!(tracking = %submission.tracking_id, reason = refusal.reason, %cause, "a letter without integrity protection is refused; its sender is not told the cause");
                }
                return Ok(Err(refusal));
            }
        };
        let mut unwrapped = unwrapped;
        bind_signer(&sender, &mut unwrapped);
        let headers = LetterHeaders::parse(&unwrapped.content);
        let mut events =
            match self.check_signer(&sender, &submission.mail_from, &unwrapped, &headers) {
                Ok(events) => events,
                Err(refusal) => return Ok(Err(refusal)),
            };
        let finding = match earztbrief::check(&headers) {
            None | Some(Ok(())) => None,
            Some(Err(detail)) if self.earztbrief == ProfilePolicy::Refuse => {
                return Ok(Err(Refusal::new(
                    "earztbrief-profile",
                    format!("the eArztbrief breaks the KBV profile: {detail}"),
                )));
            }
            Some(Err(detail)) => {
                if let Some(verified) = events.first_mut() {
                    let before = verified.detail.take().unwrap_or_default();
                    verified.detail =
                        Some(format!("{before}; flagged earztbrief-profile: {detail}"));
                }
                Some(("earztbrief-profile", detail))
            }
        };
        // Wiped as it goes: it borrows the letter.
        drop(headers);
        Ok(Ok(Accepted {
            unwrapped,
            sender_kind: sender.kind,
            events,
            finding,
        }))
    }

    /// The checks on a verified letter that need the sender: the signer is one of its
    /// certificates, the From address one it may use, and (sender integrity, as KIM
    /// requires) a `Sender` header one it may use too, with the envelope sender
    /// `mail_from` being the From or the Sender address.
    fn check_signer(
        &self,
        sender: &kvgate_store::Sender,
        mail_from: &str,
        unwrapped: &Unwrapped,
        headers: &LetterHeaders<'_>,
    ) -> Result<Vec<Event>, Refusal> {
        let signer = signed_and_encrypted(unwrapped)?;
        if !sender.owns(&signer.fingerprint) {
            return Err(Refusal::new(
                "signer-mismatch",
                format!(
                    "the letter is signed by {} (sha256 {}), which is not a certificate of the connected sender {}",
                    signer.subject, signer.fingerprint, sender.id
                ),
            ));
        }
        let Some(from) = headers.from_address() else {
            return Err(Refusal::new(
                "from-missing",
                "the signed letter has no single From address",
            ));
        };
        if !sender.may_use(&from) {
            return Err(Refusal::new(
                "from-mismatch",
                format!("sender {} may not use the From address <{from}>", sender.id),
            ));
        }
        check_sender_integrity(sender, mail_from, &from, headers)?;
        let mut detail = format!(
            "signed by {} (sha256 {}, serial {}, issuer {}), {} with {}, revocation: {}",
            signer.subject,
            signer.fingerprint,
            signer.serial,
            signer.issuer,
            signer.signature_algorithm,
            signer.digest_algorithm,
            signer.revocation
        );
        if let FromCheck::NotListed(emails) = FromCheck::of(Some(&from), &signer.emails) {
            detail.push_str(&format!(
                "; the From address <{from}> is none of the signer certificate's ({})",
                emails.join(", ")
            ));
        }
        for other in &unwrapped.co_signers {
            detail.push_str(&format!(
                "; co-signed by {} (sha256 {})",
                other.subject, other.fingerprint
            ));
        }
        if let Some(mapping) = self.check_kim_recipients(&unwrapped.recipients)? {
            detail.push_str("; ");
            detail.push_str(&mapping);
        }
        for name in ["X-KIM-Dienstkennung", "X-KIM-Sendersystem"] {
            if let Some(value) = headers.kim_header(name) {
                detail.push_str(&format!("; {name}: {value}"));
            }
        }
        Ok(vec![Event::new(EventKind::Verified).detail(detail)])
    }

    /// gematik's recipient attribute (KIM), if the letter carries it: the entries
    /// naming the certificate the gateway decrypted with must include an address of
    /// this gateway. The signed attribute is used when present, else the
    /// unauthenticated one. Returns the mapping for the tracking event.
    fn check_kim_recipients(&self, recipients: &[KimRecipient]) -> Result<Option<String>, Refusal> {
        let signed = recipients.iter().any(|r| r.signed);
        let used: Vec<&KimRecipient> = recipients.iter().filter(|r| r.signed == signed).collect();
        if used.is_empty() {
            return Ok(None);
        }
        let mapping: Vec<String> = used
            .iter()
            .map(|r| format!("<{}> = serial {} of {}", r.address, r.serial, r.issuer))
            .collect();
        let mapping = format!(
            "KIM recipients ({}): {}",
            if signed { "signed" } else { "unauthenticated" },
            mapping.join(", ")
        );
        let ours: Vec<&str> = used
            .iter()
            .filter(|r| r.decrypting)
            .map(|r| r.address.as_str())
            .filter(|address| {
                address.rsplit_once('@').is_some_and(|(_, domain)| {
                    inbox_of(&self.domain.to_ascii_lowercase(), domain).is_some()
                })
            })
            .collect();
        if ours.is_empty() {
            return Err(Refusal::new(
                "recipient-mismatch",
                format!(
                    "gematik's recipient attribute maps the gateway certificate the letter was decrypted with to no address of this gateway ({mapping})"
                ),
            ));
        }
        Ok(Some(format!(
            "{mapping}; decrypted for <{}>",
            ours.join(">, <")
        )))
    }

    /// The inbox of `recipient`: the one its address named, else the one
    /// [`inbox::decide`] picks for the letter (with the `routed` event recording the
    /// choice and why), checked now as `RCPT` checks a named one (membership,
    /// activation, app communication, quota). The quota is checked here as `RCPT` and
    /// `DATA` check it, with the letter as received (no encryption is spent on a letter
    /// that cannot be taken), and again once it is encrypted, with the size it will
    /// take, as the filing commit checks it.
    fn inbox(
        &self,
        submission: &Submission,
        recipient: &Recipient,
        kind: SenderKind,
        dienstkennung: Option<&str>,
    ) -> Result<Result<(Mailbox, Option<Event>), Closed>, Transient> {
        let (mailbox, why) = match recipient.mailbox {
            Some(named) => (named, None),
            None => {
                let domain = self.domain.to_ascii_lowercase();
                match inbox::decide((&recipient.kvnr, &domain), kind, dienstkennung) {
                    Ok((mailbox, why)) => (mailbox, Some(why)),
                    Err(closed) => return Ok(Err(closed)),
                }
            }
        };
        // A named inbox was checked at `RCPT`, but the letter may be processed much
        // later (a held queue, a retry, a quarantine release): membership may have
        // ended, app communication been turned off, smarthealth closed, or other
        // letters filled the quota meanwhile.
        let Some(member) = self.store.member(&recipient.kvnr)? else {
            return Ok(Err(Closed::NoMember(recipient.kvnr.clone())));
        };
        if let Err(closed) = inbox::admit(kind, &member, mailbox) {
            return Ok(Err(closed));
        }
        if mailbox == Mailbox::Smarthealth {
            let (quota, sender) = (self.smarthealth_quota, &submission.sender_id);
            let fits =
                inbox::fits_quota(&self.store, quota, sender, &member.kvnr, submission.size)?;
            if let Err(closed) = fits {
                return Ok(Err(closed));
            }
        }
        let routed = why.map(|why| {
            Event::new(EventKind::Routed)
                .recipient(&recipient.address)
                .detail(format!("to {mailbox}: {why}"))
        });
        Ok(Ok((mailbox, routed)))
    }

    /// Encrypts the letter to each recipient's keys and files it; true if reports were
    /// queued.
    fn deliver(
        &self,
        submission: &Submission,
        original: &Original,
        accepted: Accepted,
    ) -> Result<bool, Transient> {
        let Accepted {
            unwrapped,
            sender_kind,
            mut events,
            finding,
        } = accepted;
        let id = &submission.tracking_id;
        let signer = unwrapped.signer.as_ref();
        let text = |field: fn(&Signer) -> &str| signer.map(field).unwrap_or_default();
        let algorithms = signer
            .map(|s| format!("{} with {}", s.signature_algorithm, s.digest_algorithm))
            .unwrap_or_default();
        let revocation = signer.map(|s| s.revocation.to_string()).unwrap_or_default();
        let verified_at = now();
        let letter_headers = LetterHeaders::parse(&unwrapped.content);
        let dienstkennung = letter_headers.kim_header("X-KIM-Dienstkennung");
        let plaintext = letter::member_letter(
            letter_headers.message(),
            &Provenance {
                tracking_id: id,
                signer: text(|s| &s.subject),
                fingerprint: text(|s| &s.fingerprint),
                serial: text(|s| &s.serial),
                issuer: text(|s| &s.issuer),
                algorithms: &algorithms,
                revocation: &revocation,
                verified_at,
                chain_valid_at: signer
                    .map_or(verified_at, |s| Timestamp::from_system_time(s.verified_at)),
                finding: finding
                    .as_ref()
                    .map(|(code, detail)| (*code, detail.as_str())),
                co_signers: &unwrapped.co_signers,
                from_in_certificate: FromCheck::of(
                    letter_headers.from_address().as_deref(),
                    signer.map_or(&[], |s| s.emails.as_slice()),
                ),
            },
        );
        let (message_id, replies_to) = letter_headers.threading();
        let mut failures: Vec<Event> = Vec::new();
        let mut fates: Vec<Fate<'_>> = Vec::new();
        let mut filings = Vec::new();
        for (index, recipient) in submission.recipients.iter().enumerate() {
            let service = dienstkennung.as_deref();
            let mailbox = match self.inbox(submission, recipient, sender_kind, service)? {
                Ok((mailbox, routed)) => {
                    events.extend(routed);
                    mailbox
                }
                Err(closed) => {
                    let status = (closed.reason(), closed.enhanced());
                    let (event, fate) = Fate::one(recipient, FAILED, status, &closed.to_string());
                    failures.push(event);
                    fates.push(fate);
                    continue;
                }
            };
            let keys = member_keys(&self.store, &recipient.kvnr)?;
            if keys.is_empty() {
                let detail = "the member has no active OpenPGP key; nothing could be encrypted";
                let reason = "no-member-key";
                let (event, fate) =
                    Fate::one(recipient, FAILED, (reason, status_for(reason)), detail);
                failures.push(event);
                fates.push(fate);
                continue;
            }
            let key_count = keys.len();
            let certs = self
                .member_certs
                .recipients(&recipient.kvnr, keys)
                .map_err(|e| Transient::Encrypt(e.to_string()))?;
            let headers = letter::outer_headers(
                &submission.mail_from,
                &recipient.address,
                id,
                index,
                &self.domain,
                verified_at,
                dienstkennung.as_deref(),
            );
            let header_refs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let sealed = openpgp::pgp_mime_to(&header_refs, &plaintext.parts(), &certs)
                .map_err(|e| Transient::Encrypt(e.to_string()))?;
            let ciphertext = letter::ciphertext(sealed);
            if mailbox == Mailbox::Smarthealth {
                // What the inbox counts is the ciphertext: checked with its size, as
                // the filing commit checks it.
                let (quota, sender) = (self.smarthealth_quota, &submission.sender_id);
                let fits = inbox::fits_quota(
                    &self.store,
                    quota,
                    sender,
                    &recipient.kvnr,
                    ciphertext.size,
                )?;
                if let Err(closed) = fits {
                    let status = (closed.reason(), closed.enhanced());
                    let (event, fate) = Fate::one(recipient, FAILED, status, &closed.to_string());
                    failures.push(event);
                    fates.push(fate);
                    continue;
                }
            }
            events.push(
                Event::new(EventKind::Encrypted)
                    .recipient(&recipient.address)
                    .detail(format!("to {key_count} key(s)")),
            );
            let message = NewMessage {
                tracking_id: id.clone(),
                kvnr: recipient.kvnr.clone(),
                mailbox,
                address: recipient.address.clone(),
                ciphertext,
                on_read: self.mdn(submission, recipient, &letter_headers, original)?,
                // The insurer's answer to the member's messenger message joins its
                // thread (only the insurer writes to the Postfach).
                thread: match mailbox {
                    Mailbox::Postfach => {
                        self.store.thread_for_reply(&recipient.kvnr, &replies_to)?
                    }
                    _ => None,
                },
                message_id: message_id.clone(),
                // Checked again as it is filed: letters for one member processed at
                // once cannot together overfill the inbox (the loser is retried, and
                // fails as quota-full above).
                quota: (mailbox == Mailbox::Smarthealth).then_some(self.smarthealth_quota),
            };
            filings.push((message, std::mem::take(&mut events)));
            fates.push(Fate {
                recipient,
                action: Action::Delivered,
                status: "2.0.0",
                reason: None,
            });
        }
        // The plaintext is no longer needed: free it before the ciphertext is committed.
        drop(plaintext);
        drop(letter_headers);
        drop(unwrapped);
        let state = if failures.len() == submission.recipients.len() {
            SubmissionState::Failed
        } else {
            SubmissionState::Delivered
        };
        events.extend(failures);
        let reports = Dsn::queue_for(&self.hostname, submission, original, &fates)?;
        let reported = !reports.is_empty();
        let filed_any = !filings.is_empty();
        self.store
            .deliver_submission(id, filings, state, events, reports)?;
        if filed_any {
            self.filed.send_replace(());
        }
        tracing::info!(tracking = %id, state = ?state, "letter processed");
        Ok(reported)
    }
}

#[cfg(test)]
mod tests {
    use kvgate_certs::revocation::RevocationStatus;
    use kvgate_store::SenderKind;

    use super::*;

    fn signer(fingerprint: &str) -> Signer {
        Signer {
            fingerprint: fingerprint.to_owned(),
            subject: format!("CN={fingerprint}"),
            serial: "01".to_owned(),
            issuer: "CN=CA".to_owned(),
            emails: Vec::new(),
            digest_algorithm: "SHA256".to_owned(),
            signature_algorithm: "rsaEncryption".to_owned(),
            revocation: RevocationStatus::NotChecked {
                detail: String::new(),
            },
            verified_at: std::time::SystemTime::UNIX_EPOCH,
            cert_der: Vec::new(),
        }
    }

    fn letter(signers: &[&str]) -> Unwrapped {
        Unwrapped {
            content: Vec::new().into(),
            signer: signers.first().map(|first| signer(first)),
            co_signers: signers[1..].iter().map(|other| signer(other)).collect(),
            encrypted: true,
            recipients: Vec::new(),
        }
    }

    fn fingerprints(letter: &Unwrapped) -> Vec<String> {
        let first = letter.signer.iter();
        first
            .chain(&letter.co_signers)
            .map(|s| s.fingerprint.clone())
            .collect()
    }

    #[test]
    fn the_senders_own_signer_is_the_letters_whichever_signerinfo_comes_first() {
        let sender = kvgate_store::Sender {
            id: "demo-practice".to_owned(),
            kind: SenderKind::Practice,
            addresses: Vec::new(),
            certificates: vec!["own".to_owned()],
        };
        for (before, after) in [
            (&["own", "other"][..], ["own", "other"]),
            (&["other", "own"][..], ["own", "other"]),
            (&["x", "y"][..], ["x", "y"]),
        ] {
            let mut unwrapped = letter(before);
            bind_signer(&sender, &mut unwrapped);
            assert_eq!(fingerprints(&unwrapped), after, "{before:?}");
        }
    }
}
