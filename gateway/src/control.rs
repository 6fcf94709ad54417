//! Where an admin command runs: on the store itself, or in the server that has it.
//!
//! One process has the store open at a time (see [`kvgate_store::Store::open`]). An
//! admin command (`kvgate member add`, `track`, `quarantine release`, …) opens the
//! installation itself when no server runs. While `kvgate serve` has it, the command
//! sends its arguments and working directory over the server's control socket,
//! `control.sock` in the data directory; the server runs the same command on its own
//! store and sends back what it printed and its exit status. The socket is the
//! owner's alone (mode 0600), and the server also checks that the peer runs as its
//! own user (or root), so the socket reaches no further than the store's files do.
//!
//! The files a command names are read by the command's own process and sent with its
//! arguments (see [`crate::input_file`]): the server may run as another user, and a
//! relative name means the directory the command was typed in.
//!
//! One exchange per connection, JSON both ways: the command writes a [`Request`] and
//! closes its side, the server answers with a [`Reply`] and closes.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::Parser;
use kvgate_store::StoreError;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::watch;
use zeroize::{Zeroize, Zeroizing};

use crate::cli::{AdminCommand, Cli, Command};
use crate::config::Config;
use crate::input_file::InputFile;
use crate::runtime::{Installation, config_path};

/// The socket's file name in the data directory.
pub const SOCKET: &str = "control.sock";

/// The most a request may hold: its arguments and the files it names, base64 (a
/// letter for `kvgate verify` is the largest).
const MAX_REQUEST: u64 = 256 * 1024 * 1024;

/// How long the server waits for a connected command to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an admin command waits for another one that has the store.
const BUSY_WAIT: Duration = Duration::from_secs(10);

/// How often it tries again meanwhile.
const BUSY_RETRY: Duration = Duration::from_millis(100);

/// An admin command sent to the server.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// The arguments after `kvgate`, as typed.
    pub args: Vec<String>,
    /// The contents of the files the command names, in its order (see
    /// [`AdminCommand::files`]).
    pub files: Vec<FileContents>,
}

/// A file's contents as sent with a [`Request`] (base64), wiped when dropped: it may
/// be a private key.
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FileContents(String);

impl FileContents {
    /// The contents of `file`, read here.
    fn read(file: &InputFile) -> anyhow::Result<Self> {
        Ok(FileContents(BASE64.encode(file.read()?)))
    }

    /// The bytes sent.
    fn decode(&self) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        let mut bytes = Zeroizing::new(Vec::new());
        BASE64
            .decode_vec(&self.0, &mut bytes)
            .context("a file's contents are not base64")?;
        Ok(bytes)
    }
}

impl Drop for FileContents {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// What the server's run of an admin command printed, and how it ended.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Reply {
    /// What it printed as results.
    pub stdout: String,
    /// What it printed as errors.
    pub stderr: String,
    /// Its exit status (0 for success).
    pub status: u8,
}

/// Runs an admin command typed on the command line, here or in the server that has
/// the store open, and prints what it printed. Another admin command that has the
/// store is waited for (up to [`BUSY_WAIT`]).
pub fn run_admin(mut command: AdminCommand) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    if !command.needs_installation() {
        return print(Ok(reply(command.run(None, &mut stdout), Vec::new())));
    }
    let path = config_path(command.config());
    let deadline = Instant::now() + BUSY_WAIT;
    loop {
        let error = match Installation::open(&path) {
            Ok(installation) => {
                let outcome = command.run(Some(&installation), &mut stdout);
                return print(Ok(reply(outcome, Vec::new())));
            }
            Err(error) => error,
        };
        if !in_use(&error) {
            return print(Err(error));
        }
        match forward(&path, &mut command) {
            Ok(Some(reply)) => return print(Ok(reply)),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(BUSY_RETRY),
            Ok(None) => {
                return print(Err(error.context(format!(
                    "no kvgate serve answers on its control socket, and the store stayed \
                     in use for {} s",
                    BUSY_WAIT.as_secs()
                ))));
            }
            Err(error) => return print(Err(error)),
        }
    }
}

