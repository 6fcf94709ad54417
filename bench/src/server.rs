//! The gateway under test as a separate process: `kvgate init`, the admin CLI, and a
//! running `kvgate serve` whose CPU time and peak memory are read from /proc.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use kvgate::client::tls_config;
use rustls::ClientConfig;

/// How long `serve` may take to log its listeners, and to exit after SIGTERM.
const PATIENCE: Duration = Duration::from_secs(30);

/// An installation made by `kvgate init`.
pub struct Installation {
    /// The `kvgate` binary.
    pub kvgate: PathBuf,
    /// The data directory.
    pub dir: PathBuf,
}

impl Installation {
    /// Runs `kvgate init --dir DIR`.
    pub fn init(kvgate: &Path, dir: &Path) -> anyhow::Result<Self> {
        let installation = Installation {
            kvgate: kvgate.to_owned(),
            dir: dir.to_owned(),
        };
        installation.run(&["init", "--dir", &dir.to_string_lossy()])?;
        Ok(installation)
    }

    /// Fits the installation's limits to the load, where they are below it: one client
    /// certificate (the load's practice) may hold `sessions` SMTP sessions at once (the
    /// default is 100); `members` enrolments may come from one address within the rate
    /// limit's window (the default is 20); and a member's smarthealth inbox may hold
    /// `quota` octets (the default, 1 GiB, is less than a long run of 2 MiB letters
    /// files for one member).
    pub fn fit_limits(&self, sessions: usize, members: usize, quota: u64) -> anyhow::Result<()> {
        let path = self.config();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut config: toml::Table = text
            .parse()
            .with_context(|| format!("parsing {}", path.display()))?;
        let sessions = i64::try_from(sessions).context("too many sessions")?;
        let members = i64::try_from(members).context("too many members")?;
        let quota = i64::try_from(quota).context("too large a quota")?;
        for (section, key, least) in [
            ("limits", "max_connections", sessions),
            ("limits", "max_connections_per_certificate", sessions),
            ("member_api", "enrollment_per_ip", members),
            ("member_api", "smarthealth_quota_bytes", quota),
        ] {
            let table = config
                .entry(section)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .with_context(|| format!("[{section}] of the configuration is not a table"))?;
            if table
                .get(key)
                .and_then(toml::Value::as_integer)
                .is_none_or(|n| n < least)
            {
                table.insert(key.to_owned(), toml::Value::Integer(least));
            }
        }
        std::fs::write(&path, toml::to_string(&config)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// The configuration file.
    pub fn config(&self) -> PathBuf {
        self.dir.join("kvgate.toml")
    }

    /// A file of the development PKI, read whole.
    pub fn pki(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        let path = self.dir.join("pki").join(name);
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
    }

    /// Client TLS for SMTP submission (with the demo practice's certificate) and for
    /// the member API, both trusting the installation's CA.
    pub fn client_tls(&self) -> anyhow::Result<(Arc<ClientConfig>, Arc<ClientConfig>)> {
        let ca = self.pki("ca.pem")?;
        let practice = (
            self.pki("demo-practice.pem")?,
            self.pki("demo-practice.key")?,
        );
        let smtp = tls_config(&ca, Some((&practice.0, &practice.1)))?;
        Ok((smtp, tls_config(&ca, None)?))
    }

    /// The log of `kvgate serve` (`DIR/serve.log`).
    pub fn serve_log(&self) -> PathBuf {
        self.dir.join("serve.log")
    }

    /// Runs one `kvgate` command to its end and returns its standard output; fails
    /// with its standard error when it fails.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new(&self.kvgate)
            .args(args)
            .output()
            .with_context(|| format!("starting {}", self.kvgate.display()))?;
        ensure!(
            output.status.success(),
            "kvgate {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// CPU time and memory of the server process.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// User plus system CPU seconds since the process started.
    pub cpu_seconds: f64,
    /// Peak resident set size (VmHWM) in bytes since start or the last reset.
    pub peak_rss_bytes: u64,
}

/// A running `kvgate serve`.
pub struct Server {
    child: Child,
    /// The implicit-TLS SMTP listener.
    pub smtps: SocketAddr,
    /// The member API.
    pub api: SocketAddr,
}

impl Server {
    /// Starts `kvgate serve` on free loopback ports; its log goes to `DIR/serve.log`.
    pub fn start(installation: &Installation) -> anyhow::Result<Self> {
        let log_path = installation.serve_log();
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let any = "127.0.0.1:0";
        let child = Command::new(&installation.kvgate)
            .args(["serve", "--config"])
            .arg(installation.config())
            .args(["--smtp", any, "--smtps", any, "--api", any])
            .env("RUST_LOG", "warn,kvgate::serve=info")
            // Run as a service normally does: with these set, every error value that
            // sequoia creates in its normal parsing flow captures a backtrace (seen at
            // about 3% of the server's CPU with RUST_BACKTRACE=1).
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", installation.kvgate.display()))?;
        let mut server = Server {
            child,
            smtps: SocketAddr::from(([0, 0, 0, 0], 0)),
            api: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        let started = Instant::now();
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "kvgate serve exited with {status}; see {}",
                    log_path.display()
                );
            }
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let (Some(smtps), Some(api)) = (
                listener(&text, "smtps listening on "),
                listener(&text, "api listening on "),
            ) {
                server.smtps = smtps;
                server.api = api;
                return Ok(server);
            }
            if started.elapsed() > PATIENCE {
                bail!(
                    "kvgate serve did not log its listeners; see {}",
                    log_path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process's CPU time and peak RSS now.
    pub fn usage(&self) -> anyhow::Result<Usage> {
        let proc = PathBuf::from(format!("/proc/{}", self.child.id()));
        let stat = std::fs::read_to_string(proc.join("stat")).context("reading /proc/PID/stat")?;
        // Fields after the command name (which may hold spaces) start at field 3.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |index: usize| -> anyhow::Result<f64> {
            let field = fields.get(index).context("short /proc/PID/stat")?;
            Ok(field.parse::<u64>().context("bad /proc/PID/stat")? as f64)
        };
        let cpu_seconds = (ticks(11)? + ticks(12)?) / clock_ticks();
        let status =
            std::fs::read_to_string(proc.join("status")).context("reading /proc/PID/status")?;
        let peak_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .context("no VmHWM in /proc/PID/status")?;
        Ok(Usage {
            cpu_seconds,
            peak_rss_bytes: peak_kib * 1024,
        })
    }

    /// How the process ended, or `None` while it runs.
    pub fn exit_status(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .context("asking whether kvgate serve still runs")
    }

    /// Resets the peak RSS (VmHWM) to the current RSS, so the next scenario's peak is
    /// its own.
    pub fn reset_peak(&self) -> anyhow::Result<()> {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5")
            .context("resetting the peak RSS through /proc/PID/clear_refs")
    }

    /// Sends SIGTERM and waits for the exit; kills after 30 s.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let pid = libc::pid_t::try_from(self.child.id()).context("pid out of range")?;
        #[allow(unsafe_code)]
        // SAFETY: kill(2) with a pid we spawned and still hold; no memory is shared.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        ensure!(sent == 0, "could not signal kvgate serve");
        let started = Instant::now();
        while self.child.try_wait()?.is_none() {
            if started.elapsed() > PATIENCE {
                self.child.kill()?;
                bail!("kvgate serve did not stop within 30 s of SIGTERM; killed");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Server {
    /// A server left running by an error is killed, never orphaned.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address logged after `prefix`, e.g. `smtps listening on 127.0.0.1:4650`.
fn listener(log: &str, prefix: &str) -> Option<SocketAddr> {
    log.lines().find_map(|line| {
        let (_, rest) = line.split_once(prefix)?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Clock ticks per second, the unit of /proc/PID/stat times.
fn clock_ticks() -> f64 {
    #[allow(unsafe_code)]
    // SAFETY: sysconf has no preconditions and touches no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks.max(1) as f64
}
