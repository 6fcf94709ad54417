//! SMTP: the command surface, STARTTLS, limits, smuggling and pipelining.

use super::{Case, advertised};
use crate::delivery;
use crate::target::Target;
use crate::wire::{Reply, Wire};

/// The SMTP cases.
pub const CASES: &[Case] = &[
    Case {
        id: "SMTP-EHLO-EXTENSIONS",
        section: "SMTP",
        clause: "RFC 1870, RFC 2920, RFC 6152, RFC 2034",
        run: |t| Box::pin(async { ehlo_extensions(t).await.into() }),
    },
    Case {
        id: "SMTP-STARTTLS-REQUIRED",
        section: "SMTP",
        clause: "RFC 3207 §4",
        run: |t| Box::pin(async { starttls_required(t).await.into() }),
    },
    Case {
        id: "SMTP-STARTTLS-RESETS-STATE",
        section: "SMTP",
        clause: "RFC 3207 §4.2",
        run: |t| Box::pin(async { starttls_resets_state(t).await.into() }),
    },
    Case {
        id: "SMTP-STARTTLS-INJECTION",
        section: "SMTP",
        clause: "RFC 3207 §4.2; CVE-2011-0411",
        run: |t| Box::pin(async { starttls_injection(t).await.into() }),
    },
    Case {
        id: "SMTP-STARTTLS-ARGUMENT",
        section: "SMTP",
        clause: "RFC 3207 §4 (501 on an argument)",
        run: |t| Box::pin(async { starttls_argument(t).await.into() }),
    },
    Case {
        id: "SMTP-STARTTLS-INSIDE-TLS",
        section: "SMTP",
        clause: "RFC 3207 §4.2 (no second STARTTLS)",
        run: |t| Box::pin(async { starttls_inside_tls(t).await.into() }),
    },
    Case {
        id: "SMTP-VRFY-NO-DISCLOSURE",
        section: "SMTP",
        clause: "RFC 5321 §3.5.3, §7.3",
        run: |t| Box::pin(async { no_disclosure(t, "VRFY").await.into() }),
    },
    Case {
        id: "SMTP-EXPN-NO-DISCLOSURE",
        section: "SMTP",
        clause: "RFC 5321 §3.5.3, §7.3",
        run: |t| Box::pin(async { no_disclosure(t, "EXPN").await.into() }),
    },
    Case {
        id: "SMTP-SMUGGLE-LF-DOT-LF",
        section: "SMTP",
        clause: "RFC 5321 §4.1.1.4, §2.3.8; SMTP smuggling (CVE-2023-51766)",
        run: |t| Box::pin(async { smuggle(t, b"\n.\n").await.into() }),
    },
    Case {
        id: "SMTP-SMUGGLE-LF-DOT-CRLF",
        section: "SMTP",
        clause: "RFC 5321 §4.1.1.4, §2.3.8; SMTP smuggling",
        run: |t| Box::pin(async { smuggle(t, b"\n.\r\n").await.into() }),
    },
    Case {
        id: "SMTP-SMUGGLE-CRLF-DOT-LF",
        section: "SMTP",
        clause: "RFC 5321 §4.1.1.4, §2.3.8; SMTP smuggling",
        run: |t| Box::pin(async { smuggle(t, b"\r\n.\n").await.into() }),
    },
    Case {
        id: "SMTP-SMUGGLE-CR-DOT-CR",
        section: "SMTP",
        clause: "RFC 5321 §4.1.1.4, §2.3.8; SMTP smuggling",
        run: |t| Box::pin(async { smuggle(t, b"\r.\r").await.into() }),
    },
    Case {
        id: "SMTP-SMUGGLE-CRLF-DOT-CR",
        section: "SMTP",
        clause: "RFC 5321 §4.1.1.4, §2.3.8; SMTP smuggling",
        run: |t| Box::pin(async { smuggle(t, b"\r\n.\r").await.into() }),
    },
    Case {
        id: "SMTP-SMUGGLE-CR-DOT-CRLF",
        section: "SMTP",
        clause: "RFC 5321 §4.1.1.4, §2.3.8; SMTP smuggling",
        run: |t| Box::pin(async { smuggle(t, b"\r.\r\n").await.into() }),
    },
    Case {
        id: "SMTP-LONG-COMMAND-LINE",
        section: "SMTP",
        clause: "RFC 5321 §4.5.3.1.4 (512 octets, raised by extensions: RFC 3461 §4 +500 for RCPT), §4.2.2 (500 5.5.2)",
        run: |t| Box::pin(async { long_command_line(t).await.into() }),
    },
    Case {
        id: "SMTP-UNTERMINATED-MEGABYTE-LINE",
        section: "SMTP",
        clause: "RFC 5321 §4.5.3.1.4; issue 3 (no unbounded buffering)",
        run: |t| Box::pin(async { megabyte_line(t).await.into() }),
    },
    Case {
        id: "SMTP-LONG-TEXT-LINE",
        section: "SMTP",
        clause: "RFC 5321 §4.5.3.1.6 (1000 octets); issue 3 (reported after the final dot)",
        run: |t| Box::pin(async { long_text_line(t).await.into() }),
    },
    Case {
        id: "SMTP-SIZE-WITHIN-LIMIT",
        section: "SMTP",
        clause: "RFC 1870 §6 (SIZE= under the limit is taken)",
        run: |t| {
            Box::pin(async {
                let run = async {
                    let mut w = t.session().await?;
                    w.command(&fill(t, "MAIL FROM:<{from}> SIZE=1000"))
                        .await?
                        .expect_code(250, "MAIL with SIZE=1000")
                };
                run.await.into()
            })
        },
    },
    Case {
        id: "SMTP-SIZE-OVER-LIMIT",
        section: "SMTP",
        clause: "RFC 1870 §6.1 (552 5.3.4 at MAIL)",
        run: |t| Box::pin(async { size_over_limit(t).await.into() }),
    },
    Case {
        id: "SMTP-SIZE-BODY-OVER-LIMIT",
        section: "SMTP",
        clause: "RFC 1870 §6.3 (552 5.3.4 after the final dot, not mid-stream); issue 3",
        run: |t| Box::pin(body_over_limit(t)),
    },
    Case {
        id: "SMTP-PIPELINING-ORDER",
        section: "SMTP",
        clause: "RFC 2920 §3.1 (replies in order)",
        run: |t| Box::pin(async { pipelining_order(t).await.into() }),
    },
    Case {
        id: "SMTP-RCPT-BEFORE-MAIL",
        section: "SMTP",
        clause: "RFC 5321 §4.1.4 (503 bad sequence)",
        run: |t| Box::pin(async { out_of_order(t, &["RCPT TO:<{member}>"]).await.into() }),
    },
    Case {
        id: "SMTP-DATA-BEFORE-RCPT",
        section: "SMTP",
        clause: "RFC 5321 §4.1.4 (503 bad sequence)",
        run: |t| {
            Box::pin(async {
                out_of_order(t, &["MAIL FROM:<{from}>", "DATA"])
                    .await
                    .into()
            })
        },
    },
    Case {
        id: "SMTP-NESTED-MAIL",
        section: "SMTP",
        clause: "RFC 5321 §4.1.4 (503 bad sequence)",
        run: |t| {
            Box::pin(async {
                out_of_order(t, &["MAIL FROM:<{from}>", "MAIL FROM:<{from}>"])
                    .await
                    .into()
            })
        },
    },
    Case {
        id: "SMTP-RSET-CLEARS-TRANSACTION",
        section: "SMTP",
        clause: "RFC 5321 §4.1.1.5",
        run: |t| {
            Box::pin(async {
                out_of_order(t, &["MAIL FROM:<{from}>", "RSET", "RCPT TO:<{member}>"])
                    .await
                    .into()
            })
        },
    },
    Case {
        id: "SMTP-DATA-WITHOUT-VALID-RCPT",
        section: "SMTP",
        clause: "RFC 2920 §3.1, RFC 5321 §3.3 (554 or 503: no valid recipients)",
        run: |t| Box::pin(async { data_without_valid_rcpt(t).await.into() }),
    },
    Case {
        id: "SMTP-EHLO-WITHOUT-DOMAIN",
        section: "SMTP",
        clause: "RFC 5321 §4.1.1.1, §4.3.2 (501)",
        run: |t| {
            Box::pin(async {
                let run = async {
                    let mut w = t.session().await?;
                    w.command("EHLO")
                        .await?
                        .expect_code(501, "EHLO without a domain")
                };
                run.await.into()
            })
        },
    },
    Case {
        id: "SMTP-PIPELINED-TRANSACTION",
        section: "SMTP",
        clause: "RFC 2920 §3.1 (MAIL, RCPT, DATA in one write)",
        run: |t| Box::pin(async { pipelined_transaction(t).await.into() }),
    },
    Case {
        id: "SMTP-RECIPIENT-LIMIT",
        section: "SMTP",
        clause: "RFC 5321 §4.5.3.1.8 (at least 100), §4.5.3.1.10 (452); issue 3",
        run: |t| Box::pin(async { recipient_limit(t).await.into() }),
    },
    Case {
        id: "SMTP-ERROR-LIMIT",
        section: "SMTP",
        clause: "issue 3 (too many errors in one session: 421 and close); RFC 5321 §4.2.2",
        run: |t| Box::pin(async { error_limit(t).await.into() }),
    },
    Case {
        id: "SMTP-ENHANCED-STATUS-CODES",
        section: "SMTP",
        clause: "RFC 2034 §3, RFC 3463",
        run: |t| Box::pin(async { enhanced_codes(t).await.into() }),
    },
    Case {
        id: "SMTP-DSN-PARAMETERS-ACCEPTED",
        section: "SMTP",
        clause: "RFC 3461 §4.1-4.4 (valid RET, ENVID, NOTIFY, ORCPT are taken)",
        run: |t| Box::pin(async { dsn_accepted(t).await.into() }),
    },
    Case {
        id: "SMTP-DSN-NOTIFY-NEVER-EXCLUSIVE",
        section: "SMTP",
        clause: "RFC 3461 §4.1 (NEVER stands alone)",
        run: |t| Box::pin(async { dsn_refused(t, "", "NOTIFY=NEVER,SUCCESS").await.into() }),
    },
    Case {
        id: "SMTP-DSN-ORCPT-XTEXT-CRLF",
        section: "SMTP",
        clause: "RFC 3461 §4 (xtext), §4.2; header injection",
        run: |t| {
            Box::pin(async {
                dsn_refused(t, "", "ORCPT=rfc822;a+0D+0Ab@x.test")
                    .await
                    .into()
            })
        },
    },
    Case {
        id: "SMTP-DSN-ENVID-XTEXT-LF",
        section: "SMTP",
        clause: "RFC 3461 §4 (xtext), §4.4; header injection",
        run: |t| Box::pin(async { dsn_refused(t, "ENVID=a+0AX-Evil:+201", "").await.into() }),
    },
    Case {
        id: "SMTP-DSN-RET-INVALID",
        section: "SMTP",
        clause: "RFC 3461 §4.3 (RET=FULL|HDRS)",
        run: |t| Box::pin(async { dsn_refused(t, "RET=SOME", "").await.into() }),
    },
    Case {
        id: "SMTP-BDAT-BEFORE-MAIL",
        section: "SMTP",
        clause: "RFC 3030 §2 (503 without a transaction)",
        run: |t| Box::pin(async { bdat_sequence(t, BdatOrder::BeforeMail).await }),
    },
    Case {
        id: "SMTP-BDAT-BEFORE-RCPT",
        section: "SMTP",
        clause: "RFC 3030 §2; RFC 5321 §4.1.4 (503 without a recipient)",
        run: |t| Box::pin(async { bdat_sequence(t, BdatOrder::BeforeRcpt).await }),
    },
    Case {
        id: "SMTP-DATA-AFTER-BDAT",
        section: "SMTP",
        clause: "RFC 3030 §2 (DATA after BDAT is 503)",
        run: |t| Box::pin(async { bdat_sequence(t, BdatOrder::DataAfter).await }),
    },
    Case {
        id: "SMTP-BDAT-0-LAST",
        section: "SMTP",
        clause: "RFC 3030 §2 (a final empty BDAT 0 LAST chunk); DESIGN.md step 3 (250 with a tracking ID)",
        run: |t| Box::pin(async { bdat_sequence(t, BdatOrder::ZeroLast).await }),
    },
];

