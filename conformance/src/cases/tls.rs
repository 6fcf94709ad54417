//! TLS: which clients and protocol versions get a session.

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Case, Outcome};
use crate::letter::random;
use crate::target::{Sender, Target, client_config_with};
use crate::wire::{self, Stream, Wire};

/// How long the server may take to answer a ClientHello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS cases.
pub const CASES: &[Case] = &[
    Case {
        id: "TLS-CLIENT-CERT-REQUIRED",
        section: "TLS",
        clause: "DESIGN.md step 1; RFC 8446 §4.3.2",
        run: |t| {
            Box::pin(async {
                refused(t, Port::Implicit, t.anonymous.clone(), &t.practice.from).await
            })
        },
    },
    Case {
        id: "TLS-UNTRUSTED-CLIENT-CERT",
        section: "TLS",
        clause: "DESIGN.md step 1; RFC 5280 §6",
        run: |t| Box::pin(async { refused_sender(t, Port::Implicit, &t.stranger).await }),
    },
    Case {
        id: "TLS-EXPIRED-CLIENT-CERT",
        section: "TLS",
        clause: "DESIGN.md step 1; RFC 5280 §4.1.2.5, §6.1.3",
        run: |t| Box::pin(async { refused_sender(t, Port::Implicit, &t.expired_practice).await }),
    },
    Case {
        id: "TLS-STARTTLS-CLIENT-CERT-REQUIRED",
        section: "TLS",
        clause: "DESIGN.md step 1; RFC 3207 §4.1",
        run: |t| {
            Box::pin(async {
                refused(t, Port::StartTls, t.anonymous.clone(), &t.practice.from).await
            })
        },
    },
    Case {
        id: "TLS-STARTTLS-UNTRUSTED-CLIENT-CERT",
        section: "TLS",
        clause: "DESIGN.md step 1; RFC 3207 §4.1; RFC 5280 §6",
        run: |t| Box::pin(async { refused_sender(t, Port::StartTls, &t.stranger).await }),
    },
    Case {
        id: "TLS-1.0-REFUSED",
        section: "TLS",
        clause: "DESIGN.md step 1 (TLS 1.2+); RFC 8996",
        run: |t| Box::pin(async { legacy_refused(t, 1).await.into() }),
    },
    Case {
        id: "TLS-1.1-REFUSED",
        section: "TLS",
        clause: "DESIGN.md step 1 (TLS 1.2+); RFC 8996",
        run: |t| Box::pin(async { legacy_refused(t, 2).await.into() }),
    },
    Case {
        id: "TLS-1.2-ACCEPTED",
        section: "TLS",
        clause: "DESIGN.md step 1; RFC 5246",
        run: |t| Box::pin(async { version_accepted(t, &rustls::version::TLS12).await.into() }),
    },
    Case {
        id: "TLS-1.3-ACCEPTED",
        section: "TLS",
        clause: "DESIGN.md step 1; RFC 8446",
        run: |t| Box::pin(async { version_accepted(t, &rustls::version::TLS13).await.into() }),
    },
];

/// Which listener a case connects to.
#[derive(Clone, Copy)]
enum Port {
    /// Implicit TLS if the operator named it, else STARTTLS.
    Implicit,
    /// The STARTTLS port.
    StartTls,
}

async fn refused_sender(t: &Target, port: Port, sender: &Sender) -> Outcome {
    refused(t, port, sender.tls.clone(), &sender.from).await
}

/// A client with `config`'s identity must not get as far as an accepted `MAIL FROM`
/// of `from` on `port`.
async fn refused(t: &Target, port: Port, config: Arc<ClientConfig>, from: &str) -> Outcome {
    let implicit = match port {
        Port::Implicit => t.smtps.as_ref(),
        Port::StartTls => None,
    };
    // A listener that does not answer refuses nothing: it is a failure of its own.
    let listener = implicit.unwrap_or(&t.smtp);
    if let Err(e) = wire::connect(listener).await {
        return Outcome::Fail(format!(
            "the listener does not answer, so no refusal could be seen: {e}"
        ));
    }
    let attempt = async {
        let mut w = match implicit {
            Some(endpoint) => {
                let mut w = Wire::tls(endpoint, config).await?;
                let greeting = w.reply().await?;
                if greeting.code != 220 {
                    return Ok(greeting);
                }
                w
            }
            None => t.starttls(config).await?,
        };
        let ehlo = w.command("EHLO conformance.test").await?;
        if ehlo.code != 250 {
            return Ok(ehlo);
        }
        w.command(&format!("MAIL FROM:<{from}>")).await
    };
    match attempt.await {
        Err(_) => Outcome::Pass,
        Ok(reply) if reply.code >= 400 => Outcome::Pass,
        Ok(reply) => Outcome::Fail(format!(
            "expected the handshake or the session to be refused; the session went on: {reply}"
        )),
    }
}

