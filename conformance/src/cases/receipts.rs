//! Receipts: the failure DSN and the read MDN the gateway sends to the practice,
//! caught by the suite's own receiver (`--relay-listen`).

use super::{Case, Outcome};
use crate::delivery::{self, Submitted};
use crate::letter::{Letter, Wrapping};
use crate::relay::{RECEIPT_TIMEOUT, Received, Relay};
use crate::signed::signed_by;
use crate::target::Target;

/// The receipt cases.
pub const CASES: &[Case] = &[
    Case {
        id: "RECEIPT-FAILURE-DSN",
        section: "Receipts",
        clause: "DESIGN.md step 4 (failure DSN saying which check failed); RFC 3464 §2.3",
        run: |t| Box::pin(with_relay(t, failure_dsn)),
    },
    Case {
        id: "RECEIPT-DSN-SIGNED",
        section: "Receipts",
        clause: "DESIGN.md step 8 (receipts signed with the gateway's S/MIME certificate); RFC 8551 §3.5",
        run: |t| Box::pin(with_relay(t, dsn_signed)),
    },
    Case {
        id: "RECEIPT-MDN-AFTER-READ",
        section: "Receipts",
        clause: "DESIGN.md step 8; RFC 8098 §3",
        run: |t| Box::pin(with_relay(t, mdn_after_read)),
    },
    Case {
        id: "RECEIPT-MDN-SIGNED",
        section: "Receipts",
        clause: "DESIGN.md step 8 (receipts signed with the gateway's S/MIME certificate); RFC 8098 §3.5; RFC 8551 §3.5",
        run: |t| Box::pin(with_relay(t, mdn_signed)),
    },
];

/// Runs `check` with the receiver, or skips without `--relay-listen`.
async fn with_relay(
    t: &Target,
    check: impl AsyncFnOnce(&Target, &Relay) -> Result<Option<String>, String>,
) -> Outcome {
    let Some(relay) = &t.relay else {
        return Outcome::Skip(
            "needs --relay-listen (the suite's receiver as the gateway's outbound relay)"
                .to_owned(),
        );
    };
    check(t, relay).await.into()
}

/// Sends an unsigned letter and waits for the DSN it must cause, the one naming its
/// tracking ID; `None` if the gateway refused it at DATA already (then no DSN is
/// owed).
async fn provoke_dsn(t: &Target, relay: &Relay) -> Result<Option<Received>, String> {
    let rcpt = t.smarthealth(&t.member.kvnr);
    let message =
        Letter::new(&t.practice.from, &rcpt)?.wrap(&Wrapping::EncryptOnly(&t.gateway_smime))?;
    let Submitted::Accepted(id) = delivery::submit(t, &t.practice, &rcpt, &message).await? else {
        return Ok(None);
    };
    // Earlier cases cause DSNs too: this one must name the letter's tracking ID.
    relay
        .wait_for(&t.practice.from, RECEIPT_TIMEOUT, |m| m.is_dsn_for(&id))
        .await
        .map(Some)
        .ok_or_else(|| {
            format!(
                "an unsigned letter (tracking {id}) was accepted, but no DSN reached the relay for <{}> within {} s",
                t.practice.from,
                RECEIPT_TIMEOUT.as_secs()
            )
        })
}

const REFUSED_AT_DATA: &str = "the gateway refused the unsigned letter at DATA; no DSN is owed";

async fn failure_dsn(t: &Target, relay: &Relay) -> Result<Option<String>, String> {
    let Some(dsn) = provoke_dsn(t, relay).await? else {
        return Ok(Some(REFUSED_AT_DATA.to_owned()));
    };
    if !dsn.mail_from.is_empty() {
        return Err(format!(
            "a DSN must come from the null path <>, got <{}>",
            dsn.mail_from
        ));
    }
    let body = dsn.text();
    let missing: Vec<&str> = [
        "action: failed",
        "status: 5.",
        "diagnostic-code:",
        "final-recipient:",
        "auto-submitted:",
    ]
    .into_iter()
    .filter(|field| !body.contains(field))
    .collect();
    if !missing.is_empty() {
        return Err(format!("the DSN lacks {missing:?}"));
    }
    // The letter was not signed: the reason must be that check's (`not-signed`), not
    // any other that happens to mention signing.
    let diagnostic = dsn.diagnostic_code();
    if diagnostic
        .split_whitespace()
        .any(|word| word.trim_end_matches(':') == "not-signed")
    {
        Ok(None)
    } else {
        Err(format!(
            "the DSN for an unsigned letter does not say the signature check failed: {diagnostic:?}"
        ))
    }
}

async fn dsn_signed(t: &Target, relay: &Relay) -> Result<Option<String>, String> {
    let Some(dsn) = provoke_dsn(t, relay).await? else {
        return Ok(Some(REFUSED_AT_DATA.to_owned()));
    };
    signed_by(&dsn.data, &t.gateway_smime)
        .map(|()| None)
        .map_err(|e| format!("the DSN: {e}"))
}

async fn mdn_after_read(t: &Target, relay: &Relay) -> Result<Option<String>, String> {
    if provoke_mdn(t, relay).await?.text().contains("displayed") {
        Ok(None)
    } else {
        Err("the MDN does not say `displayed`".to_owned())
    }
}

async fn mdn_signed(t: &Target, relay: &Relay) -> Result<Option<String>, String> {
    let mdn = provoke_mdn(t, relay).await?;
    signed_by(&mdn.data, &t.gateway_smime)
        .map(|()| None)
        .map_err(|e| format!("the MDN: {e}"))
}

/// Sends a letter that asks for a read receipt, marks it read once delivered, and
/// waits for the MDN naming it.
async fn provoke_mdn(t: &Target, relay: &Relay) -> Result<Received, String> {
    let letter = Letter::new(&t.practice.from, &t.smarthealth(&t.member.kvnr))?
        .request_mdn(&t.practice.from);
    let message = letter.wrap(&Wrapping::SignThenEncrypt(
        t.practice.signer(),
        &t.gateway_smime,
    ))?;
    let id = delivery::accepted(t, &message, "a letter asking for a read receipt").await?;
    let entry = delivery::await_delivery(t, &id).await?;
    let marker = letter.marker.to_lowercase();
    let is_mdn =
        |m: &Received| m.text().contains("disposition-notification") && m.text().contains(&marker);
    // Delivered is not read: no MDN may come before the member marks the letter read.
    if relay
        .wait_for(&t.practice.from, delivery::SETTLE, is_mdn)
        .await
        .is_some()
    {
        return Err(format!(
            "an MDN for letter {id} reached the relay before the member read the letter"
        ));
    }
    delivery::mark_read(t, &entry).await?;
    relay
        .wait_for(&t.practice.from, RECEIPT_TIMEOUT, is_mdn)
        .await
        .ok_or_else(|| {
            format!(
                "the letter {id} was read, but no MDN naming its Message-ID reached the relay within {} s",
                RECEIPT_TIMEOUT.as_secs()
            )
        })
}
