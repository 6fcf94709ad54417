//! Revocation of signer chains: CRLs from files and from distribution points
//! (served over loopback HTTP), OCSP against the responder that the
//! certificates' AIA names (`openssl ocsp` as an independent responder),
//! hard-fail and soft-fail, and caching.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::der::Tlv;
use common::pki::{Publish, TestPki};
use kvgate_certs::revocation::{FailMode, Revocation, RevocationPolicy, RevocationStatus};
use kvgate_certs::smime::{self, TrustAnchors, UnwrapError, Unwrapped};

const LETTER: &str = "From: <praxis@demo-practice.test>\nSubject: Befund\n\nalles gut\n";

/// Serves the CRLs (and fixed OCSP responses, `*.ocsp`, whatever is asked) of its own
/// directory over HTTP/1.0 on loopback, counting requests.
struct CrlServer {
    base: String,
    files: tempfile::TempDir,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl CrlServer {
    fn start() -> CrlServer {
        let files = tempfile::tempdir().unwrap();
        let dir = files.path().to_path_buf();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(Mutex::new(HashMap::new()));
        let counted = Arc::clone(&hits);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                serve(stream, &dir, &counted);
            }
        });
        CrlServer { base, files, hits }
    }

    /// Publishes the current CRLs of root and intermediate.
    fn publish(&self, pki: &TestPki) {
        for ca in ["root", "int"] {
            let crl = pki.gencrl(ca);
            std::fs::copy(crl, self.files.path().join(format!("{ca}.crl"))).unwrap();
        }
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

fn serve(mut stream: TcpStream, dir: &std::path::Path, hits: &Mutex<HashMap<String, usize>>) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&request);
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let answer = match std::fs::read(dir.join(path.trim_start_matches('/'))) {
        Ok(body) if path.ends_with(".crl") || path.ends_with(".ocsp") => {
            let kind = if path.ends_with(".crl") {
                "application/pkix-crl"
            } else {
                "application/ocsp-response"
            };
            let mut answer = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            answer.extend(body);
            answer
        }
        _ => b"HTTP/1.0 404 Not Found\r\n\r\n".to_vec(),
    };
    let _ = stream.write_all(&answer);
}

/// `openssl ocsp` answering for the intermediate's database; killed on drop.
struct Responder(Child);

