//! The outbound worker: hands queued reports to the relay with lettre.
//!
//! An entry leaves the queue only after the relay's 250 (recorded as `reported`), a
//! permanent refusal (`failed`), or the end of its lifetime (`expired`); a transient
//! failure waits with exponential backoff, and a long wait is recorded as `delayed`.
//! Reports go out with the null reverse path, so nothing ever answers them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use kvgate_connectors::api::UPLOAD_PURPOSE;
use kvgate_store::{
    Event, EventKind, Outbound, OutboundAttempt, Store, StoreError, Timestamp, now,
};
use lettre::address::Envelope;
use lettre::transport::smtp::client::{
    Certificate, CertificateStore, Identity, Tls, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;

use crate::config::{Config, QueuePolicy, Relay, RelayTls};
use crate::reports::{Context, Report, ReportSigner};

/// Longest sleep between looks at the queue.
const RESCAN: Duration = Duration::from_secs(30);

/// The relay connection could not be set up from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// `relay.address` is not `host:port`.
    #[error("relay.address {0:?} is not host:port")]
    Address(String),
    /// A certificate or key file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A certificate file held no PEM certificate.
    #[error("{0} holds no PEM certificate")]
    NoCertificate(String),
    /// lettre refused the TLS settings.
    #[error("relay TLS settings: {0}")]
    Tls(#[from] lettre::transport::smtp::Error),
}

/// What one attempt came to.
enum Outcome {
    Sent(String),
    Refused(String),
    Retry(String),
}

/// The worker and what it needs.
pub struct Outbox {
    store: Arc<Store>,
    relay: Option<AsyncSmtpTransport<Tokio1Executor>>,
    policy: QueuePolicy,
    signer: ReportSigner,
    domain: String,
}

impl Outbox {
    /// An outbox sending through the configured relay (if any), signing with `signer`.
    pub fn new(
        store: Arc<Store>,
        config: &Config,
        signer: ReportSigner,
    ) -> Result<Self, RelayError> {
        let relay = config
            .relay
            .as_ref()
            .map(|relay| transport(relay, config))
            .transpose()?;
        Ok(Outbox {
            store,
            relay,
            policy: config.queue.clone(),
            signer,
            domain: config.domain.clone(),
        })
    }

    /// Works the queue until `shutdown`: at start, when `wake` is notified, when an
    /// attempt ends, when the next entry falls due, and at least every 30 seconds.
    ///
    /// Attempts run side by side, at most `per_destination` at once: every entry goes
    /// to the one relay, the next hop (as Postfix counts a destination's concurrency),
    /// whatever its recipient's domain. A slow attempt holds its own slot only, not the
    /// entries behind it.
    pub async fn run(self: Arc<Self>, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
        if self.relay.is_none() {
            tracing::warn!("no [relay] configured: reports wait in the outbound queue");
        }
        let slots = Arc::new(Semaphore::new(self.policy.per_destination));
        // Shutdown does not wait for the attempts: one cut off stays queued and is made
        // again at the next start.
        let mut running = JoinSet::new();
        let mut due = VecDeque::new();
        let mut next_due = None;
        loop {
            // A backlog is listed once, not once an attempt.
            if due.is_empty() {
                match self.look().await {
                    Ok((now_due, next)) => (due, next_due) = (now_due, next),
                    Err(e) => {
                        tracing::error!(error = %e, "outbound queue cannot be read");
                        next_due = None;
                    }
                }
            }
            while !due.is_empty() {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    break;
                };
                let Some(entry) = due.pop_front() else { break };
                let this = self.clone();
                running.spawn(async move {
                    // Beginning takes the store's lock of attempts, which an attempt
                    // that ends holds through its commit: not on an async worker. An
                    // entry whose attempt has begun already is left to it.
                    let (store, id) = (this.store.clone(), entry.id.clone());
                    let begun =
                        tokio::task::spawn_blocking(move || store.begin_outbound_attempt(&id));
                    if let Ok(Some(attempt)) = begun.await {
                        this.attempt(attempt, entry).await;
                    }
                    drop(slot);
                });
            }
            let sleep = next_due.map_or(RESCAN, |due: Timestamp| {
                Duration::from_millis(due.as_millis().saturating_sub(now().as_millis())).min(RESCAN)
            });
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                // An attempt ended: a slot is free, and its entry may wait anew.
                Some(_) = running.join_next() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// The entries due now, oldest first, and when the next of the others falls due
    /// (entries being sent are neither).
    async fn look(&self) -> Result<(VecDeque<Outbound>, Option<Timestamp>), StoreError> {
        let store = self.store.clone();
        // Off the async threads: whether an entry is being sent waits for an attempt
        // that is recording its outcome (a commit).
        let entries = tokio::task::spawn_blocking(move || {
            let entries = store.outbound()?;
            Ok::<_, StoreError>(
                entries
                    .into_iter()
                    .filter(|entry| !store.is_being_sent(&entry.id))
                    .collect::<Vec<_>>(),
            )
        })
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
        let at = now();
        let mut due = VecDeque::new();
        let mut next_due: Option<Timestamp> = None;
        for entry in entries {
            if entry.next_attempt_at > at {
                next_due =
                    Some(next_due.map_or(entry.next_attempt_at, |n| n.min(entry.next_attempt_at)));
            } else {
                due.push_back(entry);
            }
        }
        Ok((due, next_due))
    }

    /// One attempt at one entry, with its outcome recorded.
    async fn attempt(&self, attempt: OutboundAttempt, entry: Outbound) {
        let age = Duration::from_millis(
            now()
                .as_millis()
                .saturating_sub(entry.created_at.as_millis()),
        );
        let what = format!("the {} to <{}>", entry.purpose, entry.rcpt_to);
        let outcome = if age > Duration::from_secs(self.policy.lifetime_secs) {
            None
        } else {
            Some(self.send(&entry).await)
        };
        let policy = self.policy.clone();
        let result = tokio::task::spawn_blocking(move || {
            let event = |kind| Event::new(kind).recipient(&entry.rcpt_to);
            match outcome {
                None => attempt.settle(
                    event(EventKind::Expired).reason("queue-lifetime").detail(format!(
                        "{what} was given up after {} attempts: {}",
                        entry.attempts,
                        entry.last_error.as_deref().unwrap_or("never tried")
                    )),
                ),
                Some(Outcome::Sent(reply)) => attempt.settle(
                    event(sent_kind(&entry)).detail(format!("{what} was accepted by the relay: {reply}")),
                ),
                Some(Outcome::Refused(reply)) => attempt.settle(
                    event(EventKind::Failed)
                        .reason("relay-refused")
                        .detail(format!("the relay refused {what}: {reply}")),
                ),
                Some(Outcome::Retry(error)) => {
                    let at = now();
                    let wait = policy.backoff(entry.attempts + 1);
                    let next = Timestamp(at.as_millis().saturating_add(wait.as_millis() as u64));
                    let delay = (age > Duration::from_secs(policy.delay_warning_secs)).then(|| {
                        event(EventKind::Delayed)
                            .reason("relay-unavailable")
                            .detail(format!("{what} waits for the relay: {error}"))
                    });
                    tracing::info!(outbound = %entry.id, error = %error, retry_in = ?wait, "outbound attempt failed");
                    attempt.defer(next, at, &error, delay)
                }
            }
        })
        .await;
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot record an outbound outcome"),
            Err(e) => tracing::error!(error = %e, "outbound task failed"),
        }
    }

    /// Renders, signs and hands one entry to the relay.
    async fn send(&self, entry: &Outbound) -> Outcome {
        let Some(relay) = &self.relay else {
            return Outcome::Retry("no relay is configured".to_owned());
        };
        let context = Context {
            domain: &self.domain,
            signer: &self.signer,
        };
        let store = self.store.clone();
        let id = entry.id.clone();
        let payload = match tokio::task::spawn_blocking(move || store.outbound_payload(&id)).await {
            Ok(Ok(Some(payload))) => payload,
            Ok(Ok(None)) => return Outcome::Retry("it left the queue meanwhile".to_owned()),
            Ok(Err(e)) => return Outcome::Retry(e.to_string()),
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        // An upload is queued sealed, ready to send; a report is rendered and signed now.
        let rendered = if entry.purpose == UPLOAD_PURPOSE {
            Ok(payload.into_bytes())
        } else {
            Report::render(entry, &payload, &context)
        };
        let message = match rendered {
            Ok(message) => message,
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        let envelope = match envelope(entry) {
            Ok(envelope) => envelope,
            Err(e) => return Outcome::Refused(e),
        };
        // lettre bounds only the TCP connect: a relay that accepts and then says nothing
        // would hold this attempt, and the pass, forever.
        let limit = Duration::from_secs(self.policy.timeout_secs);
        match tokio::time::timeout(limit, relay.send_raw(&envelope, &message)).await {
            Ok(Ok(response)) => Outcome::Sent(format!(
                "{} {}",
                response.code(),
                response.message().collect::<Vec<_>>().join(" ")
            )),
            Ok(Err(e)) if e.is_permanent() => Outcome::Refused(e.to_string()),
            Ok(Err(e)) => Outcome::Retry(e.to_string()),
            Err(_) => Outcome::Retry(format!(
                "the relay did not complete the exchange within {} s (queue.timeout_secs)",
                limit.as_secs()
            )),
        }
    }
}

/// What handing an entry to the relay means for its submission: an upload is
/// delivered (on its way to the back office), a report reported.
fn sent_kind(entry: &Outbound) -> EventKind {
    if entry.purpose == UPLOAD_PURPOSE {
        EventKind::Delivered
    } else {
        EventKind::Reported
    }
}

/// The SMTP envelope of an entry (null reverse path when `mail_from` is empty).
fn envelope(entry: &Outbound) -> Result<Envelope, String> {
    let parse = |a: &str| {
        a.parse::<Address>()
            .map_err(|e| format!("<{a}> is not a deliverable address: {e}"))
    };
    let from = if entry.mail_from.is_empty() {
        None
    } else {
        Some(parse(&entry.mail_from)?)
    };
    Envelope::new(from, vec![parse(&entry.rcpt_to)?]).map_err(|e| e.to_string())
}

/// The lettre transport for the configured relay.
fn transport(
    relay: &Relay,
    config: &Config,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, RelayError> {
    let (host, port) = relay
        .address
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
        .ok_or_else(|| RelayError::Address(relay.address.clone()))?;
    let read = |path: &std::path::Path| {
        let path = config.resolve(path);
        std::fs::read(&path).map_err(|source| RelayError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .hello_name(ClientId::Domain(config.hostname.clone()))
        .timeout(Some(Duration::from_secs(config.queue.timeout_secs)));
    if relay.tls != RelayTls::None {
        let mut params = TlsParameters::builder(host.to_owned());
        if let Some(ca) = &relay.ca {
            let pem = read(ca)?;
            // An empty store would trust nothing: every attempt would fail for days.
            if CertificateDer::pem_slice_iter(&pem).next().is_none() {
                return Err(RelayError::NoCertificate(
                    config.resolve(ca).display().to_string(),
                ));
            }
            params = params
                .certificate_store(CertificateStore::None)
                .add_root_certificate(Certificate::from_pem(&pem)?);
        }
        if let Some(client) = &relay.client {
            let key = zeroize::Zeroizing::new(read(&client.key)?);
            let path = config.resolve(&client.cert).display().to_string();
            let leaf = CertificateDer::pem_slice_iter(&read(&client.cert)?)
                .next()
                .and_then(Result::ok)
                .ok_or(RelayError::NoCertificate(path))?;
            // lettre's rustls backend takes the bytes it is given for a certificate's
            // DER as they are (its `from_pem` does not decode PEM): it gets the leaf's DER.
            params = params.identify_with(Identity::from_pem(leaf.as_ref(), &key)?);
        }
        let params = params.build_rustls()?;
        builder = builder.tls(match relay.tls {
            RelayTls::Tls => Tls::Wrapper(params),
            _ => Tls::Required(params),
        });
    }
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use kvgate_certs::devpki;

    use super::*;
    use crate::config::KeyPair;

    #[test]
    fn a_client_certificate_can_be_presented_and_a_ca_file_must_hold_one() {
        crate::serve::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let pki = devpki::generate("kvgate.test", "praxis@p.test").unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let ca = write("ca.pem", &pki.ca.cert_pem);
        let client = KeyPair {
            cert: write("client.pem", &pki.practice.cert_pem),
            key: write("client.key", &pki.practice.key_pem),
        };
        let config = Config::development("kvgate.test");
        let relay = |ca: PathBuf| Relay {
            address: "127.0.0.1:465".into(),
            tls: RelayTls::Tls,
            ca: Some(ca),
            client: Some(client.clone()),
        };
        transport(&relay(ca), &config).unwrap();
        for (name, text) in [
            ("empty.pem", ""),
            ("key-only.pem", pki.practice.key_pem.as_str()),
        ] {
            let refused = transport(&relay(write(name, text)), &config);
            assert!(
                matches!(refused, Err(RelayError::NoCertificate(_))),
                "{name}"
            );
        }
    }
}