/// The BDAT orders the cases try.
#[derive(Clone, Copy)]
enum BdatOrder {
    /// BDAT before MAIL: 503.
    BeforeMail,
    /// BDAT after MAIL, before any RCPT: 503.
    BeforeRcpt,
    /// DATA after a BDAT chunk: 503.
    DataAfter,
    /// A whole letter in one chunk, then `BDAT 0 LAST`: 250 and delivered.
    ZeroLast,
}

/// Replaces `{from}` and `{member}` in a command template.
fn fill(t: &Target, template: &str) -> String {
    template
        .replace("{from}", &t.practice.from)
        .replace("{member}", &t.smarthealth(&t.member.kvnr))
}

async fn ehlo_extensions(t: &Target) -> Result<(), String> {
    let mut w = t.session().await?;
    let ehlo = w.command("EHLO conformance.test").await?;
    for ext in ["SIZE", "PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"] {
        if advertised(&ehlo, ext).is_none() {
            return Err(format!("EHLO does not advertise {ext}: {:?}", ehlo.lines));
        }
    }
    if advertised(&ehlo, "STARTTLS").is_some() {
        return Err("STARTTLS is advertised inside TLS".to_owned());
    }
    Ok(())
}

async fn starttls_required(t: &Target) -> Result<(), String> {
    let mut w = Wire::plain(&t.smtp).await?;
    w.reply().await?.expect_code(220, "greeting")?;
    let ehlo = w.command("EHLO conformance.test").await?;
    if advertised(&ehlo, "STARTTLS").is_none() {
        return Err("STARTTLS is not advertised on the plain port".to_owned());
    }
    w.command(&fill(t, "MAIL FROM:<{from}>"))
        .await?
        .expect_code(530, "MAIL before STARTTLS")
}

