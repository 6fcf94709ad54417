//! Submitting letters over SMTP and watching the member's inbox over the API.

use std::time::{Duration, Instant};

use kvgate_certs::openpgp;
use serde_json::Value;

use crate::letter::{Letter, Wrapping};
use crate::relay::RECEIPT_TIMEOUT;
use crate::target::{Sender, Target, TestMember};
use crate::wire::Reply;

/// How long a letter may take from 250 to the inbox.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the inbox is looked at.
const POLL: Duration = Duration::from_millis(250);
/// How long the suite watches for what must not happen: a refused letter arriving
/// after a later one, an MDN before its letter is read.
pub const SETTLE: Duration = Duration::from_secs(2);

/// What the server answered to the end of DATA.
pub enum Submitted {
    /// `250` with this tracking ID.
    Accepted(String),
    /// Anything else.
    Refused(Reply),
}

/// A letter that reached the test member's inbox, fetched and decrypted.
pub struct Delivered {
    /// The letter as sent.
    pub letter: Letter,
    /// The tracking ID from the 250.
    pub tracking_id: String,
    /// The inbox listing entry.
    pub summary: Value,
    /// What the API served for the message.
    pub ciphertext: Vec<u8>,
    /// The ciphertext decrypted with the member's key.
    pub plaintext: Vec<u8>,
}

/// Sends `message` from `sender` to `rcpt` in one transaction.
pub async fn submit(
    t: &Target,
    sender: &Sender,
    rcpt: &str,
    message: &[u8],
) -> Result<Submitted, String> {
    let mut w = t.session_as(sender).await?;
    w.command(&format!("MAIL FROM:<{}>", sender.from))
        .await?
        .expect_code(250, "MAIL FROM")?;
    w.command(&format!("RCPT TO:<{rcpt}>"))
        .await?
        .expect_code(250, "RCPT TO of the test member")?;
    w.command("DATA").await?.expect_code(354, "DATA")?;
    let mut data = Vec::with_capacity(message.len() + 8);
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            data.push(b'.');
        }
        data.extend_from_slice(line);
    }
    if !data.ends_with(b"\r\n") {
        data.extend_from_slice(b"\r\n");
    }
    data.extend_from_slice(b".\r\n");
    w.send(&data).await?;
    let reply = w.reply().await?;
    // QUIT is a courtesy; the verdict is already in.
    let _ = w.command("QUIT").await;
    Ok(match tracking_id(&reply) {
        Some(id) if reply.code == 250 => Submitted::Accepted(id),
        _ => Submitted::Refused(reply),
    })
}

/// The tracking ID of `250 2.0.0 <id> queued`.
pub fn tracking_id(reply: &Reply) -> Option<String> {
    let line = reply.lines.last()?;
    let mut words = line.split_whitespace();
    let first = words.next()?;
    let id = if reply.enhanced().is_some() {
        words.next()?
    } else {
        first
    };
    Some(id.trim_matches(['<', '>']).to_owned())
}

/// The listing entry of the message with `tracking_id` in `member`'s inboxes, if any:
/// every page of the listing is looked at (the test member keeps the letters of every
/// run, oldest first).
pub async fn find(
    t: &Target,
    member: &TestMember,
    tracking_id: &str,
) -> Result<Option<Value>, String> {
    let api = &t.api;
    let token = member.token(api).await?;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/v1/messages?limit=200".to_owned(),
            Some(cursor) => format!("/v1/messages?limit=200&cursor={cursor}"),
        };
        let list = api.request("GET", &path, Some(token), None).await?;
        list.expect_status(200, "listing the inbox")?;
        let list = list.json()?;
        let messages = list["messages"]
            .as_array()
            .ok_or_else(|| format!("the listing has no `messages` array: {list}"))?;
        if let Some(found) = messages
            .iter()
            .find(|m| m["tracking_id"].as_str() == Some(tracking_id))
        {
            return Ok(Some(found.clone()));
        }
        match list["next_cursor"].as_str() {
            Some(next) if cursor.as_deref() != Some(next) => cursor = Some(next.to_owned()),
            Some(_) => {
                return Err(format!(
                    "the listing's next_cursor does not move on: {list}"
                ));
            }
            None => return Ok(None),
        }
    }
}

