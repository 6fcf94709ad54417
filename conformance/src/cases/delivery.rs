//! Delivery: the reference letter reaches the right inbox, encrypted to the member,
//! intact, and without leaking its subject.

use kvgate_certs::x509;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::Case;
use crate::delivery::{self, Delivered, delivered};
use crate::letter::{ATTACHMENT_NAME, find_attachment};
use crate::target::Target;

/// The delivery cases.
pub const CASES: &[Case] = &[
    Case {
        id: "DELIVERY-SMARTHEALTH-INBOX",
        section: "Delivery",
        clause: "DESIGN.md step 6 (the member's smarthealth inbox)",
        run: |t| Box::pin(async { with_letter(t, right_inbox).await.into() }),
    },
    Case {
        id: "DELIVERY-PGP-MIME",
        section: "Delivery",
        clause: "DESIGN.md step 5; RFC 3156 §4",
        run: |t| Box::pin(async { with_letter(t, pgp_mime).await.into() }),
    },
    Case {
        id: "DELIVERY-MEMBER-DECRYPTS",
        section: "Delivery",
        clause: "DESIGN.md steps 5 and 7 (the member's key decrypts)",
        run: |t| Box::pin(async { with_letter(t, decrypts).await.into() }),
    },
    Case {
        id: "DELIVERY-ATTACHMENT-INTACT",
        section: "Delivery",
        clause: "DESIGN.md step 5 (attachments intact)",
        run: |t| Box::pin(async { with_letter(t, attachment_intact).await.into() }),
    },
    Case {
        id: "DELIVERY-SIGNER-RECORDED",
        section: "Delivery",
        clause: "DESIGN.md step 5 (a header recording who signed it); issue 4",
        run: |t| Box::pin(async { with_letter(t, signer_recorded).await.into() }),
    },
    Case {
        id: "DELIVERY-TRACKED-VIA-API",
        section: "Delivery",
        clause: "DESIGN.md (tracking IDs); issue 5 (GET /v1/tracking/{id})",
        run: |t| Box::pin(async { with_letter(t, tracked).await.into() }),
    },
    Case {
        id: "DELIVERY-NO-SUBJECT-LEAK",
        section: "Delivery",
        clause: "DESIGN.md step 5; RFC 9788 (header protection)",
        run: |t| Box::pin(async { with_letter(t, no_leak).await.into() }),
    },
    Case {
        id: "DELIVERY-POISON-QUARANTINED",
        section: "Delivery",
        clause: "issue 8 (poison letters: quarantined, never blocking others)",
        run: |t| {
            Box::pin(async {
                let poison = poison_letter(&t.practice.from, &t.smarthealth(&t.member.kvnr));
                delivery::poison_between_good_letters(t, &poison)
                    .await
                    .into()
            })
        },
    },
];

/// An enveloped-data letter whose CMS structure declares a length of 4 GiB.
fn poison_letter(from: &str, to: &str) -> Vec<u8> {
    use base64::Engine;
    let der = [0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x02, 0x01, 0x00];
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: x\r\nMIME-Version: 1.0\r\n\
         Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    )
    .into_bytes()
}

/// Runs `check` on the delivered reference letter (the API knows which inbox).
async fn with_letter(
    t: &Target,
    check: impl AsyncFnOnce(&Target, &Delivered) -> Result<(), String>,
) -> Result<(), String> {
    let letter = delivered(t).await?;
    check(t, letter).await
}

async fn right_inbox(t: &Target, d: &Delivered) -> Result<(), String> {
    if d.summary["mailbox"] != "smarthealth" {
        return Err(format!(
            "a letter to {}: expected mailbox smarthealth, got {}",
            t.smarthealth(&t.member.kvnr),
            d.summary
        ));
    }
    let api = &t.api;
    let token = t.member.token(api).await?;
    let postfach = api
        .request("GET", "/v1/messages?mailbox=postfach", Some(token), None)
        .await?;
    postfach.expect_status(200, "listing the Postfach")?;
    if String::from_utf8_lossy(&postfach.body).contains(&d.tracking_id) {
        return Err(format!(
            "the smarthealth letter {} is also listed in the Postfach",
            d.tracking_id
        ));
    }
    Ok(())
}