async fn starttls_resets_state(t: &Target) -> Result<(), String> {
    let mut w = t.starttls(t.practice.tls.clone()).await?;
    w.command(&fill(t, "MAIL FROM:<{from}>"))
        .await?
        .expect_code(503, "MAIL right after STARTTLS without a new EHLO")
}

/// `MAIL FROM` pipelined behind `STARTTLS` in the same write must not run after the
/// handshake: the first reply inside TLS must be the one to our EHLO.
async fn starttls_injection(t: &Target) -> Result<(), String> {
    let mut w = t.plain().await?;
    w.send(fill(t, "STARTTLS\r\nMAIL FROM:<{from}>\r\n").as_bytes())
        .await?;
    w.reply().await?.expect_code(220, "STARTTLS")?;
    let mut w = match w.starttls(t.practice.tls.clone()).await {
        Ok(w) => w,
        // The injected bytes broke the handshake: they were not run as a command.
        Err(_) => return Ok(()),
    };
    let first = w.command("EHLO conformance.test").await?;
    if first.code == 250 && first.lines.len() > 1 {
        Ok(())
    } else {
        Err(format!(
            "expected the multi-line EHLO reply first; got {first}, so the injected MAIL FROM was answered inside TLS"
        ))
    }
}

async fn starttls_argument(t: &Target) -> Result<(), String> {
    let mut w = t.plain().await?;
    w.command("STARTTLS now")
        .await?
        .expect_code(501, "STARTTLS with an argument")
}

