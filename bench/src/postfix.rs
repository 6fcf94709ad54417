//! `--compare-postfix`: a private Postfix instance on a loopback port, queueing what it
//! accepts (every queue file is fsynced before 250) and handing it to the `discard`
//! transport, driven by Postfix's own `smtp-source` at the benchmark's concurrencies
//! and sizes. Nothing is installed here; without Postfix the comparison says so.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde::Serialize;

/// How to get the two programs on Debian and Ubuntu.
pub const INSTALL: &str = "apt-get install postfix   # provides postfix and smtp-source";

/// What the comparison came to.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Comparison {
    /// Not asked for (`--compare-postfix` not given).
    NotRequested,
    /// A program is missing.
    NotInstalled {
        /// The programs not found.
        missing: Vec<String>,
        /// How to install them.
        install: String,
    },
    /// Postfix ran.
    Ran {
        /// One row per size and concurrency.
        rows: Vec<PostfixRow>,
    },
    /// Postfix was there but the run failed.
    Failed {
        /// Why.
        error: String,
    },
}

/// Postfix's figures for one size and concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct PostfixRow {
    /// Message body size in KiB.
    pub size_kib: usize,
    /// SMTP sessions at once (`smtp-source -s`).
    pub concurrency: usize,
    /// Messages sent (`smtp-source -m`).
    pub messages: usize,
    /// Accepted messages per second (wall clock of `smtp-source`).
    pub accepted_per_s: f64,
}

/// Runs the comparison for every size (KiB) and concurrency, `messages` each.
pub fn compare(sizes_kib: &[usize], concurrencies: &[usize], messages: usize) -> Comparison {
    let postfix = find("postfix");
    let source = find("smtp-source");
    let (Some(postfix), Some(source)) = (postfix.clone(), source.clone()) else {
        let missing = [("postfix", postfix), ("smtp-source", source)]
            .into_iter()
            .filter(|(_, found)| found.is_none())
            .map(|(name, _)| name.to_owned())
            .collect();
        return Comparison::NotInstalled {
            missing,
            install: INSTALL.to_owned(),
        };
    };
    match run(&postfix, &source, sizes_kib, concurrencies, messages) {
        Ok(rows) => Comparison::Ran { rows },
        Err(e) => Comparison::Failed {
            error: format!("{e:#}"),
        },
    }
}

/// A program on PATH or in the sbin directories, where Debian puts both.
fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Starts the instance, measures every scenario, stops the instance.
fn run(
    postfix: &Path,
    source: &Path,
    sizes_kib: &[usize],
    concurrencies: &[usize],
    messages: usize,
) -> anyhow::Result<Vec<PostfixRow>> {
    let scratch = tempfile::tempdir().context("creating the Postfix directory")?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let conf = configure(scratch.path(), port, concurrencies)?;
    let measured = control(postfix, &conf, "start")
        .and_then(|()| measure(source, port, sizes_kib, concurrencies, messages));
    let stopped = control(postfix, &conf, "stop");
    let rows = measured.with_context(|| log_tail(scratch.path()))?;
    stopped?;
    Ok(rows)
}

/// The end of the instance's log, to say why something failed.
fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("maillog")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    format!(
        "Postfix log: {}",
        lines[lines.len().saturating_sub(3)..].join(" | ")
    )
}