impl Responder {
    fn start(pki: &TestPki, port: u16) -> Responder {
        let mut child = Command::new("openssl")
            .current_dir(pki.path())
            .args([
                "ocsp",
                "-index",
                "int-index.txt",
                "-port",
                &port.to_string(),
                "-rsigner",
                "ocsp.pem",
                "-rkey",
                "ocsp.key",
                "-CA",
                "int.pem",
                "-ignore_err",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until it says it listens. (A probe connection would not do:
        // `openssl ocsp` 3.0 hangs on a connection that sends nothing.)
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let ready = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|line| line.contains("waiting for OCSP client connections"));
        assert!(ready, "openssl ocsp did not start on port {port}");
        std::thread::spawn(move || lines.for_each(drop));
        Responder(child)
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Signs the letter with `signer` and unwraps it with `anchors`.
fn verify(pki: &TestPki, signer: &str, anchors: &TrustAnchors) -> Result<Unwrapped, UnwrapError> {
    let out = format!("{signer}.eml");
    if !pki.file(&out).exists() {
        pki.sign("letter.eml", &out, signer, true, &[]);
    }
    smime::unwrap(&pki.read(&out), &[], anchors, SystemTime::now())
}

fn status(result: Result<Unwrapped, UnwrapError>) -> RevocationStatus {
    match result {
        Ok(unwrapped) => unwrapped.signer.unwrap().revocation,
        Err(e) => panic!("{}: {e}", e.reason()),
    }
}

fn with(pki: &TestPki, policy: RevocationPolicy) -> TrustAnchors {
    pki.anchors().with_revocation(Revocation::new(policy))
}

/// `anchors` checking revocation by the default policy with `pki`'s current CRL file of
/// its intermediate (after [`CrlServer::publish`]).
fn with_int_crl_file(pki: &TestPki, anchors: TrustAnchors) -> TrustAnchors {
    let crl = std::fs::read(pki.file("int.crl")).unwrap();
    anchors.with_revocation(
        Revocation::new(RevocationPolicy::default())
            .with_crl(&crl)
            .unwrap(),
    )
}

fn soft() -> RevocationPolicy {
    RevocationPolicy {
        fail_mode: FailMode::Soft,
        timeout: Duration::from_secs(5),
        ..RevocationPolicy::default()
    }
}

/// A PKI publishing CRLs at a loopback server (and OCSP at `ocsp`, if given);
/// `None` (with a note) without `openssl`.
fn published(ocsp: Option<String>) -> Option<(TestPki, CrlServer)> {
    if !common::have("openssl") {
        return None;
    }
    let server = CrlServer::start();
    let pki = TestPki::new(&Publish {
        crl_base: Some(server.base.clone()),
        ocsp,
    });
    common::write(pki.path(), "letter.eml", LETTER);
    Some((pki, server))
}

#[test]
fn crls_from_distribution_points_are_fetched_once_and_cached() {
    let Some((pki, server)) = published(None) else {
        return;
    };
    pki.issue("good", "p256", "sign_crl");
    pki.issue("revoked", "bp256", "sign_crl");
    pki.revoke("int", "revoked");
    server.publish(&pki);
    let anchors = pki.anchors();
    let expected = RevocationStatus::Good {
        sources: vec![
            format!("CRL {}/int.crl", server.base),
            format!("CRL {}/root.crl", server.base),
        ],
    };
    assert_eq!(status(verify(&pki, "good", &anchors)), expected);
    assert_eq!(status(verify(&pki, "good", &anchors)), expected);
    assert_eq!(
        server.hits("/int.crl"),
        1,
        "the CRL is cached while current"
    );
    assert_eq!(
        common::reason(verify(&pki, "revoked", &anchors)),
        "signer-revoked"
    );
    // A revoked intermediate takes its whole branch with it.
    pki.revoke("root", "int");
    server.publish(&pki);
    let fresh = pki.anchors();
    assert_eq!(
        common::reason(verify(&pki, "good", &fresh)),
        "signer-revoked"
    );
}

#[test]
fn crl_files_cover_certificates_without_distribution_points() {
    let Some((pki, server)) = published(None) else {
        return;
    };
    pki.issue("filed", "rsa2048", "sign");
    pki.issue("filed-revoked", "p384", "sign");
    pki.revoke("int", "filed-revoked");
    server.publish(&pki);
    let anchors = with_int_crl_file(&pki, pki.anchors());
    assert_eq!(
        status(verify(&pki, "filed", &anchors)),
        RevocationStatus::Good {
            sources: vec![
                "CRL file".to_owned(),
                format!("CRL {}/root.crl", server.base)
            ],
        }
    );
    assert_eq!(
        common::reason(verify(&pki, "filed-revoked", &anchors)),
        "signer-revoked"
    );
    // Without the file, nothing covers the leaf: recorded, not refused.
    let RevocationStatus::NotChecked { detail } = status(verify(&pki, "filed", &pki.anchors()))
    else {
        panic!("the leaf has no revocation source");
    };
    assert_eq!(
        detail,
        "CN=filed, O=kvgate test: names no CRL or OCSP source"
    );
    assert!(
        Revocation::new(RevocationPolicy::default())
            .with_crl(b"not a CRL")
            .is_err()
    );
    // The path validated for the letter above is reused (the clone shares it), and
    // still checked for revocation: a newer CRL file revokes the signer.
    pki.revoke("int", "filed");
    server.publish(&pki);
    let revoking = with_int_crl_file(&pki, anchors.clone());
    assert_eq!(
        common::reason(verify(&pki, "filed", &revoking)),
        "signer-revoked"
    );
}

#[test]
fn unreachable_sources_fail_hard_by_default_and_soft_by_choice() {
    let Some((pki, server)) = published(None) else {
        return;
    };
    pki.issue("dead", "p256", "sign_dead_crl");
    server.publish(&pki);
    assert_eq!(
        common::reason(verify(&pki, "dead", &pki.anchors())),
        "revocation-unknown"
    );
    let RevocationStatus::NotChecked { detail } = status(verify(&pki, "dead", &with(&pki, soft())))
    else {
        panic!("soft-fail records the unknown status");
    };
    assert!(detail.contains("404 Not Found"), "{detail}");
    assert_eq!(server.hits("/missing.crl"), 2);
}

#[test]
fn ocsp_responder_from_aia_with_cache_and_fail_modes() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let Some((pki, server)) = published(Some(url.clone())) else {
        return;
    };
    pki.issue("ocsp-good", "rsa2048", "sign_ocsp");
    pki.issue("ocsp-revoked", "bp256", "sign_ocsp");
    pki.issue("ocsp-unknown", "p256", "sign_ocsp");
    pki.record_valid("int", "ocsp-good");
    pki.revoke("int", "ocsp-revoked");
    server.publish(&pki);
    let anchors = pki.anchors();
    {
        let _responder = Responder::start(&pki, port);
        assert_eq!(
            status(verify(&pki, "ocsp-good", &anchors)),
            RevocationStatus::Good {
                sources: vec![
                    format!("OCSP {url}"),
                    format!("CRL {}/root.crl", server.base)
                ],
            }
        );
        assert_eq!(
            common::reason(verify(&pki, "ocsp-revoked", &anchors)),
            "signer-revoked"
        );
        assert_eq!(
            common::reason(verify(&pki, "ocsp-unknown", &anchors)),
            "revocation-unknown"
        );
    }
    // The responder is gone: the cached answer still serves...
    assert!(matches!(
        status(verify(&pki, "ocsp-good", &anchors)),
        RevocationStatus::Good { .. }
    ));
    // ...but without a cache, hard-fail refuses and soft-fail records it.
    assert_eq!(
        common::reason(verify(&pki, "ocsp-good", &pki.anchors())),
        "revocation-unknown"
    );
    assert!(matches!(
        status(verify(&pki, "ocsp-good", &with(&pki, soft()))),
        RevocationStatus::NotChecked { .. }
    ));
}

/// `response` (DER OCSPResponse made by `openssl ocsp`) with every time in its
/// tbsResponseData (producedAt, thisUpdate) set to `at` (`YYYYMMDDHHMMSSZ`), signed
/// again with the responder's key (`ocsp.key`, P-256, ECDSA with SHA-256).
fn backdated(pki: &TestPki, response: &[u8], at: &str) -> Vec<u8> {
    fn set_times(node: &mut Tlv, at: &str) {
        match node.tag {
            0x18 => *node.octets() = at.as_bytes().to_vec(),
            tag if tag & 0x20 != 0 => node.children().iter_mut().for_each(|c| set_times(c, at)),
            _ => {}
        }
    }
    let mut response = Tlv::parse(response);
    // OCSPResponse { status, [0] { ResponseBytes { basic OID, OCTET STRING } } }
    let mut basic = Tlv::parse(response.at(&[1, 0, 1]).octets());
    // BasicOCSPResponse { tbsResponseData, signatureAlgorithm, signature, [0] certs }
    assert_eq!(
        basic.at(&[1, 0]).octets(),
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02],
        "ecdsa-with-SHA256"
    );
    set_times(basic.at(&[0]), at);
    common::write(pki.path(), "tbs.der", basic.at(&[0]).encode());
    pki.run(&[
        "dgst", "-sha256", "-sign", "ocsp.key", "-out", "tbs.sig", "tbs.der",
    ]);
    let mut signature = vec![0];
    signature.extend(pki.read("tbs.sig"));
    *basic.at(&[2]).octets() = signature;
    *response.at(&[1, 0, 1]).octets() = basic.encode();
    response.encode()
}

#[test]
fn an_ocsp_answer_without_next_update_is_taken_for_seven_days() {
    let Some(server) = common::have("openssl").then(CrlServer::start) else {
        return;
    };
    let pki = TestPki::new(&Publish {
        crl_base: Some(server.base.clone()),
        ocsp: Some(format!("{}/answer.ocsp", server.base)),
    });
    common::write(pki.path(), "letter.eml", LETTER);
    pki.issue("leaf", "p256", "sign_ocsp");
    pki.record_valid("int", "leaf");
    server.publish(&pki);
    pki.run(&[
        "ocsp",
        "-issuer",
        "int.pem",
        "-cert",
        "leaf.pem",
        "-no_nonce",
        "-reqout",
        "request.der",
    ]);
    // No -ndays/-nmin: the response has no nextUpdate.
    pki.run(&[
        "ocsp",
        "-index",
        "int-index.txt",
        "-rsigner",
        "ocsp.pem",
        "-rkey",
        "ocsp.key",
        "-CA",
        "int.pem",
        "-reqin",
        "request.der",
        "-respout",
        "fresh.der",
    ]);
    let fresh = pki.read("fresh.der");
    let answer = server.files.path().join("answer.ocsp");
    let ago = |days: u32| {
        let out = common::run(
            pki.path(),
            "date",
            &["-u", "-d", &format!("{days} days ago"), "+%Y%m%d%H%M%SZ"],
            &[],
        );
        String::from_utf8(out).unwrap().trim().to_owned()
    };
    // Re-signed but recent: still good (the rewriting itself is sound).
    for (response, expected) in [
        (fresh.clone(), None),
        (backdated(&pki, &fresh, &ago(6)), None),
        (backdated(&pki, &fresh, &ago(8)), Some("revocation-unknown")),
    ] {
        std::fs::write(&answer, response).unwrap();
        let result = verify(&pki, "leaf", &pki.anchors());
        match expected {
            None => assert!(matches!(status(result), RevocationStatus::Good { .. })),
            Some(reason) => {
                let error = result.err().unwrap();
                assert_eq!(error.reason(), reason, "{error}");
                assert!(error.to_string().contains("status too old"), "{error}");
            }
        }
    }
}

/// `crl` (DER, issued by the intermediate) changed by `change`, signed again with the
/// intermediate's key.
fn resigned(pki: &TestPki, crl: &[u8], change: impl FnOnce(&mut Tlv)) -> Vec<u8> {
    let mut crl = Tlv::parse(crl);
    change(&mut crl);
    common::write(pki.path(), "tbs-crl.der", crl.at(&[0]).encode());
    pki.run(&[
        "dgst",
        "-sha256",
        "-sign",
        "int.key",
        "-out",
        "tbs-crl.sig",
        "tbs-crl.der",
    ]);
    let mut signature = vec![0];
    signature.extend(pki.read("tbs-crl.sig"));
    *crl.at(&[2]).octets() = signature;
    crl.encode()
}

/// Adds a critical extension 1.3.6.1.4.1.55555.3 to the first entry of a CRL.
fn critical_entry_extension(crl: &mut Tlv) {
    // CertificateList { tbsCertList { version, signature, issuer, thisUpdate,
    // nextUpdate, revokedCertificates, [0] crlExtensions }, algorithm, signature }
    let entry = crl.at(&[0, 5, 0]);
    assert_eq!(entry.children().len(), 3, "the entry has its reason code");
    entry.children()[2].children().push(Tlv::constructed(
        0x30,
        vec![
            Tlv::primitive(
                0x06,
                &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x83, 0xb2, 0x03, 0x03],
            ),
            Tlv::primitive(0x01, &[0xff]),
            Tlv::primitive(0x04, &[0x05, 0x00]),
        ],
    ));
}

#[test]
fn only_complete_crls_answer() {
    let Some((pki, server)) = published(None) else {
        return;
    };
    // `filed` names no source but the CRL file; `other` is revoked, so entries exist.
    pki.issue("filed", "p256", "sign");
    pki.issue("other", "p256", "sign");
    pki.revoke("int", "other");
    server.publish(&pki);
    let idp = |lines: &str| format!("issuingDistributionPoint=critical,@idp\n[idp]\n{lines}");
    let cases = [
        (
            "plain.crl",
            "authorityKeyIdentifier=keyid:always".to_owned(),
            None,
        ),
        (
            "unknown-noncritical.crl",
            "1.3.6.1.4.1.55555.2=ASN1:NULL".to_owned(),
            None,
        ),
        ("only-user.crl", idp("onlyuser=TRUE"), None),
        (
            "delta.crl",
            "2.5.29.27=critical,DER:02:01:01".to_owned(),
            Some("delta CRL"),
        ),
        (
            "some-reasons.crl",
            idp("onlysomereasons=keyCompromise"),
            Some("some revocation reasons"),
        ),
        (
            "indirect.crl",
            idp("indirectCRL=TRUE"),
            Some("indirect CRL"),
        ),
        (
            "only-ca.crl",
            idp("onlyCA=TRUE"),
            Some("CA certificates only"),
        ),
        (
            "only-attributes.crl",
            idp("onlyAA=TRUE"),
            Some("attribute certificates only"),
        ),
        (
            "partition.crl",
            idp("fullname=URI:http://crl.example/part-7.crl"),
            Some("distribution point http://crl.example/part-7.crl"),
        ),
        (
            "unknown-critical.crl",
            "1.3.6.1.4.1.55555.2=critical,ASN1:NULL".to_owned(),
            Some("unknown critical extension 1.3.6.1.4.1.55555.2"),
        ),
    ];
    let anchors = |crl: &[u8]| {
        pki.anchors().with_revocation(
            Revocation::new(RevocationPolicy::default())
                .with_crl(crl)
                .unwrap(),
        )
    };
    let check = |name: &str, crl: &[u8], refusal: Option<&str>| match refusal {
        None => assert!(
            matches!(
                status(verify(&pki, "filed", &anchors(crl))),
                RevocationStatus::Good { .. }
            ),
            "{name}"
        ),
        Some(why) => {
            let error = verify(&pki, "filed", &anchors(crl)).err().unwrap();
            assert_eq!(error.reason(), "revocation-unknown", "{name}: {error}");
            assert!(error.to_string().contains(why), "{name}: {error}");
        }
    };
    for (name, section, refusal) in cases {
        let crl = std::fs::read(pki.gencrl_with("int", name, &section)).unwrap();
        check(name, &crl, refusal);
    }
    // An entry's critical extension that is not understood spoils the whole CRL.
    let plain = pki.read("plain.crl");
    check("plain.crl re-signed", &resigned(&pki, &plain, |_| {}), None);
    check(
        "critical entry extension",
        &resigned(&pki, &plain, critical_entry_extension),
        Some("an entry has the unknown critical extension 1.3.6.1.4.1.55555.3"),
    );
}

#[test]
fn strict_mode_refuses_a_certificate_without_any_source() {
    let Some((pki, server)) = published(None) else {
        return;
    };
    pki.issue("bare", "p256", "sign");
    server.publish(&pki);
    let strict = RevocationPolicy {
        fail_mode: FailMode::Strict,
        ..RevocationPolicy::default()
    };
    // Hard (the default) records it as not checked; strict refuses it.
    assert!(matches!(
        status(verify(&pki, "bare", &pki.anchors())),
        RevocationStatus::NotChecked { .. }
    ));
    let error = verify(&pki, "bare", &with(&pki, strict)).err().unwrap();
    assert_eq!(error.reason(), "revocation-no-source", "{error}");
    assert!(
        error.to_string().contains("names no CRL or OCSP source"),
        "{error}"
    );
    // A CRL file covering it is a source: strict accepts it.
    let crl = std::fs::read(pki.file("int.crl")).unwrap();
    let covered = pki
        .anchors()
        .with_revocation(Revocation::new(strict).with_crl(&crl).unwrap());
    assert!(matches!(
        status(verify(&pki, "bare", &covered)),
        RevocationStatus::Good { .. }
    ));
}