async fn starttls_inside_tls(t: &Target) -> Result<(), String> {
    let mut w = t.session().await?;
    let reply = w.command("STARTTLS").await?;
    if reply.code == 503 || reply.code == 504 {
        Ok(())
    } else {
        Err(format!(
            "STARTTLS inside TLS: expected 503 or 504, got {reply}"
        ))
    }
}

/// VRFY/EXPN of the test member must not confirm it (no 250/251).
async fn no_disclosure(t: &Target, verb: &str) -> Result<(), String> {
    let mut w = t.session().await?;
    let reply = w
        .command(&format!("{verb} {}", t.smarthealth(&t.member.kvnr)))
        .await?;
    if reply.code == 252 || reply.code == 502 || reply.code == 550 {
        Ok(())
    } else {
        Err(format!(
            "{verb} of a registered member: expected 252, 502 or 550 (no disclosure), got {reply}"
        ))
    }
}

/// Only `<CRLF>.<CRLF>` ends DATA: with `sequence` and a whole second transaction
/// inside the message, exactly one reply must come before the reply to HELP.
async fn smuggle(t: &Target, sequence: &[u8]) -> Result<(), String> {
    let mut w = t.transaction().await?;
    w.command(&fill(t, "RCPT TO:<{member}>"))
        .await?
        .expect_code(250, "RCPT TO of the test member")?;
    w.command("DATA").await?.expect_code(354, "DATA")?;
    let mut data = fill(t, "From: <{from}>\r\nSubject: smuggling probe\r\n\r\nfirst").into_bytes();
    data.extend_from_slice(sequence);
    data.extend_from_slice(
        fill(
            t,
            "MAIL FROM:<{from}>\r\nRCPT TO:<{member}>\r\nDATA\r\nsmuggled\r\n\r\n.\r\nHELP\r\n",
        )
        .as_bytes(),
    );
    w.send(&data).await?;
    let mut before_help = Vec::new();
    loop {
        let reply = w.reply().await.map_err(|e| {
            format!(
                "{e} after {} replies (the real end of data was never seen)",
                before_help.len()
            )
        })?;
        if reply.code == 214 {
            break;
        }
        before_help.push(reply);
        if before_help.len() > 5 {
            break;
        }
    }
    match before_help.as_slice() {
        [one] if one.code == 250 || one.code >= 500 => Ok(()),
        replies => Err(format!(
            "expected one reply to the real end of data, then HELP's 214; got {}",
            list(replies)
        )),
    }
}