/// A connection ready for a ClientHello: the implicit-TLS port, else the STARTTLS
/// port after `220` to STARTTLS.
async fn tls_ready(t: &Target) -> Result<Box<dyn Stream>, String> {
    if let Some(endpoint) = &t.smtps {
        return Ok(Box::new(wire::connect(endpoint).await?));
    }
    let mut w = t.plain().await?;
    w.command("STARTTLS").await?.expect_code(220, "STARTTLS")?;
    // The server says nothing after 220 until the hello, so nothing is buffered.
    Ok(w.into_stream())
}

/// A ClientHello offering at most TLS 1.`minor - 1` (TLS 1.0: minor 1, 1.1: minor 2),
/// with common ECDHE and RSA CBC suites, without `supported_versions`.
fn legacy_client_hello(minor: u8) -> Result<Vec<u8>, String> {
    let mut body = vec![3, minor];
    body.extend_from_slice(&random::<32>()?);
    body.push(0); // no session ID
    // ECDHE-RSA and ECDHE-ECDSA with AES-CBC-SHA, RSA with AES-CBC-SHA: 12 octets.
    body.extend_from_slice(&[
        0, 12, 0xc0, 0x13, 0xc0, 0x14, 0xc0, 0x09, 0xc0, 0x0a, 0x00, 0x2f, 0x00, 0x35,
    ]);
    body.extend_from_slice(&[1, 0]); // null compression only
    body.extend_from_slice(&[
        0, 16, // extensions: 16 octets
        0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x17, 0x00, 0x1d, // supported_groups
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, // ec_point_formats: uncompressed
    ]);
    let len = u32::try_from(body.len())
        .map_err(|_| "hello too long")?
        .to_be_bytes();
    let mut handshake = vec![1, len[1], len[2], len[3]];
    handshake.extend_from_slice(&body);
    let len = u16::try_from(handshake.len())
        .map_err(|_| "hello too long")?
        .to_be_bytes();
    let mut record = vec![0x16, 3, 1, len[0], len[1]];
    record.extend_from_slice(&handshake);
    Ok(record)
}

/// A hello offering only TLS 1.`minor - 1` must get an alert or a closed connection,
/// never a ServerHello.
async fn legacy_refused(t: &Target, minor: u8) -> Result<(), String> {
    let mut tcp = tls_ready(t).await?;
    tcp.write_all(&legacy_client_hello(minor)?)
        .await
        .map_err(|e| format!("sending the ClientHello: {e}"))?;
    let mut header = [0u8; 6];
    let read = tokio::time::timeout(HELLO_TIMEOUT, tcp.read_exact(&mut header))
        .await
        .map_err(|_| "expected an alert or a close; the server sent nothing for 10 s".to_owned())?;
    if read.is_err() {
        return Ok(()); // closed or reset: refused
    }
    match header {
        [0x15, ..] => Ok(()),
        [0x16, _, _, _, _, 2] => {
            let mut version = [0u8; 5];
            let _ = tcp.read_exact(&mut version).await;
            Err(format!(
                "expected a refusal of a TLS 1.{} hello; the server answered with a ServerHello for version {}.{}",
                minor - 1,
                version[3],
                version[4]
            ))
        }
        other => Err(format!(
            "expected an alert or a close; the server sent a TLS record starting {other:02x?}"
        )),
    }
}

/// The registered practice gets a session with only this TLS version enabled.
async fn version_accepted(
    t: &Target,
    version: &'static rustls::SupportedProtocolVersion,
) -> Result<(), String> {
    let builder = ClientConfig::builder_with_protocol_versions(&[version]);
    let config = client_config_with(
        builder,
        &t.server_ca,
        Some((&t.practice.pair.cert, &t.practice.pair.key)),
    )?;
    let mut w = match &t.smtps {
        Some(endpoint) => {
            let mut w = Wire::tls(endpoint, config).await?;
            w.reply().await?.expect_code(220, "greeting")?;
            w
        }
        None => t.starttls(config).await?,
    };
    w.command("EHLO conformance.test")
        .await?
        .expect_code(250, "EHLO")?;
    w.command(&format!("MAIL FROM:<{}>", t.practice.from))
        .await?
        .expect_code(250, "MAIL FROM")
}
