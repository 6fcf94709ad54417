//! `kvgate serve`: the listeners, the pipeline and the API, with graceful shutdown.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use kvgate_certs::revocation::{FailMode, Revocation, RevocationPolicy};
use kvgate_certs::smime::{DecryptionKey, TrustAnchors};

use crate::outbox::Outbox;
use crate::reports::ReportSigner;
use crate::uploads::BackOfficeSealer;
use crate::watchdog::Watchdog;
use kvgate_certs::x509;
use kvgate_connectors::api::{self, AdminState, ApiState};
use kvgate_connectors::smtp::{self, Server};
use kvgate_connectors::tls;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::config::{Config, RevocationMode};
use crate::control;
use crate::init;
use crate::pipeline::Pipeline;
use crate::policy::Policy;
use crate::running::RunningFile;
use crate::runtime::{Installation, config_path};
use crate::supervise::{Intake, Supervisor};
use crate::trust_files;

/// Options of `kvgate serve`.
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// The configuration file (default: ./kvgate-data/kvgate.toml, created if missing).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Listen for SMTP with STARTTLS here instead of the configured address.
    #[arg(long)]
    pub smtp: Option<SocketAddr>,
    /// Listen for SMTP with implicit TLS here instead of the configured address.
    #[arg(long)]
    pub smtps: Option<SocketAddr>,
    /// Serve the member API here instead of the configured address.
    #[arg(long)]
    pub api: Option<SocketAddr>,
    /// Serve the operators' endpoint here instead of the configured `[admin] listen`
    /// (only if `[admin]` is configured).
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// Accept and spool letters but do not process them (maintenance; letters stay
    /// queued and are processed by the next start without this flag).
    #[arg(long)]
    pub hold_queue: bool,
}

/// Runs `kvgate serve` until SIGTERM or Ctrl-C.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    log_panics_without_their_message();
    crate::heap::keep_letter_buffers();
    let path = config_path(args.config.as_deref());
    if args.config.is_none() && !path.exists() {
        let outcome = init::run(&path.parent().map(PathBuf::from).unwrap_or_default())?;
        println!("{outcome}");
    }
    let installation = Installation::open(&path)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let gateway = Gateway::start(installation, &args).await?;
        shutdown_signal().await;
        tracing::info!("shutting down: no new connections; finishing sessions for up to 10 s");
        gateway.stop().await;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Logs a panic by where it happened only: its message may quote what the thread was
/// working on, a letter's decrypted content among them, and the log is kept on disk.
pub fn log_panics_without_their_message() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let location = info
            .location()
            .map_or_else(|| "an unknown place".to_owned(), ToString::to_string);
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            %location,
            "a thread panicked (its message is not logged: it may quote a letter)"
        );
    }));
}

/// Installs the process's one TLS crypto provider (ring). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The member API's session-ticket sealer, of the installed provider (ring): its keys
/// are random, held in memory only and replaced every six hours, so a ticket lives
/// at most twelve.
fn ticketer() -> anyhow::Result<Arc<dyn rustls::server::ProducesTickets>> {
    rustls::crypto::ring::Ticketer::new().context("making the member API's TLS ticket keys")
}

/// A running gateway.
pub struct Gateway {
    /// Where SMTP with STARTTLS listens.
    pub smtp: SocketAddr,
    /// Where SMTP with implicit TLS listens.
    pub smtps: SocketAddr,
    /// Where the member API listens.
    pub api: SocketAddr,
    /// Where the operators' endpoint listens, if configured.
    pub admin: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    store: Arc<kvgate_store::Store>,
}