fn list(replies: &[Reply]) -> String {
    let all: Vec<String> = replies.iter().map(ToString::to_string).collect();
    format!("[{}]", all.join(" | "))
}

async fn long_command_line(t: &Target) -> Result<(), String> {
    let mut w = t.session().await?;
    // Longer than any extension allows (512 + 500 for DSN's RCPT parameters).
    let line = format!("NOOP {}", "x".repeat(1100));
    w.command(&line)
        .await?
        .expect_reply(500, "5.5.2", "a 1107-octet command line")?;
    w.command("NOOP").await?.expect_code(
        250,
        "NOOP after the over-long line (the session must go on)",
    )
}

/// A megabyte without CRLF, then NOOP: either `500 5.5.2` and the session goes on,
/// or `421` and the connection closes; never a buffered megabyte run as a command.
async fn megabyte_line(t: &Target) -> Result<(), String> {
    let mut w = t.session().await?;
    let mut bytes = b"NOOP ".to_vec();
    bytes.resize(1024 * 1024 + 5, b'x');
    bytes.extend_from_slice(b"\r\nNOOP\r\n");
    // The server may close before taking every byte; its reply says what happened.
    let _ = w.send(&bytes).await;
    let first = w.reply().await?;
    if first.code == 421 {
        return Ok(());
    }
    first.expect_reply(500, "5.5.2", "a 1 MiB command line")?;
    w.reply()
        .await?
        .expect_code(250, "NOOP after the 1 MiB line (the session must go on)")
}

/// A 1200-octet text line: refused with 5xx after the final dot, session goes on.
async fn long_text_line(t: &Target) -> Result<(), String> {
    let mut w = t.transaction().await?;
    w.command(&fill(t, "RCPT TO:<{member}>"))
        .await?
        .expect_code(250, "RCPT TO of the test member")?;
    w.command("DATA").await?.expect_code(354, "DATA")?;
    let mut data = fill(t, "From: <{from}>\r\nSubject: long line\r\n\r\n").into_bytes();
    data.resize(data.len() + 1200, b'y');
    data.extend_from_slice(b"\r\n.\r\n");
    w.send(&data).await?;
    let reply = w.reply().await?;
    if reply.code < 500 {
        return Err(format!(
            "a message with a 1200-octet line: expected 5xx after the final dot, got {reply}"
        ));
    }
    w.command("NOOP")
        .await?
        .expect_code(250, "NOOP after the refused message")
}

