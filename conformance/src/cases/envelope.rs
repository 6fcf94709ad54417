//! Envelope policy: who may send from which address, and to which member inboxes.

use super::Case;
use crate::kvnr::random_kvnr;
use crate::target::Target;

/// The envelope cases.
pub const CASES: &[Case] = &[
    Case {
        id: "SMTP-RCPT-INVALID-KVNR",
        section: "Envelope",
        clause: "DESIGN.md step 2 (553 5.1.3); KVNR check digit",
        run: |t| {
            Box::pin(async {
                let rcpt = format!("A123456781@smarthealth.{}", t.domain);
                rcpt_refused(t, &rcpt, (553, "5.1.3"), None).await.into()
            })
        },
    },
    Case {
        id: "SMTP-RCPT-UNKNOWN-MEMBER",
        section: "Envelope",
        clause: "DESIGN.md step 2 (550 5.1.1)",
        run: |t| {
            Box::pin(async {
                let run = async {
                    let rcpt = t.smarthealth(&random_kvnr()?);
                    rcpt_refused(t, &rcpt, (550, "5.1.1"), None).await
                };
                run.await.into()
            })
        },
    },
    Case {
        id: "SMTP-RCPT-FOREIGN-DOMAIN",
        section: "Envelope",
        clause: "DESIGN.md step 2; RFC 3463 (550 5.1.2)",
        run: |t| {
            Box::pin(async {
                let rcpt = format!("{}@smarthealth.elsewhere.test", t.member.kvnr);
                rcpt_refused(t, &rcpt, (550, "5.1.2"), None).await.into()
            })
        },
    },
    Case {
        id: "SMTP-RCPT-SMARTHEALTH-INACTIVE",
        section: "Envelope",
        clause: "DESIGN.md step 2 (550 5.1.1, says smarthealth is not activated)",
        run: |t| {
            Box::pin(async {
                let rcpt = t.smarthealth(&t.smarthealth_off_kvnr);
                rcpt_refused(t, &rcpt, (550, "5.1.1"), Some("smarthealth"))
                    .await
                    .into()
            })
        },
    },
    Case {
        id: "SMTP-RCPT-MEMBER-WITHOUT-KEY",
        section: "Envelope",
        clause: "DESIGN.md step 2 (550 5.1.1, says there is no key)",
        run: |t| {
            Box::pin(async {
                let rcpt = t.smarthealth(&t.keyless_kvnr);
                rcpt_refused(t, &rcpt, (550, "5.1.1"), Some("key"))
                    .await
                    .into()
            })
        },
    },
    Case {
        id: "SMTP-RCPT-POSTFACH-FROM-PRACTICE",
        section: "Envelope",
        clause: "DESIGN.md (Postfach: letters from the insurer), step 2 (550 5.7.1)",
        run: |t| {
            Box::pin(async {
                let rcpt = format!("{}@postfach.{}", t.member.kvnr, t.domain);
                rcpt_refused(t, &rcpt, (550, "5.7.1"), None).await.into()
            })
        },
    },
    Case {
        id: "SMTP-MAIL-FROM-NOT-ALLOWED",
        section: "Envelope",
        clause: "DESIGN.md step 2 (MAIL FROM an address of the sender; 553)",
        run: |t| {
            Box::pin(async {
                let run = async {
                    let mut w = t.session().await?;
                    let from = &t.second_practice.from;
                    w.command(&format!("MAIL FROM:<{from}>"))
                        .await?
                        .expect_code(553, "MAIL FROM with another practice's address")
                };
                run.await.into()
            })
        },
    },
];

/// `RCPT TO:<rcpt>` in a transaction of the test practice must get `code`, and the
/// text must mention `mention` where given.
async fn rcpt_refused(
    t: &Target,
    rcpt: &str,
    (code, enhanced): (u16, &str),
    mention: Option<&str>,
) -> Result<(), String> {
    let mut w = t.transaction().await?;
    let reply = w.command(&format!("RCPT TO:<{rcpt}>")).await?;
    let what = format!("RCPT TO:<{rcpt}>");
    reply.expect_reply(code, enhanced, &what)?;
    match mention {
        Some(word) if !reply.to_string().to_lowercase().contains(word) => Err(format!(
            "{what}: expected a text that mentions {word:?}, got {reply}"
        )),
        _ => Ok(()),
    }
}