/// The tracking ID from the 250 shows `delivered` to the member through the API.
async fn tracked(t: &Target, d: &Delivered) -> Result<(), String> {
    let api = &t.api;
    let token = t.member.token(api).await?;
    let path = format!("/v1/tracking/{}", d.tracking_id);
    let answer = api.request("GET", &path, Some(token), None).await?;
    answer.expect_status(200, "the member's view of the letter's tracking")?;
    let trail = answer.json()?;
    let delivered = trail["events"]
        .as_array()
        .is_some_and(|events| events.iter().any(|e| e["kind"] == "delivered"));
    if trail["tracking_id"] == d.tracking_id.as_str() && delivered {
        Ok(())
    } else {
        Err(format!(
            "expected the trail of {} with a delivered event; got {trail}",
            d.tracking_id
        ))
    }
}

async fn pgp_mime(_: &Target, d: &Delivered) -> Result<(), String> {
    let head = header_block(&d.ciphertext).to_ascii_lowercase();
    let ok = head.contains("multipart/encrypted")
        && head.contains("application/pgp-encrypted")
        && String::from_utf8_lossy(&d.ciphertext).contains("-----BEGIN PGP MESSAGE-----");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected multipart/encrypted; protocol=\"application/pgp-encrypted\" with an armored message; the header is {head:?}"
        ))
    }
}

async fn decrypts(_: &Target, d: &Delivered) -> Result<(), String> {
    let text = String::from_utf8_lossy(&d.plaintext);
    let subject = format!("Befund {}", d.letter.marker);
    let body = format!("Conformance letter {}.", d.letter.marker);
    if text.contains(&subject) && text.contains(&body) {
        Ok(())
    } else {
        Err(format!(
            "the decrypted letter lacks the subject {subject:?} or the text {body:?}; it starts {:?}",
            text.chars().take(300).collect::<String>()
        ))
    }
}

async fn attachment_intact(_: &Target, d: &Delivered) -> Result<(), String> {
    match find_attachment(&d.plaintext, ATTACHMENT_NAME) {
        Some(bytes) if bytes == d.letter.attachment => Ok(()),
        Some(bytes) => Err(format!(
            "the attachment {ATTACHMENT_NAME} differs: sent {} octets, got {} octets",
            d.letter.attachment.len(),
            bytes.len()
        )),
        None => Err(format!(
            "the decrypted letter has no attachment named {ATTACHMENT_NAME}"
        )),
    }
}

/// The decrypted letter names the signer, by certificate fingerprint (SHA-256, hex)
/// before the inner message's own headers end.
async fn signer_recorded(t: &Target, d: &Delivered) -> Result<(), String> {
    let der = CertificateDer::from_pem_slice(&t.practice.pair.cert)
        .map_err(|e| format!("reading the practice certificate: {e}"))?;
    let fingerprint = x509::fingerprint_der(&der).replace(':', "").to_lowercase();
    let head = header_block(&d.plaintext).replace(':', "").to_lowercase();
    if head.contains(&fingerprint) {
        Ok(())
    } else {
        Err(format!(
            "expected the signer's SHA-256 fingerprint {fingerprint} in the decrypted header; got {head:?}"
        ))
    }
}

async fn no_leak(_: &Target, d: &Delivered) -> Result<(), String> {
    let served = String::from_utf8_lossy(&d.ciphertext);
    if served.contains(&d.letter.marker) {
        return Err(format!(
            "the served message shows the letter's subject or text in clear (marker {}); header: {:?}",
            d.letter.marker,
            header_block(&d.ciphertext)
        ));
    }
    Ok(())
}

/// The header block of a message: everything before the first empty line.
fn header_block(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    let end = text
        .find("\r\n\r\n")
        .or_else(|| text.find("\n\n"))
        .unwrap_or(text.len());
    text[..end].to_owned()
}