async fn size_over_limit(t: &Target) -> Result<(), String> {
    let mut w = t.session().await?;
    let ehlo = w.command("EHLO conformance.test").await?;
    let limit = size_limit(&ehlo).ok_or("EHLO advertises no SIZE limit")?;
    w.command(&format!(
        "MAIL FROM:<{}> SIZE={}",
        t.practice.from,
        limit + 1
    ))
    .await?
    .expect_reply(
        552,
        "5.3.4",
        &format!("MAIL with SIZE={} (limit {limit})", limit + 1),
    )
}

/// The largest SIZE limit for which a body over it is sent.
const BODY_OVER_LIMIT_MAX: u64 = 64 * 1024 * 1024;

/// The advertised SIZE limit, if any.
fn size_limit(ehlo: &Reply) -> Option<u64> {
    advertised(ehlo, "SIZE")
        .and_then(|p| p.first().and_then(|n| n.parse().ok()))
        .filter(|&n| n > 0)
}

/// A body one line over the SIZE limit, announced by no SIZE parameter, must be
/// refused with 552 5.3.4 once it is complete; skipped above 64 MiB.
async fn body_over_limit(t: &Target) -> super::Outcome {
    let run = async {
        let mut w = t.session().await?;
        let ehlo = w.command("EHLO conformance.test").await?;
        let limit = size_limit(&ehlo).ok_or("EHLO advertises no SIZE limit")?;
        if limit > BODY_OVER_LIMIT_MAX {
            return Ok(Some(format!(
                "the SIZE limit ({limit} octets) is over {BODY_OVER_LIMIT_MAX}; the case would send more than that"
            )));
        }
        w.command(&fill(t, "MAIL FROM:<{from}>"))
            .await?
            .expect_code(250, "MAIL FROM without SIZE")?;
        w.command(&fill(t, "RCPT TO:<{member}>"))
            .await?
            .expect_code(250, "RCPT TO")?;
        w.command("DATA").await?.expect_code(354, "DATA")?;
        let mut line = vec![b'x'; 998];
        line.extend_from_slice(b"\r\n");
        let batch = line.repeat(1024);
        let mut sent = 0;
        while sent <= limit {
            w.send(&batch).await.map_err(|e| {
                format!("the server stopped reading after {sent} of over {limit} octets: {e}")
            })?;
            sent += batch.len() as u64;
        }
        w.send(b".\r\n").await?;
        w.reply().await?.expect_reply(
            552,
            "5.3.4",
            &format!("a body of {sent} octets (limit {limit})"),
        )?;
        Ok::<_, String>(None)
    };
    run.await.into()
}

async fn pipelining_order(t: &Target) -> Result<(), String> {
    let mut w = t.session().await?;
    let batch = fill(
        t,
        "MAIL FROM:<{from}>\r\nRCPT TO:<{member}>\r\nRCPT TO:<A123456781@smarthealth.{domain}>\r\n\
         RCPT TO:<{kvnr}@elsewhere.test>\r\nRSET\r\nNOOP\r\n",
    )
    .replace("{domain}", &t.domain)
    .replace("{kvnr}", &t.member.kvnr);
    w.send(batch.as_bytes()).await?;
    let want = [250, 250, 553, 550, 250, 250];
    let mut got = Vec::new();
    for _ in want {
        got.push(w.reply().await?);
    }
    if got.iter().map(|r| r.code).eq(want) {
        Ok(())
    } else {
        Err(format!(
            "MAIL, RCPT (member), RCPT (bad KVNR), RCPT (foreign domain), RSET, NOOP in one write: expected {want:?}, got {}",
            list(&got)
        ))
    }
}

/// Runs `commands` (templates); all but the last must get 250, the last 503.
async fn out_of_order(t: &Target, commands: &[&str]) -> Result<(), String> {
    let mut w = t.session().await?;
    let Some((last, before)) = commands.split_last() else {
        return Err("no command to send".to_owned());
    };
    for c in before {
        w.command(&fill(t, c)).await?.expect_code(250, c)?;
    }
    w.command(&fill(t, last)).await?.expect_code(503, last)
}

