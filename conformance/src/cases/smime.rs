//! S/MIME: which letters the gateway unwraps and delivers, and which it must not.

use super::Case;
use crate::delivery::{self, never_delivered};
use crate::letter::{Letter, Wrapping};
use crate::target::Target;

/// The S/MIME cases.
pub const CASES: &[Case] = &[
    Case {
        id: "SMIME-SIGN-THEN-ENCRYPT-RSA",
        section: "S/MIME",
        clause: "DESIGN.md step 4; RFC 8551 §3.7",
        run: |t| Box::pin(async { delivery::delivered(t).await.map(|_| ()).into() }),
    },
    Case {
        id: "SMIME-ENCRYPT-THEN-SIGN-RSA",
        section: "S/MIME",
        clause: "DESIGN.md step 4 (both orders are read); RFC 8551 §3.7",
        run: |t| Box::pin(async { encrypt_then_sign(t).await.into() }),
    },
    Case {
        id: "SMIME-UNSIGNED",
        section: "S/MIME",
        clause: "DESIGN.md step 4 (must be signed)",
        run: |t| {
            Box::pin(async {
                let wrapping = Wrapping::EncryptOnly(&t.gateway_smime);
                never_delivered(t, &t.practice.from, wrapping).await.into()
            })
        },
    },
    Case {
        id: "SMIME-NOT-ENCRYPTED",
        section: "S/MIME",
        clause: "DESIGN.md step 4 (must be enveloped to the gateway)",
        run: |t| {
            Box::pin(async {
                let wrapping = Wrapping::SignOnly(t.practice.signer());
                never_delivered(t, &t.practice.from, wrapping).await.into()
            })
        },
    },
    Case {
        id: "SMIME-ENCRYPTED-TO-SOMEONE-ELSE",
        section: "S/MIME",
        clause: "DESIGN.md step 4; issue 4 (not-encrypted-to-gateway)",
        run: |t| {
            Box::pin(async {
                let wrapping = Wrapping::SignThenEncrypt(t.practice.signer(), &t.practice.cert);
                never_delivered(t, &t.practice.from, wrapping).await.into()
            })
        },
    },
    Case {
        id: "SMIME-SIGNER-UNTRUSTED-CA",
        section: "S/MIME",
        clause: "DESIGN.md step 4 (chains to a practice trust anchor); RFC 5280 §6",
        run: |t| {
            Box::pin(async {
                let wrapping = Wrapping::SignThenEncrypt(t.stranger.signer(), &t.gateway_smime);
                never_delivered(t, &t.practice.from, wrapping).await.into()
            })
        },
    },
    Case {
        id: "SMIME-SIGNER-NOT-SENDER",
        section: "S/MIME",
        clause: "DESIGN.md step 4 (signer belongs to the connected sender)",
        run: |t| {
            Box::pin(async {
                let wrapping =
                    Wrapping::SignThenEncrypt(t.second_practice.signer(), &t.gateway_smime);
                never_delivered(t, &t.practice.from, wrapping).await.into()
            })
        },
    },
    Case {
        id: "SMIME-ECONTENT-CONFUSION",
        section: "S/MIME",
        clause: "issue 4 (visible part differs from the signed content: refused); CVE-2018-18509",
        run: |t| {
            Box::pin(async {
                let wrapping = Wrapping::EContentConfusion(t.practice.signer(), &t.gateway_smime);
                never_delivered(t, &t.practice.from, wrapping).await.into()
            })
        },
    },
    Case {
        id: "SMIME-FROM-NOT-SENDERS",
        section: "S/MIME",
        clause: "issue 4 (the From address must be one the signer may use)",
        run: |t| {
            Box::pin(async {
                let wrapping = Wrapping::SignThenEncrypt(t.practice.signer(), &t.gateway_smime);
                never_delivered(t, &t.second_practice.from, wrapping)
                    .await
                    .into()
            })
        },
    },
];

async fn encrypt_then_sign(t: &Target) -> Result<(), String> {
    let letter = Letter::new(&t.practice.from, &t.smarthealth(&t.member.kvnr))?;
    let message = letter.wrap(&Wrapping::EncryptThenSign(
        t.practice.signer(),
        &t.gateway_smime,
    ))?;
    let id = delivery::accepted(t, &message, "an encrypted-then-signed letter").await?;
    delivery::await_delivery(t, &id).await.map(|_| ())
}
