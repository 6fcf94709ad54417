//! Conformance tests of the SMTP server: a real listener on a loopback port,
//! driven over TCP and TLS with client certificates (a test PKI made with the
//! `openssl` CLI) with raw bytes, asserting the exact replies and exactly the
//! messages that reached the handler.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kvgate_connectors::smtp::{
    Body, Config, Handler, MailParams, Notify, OriginalRecipient, Peer, RcptParams, Reply, Ret,
    Server,
};
use kvgate_connectors::tls::sender_server_config;
use rustls::pki_types::ServerName;
use rustls::{
    ClientConfig, HandshakeKind, ProtocolVersion, RootCertStore, SupportedProtocolVersion,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- test PKI

struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).unwrap()
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("smtp-pki-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        let ca = |name: &str| {
            let mut args = vec!["req", "-x509"];
            args.extend(ec);
            let key = format!("{name}.key");
            let pem = format!("{name}.pem");
            let subj = format!("/CN={name}");
            args.extend([
                "-keyout", &key, "-out", &pem, "-days", "30", "-subj", &subj,
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            ]);
            openssl(&dir, &args);
        };
        ca("ca");
        ca("rogue-ca");
        let leaf = |name: &str, issuer: &str, ext: &str| {
            std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
            let mut args = vec!["req"];
            args.extend(ec);
            let (key, csr, pem, extfile) =
                (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
            let subj = format!("/CN={name}");
            args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            openssl(&dir, &args);
            openssl(
                &dir,
                &[
                    "x509", "-req", "-in", &csr, "-CA", &format!("{issuer}.pem"), "-CAkey", &format!("{issuer}.key"), "-CAcreateserial",
                    "-out", &pem, "-days", "30", "-extfile", &extfile,
                ],
            );
        };
        leaf(
            "server",
            "ca",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        );
        let client_ext = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n";
        leaf("client", "ca", client_ext);
        leaf("client2", "ca", client_ext);
        leaf("rogue", "rogue-ca", client_ext);
        Pki { dir }
    })
}

fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

// ---------------------------------------------------------------- test handler

#[derive(Default)]
struct Recorder {
    refuse_connect: bool,
    refuse_data: bool,
    events: Mutex<Vec<String>>,
    messages: Mutex<Vec<Vec<u8>>>,
    aborted: AtomicUsize,
}

impl Recorder {
    fn event(&self, e: String) {
        self.events.lock().unwrap().push(e);
    }
    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
    fn messages(&self) -> Vec<Vec<u8>> {
        self.messages.lock().unwrap().clone()
    }
}

impl Handler for Recorder {
    type Session = ();
    type Sink = Vec<u8>;

    fn connect(&self, peer: &Peer) -> Result<(), Reply> {
        self.event(format!(
            "connect certs={} implicit={}",
            peer.client_certs.len(),
            peer.implicit_tls
        ));
        if self.refuse_connect {
            return Err(Reply::new(554, (5, 7, 1), "Sender not registered"));
        }
        Ok(())
    }

    fn mail_from(&self, _: &mut (), reverse_path: &str, params: &MailParams) -> Result<(), Reply> {
        self.event(format!("mail <{reverse_path}> {params:?}"));
        Ok(())
    }

    fn rcpt_to(&self, _: &mut (), forward_path: &str, params: &RcptParams) -> Result<(), Reply> {
        if forward_path.starts_with("unknown") {
            return Err(Reply::new(550, (5, 1, 1), "No such member"));
        }
        self.event(format!("rcpt <{forward_path}> {params:?}"));
        Ok(())
    }

    async fn data_start(&self, _: &mut ()) -> Result<Vec<u8>, Reply> {
        if self.refuse_data {
            return Err(Reply::new(451, (4, 3, 0), "Spool unavailable"));
        }
        Ok(Vec::new())
    }

    async fn data_end(&self, _: &mut (), sink: Vec<u8>) -> Reply {
        let mut messages = self.messages.lock().unwrap();
        messages.push(sink);
        Reply::new(250, (2, 0, 0), format!("T{} queued", messages.len()))
    }

    async fn data_abort(&self, _: &mut (), _: Vec<u8>) {
        self.aborted.fetch_add(1, Ordering::SeqCst);
    }

    fn reset(&self, _: &mut ()) {}
}

// ---------------------------------------------------------------- server and client

struct TestServer {
    addr: SocketAddr,
    handler: Arc<Recorder>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<io::Result<()>>,
}

#[derive(Clone, Copy, PartialEq)]
enum Port {
    StartTls,
    Implicit,
}

fn config() -> Config {
    Config {
        hostname: "mx.test".into(),
        max_message_size: 1000,
        max_recipients: 3,
        ..Config::default()
    }
}

async fn start(port: Port, handler: Recorder, config: Config) -> TestServer {
    install_provider();
    let pki = pki();
    let tls = sender_server_config(
        &pki.read("server.pem"),
        &pki.read("server.key"),
        &[&pki.read("ca.pem")],
    )
    .unwrap();
    let handler = Arc::new(handler);
    let server = Server::new(Arc::clone(&handler), tls, config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (shutdown, rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        match port {
            Port::StartTls => server.serve_starttls(listener, rx).await,
            Port::Implicit => server.serve_implicit_tls(listener, rx).await,
        }
    });
    TestServer {
        addr,
        handler,
        shutdown,
        task,
    }
}

struct Client<S> {
    io: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    fn new(io: S) -> Self {
        Self {
            io: BufReader::new(io),
        }
    }

    async fn send(&mut self, data: &[u8]) {
        self.io.get_mut().write_all(data).await.unwrap();
    }