async fn data_without_valid_rcpt(t: &Target) -> Result<(), String> {
    let mut w = t.transaction().await?;
    w.command(&format!("RCPT TO:<A123456781@smarthealth.{}>", t.domain))
        .await?
        .expect_code(553, "RCPT TO with a wrong check digit")?;
    let reply = w.command("DATA").await?;
    if reply.code == 554 || reply.code == 503 {
        Ok(())
    } else {
        Err(format!(
            "DATA after every RCPT was refused: expected 554 or 503, got {reply}"
        ))
    }
}

/// MAIL, RCPT and DATA in one write, then the message: 250, 250, 354 and a final
/// reply.
async fn pipelined_transaction(t: &Target) -> Result<(), String> {
    let mut w = t.session().await?;
    w.send(fill(t, "MAIL FROM:<{from}>\r\nRCPT TO:<{member}>\r\nDATA\r\n").as_bytes())
        .await?;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(w.reply().await?);
    }
    if !got.iter().map(|r| r.code).eq([250, 250, 354]) {
        return Err(format!(
            "MAIL, RCPT, DATA in one write: expected [250, 250, 354], got {}",
            list(&got)
        ));
    }
    w.send(
        fill(
            t,
            "From: <{from}>\r\nSubject: pipelined\r\n\r\nbody\r\n.\r\n",
        )
        .as_bytes(),
    )
    .await?;
    let end = w.reply().await?;
    if end.code == 250 || end.code >= 500 {
        Ok(())
    } else {
        Err(format!(
            "the end of the pipelined message: expected 250 or 5xx, got {end}"
        ))
    }
}

/// 1000 pipelined RCPTs of the test member: the first 100 must be taken, and a
/// `452` must come before the thousandth.
async fn recipient_limit(t: &Target) -> Result<(), String> {
    const SENT: usize = 1000;
    let mut w = t.transaction().await?;
    let rcpt = fill(t, "RCPT TO:<{member}>\r\n");
    w.send(rcpt.repeat(SENT).as_bytes()).await?;
    let mut codes = Vec::with_capacity(SENT);
    for _ in 0..SENT {
        codes.push(w.reply().await?.code);
    }
    let taken = codes.iter().take_while(|&&c| c == 250).count();
    if taken < 100 {
        return Err(format!(
            "only {taken} recipients were taken before a refusal ({}); RFC 5321 asks for at least 100",
            codes[taken]
        ));
    }
    if codes.contains(&452) {
        Ok(())
    } else {
        Err(format!(
            "{SENT} recipients in one transaction: expected 452 (too many recipients) at the limit, got codes {:?}",
            {
                let mut seen = codes.clone();
                seen.dedup();
                seen
            }
        ))
    }
}

/// Up to 100 unknown commands, one at a time (so nothing is unread when the server
/// closes): the server must say 421 and close before the end.
async fn error_limit(t: &Target) -> Result<(), String> {
    const SENT: usize = 100;
    let mut w = t.session().await?;
    for n in 1..=SENT {
        match w.command("FROB").await {
            Ok(reply) if reply.code == 421 => {
                return match w.command("NOOP").await {
                    Err(_) => Ok(()),
                    Ok(after) => Err(format!("after 421 the session went on: NOOP got {after}")),
                };
            }
            Ok(reply) if reply.code >= 500 => {}
            Ok(reply) => return Err(format!("unknown command {n}: expected 500, got {reply}")),
            Err(e) => return Err(format!("unknown command {n}, before any 421: {e}")),
        }
    }
    Err(format!(
        "{SENT} unknown commands in one session: expected 421 and a close, got {SENT} refusals"
    ))
}

async fn enhanced_codes(t: &Target) -> Result<(), String> {
    let mut w = t.session().await?;
    for c in [
        "NOOP",
        "MAIL FROM:<{from}>",
        "RCPT TO:<{member}>",
        "RCPT TO:<A123456781@smarthealth.kvgate.invalid>",
        "RSET",
        "VRFY {member}",
        "FROB",
    ] {
        let c = fill(t, c);
        let reply = w.command(&c).await?;
        if reply.enhanced().is_none() {
            return Err(format!(
                "{c}: the reply carries no enhanced status code: {reply}"
            ));
        }
    }
    Ok(())
}

