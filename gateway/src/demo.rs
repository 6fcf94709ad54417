//! `kvgate demo`: one letter end to end on a throw-away gateway.
//!
//! Initialises a gateway in a temporary directory, starts it on free loopback ports,
//! enrols a device for the demo member over the API, sends a signed and encrypted
//! letter with a PDF attachment as the demo practice over SMTPS, pulls it as the
//! member, decrypts it, checks the attachment byte for byte, marks it read, and prints
//! the tracking trail.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use base64::Engine;
use kvgate_certs::{compose, openpgp};
use kvgate_store::TrackingId;
use mail_parser::{MessageParser, MimeHeaders};

use crate::client::{https, smtp, tls_config};
use crate::config;
use crate::init::{self, DEMO_DOMAIN, DEMO_KVNR, DEMO_PRACTICE_ADDRESS};
use crate::runtime::Installation;
use crate::serve::{Gateway, ServeArgs};

/// Runs the demo.
pub fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(demo(dir.path()))?;
    println!("demo finished in {:.2} s", started.elapsed().as_secs_f64());
    Ok(())
}

async fn demo(dir: &Path) -> anyhow::Result<()> {
    let code = match init::run(dir)? {
        init::Outcome::Created {
            enrollment_code, ..
        } => enrollment_code,
        init::Outcome::AlreadyInitialised(_) => bail!("the temporary directory was not empty"),
    };
    println!("1. initialised a gateway in {}", dir.display());
    let installation = Installation::open(&dir.join(config::FILE_NAME))?;
    let store = installation.store.clone();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let args = ServeArgs {
        smtp: Some(any),
        smtps: Some(any),
        api: Some(any),
        ..ServeArgs::default()
    };
    let gateway = Gateway::start(installation, &args).await?;
    let outcome = exchange(dir, &gateway, &code).await;
    gateway.stop().await;
    let tracking_id = outcome?;

    println!("tracking trail of {tracking_id}:");
    for event in store.events(&tracking_id)? {
        println!(
            "  {}  {:<9} {}{}",
            event.at.to_rfc3339(),
            event.kind.as_str(),
            event.recipient.as_deref().unwrap_or(""),
            event.detail.map(|d| format!("  {d}")).unwrap_or_default()
        );
    }
    Ok(())
}