/// Writes main.cf and master.cf of the private instance; returns its config directory.
fn configure(dir: &Path, port: u16, concurrencies: &[usize]) -> anyhow::Result<PathBuf> {
    let conf = dir.join("conf");
    for sub in ["conf", "queue", "data"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    // The postfix user must reach the data directory and own it.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let (uid, gid) = account("postfix")?;
    std::os::unix::fs::chown(dir.join("data"), Some(uid), Some(gid))
        .context("handing the data directory to the postfix user")?;
    let processes = concurrencies.iter().max().copied().unwrap_or(1) + 16;
    // in_flow_delay 0: Postfix's default flow control pauses each accepted message up
    // to a second while its queue manager lags behind the intake, which at 32 sessions
    // halved the accepted rate measured here (821-890/s against 1509/s without it);
    // the bar is Postfix's intake at full speed.
    let main = format!(
        "compatibility_level = 3.6\n\
         queue_directory = {queue}\n\
         data_directory = {data}\n\
         inet_interfaces = 127.0.0.1\n\
         inet_protocols = ipv4\n\
         myhostname = postfix-bench.localhost\n\
         mydestination =\n\
         mynetworks = 127.0.0.0/8\n\
         alias_maps =\n\
         alias_database =\n\
         default_transport = discard:benchmark\n\
         relay_transport = discard:benchmark\n\
         default_process_limit = {processes}\n\
         in_flow_delay = 0s\n\
         syslog_name = postfix-bench\n\
         maillog_file_prefixes = {dir}\n\
         maillog_file = {dir}/maillog\n",
        queue = dir.join("queue").display(),
        data = dir.join("data").display(),
        dir = dir.display(),
    );
    std::fs::write(conf.join("main.cf"), main)?;
    let template = std::fs::read_to_string("/etc/postfix/master.cf")
        .context("reading /etc/postfix/master.cf (installed with postfix)")?;
    std::fs::write(conf.join("master.cf"), master_cf(&template, port))?;
    Ok(conf)
}

/// The user and group ID of a system account, from /etc/passwd.
fn account(name: &str) -> anyhow::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&name))
        .and_then(|fields| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))
        .with_context(|| format!("no {name} account in /etc/passwd"))
}

/// The installed master.cf with the SMTP listener moved to `127.0.0.1:port` and every
/// service out of chroot (the private queue directory has no chroot files).
fn master_cf(template: &str, port: u16) -> String {
    let mut out = String::new();
    for line in template.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let is_service = !line.starts_with([' ', '\t', '#']) && fields.len() >= 8;
        if !is_service {
            out.push_str(line);
        } else {
            let mut fields = fields;
            let listener = format!("127.0.0.1:{port}");
            if fields[0] == "smtp" && fields[1] == "inet" {
                fields[0] = &listener;
            }
            fields[4] = "n";
            out.push_str(&fields.join(" "));
        }
        out.push('\n');
    }
    out
}

/// `postfix -c CONF start|stop`.
fn control(postfix: &Path, conf: &Path, action: &str) -> anyhow::Result<()> {
    let output = Command::new(postfix)
        .arg("-c")
        .arg(conf)
        .arg(action)
        .output()
        .with_context(|| format!("running {}", postfix.display()))?;
    ensure!(
        output.status.success(),
        "postfix {action} failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// Runs `smtp-source` for every size and concurrency once the listener answers.
fn measure(
    source: &Path,
    port: u16,
    sizes_kib: &[usize],
    concurrencies: &[usize],
    messages: usize,
) -> anyhow::Result<Vec<PostfixRow>> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    while TcpStream::connect(addr).is_err() {
        if started.elapsed() > Duration::from_secs(20) {
            bail!("Postfix did not listen on {addr} within 20 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut rows = Vec::new();
    for &size_kib in sizes_kib {
        for &concurrency in concurrencies {
            let messages = messages.max(concurrency);
            let clock = Instant::now();
            let output = Command::new(source)
                .args(["-d", "-s", &concurrency.to_string()])
                .args(["-m", &messages.to_string()])
                .args(["-l", &(size_kib * 1024).to_string()])
                .args([
                    "-f",
                    "sender@postfix-bench.test",
                    "-t",
                    "member@postfix-bench.test",
                ])
                .arg(addr.to_string())
                .output()
                .with_context(|| format!("running {}", source.display()))?;
            let seconds = clock.elapsed().as_secs_f64();
            ensure!(
                output.status.success() && output.stderr.is_empty(),
                "smtp-source failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            rows.push(PostfixRow {
                size_kib,
                concurrency,
                messages,
                accepted_per_s: messages as f64 / seconds,
            });
        }
    }
    Ok(rows)
}
