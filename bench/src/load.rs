//! The load: letters submitted over implicit TLS with a client certificate, on
//! `concurrency` connections that each stay open for many letters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use kvgate::client::smtp::SmtpClient;
use rustls::ClientConfig;
use tokio::task::JoinSet;

use crate::letters::{Letter, PRACTICE};

/// One letter the gateway answered with 250.
pub struct Accepted {
    /// The tracking ID from the reply.
    pub tracking_id: String,
    /// When the 250 arrived.
    pub at: SystemTime,
    /// From MAIL FROM to the 250 after the final dot.
    pub latency: Duration,
    /// Octets of the letter before signing and encryption.
    pub plain_octets: usize,
}

/// What one load run did.
pub struct Sent {
    /// When the first connection was opened.
    pub started: SystemTime,
    /// From the start until the last reply.
    pub elapsed: Duration,
    /// The accepted letters.
    pub accepted: Vec<Accepted>,
    /// Refusals, as the gateway's reply lines.
    pub refused: Vec<String>,
}

/// How many letters to send and how.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Letters to submit, taken round-robin from the prepared ones.
    pub count: usize,
    /// Connections submitting at once.
    pub concurrency: usize,
    /// Letters per second to start (letter `i` starts `i / rate` seconds in), or as
    /// fast as the connections go when `None`.
    pub pace: Option<f64>,
}

/// Submits letters as `plan` says.
pub async fn send(
    smtps: SocketAddr,
    tls: Arc<ClientConfig>,
    letters: Arc<Vec<Letter>>,
    plan: Plan,
) -> anyhow::Result<Sent> {
    let started = SystemTime::now();
    let clock = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..plan.concurrency {
        let (tls, letters, next) = (tls.clone(), letters.clone(), next.clone());
        let schedule = plan.pace.map(|rate| (clock, rate));
        workers.spawn(async move {
            connection(smtps, tls, &letters, &next, plan.count, schedule).await
        });
    }
    let mut sent = Sent {
        started,
        elapsed: Duration::ZERO,
        accepted: Vec::with_capacity(plan.count),
        refused: Vec::new(),
    };
    while let Some(worker) = workers.join_next().await {
        let (accepted, refused) = worker.context("a load connection panicked")??;
        sent.accepted.extend(accepted);
        sent.refused.extend(refused);
    }
    sent.elapsed = clock.elapsed();
    Ok(sent)
}

/// One connection: EHLO once, then letters until `count` are taken, each at its time
/// on the `schedule` (start, letters per second) if there is one, then QUIT.
async fn connection(
    smtps: SocketAddr,
    tls: Arc<ClientConfig>,
    letters: &[Letter],
    next: &AtomicUsize,
    count: usize,
    schedule: Option<(Instant, f64)>,
) -> anyhow::Result<(Vec<Accepted>, Vec<String>)> {
    let (mut client, greeting) = SmtpClient::connect(smtps, "localhost", tls)
        .await
        .context("connecting to the SMTPS listener")?;
    if greeting.code != 220 {
        bail!("greeting: {greeting}");
    }
    let ehlo = client.command("EHLO bench.localhost").await?;
    if ehlo.code != 250 {
        bail!("EHLO: {ehlo}");
    }
    let (mut accepted, mut refused) = (Vec::new(), Vec::new());
    loop {
        let index = next.fetch_add(1, Ordering::Relaxed);
        if index >= count || letters.is_empty() {
            break;
        }
        if let Some((start, rate)) = schedule {
            let due = start + Duration::from_secs_f64(index as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let letter = &letters[index % letters.len()];
        let clock = Instant::now();
        let mail = client.command(&format!("MAIL FROM:<{PRACTICE}>")).await?;
        let rcpt = client
            .command(&format!("RCPT TO:<{}>", letter.recipient))
            .await?;
        if mail.code != 250 || rcpt.code != 250 {
            refused.push(format!("{mail} / {rcpt}"));
            client.command("RSET").await?;
            continue;
        }
        let reply = client.data_text(&letter.data).await?;
        let tracking_id = reply.text().split_whitespace().nth(1);
        match (reply.code, tracking_id) {
            (250, Some(id)) => accepted.push(Accepted {
                tracking_id: id.to_owned(),
                at: SystemTime::now(),
                latency: clock.elapsed(),
                plain_octets: letter.plain_octets,
            }),
            _ => refused.push(reply.to_string()),
        }
    }
    let _ = client.command("QUIT").await;
    Ok((accepted, refused))
}
