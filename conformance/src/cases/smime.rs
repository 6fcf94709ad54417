//! S/MIME: which letters the gateway unwraps and delivers, and which it must not.

use super::{Case, Outcome};
use crate::delivery::{self, never_delivered};
use crate::letter::{Letter, Wrapping};
use crate::target::{KeyPair, Target};

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
        id: "SMIME-SIGN-THEN-ENCRYPT-ECDSA-P256",
        section: "S/MIME",
        clause: "DESIGN.md step 4; RFC 8551 §2.2 (ECDSA); RFC 5753 §2",
        run: |t| {
            Box::pin(async {
                let signer = t.p256_signer.as_ref();
                signed_by(t, signer, "p256_signer (a P-256 signing certificate)").await
            })
        },
    },
    Case {
        id: "SMIME-SIGN-THEN-ENCRYPT-ECDSA-BRAINPOOL",
        section: "S/MIME",
        clause: "DESIGN.md step 1 (brainpool signature keys); RFC 5639; RFC 5753 §2",
        run: |t| {
            Box::pin(async {
                let signer = t.brainpool_signer.as_ref();
                signed_by(
                    t,
                    signer,
                    "brainpool_signer (a brainpoolP256r1 signing certificate)",
                )
                .await
            })
        },
    },
    Case {
        id: "SMIME-SIGN-THEN-ENCRYPT-ECDH",
        section: "S/MIME",
        clause: "RFC 8551 §2.3; RFC 5753 §3.1 (ECDH key agreement to the gateway)",
        run: |t| {
            Box::pin(async {
                let Some(ecc) = &t.gateway_smime_ecc else {
                    return Outcome::Skip(
                        "the gateway has no S/MIME certificate with an ECC key among smime.decryption_keys"
                            .to_owned(),
                    );
                };
                let wrapping = Wrapping::SignThenEncrypt(t.practice.signer(), ecc);
                arrives(t, wrapping, "a letter encrypted to the gateway's ECC key")
                    .await
                    .into()
            })
        },
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
                let wrapping =
                    Wrapping::SignThenEncrypt(t.practice.signer(), &t.practice.pair.cert);
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
        id: "SMIME-SHA1-SIGNATURE",
        section: "S/MIME",
        clause: "RFC 8551 §2.1 (SHA-1 not accepted); issue 4 (weak-algorithm)",
        run: |t| {
            Box::pin(async {
                let wrapping = Wrapping::Sha1SignThenEncrypt(t.practice.signer(), &t.gateway_smime);
                delivery::failed_for(t, wrapping, "weak-algorithm")
                    .await
                    .into()
            })
        },
    },
    Case {
        id: "SMIME-SIGNER-REVOKED",
        section: "S/MIME",
        clause: "DESIGN.md step 4 (not revoked); RFC 5280 §6.3 (CRL); issue 4 (signer-revoked)",
        run: |t| {
            Box::pin(async {
                let Some(revoked) = &t.revoked_signer else {
                    return skip_without(
                        "revoked_signer (a revoked signing certificate and its CRL)",
                    );
                };
                let wrapping = Wrapping::SignThenEncrypt(revoked.signer(), &t.gateway_smime);
                delivery::failed_for(t, wrapping, "signer-revoked")
                    .await
                    .into()
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
    let wrapping = Wrapping::EncryptThenSign(t.practice.signer(), &t.gateway_smime);
    arrives(t, wrapping, "an encrypted-then-signed letter").await
}

/// A letter of the test practice signed by its further certificate `signer` (named
/// `what` in the PKI directory) must arrive; skips if the directory has none.
async fn signed_by(t: &Target, signer: Option<&KeyPair>, what: &str) -> Outcome {
    let Some(signer) = signer else {
        return skip_without(what);
    };
    let wrapping = Wrapping::SignThenEncrypt(signer.signer(), &t.gateway_smime);
    arrives(t, wrapping, "a letter signed with an ECC key")
        .await
        .into()
}

/// The skip of a case whose material the PKI directory lacks.
fn skip_without(what: &str) -> Outcome {
    Outcome::Skip(format!(
        "the PKI directory has no {what}; prepare a new one with `kvgate-conformance pki`"
    ))
}

/// A letter of the test practice to the test member, wrapped as `wrapping`, must
/// be accepted and arrive; `what` names it in a failure.
async fn arrives(t: &Target, wrapping: Wrapping<'_>, what: &str) -> Result<(), String> {
    let letter = Letter::new(&t.practice.from, &t.smarthealth(&t.member.kvnr))?;
    let id = delivery::accepted(t, &letter.wrap(&wrapping)?, what).await?;
    delivery::await_delivery(t, &id).await.map(|_| ())
}