impl Gateway {
    /// Binds every listener, starts the pipeline and returns at once.
    pub async fn start(installation: Installation, args: &ServeArgs) -> anyhow::Result<Self> {
        install_crypto_provider();
        let Installation {
            config,
            store,
            spool,
        } = installation;
        for warning in crate::exposure::warnings(&config) {
            tracing::warn!("{warning}");
        }
        // Quarantined letters keep their spool files too.
        let mut keep: HashSet<_> = store.queued()?.into_iter().collect();
        keep.extend(store.quarantined()?.into_iter().map(|q| q.tracking_id));
        let swept = spool.sweep(&keep)?;
        if swept > 0 {
            tracing::info!(
                files = swept,
                "removed spool files of letters that were never acknowledged"
            );
        }
        // Here, not in `Store::open`: an admin command that opens the store while no
        // server runs need not wait for the sweep.
        let swept = store.sweep_bodies()?;
        if swept > 0 {
            tracing::info!(
                ranges = swept,
                "punched out letter bodies that no letter names (never filed, or deleted)"
            );
        }
        // Before any listener: the letters that were running when the gateway last
        // stopped (left for the next start that processes letters if this one holds
        // the queue).
        let running = if args.hold_queue {
            None
        } else {
            let path = config.data_dir().join("pipeline.running");
            Some(
                RunningFile::take_over(&path)
                    .with_context(|| format!("opening {}", path.display()))?,
            )
        };
        let read = |path: &std::path::Path| {
            let path = config.resolve(path);
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
        };
        let trust = &config.trust;
        let trust_paths: Vec<PathBuf> = (trust.anchors.iter())
            .chain(&trust.intermediates)
            .chain(&trust.crls)
            .map(|path| config.resolve(path))
            .collect();
        let trust_seen = trust_files::look(&trust_paths);
        let tls_cert = read(&config.tls.cert)?;
        let tls_key = zeroize::Zeroizing::new(read(&config.tls.key)?);
        let (sender_tls, anchors) = sender_trust(&config, &store, (&tls_cert, &tls_key))?;
        let api_tls = tls::api_server_config(&tls_cert, &tls_key, ticketer()?)?;
        let admin_tls = api_tls.clone();

        let keys = decryption_keys(&config)?;

        let (shutdown, stop) = watch::channel(false);
        let (control_listener, control_path) = control::bind(&config)?;
        let intake = (!args.hold_queue).then(Intake::default);
        let mut tasks = JoinSet::new();

        let smtp_config = smtp::Config {
            hostname: config.hostname.clone(),
            max_message_size: config.limits.max_message_size,
            max_recipients: config.limits.max_recipients,
            command_timeout: config.limits.command_timeout(),
            tls_handshake_timeout: config.limits.tls_handshake_timeout(),
            auth_deadline: config.limits.auth_deadline(),
            data_timeout: config.limits.command_timeout(),
            max_junk_commands: config.limits.max_junk_commands,
            greeting_delay: config.limits.greeting_delay(),
            max_connections: config.limits.max_connections,
            max_connections_per_address: config.limits.max_connections_per_address,
            max_connections_per_certificate: config.limits.max_connections_per_certificate,
            ..smtp::Config::default()
        };
        let policy = Arc::new(Policy::new(
            store.clone(),
            spool.clone(),
            &config.domain,
            intake.clone(),
            config.member_api.smarthealth_quota_bytes,
        ));
        let server = Arc::new(Server::new(policy, sender_tls, smtp_config));
        let smtp_counters = server.counters();

        let smtp_listener = bind("smtp", args.smtp.unwrap_or(config.listen.smtp)).await?;
        let smtps_listener = bind("smtps", args.smtps.unwrap_or(config.listen.smtps)).await?;
        let api_listener = bind("api", args.api.unwrap_or(config.listen.api)).await?;
        let gateway_addrs = (
            smtp_listener.local_addr()?,
            smtps_listener.local_addr()?,
            api_listener.local_addr()?,
        );

        let (s, rx) = (server.clone(), stop.clone());
        tasks.spawn(async move {
            if let Err(e) = s.serve_starttls(smtp_listener, rx).await {
                tracing::error!(error = %e, "SMTP listener failed");
            }
        });
        let (s, rx) = (server.clone(), stop.clone());
        tasks.spawn(async move {
            if let Err(e) = s.serve_implicit_tls(smtps_listener, rx).await {
                tracing::error!(error = %e, "SMTPS listener failed");
            }
        });
        // Uploads and reports are signed with the gateway's current S/MIME identity.
        let identity = config
            .smime
            .decryption_keys
            .first()
            .context("smime.decryption_keys is empty")?;
        let identity = (
            config.resolve(&identity.cert),
            config.resolve(&identity.key),
        );
        let uploads = match &config.back_office {
            Some(back_office) => {
                let certificate = config.resolve(&back_office.certificate);
                let sealer = BackOfficeSealer::load(
                    store.clone(),
                    (&identity.0, &identity.1),
                    &certificate,
                    back_office,
                    &config.domain,
                )
                .with_context(|| {
                    format!(
                        "reading the back office certificate {}",
                        certificate.display()
                    )
                })?;
                Some(api::Uploads {
                    sealer: Arc::new(sealer),
                    max_size: back_office.max_upload_size,
                })
            }
            None => None,
        };
        let outbound = Arc::new(Notify::new());
        let filed = Arc::new(watch::Sender::new(()));
        let router = api::router(ApiState {
            store: store.clone(),
            keys: Arc::new(crate::member_pgp::OpenPgpKeyCheck),
            letters: Arc::new(crate::member_pgp::StoredPgpMimeReader),
            outbound: outbound.clone(),
            filed: filed.clone(),
            uploads,
            security: security(&config),
            smarthealth: api::SmarthealthRules {
                terms_version: config.member_api.smarthealth_terms_version.clone(),
                quota: config.member_api.smarthealth_quota_bytes,
            },
            basic: Arc::new(api::RateLimits::new(
                config.basic_tier.uploads_per_install,
                config.basic_tier.uploads_per_ip,
                std::time::Duration::from_secs(config.basic_tier.window_secs),
            )),
            exports: Arc::new(tokio::sync::Semaphore::new(
                config
                    .member_api
                    .max_exports
                    .min(tokio::sync::Semaphore::MAX_PERMITS),
            )),
        });
        let (rx, limits) = (stop.clone(), config.member_api.listener_limits());
        tasks.spawn(async move {
            if let Err(e) = api::serve(api_listener, api_tls, router, limits, rx).await {
                tracing::error!(error = %e, "API listener failed");
            }
        });
        let watchdog = Arc::new(Watchdog::new(
            store.clone(),
            spool.clone(),
            config.queue.clone(),
            &config.hostname,
            outbound.clone(),
        ));
        tasks.spawn(watchdog.run(stop.clone()));
        let pipeline = intake.as_ref().map(|_| {
            let pipeline = Pipeline::new(
                store.clone(),
                spool.clone(),
                keys,
                anchors,
                (&config.domain, &config.hostname),
                outbound.clone(),
                filed,
            )
            .with_verify_at(config.smime.verify_at)
            .with_unauthenticated(config.smime.unauthenticated_encryption)
            .with_earztbrief(config.kim.earztbrief)
            .with_smarthealth_quota(config.member_api.smarthealth_quota_bytes)
            .with_workers(config.pipeline.workers);
            Arc::new(pipeline)
        });
        let reload: control::TrustReload = {
            let (config, store, pipeline) = (config.clone(), store.clone(), pipeline.clone());
            Arc::new(move || {
                let (tls, signers) = sender_trust(&config, &store, (&tls_cert, &tls_key))?;
                server.set_tls(tls);
                if let Some(pipeline) = &pipeline {
                    pipeline.set_anchors(signers);
                }
                tracing::info!("trust anchors taken up anew");
                Ok(())
            })
        };
        let installation = Arc::new(Installation {
            config: config.clone(),
            store: store.clone(),
            spool,
        });
        tasks.spawn(trust_files::watch(
            trust_paths,
            trust_seen,
            reload.clone(),
            stop.clone(),
        ));
        tasks.spawn(control::serve(
            control_listener,
            control_path,
            installation,
            reload,
            stop.clone(),
        ));
        tasks.spawn(crate::lifecycle::run(store.clone(), stop.clone()));
        match (pipeline, &intake, running) {
            (Some(pipeline), Some(intake), Some((running, crashed))) => {
                let supervisor =
                    Supervisor::new(pipeline, config.pipeline.clone(), intake, running);
                tasks.spawn(Arc::new(supervisor).run(crashed, stop.clone()));
            }
            _ => tracing::warn!("queue held: letters are accepted and spooled but not processed"),
        }
        let signer = ReportSigner::load(&identity.0, &identity.1)
            .context("reading the report signing key")?;
        let admin = match &config.admin {
            Some(admin) => {
                let token = zeroize::Zeroizing::new(read(&admin.token_file)?);
                let token = std::str::from_utf8(&token)
                    .context("the admin token file is not text")?
                    .trim();
                if token.len() < 32 {
                    bail!("the admin token must be at least 32 characters (openssl rand -hex 32)");
                }
                let state = AdminState {
                    store: store.clone(),
                    token_sha256: Sha256::digest(token.as_bytes()).into(),
                    smtp: smtp_counters,
                };
                let listener = bind("admin", args.admin.unwrap_or(admin.listen)).await?;
                let addr = listener.local_addr()?;
                let (tls, rx) = (admin_tls, stop.clone());
                tasks.spawn(async move {
                    let limits = api::ListenerLimits::default();
                    if let Err(e) =
                        api::serve(listener, tls, api::admin_router(state), limits, rx).await
                    {
                        tracing::error!(error = %e, "admin listener failed");
                    }
                });
                Some(addr)
            }
            None => None,
        };
        let outbox = Arc::new(Outbox::new(store.clone(), &config, signer)?);
        tasks.spawn(outbox.run(outbound, stop));
        Ok(Gateway {
            smtp: gateway_addrs.0,
            smtps: gateway_addrs.1,
            api: gateway_addrs.2,
            admin,
            shutdown,
            tasks,
            store,
        })
    }