/// Whether opening an installation failed because another process has its store.
fn in_use(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| matches!(cause.downcast_ref(), Some(StoreError::InUse)))
}

/// The reply for a command's outcome, given what it printed.
fn reply(outcome: anyhow::Result<bool>, stdout: Vec<u8>) -> Reply {
    let (stderr, status) = match outcome {
        Ok(true) => (String::new(), 0),
        Ok(false) => (String::new(), 1),
        Err(error) => (format!("kvgate: {error:#}\n"), 1),
    };
    Reply {
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr,
        status,
    }
}

/// Prints a reply (or why there is none) and turns it into the exit code.
fn print(reply: anyhow::Result<Reply>) -> ExitCode {
    match reply {
        Ok(reply) => {
            print!("{}", reply.stdout);
            eprint!("{}", reply.stderr);
            ExitCode::from(reply.status)
        }
        Err(error) => {
            eprintln!("kvgate: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The control socket of the installation configured at `config`.
fn socket_path(config: &Config) -> PathBuf {
    config.data_dir().join(SOCKET)
}

/// Sends this process's admin command (parsed as `command`, whose files it reads) to
/// the server that has the installation's store open, and returns its reply; `None`
/// if no server listens (another admin command has the store).
fn forward(config: &Path, command: &mut AdminCommand) -> anyhow::Result<Option<Reply>> {
    let socket = socket_path(&Config::load(config)?);
    let mut stream = match UnixStream::connect(&socket) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e).with_context(|| format!("connecting to {}", socket.display())),
    };
    let args = std::env::args_os()
        .skip(1)
        .map(|arg| {
            arg.into_string()
                .map_err(|arg| anyhow::anyhow!("the argument {arg:?} is not UTF-8"))
        })
        .collect::<anyhow::Result<_>>()?;
    let files = command
        .files()
        .map(|file| FileContents::read(file))
        .collect::<anyhow::Result<_>>()?;
    let request = Zeroizing::new(serde_json::to_vec(&Request { args, files })?);
    stream
        .write_all(&request)
        .with_context(|| format!("sending the command on {}", socket.display()))?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .with_context(|| format!("reading the answer on {}", socket.display()))?;
    let reply = serde_json::from_slice(&answer).with_context(|| {
        format!(
            "the server on {} ended without a complete answer",
            socket.display()
        )
    })?;
    Ok(Some(reply))
}

/// Binds the installation's control socket (replacing one a server that ended left:
/// this process has the store, so no other server runs), owner only.
pub fn bind(config: &Config) -> anyhow::Result<(UnixListener, PathBuf)> {
    let path = socket_path(config);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("binding the control socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    Ok((listener, path))
}

/// Runs the admin commands sent to `listener` on `installation` until `shutdown`,
/// then removes the socket at `path`; `reload` takes up trust anchors added meanwhile.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    installation: Arc<Installation>,
    reload: TrustReload,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(answer(stream, installation.clone(), reload.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    if let Err(error) = std::fs::remove_file(&path) {
        tracing::warn!(%error, path = %path.display(), "cannot remove the control socket");
    }
}

/// Answers one connection.
async fn answer(
    mut stream: tokio::net::UnixStream,
    installation: Arc<Installation>,
    reload: TrustReload,
) {
    let reply = match receive(&mut stream).await {
        Ok(request) => {
            let run = move || execute(request, &installation, &reload);
            match tokio::task::spawn_blocking(run).await {
                Ok(reply) => reply,
                Err(error) => reply(Err(anyhow::anyhow!("the command failed: {error}")), vec![]),
            }
        }
        Err(error) => {
            tracing::warn!(error = %format!("{error:#}"), "control socket: request refused");
            reply(Err(error), Vec::new())
        }
    };
    let sent = async {
        let bytes = serde_json::to_vec(&reply)?;
        stream.write_all(&bytes).await?;
        stream.shutdown().await?;
        anyhow::Ok(())
    };
    if let Err(error) = sent.await {
        tracing::warn!(error = %format!("{error:#}"), "control socket: the answer was not delivered");
    }
}

/// Reads a request from a peer running as this process's user (or root).
async fn receive(stream: &mut tokio::net::UnixStream) -> anyhow::Result<Request> {
    let peer = stream
        .peer_cred()
        .context("asking the peer's credentials")?;
    let own = rustix::process::geteuid().as_raw();
    if peer.uid() != own && peer.uid() != 0 {
        bail!(
            "user {} may not run admin commands of a server running as user {own}",
            peer.uid()
        );
    }
    let mut bytes = Zeroizing::new(Vec::new());
    tokio::time::timeout(
        REQUEST_TIMEOUT,
        (&mut *stream).take(MAX_REQUEST).read_to_end(&mut bytes),
    )
    .await
    .context("no complete request in time")??;
    serde_json::from_slice(&bytes).context("the request is not a control request")
}

/// Runs a request's command on the installation and collects what it printed.
fn execute(request: Request, installation: &Installation, reload: &TrustReload) -> Reply {
    let parsed = Cli::try_parse_from(std::iter::once("kvgate".to_owned()).chain(request.args));
    let mut command = match parsed {
        Ok(Cli {
            command: Command::Admin(command),
        }) => command,
        Ok(_) => {
            return reply(
                Err(anyhow::anyhow!(
                    "a running server takes only admin commands"
                )),
                Vec::new(),
            );
        }
        // Help, version, or arguments this server's version does not know.
        Err(error) => {
            let rendered = error.render().to_string();
            let (stdout, stderr) = if error.use_stderr() {
                (String::new(), rendered)
            } else {
                (rendered, String::new())
            };
            return Reply {
                stdout,
                stderr,
                status: u8::try_from(error.exit_code()).unwrap_or(1),
            };
        }
    };
    tracing::info!(
        command = command.name(),
        "admin command over the control socket"
    );
    if let Err(error) = supply(&mut command, &request.files) {
        return reply(Err(error), Vec::new());
    }
    let anchors = || installation.store.trust_anchors().map(|pems| pems.len());
    let anchors_before = anchors();
    let trust = command.name() == "trust";
    let verify = command.name() == "verify";
    let mut stdout = Vec::new();
    let mut outcome = command.run(Some(installation), &mut stdout);
    if verify {
        // A --config the command named is not the one used: the server's is.
        stdout.extend_from_slice(VERIFIED_BY_SERVER.as_bytes());
    }
    if trust && outcome.is_ok() && anchors().ok() > anchors_before.ok() {
        outcome = match reload() {
            Ok(()) => {
                stdout.extend_from_slice(ANCHORS_TAKEN_UP.as_bytes());
                outcome
            }
            Err(error) => Err(error.context(
                "the trust anchor is stored, but the running server could not take it up (restart it)",
            )),
        };
    }
    reply(outcome, stdout)
}

/// Gives `command` the contents of its files as sent with it.
fn supply(command: &mut AdminCommand, sent: &[FileContents]) -> anyhow::Result<()> {
    let mut sent = sent.iter();
    for file in command.files() {
        let contents = sent
            .next()
            .with_context(|| format!("{} was not sent with the command", file.path().display()))?;
        file.supply(contents.decode()?);
    }
    if sent.next().is_some() {
        bail!("the command was sent with more files than it names");
    }
    Ok(())
}

/// Said when a letter was verified by the running server.
const VERIFIED_BY_SERVER: &str = "configuration: the running server's (it has the store): its keys, trust and CRL files were used\n";

/// Said when a trust anchor was added through a running server and it took it up.
const ANCHORS_TAKEN_UP: &str =
    "the running server uses the new trust anchors from now on (connections and letters)\n";

/// Makes the running server take up its trust anchors anew (after `kvgate trust add`):
/// its TLS listeners and its pipeline read them when it starts.
pub type TrustReload = Arc<dyn Fn() -> anyhow::Result<()> + Send + Sync>;