    /// Reads one (possibly multi-line) reply, with its CRLFs.
    async fn reply(&mut self) -> String {
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(WAIT, self.io.read_line(&mut line))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "connection closed after {reply:?}");
            reply.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return reply;
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// Asserts the server closed the connection (EOF, or a TLS error).
    async fn assert_closed(&mut self) {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(WAIT, self.io.read_to_end(&mut rest))
            .await
            .unwrap();
        assert!(
            read.is_err() || rest.is_empty(),
            "unexpected data {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
}

/// A TLS client offering `versions` and presenting the certificate `cert`
/// (a PKI file stem) if given.
fn client_tls(cert: Option<&str>, versions: &[&'static SupportedProtocolVersion]) -> TlsConnector {
    let pki = pki();
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(&pki.read("ca.pem")).unwrap())
        .unwrap();
    let builder =
        ClientConfig::builder_with_protocol_versions(versions).with_root_certificates(roots);
    let config = match cert {
        Some(name) => {
            let chain =
                vec![CertificateDer::from_pem_slice(&pki.read(&format!("{name}.pem"))).unwrap()];
            let key = PrivateKeyDer::from_pem_slice(&pki.read(&format!("{name}.key"))).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    tcp: TcpStream,
    cert: Option<&str>,
    versions: &[&'static SupportedProtocolVersion],
) -> io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from("localhost").unwrap();
    client_tls(cert, versions).connect(name, tcp).await
}

async fn tls_handshake(tcp: TcpStream, with_cert: bool) -> io::Result<TlsStream<TcpStream>> {
    tls_connect(tcp, with_cert.then_some("client"), rustls::ALL_VERSIONS).await
}

async fn connect_implicit(server: &TestServer) -> Client<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut client = Client::new(tls_handshake(tcp, true).await.unwrap());
    assert_eq!(client.reply().await, "220 mx.test ESMTP kvgate\r\n");
    client
}

/// Starts an implicit-TLS server with `config` and connects a client that
/// has said EHLO.
async fn greeted(config: Config) -> (TestServer, Client<TlsStream<TcpStream>>) {
    let size = format!("SIZE {}", config.max_message_size);
    let server = start(Port::Implicit, Recorder::default(), config).await;
    let mut c = connect_implicit(&server).await;
    assert_eq!(
        c.cmd("EHLO client.test").await,
        EHLO_TLS.replace("SIZE 1000", &size)
    );
    (server, c)
}

/// Connects to the STARTTLS port, says EHLO and upgrades.
async fn connect_starttls(server: &TestServer) -> Client<TlsStream<TcpStream>> {
    let mut plain = Client::new(TcpStream::connect(server.addr).await.unwrap());
    assert_eq!(plain.reply().await, "220 mx.test ESMTP kvgate\r\n");
    assert_eq!(plain.cmd("EHLO client.test").await, EHLO_PLAIN);
    assert_eq!(
        plain.cmd("STARTTLS").await,
        "220 2.0.0 Ready to start TLS\r\n"
    );
    Client::new(tls_handshake(plain.io.into_inner(), true).await.unwrap())
}

const EHLO_PLAIN: &str = "250-mx.test\r\n250-SIZE 1000\r\n250-PIPELINING\r\n250-8BITMIME\r\n\
    250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-DSN\r\n250-CHUNKING\r\n250 STARTTLS\r\n";
const EHLO_TLS: &str = "250-mx.test\r\n250-SIZE 1000\r\n250-PIPELINING\r\n250-8BITMIME\r\n\
    250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-DSN\r\n250 CHUNKING\r\n";

const SENDER_OK: &str = "250 2.1.0 Sender OK\r\n";
const RCPT_OK: &str = "250 2.1.5 Recipient OK\r\n";
const GO_AHEAD: &str = "354 End data with <CR><LF>.<CR><LF>\r\n";
const OK: &str = "250 2.0.0 OK\r\n";

/// MAIL, RCPT, DATA up to the 354.
async fn open_data<S: AsyncRead + AsyncWrite + Unpin>(client: &mut Client<S>) {
    assert_eq!(client.cmd("MAIL FROM:<praxis@example.de>").await, SENDER_OK);
    assert_eq!(
        client.cmd("RCPT TO:<A123456780@postfach.kv.test>").await,
        RCPT_OK
    );
    assert_eq!(client.cmd("DATA").await, GO_AHEAD);
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn implicit_tls_full_transaction() {
    let (server, mut c) = greeted(config()).await;
    assert_eq!(c.cmd("STARTTLS").await, "503 5.5.1 TLS already active\r\n");
    assert_eq!(
        c.cmd("MAIL FROM:<praxis@example.de> SIZE=100 BODY=8BITMIME RET=HDRS ENVID=x+2By")
            .await,
        SENDER_OK
    );
    assert_eq!(
        c.cmd("RCPT TO:<A123456780@postfach.kv.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+40b.de")
            .await,
        RCPT_OK
    );
    assert_eq!(c.cmd("DATA").await, GO_AHEAD);
    c.send(b"Subject: hi\r\n\r\nHello\r\n.\r\n").await;
    assert_eq!(c.reply().await, "250 2.0.0 T1 queued\r\n");
    assert_eq!(
        c.cmd("VRFY someone").await,
        "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n"
    );
    assert_eq!(c.cmd("EXPN list").await, "502 5.5.1 EXPN not supported\r\n");
    assert_eq!(c.cmd("HELP").await, "214 2.0.0 See RFC 5321\r\n");
    assert_eq!(c.cmd("RSET").await, OK);
    assert_eq!(c.cmd("QUIT").await, "221 2.0.0 Bye\r\n");
    c.assert_closed().await;
    assert_eq!(
        server.handler.messages(),
        vec![b"Subject: hi\r\n\r\nHello\r\n".to_vec()]
    );
    assert_eq!(
        server.handler.events(),
        vec![
            "connect certs=1 implicit=true".to_owned(),
            "mail <praxis@example.de> MailParams { size: Some(100), body: Some(EightBitMime), ret: Some(Headers), \
             envid: Some(\"x+y\"), smtputf8: false }"
                .to_owned(),
            "rcpt <A123456780@postfach.kv.test> RcptParams { notify: Some(On { success: true, failure: true, \
             delay: false }), orcpt: Some(OriginalRecipient { addr_type: \"rfc822\", address: \"a@b.de\" }) }"
                .to_owned(),
        ]
    );
}

#[tokio::test]
async fn starttls_full_transaction() {
    let server = start(Port::StartTls, Recorder::default(), config()).await;
    let mut plain = Client::new(TcpStream::connect(server.addr).await.unwrap());
    assert_eq!(plain.reply().await, "220 mx.test ESMTP kvgate\r\n");
    assert_eq!(
        plain.cmd("MAIL FROM:<a@b.de>").await,
        "530 5.7.0 Must issue a STARTTLS command first\r\n"
    );
    assert_eq!(plain.cmd("EHLO client.test").await, EHLO_PLAIN);
    assert_eq!(
        plain.cmd("MAIL FROM:<a@b.de>").await,
        "530 5.7.0 Must issue a STARTTLS command first\r\n"
    );
    assert_eq!(
        plain.cmd("VRFY x").await,
        "530 5.7.0 Must issue a STARTTLS command first\r\n"
    );
    assert_eq!(plain.cmd("NOOP").await, OK);
    assert_eq!(
        plain.cmd("STARTTLS now").await,
        "501 5.5.4 Syntax: STARTTLS\r\n"
    );
    assert_eq!(
        plain.cmd("STARTTLS").await,
        "220 2.0.0 Ready to start TLS\r\n"
    );
    let mut c = Client::new(tls_handshake(plain.io.into_inner(), true).await.unwrap());
    // State is reset by the handshake: EHLO is required again.
    assert_eq!(
        c.cmd("MAIL FROM:<praxis@example.de>").await,
        "503 5.5.1 Send EHLO or HELO first\r\n"
    );
    assert_eq!(c.cmd("EHLO client.test").await, EHLO_TLS);
    assert_eq!(c.cmd("STARTTLS").await, "503 5.5.1 TLS already active\r\n");
    open_data(&mut c).await;
    c.send(b"Body\r\n.\r\n").await;
    assert_eq!(c.reply().await, "250 2.0.0 T1 queued\r\n");
    assert_eq!(c.cmd("HELO again.test").await, "250 mx.test\r\n");
    open_data(&mut c).await;
    c.send(b"Second\r\n.\r\n").await;
    assert_eq!(c.reply().await, "250 2.0.0 T2 queued\r\n");
    assert_eq!(c.cmd("QUIT").await, "221 2.0.0 Bye\r\n");
    c.assert_closed().await;
    assert_eq!(
        server.handler.messages(),
        vec![b"Body\r\n".to_vec(), b"Second\r\n".to_vec()]
    );
    assert_eq!(server.handler.events()[0], "connect certs=1 implicit=false");
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let server = start(Port::Implicit, Recorder::default(), config()).await;
    let mut c = connect_implicit(&server).await;
    c.send(
        b"EHLO client.test\r\nMAIL FROM:<praxis@example.de>\r\nRCPT TO:<a@kv.test>\r\n\
          RCPT TO:<unknown@kv.test>\r\nRCPT TO:<bad address>\r\nRCPT TO:<b@kv.test>\r\n\
          RCPT TO:<c@kv.test>\r\nRCPT TO:<d@kv.test>\r\nDATA\r\n",
    )
    .await;
    assert_eq!(c.reply().await, EHLO_TLS);
    assert_eq!(c.reply().await, SENDER_OK);
    assert_eq!(c.reply().await, RCPT_OK);
    assert_eq!(c.reply().await, "550 5.1.1 No such member\r\n");
    assert_eq!(
        c.reply().await,
        "501 5.1.3 Bad recipient address syntax\r\n"
    );
    assert_eq!(c.reply().await, RCPT_OK);
    assert_eq!(c.reply().await, RCPT_OK);
    assert_eq!(c.reply().await, "452 4.5.3 Too many recipients\r\n");
    assert_eq!(c.reply().await, GO_AHEAD);
    c.send(b"..dot\r\n...\r\n.x\r\nend\r\n.\r\nNOOP\r\nRSET\r\nQUIT\r\n")
        .await;
    assert_eq!(c.reply().await, "250 2.0.0 T1 queued\r\n");
    assert_eq!(c.reply().await, OK);
    assert_eq!(c.reply().await, OK);
    assert_eq!(c.reply().await, "221 2.0.0 Bye\r\n");
    c.assert_closed().await;
    assert_eq!(
        server.handler.messages(),
        vec![b".dot\r\n..\r\nx\r\nend\r\n".to_vec()]
    );
}

#[tokio::test]
async fn sequence_and_syntax_errors() {
    let server = start(Port::Implicit, Recorder::default(), config()).await;
    let mut c = connect_implicit(&server).await;
    assert_eq!(c.cmd("EHLO").await, "501 5.5.2 Syntax: EHLO hostname\r\n");
    assert_eq!(c.cmd("EHLO client.test").await, EHLO_TLS);
    assert_eq!(
        c.cmd("RCPT TO:<a@kv.test>").await,
        "503 5.5.1 Need MAIL command\r\n"
    );
    assert_eq!(c.cmd("DATA").await, "503 5.5.1 Need MAIL command\r\n");
    assert_eq!(
        c.cmd("XBDAT 10 LAST").await,
        "500 5.5.1 Command not recognized\r\n"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<a@@b>").await,
        "501 5.1.7 Bad sender address syntax\r\n"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<> X-FOO=1").await,
        "555 5.5.4 Unsupported parameter\r\n"
    );
    assert_eq!(c.cmd("MAIL FROM:<>").await, SENDER_OK);
    assert_eq!(
        c.cmd("MAIL FROM:<>").await,
        "503 5.5.1 Nested MAIL command\r\n"
    );
    assert_eq!(c.cmd("DATA").await, "503 5.5.1 Need RCPT command\r\n");
    assert_eq!(
        c.cmd("RCPT TO:<unknown@kv.test>").await,
        "550 5.1.1 No such member\r\n"
    );
    assert_eq!(c.cmd("DATA").await, "554 5.5.1 No valid recipients\r\n");
    assert_eq!(c.cmd("QUIT").await, "221 2.0.0 Bye\r\n");
}

#[tokio::test]
async fn too_many_errors_close_the_session() {
    let server = start(
        Port::Implicit,
        Recorder::default(),
        Config {
            max_errors: 3,
            ..config()
        },
    )
    .await;
    let mut c = connect_implicit(&server).await;
    assert_eq!(c.cmd("FOO").await, "500 5.5.1 Command not recognized\r\n");
    assert_eq!(c.cmd("BAR").await, "500 5.5.1 Command not recognized\r\n");
    assert_eq!(c.cmd("BAZ").await, "421 4.7.0 Too many errors\r\n");
    c.assert_closed().await;
}

#[tokio::test]
async fn idle_session_times_out() {
    let config = Config {
        command_timeout: Duration::from_millis(300),
        ..config()
    };
    let server = start(Port::Implicit, Recorder::default(), config).await;
    let mut c = connect_implicit(&server).await;
    assert_eq!(c.reply().await, "421 4.4.2 Timeout\r\n");
    c.assert_closed().await;
}

#[tokio::test]
async fn smuggling_sequences_stay_inside_the_body() {
    let server = start(Port::Implicit, Recorder::default(), config()).await;
    let sequences: [&[u8]; 6] = [
        b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r.\r\n",
    ];
    for (i, seq) in sequences.iter().enumerate() {
        let mut c = connect_implicit(&server).await;
        assert_eq!(c.cmd("EHLO client.test").await, EHLO_TLS);
        open_data(&mut c).await;
        let mut body = b"Subject: one\r\n\r\nfirst".to_vec();
        body.extend_from_slice(seq);
        body.extend_from_slice(
            b"MAIL FROM:<evil@example.de>\r\nRCPT TO:<victim@kv.test>\r\nDATA\r\nsmuggled\r\n.\r\n",
        );
        c.send(&body).await;
        assert_eq!(
            c.reply().await,
            format!("250 2.0.0 T{} queued\r\n", i + 1),
            "{seq:?}"
        );
        assert_eq!(c.cmd("NOOP").await, OK, "{seq:?}");
        let messages = server.handler.messages();
        let stored = String::from_utf8(messages[i].clone()).unwrap();
        assert!(
            stored.contains("MAIL FROM:<evil@example.de>\r\n") && stored.ends_with("smuggled\r\n"),
            "{stored:?}"
        );
        assert!(
            !stored.replace("\r\n", "").contains(['\r', '\n']),
            "bare line break stored: {stored:?}"
        );
    }
    let events = server.handler.events();
    assert!(
        !events
            .iter()
            .any(|e| e.contains("evil") || e.contains("victim")),
        "{events:?}"
    );
}

#[tokio::test]
async fn starttls_injection_is_discarded() {
    let server = start(Port::StartTls, Recorder::default(), config()).await;
    let mut plain = Client::new(TcpStream::connect(server.addr).await.unwrap());
    assert_eq!(plain.reply().await, "220 mx.test ESMTP kvgate\r\n");
    assert_eq!(plain.cmd("EHLO client.test").await, EHLO_PLAIN);
    plain
        .send(b"STARTTLS\r\nEHLO injected.test\r\nMAIL FROM:<evil@example.de>\r\n")
        .await;
    assert_eq!(plain.reply().await, "220 2.0.0 Ready to start TLS\r\n");
    let mut c = Client::new(tls_handshake(plain.io.into_inner(), true).await.unwrap());
    // Had the injected commands run, the first replies would belong to them.
    assert_eq!(c.cmd("NOOP").await, OK);
    assert_eq!(
        c.cmd("MAIL FROM:<praxis@example.de>").await,
        "503 5.5.1 Send EHLO or HELO first\r\n"
    );
    assert_eq!(c.cmd("QUIT").await, "221 2.0.0 Bye\r\n");
    let events = server.handler.events();
    assert!(!events.iter().any(|e| e.contains("evil")), "{events:?}");
}

#[tokio::test]
async fn command_lines_are_limited_to_what_the_extensions_allow() {
    let (server, mut c) = greeted(config()).await;
    // RFC 3461 §4 gives RCPT 500 octets more for NOTIFY and ORCPT.
    assert_eq!(c.cmd("MAIL FROM:<praxis@example.de>").await, SENDER_OK);
    let orcpt = format!("{}@kv.test", "o".repeat(472)); // 480 octets
    let rcpt = format!("RCPT TO:<a@kv.test> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;{orcpt}");
    assert_eq!(rcpt.len() + 2, 544); // over 512 with its CRLF
    assert_eq!(c.cmd(&rcpt).await, RCPT_OK);
    let longest = format!("NOOP {}", "x".repeat(1005)); // 1010 + CRLF = 1012
    assert_eq!(c.cmd(&longest).await, OK);
    let too_long = format!("NOOP {}", "x".repeat(1006));
    assert_eq!(c.cmd(&too_long).await, "500 5.5.2 Line too long\r\n");
    let too_long_rcpt = format!("RCPT TO:<b@kv.test> ORCPT=rfc822;{}", "x".repeat(1000));
    assert_eq!(c.cmd(&too_long_rcpt).await, "500 5.5.2 Line too long\r\n");
    let huge = format!("MAIL FROM:<{}@example.de>", "x".repeat(200_000));
    assert_eq!(c.cmd(&huge).await, "500 5.5.2 Line too long\r\n");
    assert_eq!(c.cmd("NOOP").await, OK);
    let events = server.handler.events();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(
        events[2],
        format!(
            "rcpt <a@kv.test> RcptParams {{ notify: Some(On {{ success: true, failure: true, \
             delay: true }}), orcpt: Some(OriginalRecipient {{ addr_type: \"rfc822\", address: \"{orcpt}\" }}) }}"
        )
    );
}

#[tokio::test]
async fn declared_size_over_the_limit_is_refused() {
    let (server, mut c) = greeted(config()).await;
    assert_eq!(
        c.cmd("MAIL FROM:<praxis@example.de> SIZE=1001").await,
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<praxis@example.de> SIZE=1000").await,
        SENDER_OK
    );
    // The refused MAIL never reached the handler.
    let mails: Vec<_> = server
        .handler
        .events()
        .into_iter()
        .filter(|e| e.starts_with("mail"))
        .collect();
    assert_eq!(mails.len(), 1, "{mails:?}");
}

#[tokio::test]
async fn oversized_body_is_refused_after_the_final_dot() {
    let (server, mut c) = greeted(Config {
        max_message_size: 1500,
        ..config()
    })
    .await;
    open_data(&mut c).await;
    let line = format!("{}\r\n", "y".repeat(98));
    for _ in 0..20 {
        c.send(line.as_bytes()).await;
    }
    // Nothing is answered before the end of data.
    c.send(b"QUIT\r\n.\r\n").await;
    assert_eq!(c.reply().await, "552 5.3.4 Message too big\r\n");
    assert_eq!(server.handler.aborted.load(Ordering::SeqCst), 1);

    // A text line over 1000 octets.
    open_data(&mut c).await;
    c.send(format!("{}\r\n.\r\n", "z".repeat(999)).as_bytes())
        .await;
    assert_eq!(c.reply().await, "554 5.6.0 Line too long\r\n");
    assert_eq!(server.handler.aborted.load(Ordering::SeqCst), 2);

    // The session goes on.
    open_data(&mut c).await;
    c.send(b"small\r\n.\r\n").await;
    assert_eq!(c.reply().await, "250 2.0.0 T1 queued\r\n");
    assert_eq!(server.handler.messages(), vec![b"small\r\n".to_vec()]);
}

#[tokio::test]
async fn handshake_without_client_certificate_fails() {
    for port in [Port::Implicit, Port::StartTls] {
        let server = start(port, Recorder::default(), config()).await;
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        if port == Port::StartTls {
            let mut plain = Client::new(tcp);
            assert_eq!(plain.reply().await, "220 mx.test ESMTP kvgate\r\n");
            assert_eq!(
                plain.cmd("STARTTLS").await,
                "220 2.0.0 Ready to start TLS\r\n"
            );
            tcp = plain.io.into_inner();
        }
        // With TLS 1.3 the client may finish its side first; the server then
        // refuses and nothing but an alert or EOF follows.
        if let Ok(tls) = tls_handshake(tcp, false).await {
            let mut c = Client::new(tls);
            // The write may already fail; what matters is that no reply comes.
            let _ = c.io.get_mut().write_all(b"EHLO client.test\r\n").await;
            c.assert_closed().await;
        }
        assert!(server.handler.events().is_empty());
    }
}

/// A sender that reconnects resumes its TLS session (rustls keeps the server's
/// sessions in memory), and the resumed session still carries the client certificate
/// the sender is known by.
#[tokio::test]
async fn a_resumed_session_keeps_its_client_certificate() {
    for versions in [&[&rustls::version::TLS13], &[&rustls::version::TLS12]] {
        let server = start(Port::Implicit, Recorder::default(), config()).await;
        let connector = client_tls(Some("client"), versions);
        let mut kinds = Vec::new();
        for _ in 0..2 {
            let tcp = TcpStream::connect(server.addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let tls = connector.connect(name, tcp).await.unwrap();
            kinds.push(tls.get_ref().1.handshake_kind());
            let mut c = Client::new(tls);
            // Reading the greeting takes in the session tickets sent before it.
            assert_eq!(c.reply().await, "220 mx.test ESMTP kvgate\r\n");
            assert_eq!(c.cmd("QUIT").await, "221 2.0.0 Bye\r\n");
        }
        assert_eq!(
            kinds,
            [Some(HandshakeKind::Full), Some(HandshakeKind::Resumed)],
            "{versions:?}"
        );
        assert_eq!(
            server.handler.events(),
            ["connect certs=1 implicit=true"; 2],
            "{versions:?}"
        );
    }
}

#[tokio::test]
async fn handler_refusal_is_sent() {
    let refusing = || Recorder {
        refuse_connect: true,
        ..Recorder::default()
    };
    let server = start(Port::Implicit, refusing(), config()).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut c = Client::new(tls_handshake(tcp, true).await.unwrap());
    assert_eq!(c.reply().await, "554 5.7.1 Sender not registered\r\n");
    c.assert_closed().await;

    let server = start(Port::StartTls, refusing(), config()).await;
    let mut c = connect_starttls(&server).await;
    assert_eq!(
        c.cmd("EHLO client.test").await,
        "554 5.7.1 Sender not registered\r\n"
    );
    c.assert_closed().await;
    assert_eq!(
        server.handler.events(),
        vec!["connect certs=1 implicit=false".to_owned()]
    );
}

#[tokio::test]
async fn shutdown_stops_accepting_and_closes_idle_sessions() {
    let server = start(Port::Implicit, Recorder::default(), config()).await;
    let mut idle = connect_implicit(&server).await;
    assert_eq!(idle.cmd("EHLO client.test").await, EHLO_TLS);
    let mut busy = connect_implicit(&server).await;
    assert_eq!(busy.cmd("EHLO client.test").await, EHLO_TLS);
    open_data(&mut busy).await;
    busy.send(b"part one\r\n").await;

    server.shutdown.send(true).unwrap();
    assert_eq!(idle.reply().await, "421 4.3.2 Service shutting down\r\n");
    idle.assert_closed().await;

    // A session in DATA may finish its message, then it is told to go.
    busy.send(b"part two\r\n.\r\n").await;
    assert_eq!(busy.reply().await, "250 2.0.0 T1 queued\r\n");
    assert_eq!(busy.reply().await, "421 4.3.2 Service shutting down\r\n");
    busy.assert_closed().await;

    tokio::time::timeout(WAIT, server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(server.addr).await.is_err());
}

// ---------------------------------------------------------------- ESMTP surface

#[tokio::test]
async fn commands_before_the_greeting_are_refused() {
    let config = Config {
        greeting_delay: Duration::from_millis(300),
        ..config()
    };
    let server = start(Port::StartTls, Recorder::default(), config.clone()).await;
    let mut c = Client::new(TcpStream::connect(server.addr).await.unwrap());
    c.send(b"EHLO early.test\r\nMAIL FROM:<a@b.de>\r\n").await;
    assert_eq!(
        c.reply().await,
        "554 5.5.1 Protocol error: command sent before the greeting\r\n"
    );
    c.assert_closed().await;
    // A client that waits is served.
    let mut polite = Client::new(TcpStream::connect(server.addr).await.unwrap());
    assert_eq!(polite.reply().await, "220 mx.test ESMTP kvgate\r\n");

    let server = start(Port::Implicit, Recorder::default(), config).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut c = Client::new(tls_handshake(tcp, true).await.unwrap());
    c.send(b"EHLO early.test\r\n").await;
    assert_eq!(
        c.reply().await,
        "554 5.5.1 Protocol error: command sent before the greeting\r\n"
    );
    c.assert_closed().await;
    assert!(server.handler.events().is_empty());
}

#[tokio::test]
async fn pipelined_mail_rcpt_rcpt_data_in_one_write() {
    let (server, mut c) = greeted(config()).await;
    c.send(
        b"MAIL FROM:<praxis@example.de>\r\nRCPT TO:<a@kv.test>\r\nRCPT TO:<b@kv.test>\r\nDATA\r\n",
    )
    .await;
    assert_eq!(c.reply().await, SENDER_OK);
    assert_eq!(c.reply().await, RCPT_OK);
    assert_eq!(c.reply().await, RCPT_OK);
    assert_eq!(c.reply().await, GO_AHEAD);
    c.send(b"Hi\r\n.\r\nQUIT\r\n").await;
    assert_eq!(c.reply().await, "250 2.0.0 T1 queued\r\n");
    assert_eq!(c.reply().await, "221 2.0.0 Bye\r\n");
    c.assert_closed().await;
    assert_eq!(server.handler.messages(), vec![b"Hi\r\n".to_vec()]);
}

#[tokio::test]
async fn dsn_parameters_reach_the_handler_decoded() {
    let (server, mut c) = greeted(config()).await;
    let hostile_envid = "MAIL FROM:<praxis@example.de> ENVID=id+0D+0ABcc:+20evil@x.de";
    assert_eq!(
        c.cmd(hostile_envid).await,
        "501 5.5.4 Invalid ENVID parameter\r\n"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<praxis@example.de> RET=FULL ENVID=QQ+2B1 BODY=7BIT")
            .await,
        SENDER_OK
    );
    assert_eq!(
        c.cmd("RCPT TO:<a@kv.test> ORCPT=rfc822;a@kv.test+0D+0ASubject:+20forged")
            .await,
        "501 5.5.4 Invalid ORCPT parameter\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<a@kv.test> NOTIFY=NEVER,FAILURE").await,
        "501 5.5.4 Invalid NOTIFY parameter\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<a@kv.test> NOTIFY=DELAY ORCPT=rfc822;A+2Bb@kv.test")
            .await,
        RCPT_OK
    );
    assert_eq!(c.cmd("RCPT TO:<b@kv.test> NOTIFY=never").await, RCPT_OK);
    let mail = MailParams {
        size: None,
        body: Some(Body::SevenBit),
        ret: Some(Ret::Full),
        envid: Some("QQ+1".into()),
        smtputf8: false,
    };
    let first = RcptParams {
        notify: Some(Notify::On {
            success: false,
            failure: false,
            delay: true,
        }),
        orcpt: Some(OriginalRecipient {
            addr_type: "rfc822".into(),
            address: "A+b@kv.test".into(),
        }),
    };
    let second = RcptParams {
        notify: Some(Notify::Never),
        orcpt: None,
    };
    assert_eq!(
        server.handler.events()[1..],
        [
            format!("mail <praxis@example.de> {mail:?}"),
            format!("rcpt <a@kv.test> {first:?}"),
            format!("rcpt <b@kv.test> {second:?}"),
        ]
    );
}

// ---------------------------------------------------------------- CHUNKING

/// MAIL and one accepted RCPT.
async fn open_envelope<S: AsyncRead + AsyncWrite + Unpin>(c: &mut Client<S>) {
    assert_eq!(c.cmd("MAIL FROM:<praxis@example.de>").await, SENDER_OK);
    assert_eq!(c.cmd("RCPT TO:<a@kv.test>").await, RCPT_OK);
}

#[tokio::test]
async fn bdat_chunks_make_one_message_taken_literally() {
    let (server, mut c) = greeted(config()).await;
    open_envelope(&mut c).await;
    let first = b"Subject: x\r\n\r\n.\r\nMAIL FROM:<evil@example.de>\r\n";
    c.send(format!("BDAT {}\r\n", first.len()).as_bytes()).await;
    c.send(first).await;
    assert_eq!(c.reply().await, "250 2.0.0 46 octets received\r\n");
    c.send(b"BDAT 10 LAST\r\n..dot\nend\r").await;
    assert_eq!(c.reply().await, "250 2.0.0 T1 queued\r\n");
    // BDAT 0 LAST ends a message, also one without any other chunk.
    open_envelope(&mut c).await;
    assert_eq!(
        c.cmd("BDAT 5\r\nabc").await,
        "250 2.0.0 5 octets received\r\n"
    );
    assert_eq!(c.cmd("BDAT 0 LAST").await, "250 2.0.0 T2 queued\r\n");
    open_envelope(&mut c).await;
    assert_eq!(c.cmd("BDAT 0 LAST").await, "250 2.0.0 T3 queued\r\n");
    assert_eq!(c.cmd("NOOP").await, OK);
    assert_eq!(
        server.handler.messages(),
        vec![
            b"Subject: x\r\n\r\n.\r\nMAIL FROM:<evil@example.de>\r\n..dot\r\nend\r\n".to_vec(),
            b"abc\r\n".to_vec(),
            Vec::new(),
        ]
    );
    assert!(!server.handler.events().iter().any(|e| e.contains("evil")));
}

#[tokio::test]
async fn bdat_pipelined_with_the_envelope_in_one_write() {
    let server = start(Port::Implicit, Recorder::default(), config()).await;
    let mut c = connect_implicit(&server).await;
    c.send(
        b"EHLO client.test\r\nMAIL FROM:<praxis@example.de>\r\nRCPT TO:<a@kv.test>\r\n\
          BDAT 4\r\nab\r\nBDAT 4 LAST\r\ncd\r\nQUIT\r\n",
    )
    .await;
    assert_eq!(c.reply().await, EHLO_TLS);
    assert_eq!(c.reply().await, SENDER_OK);
    assert_eq!(c.reply().await, RCPT_OK);
    assert_eq!(c.reply().await, "250 2.0.0 4 octets received\r\n");
    assert_eq!(c.reply().await, "250 2.0.0 T1 queued\r\n");
    assert_eq!(c.reply().await, "221 2.0.0 Bye\r\n");
    c.assert_closed().await;
    assert_eq!(server.handler.messages(), vec![b"ab\r\ncd\r\n".to_vec()]);
}

#[tokio::test]
async fn bdat_out_of_order_is_refused_and_its_chunk_never_runs() {
    let (server, mut c) = greeted(config()).await;
    // Each refused chunk holds commands: had they run, QUIT would close.
    let chunk = b"RSET\r\nQUIT\r\n";
    let bdat = |last: &str| format!("BDAT {}{last}\r\n", chunk.len());
    for (setup, refusal) in [
        (None, "503 5.5.1 Need MAIL command\r\n"),
        (
            Some("MAIL FROM:<praxis@example.de>"),
            "503 5.5.1 Need RCPT command\r\n",
        ),
        (
            Some("RCPT TO:<unknown@kv.test>"),
            "554 5.5.1 No valid recipients\r\n",
        ),
    ] {
        if let Some(setup) = setup {
            c.cmd(setup).await;
        }
        c.send(bdat(" LAST").as_bytes()).await;
        c.send(chunk).await;
        assert_eq!(c.reply().await, refusal);
        assert_eq!(c.cmd("NOOP").await, OK);
    }
    // DATA after BDAT in the same transaction.
    assert_eq!(c.cmd("RSET").await, OK);
    open_envelope(&mut c).await;
    c.send(bdat("").as_bytes()).await;
    c.send(chunk).await;
    assert_eq!(c.reply().await, "250 2.0.0 12 octets received\r\n");
    assert_eq!(
        c.cmd("DATA").await,
        "503 5.5.1 DATA cannot follow BDAT; send RSET\r\n"
    );
    assert_eq!(c.cmd("RSET").await, OK);
    assert_eq!(server.handler.aborted.load(Ordering::SeqCst), 1);
    // After a DATA transaction, BDAT needs a new envelope.
    open_data(&mut c).await;
    c.send(b"x\r\n.\r\n").await;
    assert_eq!(c.reply().await, "250 2.0.0 T1 queued\r\n");
    c.send(bdat(" LAST").as_bytes()).await;
    c.send(chunk).await;
    assert_eq!(c.reply().await, "503 5.5.1 Need MAIL command\r\n");
    assert_eq!(c.cmd("NOOP").await, OK);
    assert_eq!(server.handler.messages(), vec![b"x\r\n".to_vec()]);
}

#[tokio::test]
async fn bdat_before_starttls_is_refused_and_the_session_closed() {
    let server = start(Port::StartTls, Recorder::default(), config()).await;
    let mut plain = Client::new(TcpStream::connect(server.addr).await.unwrap());
    assert_eq!(plain.reply().await, "220 mx.test ESMTP kvgate\r\n");
    assert_eq!(plain.cmd("EHLO client.test").await, EHLO_PLAIN);
    // Its chunk is not read: the server does not skip octets for a stranger.
    assert_eq!(
        plain.cmd("BDAT 18446744073709551615 LAST\r\nNOOP").await,
        "530 5.7.0 Must issue a STARTTLS command first\r\n"
    );
    plain.assert_closed().await;
    assert!(server.handler.events().is_empty());
}

#[tokio::test]
async fn bdat_without_a_readable_size_closes_the_session() {
    let server = start(Port::Implicit, Recorder::default(), config()).await;
    for args in ["BDAT", "BDAT ten LAST", "BDAT 5 FIRST", "BDAT -1"] {
        let mut c = connect_implicit(&server).await;
        assert_eq!(c.cmd("EHLO client.test").await, EHLO_TLS);
        open_envelope(&mut c).await;
        assert_eq!(
            c.cmd(&format!("{args}\r\nNOOP")).await,
            "501 5.5.4 Syntax: BDAT chunk-size [LAST]\r\n",
            "{args}"
        );
        c.assert_closed().await;
    }
    assert!(server.handler.messages().is_empty());
}

#[tokio::test]
async fn bdat_over_the_size_limit_is_refused_at_the_chunk() {
    let (server, mut c) = greeted(Config {
        max_message_size: 1500,
        ..config()
    })
    .await;
    open_envelope(&mut c).await;
    let line = format!("{}\r\n", "y".repeat(98));
    let chunk = line.repeat(8);
    c.send(format!("BDAT 800\r\n{chunk}BDAT 800\r\n{chunk}BDAT 6 LAST\r\nQUIT\r\n").as_bytes())
        .await;
    assert_eq!(c.reply().await, "250 2.0.0 800 octets received\r\n");
    assert_eq!(c.reply().await, "552 5.3.4 Message too big\r\n");
    // The transaction is over; the next chunk is read and refused.
    assert_eq!(c.reply().await, "503 5.5.1 Need MAIL command\r\n");
    assert_eq!(c.cmd("NOOP").await, OK);
    assert_eq!(server.handler.aborted.load(Ordering::SeqCst), 1);
    // A line over 1000 octets in a chunk.
    open_envelope(&mut c).await;
    let long = format!("{}\r\n", "z".repeat(999));
    c.send(format!("BDAT {} LAST\r\n{long}", long.len()).as_bytes())
        .await;
    assert_eq!(c.reply().await, "554 5.6.0 Line too long\r\n");
    assert_eq!(server.handler.aborted.load(Ordering::SeqCst), 2);
    assert!(server.handler.messages().is_empty());
}

#[tokio::test]
async fn bdat_refused_by_the_handler_is_skipped() {
    let refusing = Recorder {
        refuse_data: true,
        ..Recorder::default()
    };
    let server = start(Port::Implicit, refusing, config()).await;
    let mut c = connect_implicit(&server).await;
    assert_eq!(c.cmd("EHLO client.test").await, EHLO_TLS);
    open_envelope(&mut c).await;
    c.send(b"BDAT 6\r\nQUIT\r\nBDAT 6 LAST\r\nQUIT\r\n").await;
    assert_eq!(c.reply().await, "451 4.3.0 Spool unavailable\r\n");
    assert_eq!(c.reply().await, "503 5.5.1 Need MAIL command\r\n");
    assert_eq!(c.cmd("NOOP").await, OK);
    assert_eq!(server.handler.aborted.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn silent_client_in_a_bdat_chunk_times_out() {
    let (server, mut c) = greeted(Config {
        data_timeout: Duration::from_millis(300),
        ..config()
    })
    .await;
    open_envelope(&mut c).await;
    c.send(b"BDAT 100 LAST\r\nonly part").await;
    assert_eq!(c.reply().await, "421 4.4.2 Timeout\r\n");
    c.assert_closed().await;
    assert_eq!(server.handler.aborted.load(Ordering::SeqCst), 1);
    assert!(server.handler.messages().is_empty());
}

#[tokio::test]
async fn open_bdat_message_is_aborted_when_the_client_leaves() {
    let (server, mut c) = greeted(config()).await;
    open_envelope(&mut c).await;
    assert_eq!(
        c.cmd("BDAT 5\r\nabc").await,
        "250 2.0.0 5 octets received\r\n"
    );
    assert_eq!(c.cmd("QUIT").await, "221 2.0.0 Bye\r\n");
    c.assert_closed().await;
    assert_eq!(server.handler.aborted.load(Ordering::SeqCst), 1);
    assert!(server.handler.messages().is_empty());
}

// ---------------------------------------------------------------- limits

#[tokio::test]
async fn megabyte_without_line_end_is_discarded_and_the_session_goes_on() {
    let server = start(Port::Implicit, Recorder::default(), config()).await;
    let mut c = connect_implicit(&server).await;
    c.send(&vec![b'x'; 1024 * 1024]).await;
    c.send(b"\r\nNOOP\r\n").await;
    assert_eq!(c.reply().await, "500 5.5.2 Line too long\r\n");
    assert_eq!(c.reply().await, OK);
}

/// Connects to `server` until a session gets the greeting (sessions that
/// just ended may hold their connection slot for a moment).
async fn connect_when_free(server: &TestServer) -> Client<TlsStream<TcpStream>> {
    for _ in 0..100 {
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        if let Ok(tls) = tls_handshake(tcp, true).await {
            let mut c = Client::new(tls);
            let mut line = String::new();
            if c.io.read_line(&mut line).await.is_ok() && line == "220 mx.test ESMTP kvgate\r\n" {
                return c;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no free connection slot");
}

#[tokio::test]
async fn connections_are_limited_overall() {
    let config = Config {
        max_connections: 1,
        ..config()
    };
    let server = start(Port::StartTls, Recorder::default(), config.clone()).await;
    let mut first = Client::new(TcpStream::connect(server.addr).await.unwrap());
    assert_eq!(first.reply().await, "220 mx.test ESMTP kvgate\r\n");
    let mut second = Client::new(TcpStream::connect(server.addr).await.unwrap());
    assert_eq!(
        second.reply().await,
        "421 4.3.2 Too many connections; try again later\r\n"
    );
    second.assert_closed().await;
    assert_eq!(first.cmd("QUIT").await, "221 2.0.0 Bye\r\n");

    // On the implicit-TLS port the client is closed before the handshake.
    let server = start(Port::Implicit, Recorder::default(), config).await;
    let mut first = connect_implicit(&server).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    assert!(tls_handshake(tcp, true).await.is_err());
    assert_eq!(first.cmd("QUIT").await, "221 2.0.0 Bye\r\n");
    first.assert_closed().await;
    let mut again = connect_when_free(&server).await;
    assert_eq!(again.cmd("NOOP").await, OK);
}

#[tokio::test]
async fn connections_are_limited_per_client_certificate() {
    let config = Config {
        max_connections_per_certificate: 1,
        ..config()
    };
    let server = start(Port::Implicit, Recorder::default(), config).await;
    let mut first = connect_implicit(&server).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut second = Client::new(tls_handshake(tcp, true).await.unwrap());
    assert_eq!(
        second.reply().await,
        "421 4.7.0 Too many connections with this client certificate; try again later\r\n"
    );
    second.assert_closed().await;
    // Another certificate is not affected.
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut other = Client::new(
        tls_connect(tcp, Some("client2"), rustls::ALL_VERSIONS)
            .await
            .unwrap(),
    );
    assert_eq!(other.reply().await, "220 mx.test ESMTP kvgate\r\n");
    assert_eq!(first.cmd("QUIT").await, "221 2.0.0 Bye\r\n");
    first.assert_closed().await;
    let mut again = connect_when_free(&server).await;
    assert_eq!(again.cmd("NOOP").await, OK);
    assert_eq!(
        server.handler.events(),
        vec!["connect certs=1 implicit=true".to_owned(); 3]
    );
}

#[tokio::test]
async fn connections_are_limited_per_client_address() {
    let two = Config {
        max_connections_per_address: 2,
        loopback_exempt: false,
        ..config()
    };
    // Counted before TLS: plain connections that never start it hold their places.
    let server = start(Port::StartTls, Recorder::default(), two.clone()).await;
    let mut first = Client::new(TcpStream::connect(server.addr).await.unwrap());
    assert_eq!(first.reply().await, "220 mx.test ESMTP kvgate\r\n");
    let mut second = Client::new(TcpStream::connect(server.addr).await.unwrap());
    assert_eq!(second.reply().await, "220 mx.test ESMTP kvgate\r\n");
    let mut third = Client::new(TcpStream::connect(server.addr).await.unwrap());
    assert_eq!(
        third.reply().await,
        "421 4.7.0 Too many connections from your address; try again later\r\n"
    );
    third.assert_closed().await;
    assert_eq!(first.cmd("QUIT").await, "221 2.0.0 Bye\r\n");
    first.assert_closed().await;
    let mut again = Client::new(TcpStream::connect(server.addr).await.unwrap());
    let mut greeting = again.reply().await;
    for _ in 0..100 {
        // The ended session may hold its place for a moment.
        if greeting.starts_with("220") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        again = Client::new(TcpStream::connect(server.addr).await.unwrap());
        greeting = again.reply().await;
    }
    assert_eq!(greeting, "220 mx.test ESMTP kvgate\r\n");
    assert_eq!(second.cmd("NOOP").await, OK);

    // On the implicit-TLS port the client is closed before the handshake.
    let server = start(Port::Implicit, Recorder::default(), two).await;
    let _first = connect_implicit(&server).await;
    let _second = connect_implicit(&server).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    assert!(tls_handshake(tcp, true).await.is_err());
    assert_eq!(
        server.handler.events(),
        vec!["connect certs=1 implicit=true".to_owned(); 2]
    );

    // By default loopback, the gateway's own host, is not counted.
    let server = start(
        Port::StartTls,
        Recorder::default(),
        Config {
            max_connections_per_address: 1,
            ..config()
        },
    )
    .await;
    let mut local = Vec::new();
    for _ in 0..3 {
        let mut c = Client::new(TcpStream::connect(server.addr).await.unwrap());
        assert_eq!(c.reply().await, "220 mx.test ESMTP kvgate\r\n");
        local.push(c);
    }
}

#[tokio::test]
async fn commands_that_do_not_advance_a_transaction_are_limited() {
    let junk = "421 4.7.0 Too many commands that do not advance a mail transaction; closing\r\n";
    let limited = Config {
        max_junk_commands: 3,
        ..config()
    };
    let server = start(Port::Implicit, Recorder::default(), limited.clone()).await;
    let mut c = connect_implicit(&server).await;
    assert_eq!(c.cmd("EHLO client.test").await, EHLO_TLS);
    assert_eq!(c.cmd("NOOP").await, OK);
    assert_eq!(c.cmd("RSET").await, OK);
    assert_eq!(c.cmd("HELP").await, junk);
    c.assert_closed().await;

    // An accepted message starts the count anew.
    let mut c = connect_implicit(&server).await;
    assert_eq!(c.cmd("EHLO client.test").await, EHLO_TLS);
    assert_eq!(c.cmd("NOOP").await, OK);
    open_data(&mut c).await;
    c.send(b"Hi\r\n.\r\n").await;
    assert_eq!(c.reply().await, "250 2.0.0 T1 queued\r\n");
    assert_eq!(c.cmd("RSET").await, OK);
    assert_eq!(c.cmd("NOOP").await, OK);
    assert_eq!(
        c.cmd("VRFY x").await,
        "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n"
    );
    assert_eq!(c.cmd("EXPN x").await, junk);
    c.assert_closed().await;

    // Before STARTTLS too, pipelined or not.
    let server = start(Port::StartTls, Recorder::default(), limited).await;
    let mut plain = Client::new(TcpStream::connect(server.addr).await.unwrap());
    assert_eq!(plain.reply().await, "220 mx.test ESMTP kvgate\r\n");
    plain.send(b"EHLO a\r\nHELO b\r\nNOOP\r\nEHLO c\r\n").await;
    assert_eq!(plain.reply().await, EHLO_PLAIN);
    assert_eq!(plain.reply().await, "250 mx.test\r\n");
    assert_eq!(plain.reply().await, OK);
    assert_eq!(plain.reply().await, junk);
    plain.assert_closed().await;
}

#[tokio::test]
async fn a_silent_tls_handshake_times_out() {
    // The command timeout stays long: the handshake has its own.
    let config = Config {
        tls_handshake_timeout: Duration::from_millis(300),
        ..config()
    };
    let server = start(Port::Implicit, Recorder::default(), config.clone()).await;
    let mut silent = Client::new(TcpStream::connect(server.addr).await.unwrap());
    silent.assert_closed().await;

    let server = start(Port::StartTls, Recorder::default(), config).await;
    let mut plain = Client::new(TcpStream::connect(server.addr).await.unwrap());
    assert_eq!(plain.reply().await, "220 mx.test ESMTP kvgate\r\n");
    assert_eq!(
        plain.cmd("STARTTLS").await,
        "220 2.0.0 Ready to start TLS\r\n"
    );
    plain.assert_closed().await;
    assert!(server.handler.events().is_empty());
}

#[tokio::test]
async fn starttls_port_sessions_must_authenticate_in_time() {
    let short = Config {
        auth_deadline: Duration::from_millis(500),
        ..config()
    };
    let server = start(Port::StartTls, Recorder::default(), short).await;
    let mut plain = Client::new(TcpStream::connect(server.addr).await.unwrap());
    assert_eq!(plain.reply().await, "220 mx.test ESMTP kvgate\r\n");
    // A command now and then restarts the idle timer, but not this deadline.
    let mut answer = OK.to_owned();
    for _ in 0..60 {
        answer = plain.cmd("NOOP").await;
        if answer != OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        answer,
        "421 4.7.0 TLS with a client certificate was not established in time; closing\r\n"
    );
    plain.assert_closed().await;

    // A client that authenticates in time keeps its session beyond the deadline
    // (a generous one, lest a slow handshake miss it).
    let deadline = Duration::from_secs(5);
    let server = start(
        Port::StartTls,
        Recorder::default(),
        Config {
            auth_deadline: deadline,
            ..config()
        },
    )
    .await;
    let connected = tokio::time::Instant::now();
    let mut c = connect_starttls(&server).await;
    assert_eq!(c.cmd("EHLO client.test").await, EHLO_TLS);
    tokio::time::sleep_until(connected + deadline + Duration::from_millis(500)).await;
    assert_eq!(c.cmd("NOOP").await, OK);
}

// ---------------------------------------------------------------- TLS

#[tokio::test]
async fn tls_1_2_and_1_3_are_served() {
    let server = start(Port::Implicit, Recorder::default(), config()).await;
    for (version, expected) in [
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
    ] {
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        let tls = tls_connect(tcp, Some("client"), &[version]).await.unwrap();
        assert_eq!(tls.get_ref().1.protocol_version(), Some(expected));
        let mut c = Client::new(tls);
        assert_eq!(c.reply().await, "220 mx.test ESMTP kvgate\r\n");
        assert_eq!(c.cmd("QUIT").await, "221 2.0.0 Bye\r\n");
    }
}

#[tokio::test]
async fn tls_1_1_is_refused_with_a_fatal_alert() {
    let server = start(Port::Implicit, Recorder::default(), config()).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    // A TLS 1.1 ClientHello: version 3.2, no supported_versions extension,
    // two CBC suites, no compression, no extensions.
    let mut hello = vec![0x03, 0x02];
    hello.extend_from_slice(&[7; 32]);
    hello.extend_from_slice(&[0x00, 0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f, 0x01, 0x00]);
    let mut handshake = vec![0x01, 0x00, 0x00, u8::try_from(hello.len()).unwrap()];
    handshake.extend_from_slice(&hello);
    let mut record = vec![
        0x16,
        0x03,
        0x01,
        0x00,
        u8::try_from(handshake.len()).unwrap(),
    ];
    record.extend_from_slice(&handshake);
    tcp.write_all(&record).await.unwrap();
    let mut answer = [0; 7];
    tokio::time::timeout(WAIT, tcp.read_exact(&mut answer))
        .await
        .unwrap()
        .unwrap();
    // No ServerHello but an alert record: fatal (2) handshake_failure (40),
    // which is how rustls turns away a hello that does not offer TLS 1.2+.
    assert_eq!((answer[0], answer[5], answer[6]), (0x15, 2, 40));
    assert!(server.handler.events().is_empty());
}

#[tokio::test]
async fn untrusted_client_certificate_is_refused_before_any_command() {
    let server = start(Port::Implicit, Recorder::default(), config()).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    if let Ok(tls) = tls_connect(tcp, Some("rogue"), rustls::ALL_VERSIONS).await {
        let mut c = Client::new(tls);
        let _ = c.io.get_mut().write_all(b"EHLO client.test\r\n").await;
        c.assert_closed().await;
    }
    assert!(server.handler.events().is_empty());
}