    /// Stops accepting, lets sessions finish (up to 10 s) and waits for every task.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        // The bodies of letters processed a moment ago leave the disk before the
        // process does (pipeline threads that outlive their time limit may keep the
        // store from being dropped).
        let store = self.store.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || store.settle_punches()).await {
            tracing::error!(error = %e, "the last bodies were not punched; the next start does it");
        }
    }
}

/// The member API's credential policy and enrolment limiters from the configuration.
fn security(config: &Config) -> api::Security {
    let rules = &config.member_api;
    api::Security {
        credentials: rules.credentials(),
        enrolment_per_ip: Arc::new(api::Limiter::new(
            rules.enrollment_limit(rules.enrollment_per_ip),
        )),
        enrolment_per_device: Arc::new(api::Limiter::new(
            rules.enrollment_limit(rules.enrollment_per_device),
        )),
    }
}

/// Binds one listener and logs its address once.
async fn bind(name: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {name} on {addr}"))?;
    tracing::info!("{name} listening on {}", listener.local_addr()?);
    Ok(listener)
}

/// The gateway's S/MIME decryption keys as configured.
pub(crate) fn decryption_keys(config: &Config) -> anyhow::Result<Vec<DecryptionKey>> {
    let mut keys = Vec::new();
    for pair in &config.smime.decryption_keys {
        let read = |path: &PathBuf| {
            let path = config.resolve(path);
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
        };
        let key = zeroize::Zeroizing::new(read(&pair.key)?);
        keys.push(DecryptionKey::from_pem(&read(&pair.cert)?, &key)?);
    }
    Ok(keys)
}