/// Waits until the message with `tracking_id` is in the test member's inbox.
pub async fn await_delivery(t: &Target, tracking_id: &str) -> Result<Value, String> {
    let started = Instant::now();
    loop {
        if let Some(found) = find(t, &t.member, tracking_id).await? {
            return Ok(found);
        }
        if started.elapsed() > DELIVERY_TIMEOUT {
            return Err(format!(
                "letter {tracking_id} was accepted but is not in the member's inbox after {} s",
                DELIVERY_TIMEOUT.as_secs()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Sends `message` from the test practice to the test member; it must be accepted.
/// Returns the tracking ID; `what` names the letter in a failure.
pub async fn accepted(t: &Target, message: &[u8], what: &str) -> Result<String, String> {
    let rcpt = t.smarthealth(&t.member.kvnr);
    match submit(t, &t.practice, &rcpt, message).await? {
        Submitted::Accepted(id) => Ok(id),
        Submitted::Refused(reply) => Err(format!(
            "{what}: expected 250 with a tracking ID, got {reply}"
        )),
    }
}

/// The message ID of a listing entry.
pub fn message_id(entry: &Value) -> Result<&str, String> {
    entry["id"]
        .as_str()
        .ok_or_else(|| format!("the listing entry has no id: {entry}"))
}

/// Marks the test member's message of listing entry `entry` read.
pub async fn mark_read(t: &Target, entry: &Value) -> Result<(), String> {
    let id = message_id(entry)?;
    let api = &t.api;
    let token = t.member.token(api).await?;
    api.request(
        "POST",
        &format!("/v1/messages/{id}/read"),
        Some(token),
        None,
    )
    .await?
    .expect_status(204, "marking the letter read")
}

/// A correct letter of the test practice to the test member: the letter and the
/// message to send (signed, then encrypted to the gateway).
pub fn correct_letter(t: &Target) -> Result<(Letter, Vec<u8>), String> {
    let letter = Letter::new(&t.practice.from, &t.smarthealth(&t.member.kvnr))?;
    let message = letter.wrap(&Wrapping::SignThenEncrypt(
        t.practice.signer(),
        &t.gateway_smime,
    ))?;
    Ok((letter, message))
}

/// Sends a correct letter to the test member and waits for it.
pub async fn deliver(t: &Target) -> Result<Delivered, String> {
    let (letter, message) = correct_letter(t)?;
    let tracking_id = accepted(
        t,
        &message,
        "a signed and encrypted letter of the registered practice",
    )
    .await?;
    let summary = await_delivery(t, &tracking_id).await?;
    let id = message_id(&summary)?;
    let api = &t.api;
    let token = t.member.token(api).await?;
    let fetched = api
        .request("GET", &format!("/v1/messages/{id}"), Some(token), None)
        .await?;
    fetched.expect_status(200, "fetching the delivered letter")?;
    let plaintext = openpgp::decrypt(&fetched.body, &t.member.secret_key)
        .map_err(|e| format!("the member's key cannot decrypt the delivered letter: {e}"))?;
    Ok(Delivered {
        letter,
        tracking_id,
        summary,
        ciphertext: fetched.body,
        plaintext: plaintext.to_vec(),
    })
}

/// The shared delivered letter (sent on first use).
pub async fn delivered(t: &Target) -> Result<&Delivered, String> {
    t.delivered
        .get_or_init(|| deliver(t))
        .await
        .as_ref()
        .map_err(|e| format!("the reference letter did not arrive: {e}"))
}

/// Passes if a letter with `from` in its From header, wrapped as `wrapping` and sent
/// over the test practice's connection, is refused (5xx) or, once accepted, never reaches
/// the inbox: a correct letter sent right after it must arrive, and the first one
/// must still be missing a moment later.
pub async fn never_delivered(t: &Target, from: &str, wrapping: Wrapping<'_>) -> Result<(), String> {
    let rcpt = t.smarthealth(&t.member.kvnr);
    let message = Letter::new(from, &rcpt)?.wrap(&wrapping)?;
    let bad = match submit(t, &t.practice, &rcpt, &message).await? {
        Submitted::Accepted(id) => id,
        Submitted::Refused(reply) if reply.code / 100 == 5 => return Ok(()),
        // A temporary refusal says the letter may come back: it is not refused.
        Submitted::Refused(reply) => {
            return Err(format!("expected 250 or a refusal (5xx), got {reply}"));
        }
    };
    let probe = deliver(t).await?;
    tokio::time::sleep(SETTLE).await;
    match find(t, &t.member, &bad).await? {
        None => Ok(()),
        Some(entry) => Err(format!(
            "the letter was delivered to the member (tracking {bad}, while {} arrived): {entry}",
            probe.tracking_id
        )),
    }
}

/// Passes if a letter wrapped as `wrapping`, sent by the test practice to the test
/// member, is refused at DATA (5xx) or, once accepted, fails with `reason` in its
/// tracking as the member sees it through the API, is not in the inbox, and (with
/// the suite's receiver) causes a failure DSN that gives `reason`.
pub async fn failed_for(t: &Target, wrapping: Wrapping<'_>, reason: &str) -> Result<(), String> {
    let rcpt = t.smarthealth(&t.member.kvnr);
    let message = Letter::new(&t.practice.from, &rcpt)?.wrap(&wrapping)?;
    let id = match submit(t, &t.practice, &rcpt, &message).await? {
        Submitted::Accepted(id) => id,
        Submitted::Refused(reply) if reply.code / 100 == 5 => return Ok(()),
        Submitted::Refused(reply) => {
            return Err(format!("expected 250 or a refusal (5xx), got {reply}"));
        }
    };
    let last = final_event(t, &id).await?;
    if last["kind"] != "failed" || last["reason"] != reason {
        return Err(format!(
            "expected letter {id} to fail with reason {reason}; its last event is {last}"
        ));
    }
    if let Some(entry) = find(t, &t.member, &id).await? {
        return Err(format!(
            "letter {id} failed ({reason}) but is in the inbox: {entry}"
        ));
    }
    // With the suite's receiver, the failure DSN to the practice must give the reason.
    let Some(relay) = &t.relay else {
        return Ok(());
    };
    let dsn = relay
        .wait_for(&t.practice.from, RECEIPT_TIMEOUT, |m| m.is_dsn_for(&id))
        .await
        .ok_or_else(|| {
            format!(
                "letter {id} failed ({reason}), but no DSN naming it reached the relay within {} s",
                RECEIPT_TIMEOUT.as_secs()
            )
        })?;
    let diagnostic = dsn.diagnostic_code();
    if diagnostic.contains(reason) {
        Ok(())
    } else {
        Err(format!(
            "the failure DSN of letter {id} does not give the reason {reason}: {diagnostic:?}"
        ))
    }
}

/// A letter built to hurt a parser, sent between two good letters of the test
/// practice: the good ones arrive, and the poison one ends in quarantine (as the test
/// member sees its tracking through the API) and never in the inbox.
pub async fn poison_between_good_letters(t: &Target, poison: &[u8]) -> Result<(), String> {
    let rcpt = t.smarthealth(&t.member.kvnr);
    let good = || -> Result<Vec<u8>, String> {
        Letter::new(&t.practice.from, &rcpt)?.wrap(&Wrapping::SignThenEncrypt(
            t.practice.signer(),
            &t.gateway_smime,
        ))
    };
    let first = accepted(t, &good()?, "the good letter before the poison").await?;
    let poisoned = accepted(t, poison, "the poison letter").await?;
    let second = accepted(t, &good()?, "the good letter after the poison").await?;
    for id in [&first, &second] {
        await_delivery(t, id).await?;
    }
    let last = final_event(t, &poisoned).await?;
    if last["kind"] != "quarantined" {
        return Err(format!(
            "expected the poison letter {poisoned} to be quarantined; its final event is {last}"
        ));
    }
    if let Some(entry) = find(t, &t.member, &poisoned).await? {
        return Err(format!(
            "the poison letter {poisoned} is in the inbox: {entry}"
        ));
    }
    Ok(())
}

/// The first final event (`delivered`, `failed`, `expired`, `quarantined`) of the
/// letter with `tracking_id`, as the test member sees its tracking through the API.
async fn final_event(t: &Target, tracking_id: &str) -> Result<Value, String> {
    let api = &t.api;
    let token = t.member.token(api).await?;
    let path = format!("/v1/tracking/{tracking_id}");
    let started = Instant::now();
    loop {
        let answer = api.request("GET", &path, Some(token), None).await?;
        if answer.status == 200 {
            let trail = answer.json()?;
            let last = trail["events"].as_array().and_then(|events| {
                events.iter().find(|e| {
                    ["delivered", "failed", "expired", "quarantined"]
                        .contains(&e["kind"].as_str().unwrap_or_default())
                })
            });
            if let Some(last) = last {
                return Ok(last.clone());
            }
        } else if answer.status != 404 {
            answer.expect_status(200, "the member's view of the letter's tracking")?;
        }
        if started.elapsed() > DELIVERY_TIMEOUT {
            return Err(format!(
                "letter {tracking_id} was accepted but its tracking shows no final event after {} s (last answer: HTTP {} {})",
                DELIVERY_TIMEOUT.as_secs(),
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}