/// Valid DSN parameters on MAIL and RCPT are taken (so the refusals above are about
/// the bad values, not about parameters as such).
async fn dsn_accepted(t: &Target) -> Result<(), String> {
    let mut w = t.session().await?;
    let ehlo = w.command("EHLO conformance.test").await?;
    if advertised(&ehlo, "DSN").is_none() {
        return Err("expected DSN (RFC 3461) to be advertised; EHLO does not".to_owned());
    }
    let mail = fill(t, "MAIL FROM:<{from}> RET=HDRS ENVID=cf+2B1");
    w.command(&mail).await?.expect_code(250, &mail)?;
    let rcpt = fill(
        t,
        "RCPT TO:<{member}> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;{member}",
    );
    w.command(&rcpt).await?.expect_code(250, &rcpt)
}

/// MAIL with `mail_params` and RCPT with `rcpt_params`: the one with parameters must
/// be refused with 501 or 555.
async fn dsn_refused(t: &Target, mail_params: &str, rcpt_params: &str) -> Result<(), String> {
    let mut w = t.session().await?;
    let ehlo = w.command("EHLO conformance.test").await?;
    if advertised(&ehlo, "DSN").is_none() {
        return Err("expected DSN (RFC 3461) to be advertised; EHLO does not".to_owned());
    }
    let mail = format!("MAIL FROM:<{}> {mail_params}", t.practice.from);
    let reply = w.command(mail.trim_end()).await?;
    let (command, reply) = if mail_params.is_empty() {
        reply.expect_code(250, "MAIL FROM")?;
        let rcpt = format!("RCPT TO:<{}> {rcpt_params}", t.smarthealth(&t.member.kvnr));
        let reply = w.command(&rcpt).await?;
        (rcpt, reply)
    } else {
        (mail, reply)
    };
    if reply.code == 501 || reply.code == 555 {
        Ok(())
    } else {
        Err(format!("{command}: expected 501 or 555, got {reply}"))
    }
}

/// BDAT in the order `order`; skipped where CHUNKING is not offered.
async fn bdat_sequence(t: &Target, order: BdatOrder) -> super::Outcome {
    let run = async {
        let mut w = t.session().await?;
        let ehlo = w.command("EHLO conformance.test").await?;
        if advertised(&ehlo, "CHUNKING").is_none() {
            return Ok(Some(
                "CHUNKING is not offered by this deployment".to_owned(),
            ));
        }
        if let BdatOrder::BeforeMail = order {
            w.send(b"BDAT 5 LAST\r\nhello").await?;
            w.reply().await?.expect_code(503, "BDAT before MAIL")?;
            return Ok(None);
        }
        w.command(&fill(t, "MAIL FROM:<{from}>"))
            .await?
            .expect_code(250, "MAIL FROM")?;
        if let BdatOrder::BeforeRcpt = order {
            w.send(b"BDAT 5 LAST\r\nhello").await?;
            w.reply().await?.expect_code(503, "BDAT before RCPT")?;
            return Ok(None);
        }
        w.command(&fill(t, "RCPT TO:<{member}>"))
            .await?
            .expect_code(250, "RCPT TO")?;
        if let BdatOrder::DataAfter = order {
            w.send(b"BDAT 7\r\nFrom: x").await?;
            w.reply().await?.expect_code(250, "BDAT 7")?;
            w.command("DATA")
                .await?
                .expect_code(503, "DATA after BDAT")?;
            return Ok(None);
        }
        let (_, message) = delivery::correct_letter(t)?;
        let mut chunk = format!("BDAT {}\r\n", message.len()).into_bytes();
        chunk.extend_from_slice(&message);
        w.send(&chunk).await?;
        w.reply()
            .await?
            .expect_code(250, "BDAT with the whole letter")?;
        let reply = w.command("BDAT 0 LAST").await?;
        let id = match delivery::tracking_id(&reply) {
            Some(id) if reply.code == 250 => id,
            _ => {
                return Err(format!(
                    "BDAT 0 LAST: expected 250 with a tracking ID, got {reply}"
                ));
            }
        };
        delivery::await_delivery(t, &id).await?;
        Ok::<_, String>(None)
    };
    run.await.into()
}