/// Whom senders must chain to, from the anchors configured and stored now: the TLS
/// configuration of the sender listeners (the gateway's certificate and key `tls`, PEM)
/// and the signer trust of the pipeline. Read at start and again when the trust
/// changes while the server runs.
fn sender_trust(
    config: &Config,
    store: &kvgate_store::Store,
    (cert, key): (&[u8], &[u8]),
) -> anyhow::Result<(Arc<rustls::ServerConfig>, TrustAnchors)> {
    let pems = trust_anchor_pems(config, store)?;
    let roots: Vec<&[u8]> = pems.iter().map(Vec::as_slice).collect();
    // Read once for both: the handshake and the letters see the same revocations.
    let crls = crl_files(config)?;
    let crl_slices: Vec<&[u8]> = crls.iter().map(Vec::as_slice).collect();
    // A practice whose TLS certificate a configured CRL revokes is refused at the
    // handshake: it cannot submit, nor learn anything of members from RCPT replies.
    let tls = tls::sender_server_config_with_crls(cert, key, &roots, &crl_slices)?;
    Ok((tls, signer_trust(config, &pems, &crls)?))
}

/// The contents of the CRL files of `[trust] crls`.
pub(crate) fn crl_files(config: &Config) -> anyhow::Result<Vec<Vec<u8>>> {
    config
        .trust
        .crls
        .iter()
        .map(|path| {
            let path = config.resolve(path);
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
        })
        .collect()
}

/// The trust anchors: files named in the configuration plus those added with
/// `kvgate trust add`.
pub(crate) fn trust_anchor_pems(
    config: &Config,
    store: &kvgate_store::Store,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut pems = Vec::new();
    for path in &config.trust.anchors {
        let path = config.resolve(path);
        pems.push(
            std::fs::read(&path)
                .with_context(|| format!("reading trust anchor {}", path.display()))?,
        );
    }
    pems.extend(store.trust_anchors()?.into_iter().map(String::into_bytes));
    if pems.is_empty() {
        anyhow::bail!("no trust anchors: configure trust.anchors or run `kvgate trust add`");
    }
    Ok(pems)
}

/// How signer certificates are validated: the anchors (PEM), plus the
/// configured intermediates and revocation mode, and the CRLs `crls` (the files'
/// contents, [`crl_files`]).
pub(crate) fn signer_trust(
    config: &Config,
    anchor_pems: &[Vec<u8>],
    crls: &[Vec<u8>],
) -> anyhow::Result<TrustAnchors> {
    let mut anchors = Vec::new();
    for pem in anchor_pems {
        anchors.extend(x509::parse_pem_chain(pem)?);
    }
    let read = |path: &PathBuf| {
        let path = config.resolve(path);
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
    };
    let mut intermediates = Vec::new();
    for path in &config.trust.intermediates {
        intermediates.extend(x509::parse_pem_chain(&read(path)?)?);
    }
    let policy = RevocationPolicy {
        fail_mode: match config.trust.revocation {
            RevocationMode::Hard => FailMode::Hard,
            RevocationMode::Soft => FailMode::Soft,
            RevocationMode::Strict => FailMode::Strict,
        },
        ..RevocationPolicy::default()
    };
    let mut revocation = Revocation::new(policy);
    for crl in crls {
        revocation = revocation.with_crl(crl)?;
    }
    Ok(TrustAnchors::new(&anchors)?
        .with_intermediates(&intermediates)
        .with_revocation(revocation))
}
