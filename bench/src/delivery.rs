//! Delivery as the members see it: their smarthealth inboxes, listed over the member
//! API until every accepted letter is there. The time of delivery is the inbox
//! entry's `received_at` (written by the gateway when it filed the ciphertext), so
//! how often the inboxes are polled does not change the figures.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, ensure};
use kvgate::client::https;
use rustls::ClientConfig;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::members::Member;

/// How long to wait between two looks at the inboxes.
const POLL: Duration = Duration::from_millis(500);

/// Waits until every tracking ID in `expected` is in an inbox or `timeout` has passed;
/// returns the delivery time of each one found. Only letters filed after `since` (the
/// scenario's start) are listed: the inboxes keep every earlier scenario's letters,
/// and listing them all twice a second took the server's CPU from the letters being
/// measured.
pub async fn wait(
    api: SocketAddr,
    tls: Arc<ClientConfig>,
    members: &[Member],
    expected: &HashSet<String>,
    timeout: Duration,
    since: SystemTime,
) -> anyhow::Result<HashMap<String, SystemTime>> {
    let started = Instant::now();
    let since = OffsetDateTime::from(since)
        .format(&Rfc3339)
        .context("formatting the scenario's start")?;
    let mut delivered = HashMap::with_capacity(expected.len());
    loop {
        for member in members {
            for entry in inbox(api, tls.clone(), &member.token, Some(&since)).await? {
                if expected.contains(&entry.tracking_id) {
                    delivered.insert(entry.tracking_id, entry.at);
                }
            }
        }
        if delivered.len() >= expected.len() || started.elapsed() > timeout {
            return Ok(delivered);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Fetches the letter with `tracking_id` from `member`'s smarthealth inbox once,
/// as an app would, and returns its size in octets.
pub async fn fetch(
    api: SocketAddr,
    tls: Arc<ClientConfig>,
    member: &Member,
    tracking_id: &str,
) -> anyhow::Result<usize> {
    let entry = inbox(api, tls.clone(), &member.token, None)
        .await?
        .into_iter()
        .find(|e| e.tracking_id == tracking_id)
        .with_context(|| format!("{tracking_id} is not in the inbox"))?;
    let path = format!("/v1/messages/{}", entry.id);
    let response = https::request(api, tls, "GET", &path, Some(&member.token), None).await?;
    ensure!(
        response.status == 200,
        "fetching {tracking_id} failed with HTTP {}",
        response.status
    );
    Ok(response.body.len())
}

/// One letter in an inbox listing.
struct Entry {
    /// The message ID the API fetches it by.
    id: String,
    /// The tracking ID the gateway answered the submission with.
    tracking_id: String,
    /// When the gateway filed it.
    at: SystemTime,
}

/// The letters in one member's smarthealth inbox (filed at or after `since`, an RFC
/// 3339 time in UTC, if given), every page of it.
async fn inbox(
    api: SocketAddr,
    tls: Arc<ClientConfig>,
    token: &str,
    since: Option<&str>,
) -> anyhow::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/v1/messages?mailbox=smarthealth&limit=200".to_owned();
        if let Some(since) = since {
            path.push_str(&format!("&since={since}"));
        }
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let response = https::request(api, tls.clone(), "GET", &path, Some(token), None).await?;
        ensure!(
            response.status == 200,
            "listing an inbox failed: {}",
            String::from_utf8_lossy(&response.body)
        );
        let list: serde_json::Value = serde_json::from_slice(&response.body)?;
        for m in list["messages"]
            .as_array()
            .context("no messages array in the inbox listing")?
        {
            entries.push(entry(m)?);
        }
        match list["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(entries),
        }
    }
}

/// One entry of an inbox listing.
fn entry(m: &serde_json::Value) -> anyhow::Result<Entry> {
    let id = m["id"].as_str().context("a message without id")?;
    let tracking_id = m["tracking_id"]
        .as_str()
        .context("a message without tracking_id")?;
    let at = m["received_at"]
        .as_str()
        .context("a message without received_at")?;
    let at = OffsetDateTime::parse(at, &Rfc3339)
        .with_context(|| format!("received_at {at:?} is not RFC 3339"))?;
    Ok(Entry {
        id: id.to_owned(),
        tracking_id: tracking_id.to_owned(),
        at: SystemTime::from(at),
    })
}