/// Enrols, sends, pulls, decrypts and checks; returns the tracking ID.
async fn exchange(dir: &Path, gateway: &Gateway, code: &str) -> anyhow::Result<TrackingId> {
    let pki = dir.join("pki");
    let read =
        |name: &str| std::fs::read(pki.join(name)).with_context(|| format!("reading pki/{name}"));
    let ca = read("ca.pem")?;
    let api_tls = tls_config(&ca, None)?;

    let (device_secret, device_key) = openpgp::generate_member_key("Demo phone")?;
    let enrol = serde_json::json!({
        "kvnr": DEMO_KVNR, "code": code, "device_name": "Demo phone", "public_key": device_key.armored,
    });
    let response = https::request(
        gateway.api,
        api_tls.clone(),
        "POST",
        "/v1/enroll",
        None,
        Some(enrol.to_string().as_bytes()),
    )
    .await?;
    ensure!(
        response.status == 201,
        "enrolment failed: {}",
        String::from_utf8_lossy(&response.body)
    );
    let enrolled: serde_json::Value = serde_json::from_slice(&response.body)?;
    let token = enrolled["token"]
        .as_str()
        .context("no token in the enrolment answer")?
        .to_owned();
    println!(
        "2. enrolled device {} for member {DEMO_KVNR} over the API",
        enrolled["device_id"]
    );

    let pdf = demo_pdf();
    let recipient = format!("{DEMO_KVNR}@smarthealth.{DEMO_DOMAIN}");
    let inner = demo_letter(&recipient, &pdf);
    let signed = compose::sign(
        &inner,
        &read("demo-practice.pem")?,
        &read("demo-practice.key")?,
    )?;
    let encrypted = compose::encrypt(&signed, &read("gateway.pem")?)?;
    let mut message = format!(
        "From: <{DEMO_PRACTICE_ADDRESS}>\r\nTo: <{recipient}>\r\nSubject: [...]\r\nMessage-ID: <demo@demo-practice.test>\r\n"
    )
    .into_bytes();
    message.extend_from_slice(&encrypted);
    let smtp_tls = tls_config(
        &ca,
        Some((&read("demo-practice.pem")?, &read("demo-practice.key")?)),
    )?;
    let reply = smtp::submit(
        gateway.smtps,
        smtp_tls,
        DEMO_PRACTICE_ADDRESS,
        &[&recipient],
        &message,
    )
    .await?;
    ensure!(reply.code == 250, "the gateway refused the letter: {reply}");
    let tracking_id: TrackingId = reply
        .text()
        .split_whitespace()
        .nth(1)
        .and_then(|id| id.parse().ok())
        .with_context(|| format!("no tracking ID in {reply}"))?;
    println!(
        "3. sent a signed and encrypted letter ({} octets, PDF attachment of {} octets) over SMTPS: {reply}",
        message.len(),
        pdf.len()
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let message_id = loop {
        let list = https::request(
            gateway.api,
            api_tls.clone(),
            "GET",
            "/v1/messages?mailbox=smarthealth",
            Some(&token),
            None,
        )
        .await?;
        ensure!(
            list.status == 200,
            "listing failed: {}",
            String::from_utf8_lossy(&list.body)
        );
        let list: serde_json::Value = serde_json::from_slice(&list.body)?;
        if let Some(id) = list["messages"][0]["id"].as_str() {
            break id.to_owned();
        }
        ensure!(
            Instant::now() < deadline,
            "the letter was not delivered within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let fetched = https::request(
        gateway.api,
        api_tls.clone(),
        "GET",
        &format!("/v1/messages/{message_id}"),
        Some(&token),
        None,
    )
    .await?;
    ensure!(
        fetched.status == 200,
        "fetching failed with HTTP {}",
        fetched.status
    );
    println!(
        "4. pulled message {message_id} from smarthealth: {} octets of PGP/MIME",
        fetched.body.len()
    );

    let plaintext = openpgp::decrypt(&fetched.body, &device_secret)?;
    let letter = MessageParser::default()
        .parse(plaintext.as_slice())
        .context("the decrypted letter is not MIME")?;
    let attachment = letter
        .attachments()
        .find(|a| a.attachment_name() == Some("befund.pdf"))
        .context("the decrypted letter has no befund.pdf")?;
    ensure!(
        attachment.contents() == pdf.as_slice(),
        "the attachment bytes differ"
    );
    println!(
        "5. decrypted it with the device key: befund.pdf is byte-identical ({} octets)",
        pdf.len()
    );

    let read_status = https::request(
        gateway.api,
        api_tls,
        "POST",
        &format!("/v1/messages/{message_id}/read"),
        Some(&token),
        None,
    )
    .await?;
    ensure!(
        read_status.status == 204,
        "marking read failed with HTTP {}",
        read_status.status
    );
    println!("6. marked it read");
    Ok(tracking_id)
}

/// A small PDF with binary content, so that a transfer-encoding slip would show.
fn demo_pdf() -> Vec<u8> {
    let mut pdf =
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n\
2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n"
            .to_vec();
    pdf.extend((0..=255u8).cycle().take(4096));
    pdf.extend_from_slice(b"\n%%EOF\n");
    pdf
}

/// The letter a practice writes: a text part and a PDF, as a MIME entity.
fn demo_letter(recipient: &str, pdf: &[u8]) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(pdf);
    let mut out = format!(
        "From: Demo Practice <{DEMO_PRACTICE_ADDRESS}>\r\n\
         To: <{recipient}>\r\n\
         Subject: Befund vom Labor\r\n\
         Message-ID: <demo@demo-practice.test>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"kvgate-demo\"\r\n\r\n\
         --kvgate-demo\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n\
         Guten Tag, anbei Ihr Befund.\r\n\
         --kvgate-demo\r\n\
         Content-Type: application/pdf; name=\"befund.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"befund.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n"
    );
    for line in encoded.as_bytes().chunks(76) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push_str("\r\n");
    }
    out.push_str("--kvgate-demo--\r\n");
    out.into_bytes()
}
