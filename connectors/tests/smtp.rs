//! End-to-end tests of the SMTP server over real TCP and TLS with client
//! certificates (a test PKI made with the `openssl` CLI).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kvgate_connectors::smtp::{Config, Handler, MailParams, Peer, RcptParams, Reply, Server};
use kvgate_connectors::tls::sender_server_config;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
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
        let leaf = |name: &str, ext: &str| {
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
                    "x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                    "-out", &pem, "-days", "30", "-extfile", &extfile,
                ],
            );
        };
        leaf(
            "server",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        );
        leaf(
            "client",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
        );
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

fn client_tls(with_cert: bool) -> TlsConnector {
    let pki = pki();
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(&pki.read("ca.pem")).unwrap())
        .unwrap();
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let config = if with_cert {
        let chain = vec![CertificateDer::from_pem_slice(&pki.read("client.pem")).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(&pki.read("client.key")).unwrap();
        builder.with_client_auth_cert(chain, key).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    TlsConnector::from(Arc::new(config))
}

async fn tls_handshake(tcp: TcpStream, with_cert: bool) -> io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from("localhost").unwrap();
    client_tls(with_cert).connect(name, tcp).await
}

async fn connect_implicit(server: &TestServer) -> Client<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut client = Client::new(tls_handshake(tcp, true).await.unwrap());
    assert_eq!(client.reply().await, "220 mx.test ESMTP kvgate\r\n");
    client
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
    250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-DSN\r\n250 STARTTLS\r\n";
const EHLO_TLS: &str = "250-mx.test\r\n250-SIZE 1000\r\n250-PIPELINING\r\n250-8BITMIME\r\n\
    250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250 DSN\r\n";

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
    let server = start(Port::Implicit, Recorder::default(), config()).await;
    let mut c = connect_implicit(&server).await;
    assert_eq!(c.cmd("EHLO client.test").await, EHLO_TLS);
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
            "mail <praxis@example.de> MailParams { size: Some(100), body: Some(\"8BITMIME\"), ret: Some(\"HDRS\"), \
             envid: Some(\"x+y\"), smtputf8: false }"
                .to_owned(),
            "rcpt <A123456780@postfach.kv.test> RcptParams { notify: Some(\"SUCCESS,FAILURE\"), \
             orcpt: Some(\"rfc822;a@b.de\") }"
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
        c.cmd("BDAT 10 LAST").await,
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
async fn command_lines_are_limited_to_512_octets() {
    let server = start(Port::Implicit, Recorder::default(), config()).await;
    let mut c = connect_implicit(&server).await;
    let longest = format!("NOOP {}", "x".repeat(505)); // 510 + CRLF = 512
    assert_eq!(c.cmd(&longest).await, OK);
    let too_long = format!("NOOP {}", "x".repeat(506));
    assert_eq!(c.cmd(&too_long).await, "500 5.5.2 Line too long\r\n");
    let huge = format!("MAIL FROM:<{}@example.de>", "x".repeat(200_000));
    assert_eq!(c.cmd(&huge).await, "500 5.5.2 Line too long\r\n");
    assert_eq!(c.cmd("NOOP").await, OK);
    assert!(
        server
            .handler
            .events()
            .iter()
            .all(|e| !e.starts_with("mail"))
    );
}

#[tokio::test]
async fn declared_size_over_the_limit_is_refused() {
    let server = start(Port::Implicit, Recorder::default(), config()).await;
    let mut c = connect_implicit(&server).await;
    assert_eq!(c.cmd("EHLO client.test").await, EHLO_TLS);
    assert_eq!(
        c.cmd("MAIL FROM:<praxis@example.de> SIZE=1001").await,
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<praxis@example.de> SIZE=1000").await,
        SENDER_OK
    );
}

#[tokio::test]
async fn oversized_body_is_refused_after_the_final_dot() {
    let config = Config {
        max_message_size: 1500,
        ..config()
    };
    let server = start(Port::Implicit, Recorder::default(), config).await;
    let mut c = connect_implicit(&server).await;
    assert_eq!(
        c.cmd("EHLO client.test").await,
        EHLO_TLS.replace("SIZE 1000", "SIZE 1500")
    );
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
