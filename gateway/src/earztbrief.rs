//! The KBV eArztbrief profile of a KIM letter (`X-KIM-Dienstkennung: Arztbrief;…`):
//! exactly one signed PDF/A part (`Content-Description: eAB-PDF-signed`), exactly
//! one CDA document (`eAB-XML`), at most 99 attachments `eAB-Anhang-01` … `-99`,
//! and no medical text in the body.
//!
//! "No medical text" cannot be judged by a machine: text parts outside the eAB
//! parts may carry at most [`MAX_BODY_TEXT`] characters (a neutral note).

use mail_parser::{MessageParser, MimeHeaders};

use crate::letter::LetterHeaders;
use crate::wiped::WipedMessage;

/// The most characters of text outside the eAB parts.
pub const MAX_BODY_TEXT: usize = 200;

/// Whether the letter is an eArztbrief, and if so what breaks the profile:
/// `None` for other letters, `Some(Ok(()))` for a conforming eArztbrief,
/// `Some(Err(findings))` with a sentence otherwise.
pub fn check(headers: &LetterHeaders<'_>) -> Option<Result<(), String>> {
    let service = headers.kim_header("X-KIM-Dienstkennung")?;
    if !service
        .get(..10)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("Arztbrief;"))
    {
        return None;
    }
    let parsed = MessageParser::default().parse(headers.message());
    let Some(message) = parsed.map(WipedMessage::from) else {
        return Some(Err("the eArztbrief cannot be read as MIME".to_owned()));
    };
    let (mut pdfs, mut xmls, mut attachments, mut text) = (0usize, 0usize, 0usize, 0usize);
    let mut findings = Vec::new();
    for part in message.parts.iter().filter(|p| !p.is_multipart()) {
        let media = part
            .content_type()
            .map(|ct| {
                format!(
                    "{}/{}",
                    ct.ctype().to_ascii_lowercase(),
                    ct.subtype().unwrap_or_default().to_ascii_lowercase()
                )
            })
            .unwrap_or_else(|| "text/plain".to_owned());
        match part.content_description().map(str::trim) {
            Some("eAB-PDF-signed") => {
                pdfs += 1;
                if media != "application/pdf" {
                    findings.push(format!(
                        "the eAB-PDF-signed part is {media}, not application/pdf"
                    ));
                }
            }
            Some("eAB-XML") => {
                xmls += 1;
                if !(media.ends_with("/xml") || media.ends_with("+xml")) {
                    findings.push(format!("the eAB-XML part is {media}, not XML"));
                }
            }
            Some(description) if description.starts_with("eAB-Anhang-") => {
                attachments += 1;
                let number = &description["eAB-Anhang-".len()..];
                let valid = number.len() == 2
                    && number.bytes().all(|b| b.is_ascii_digit())
                    && number != "00";
                if !valid {
                    // Not quoted: the description is the letter's own text, which
                    // tracking events and DSNs must not carry.
                    findings.push("an eAB-Anhang part is not numbered 01 to 99".to_owned());
                }
            }
            _ if part.is_text() => {
                text += part.text_contents().map_or(0, |t| t.trim().chars().count());
            }
            _ => findings.push(format!("a {media} part is none of the eAB parts")),
        }
    }
    if pdfs != 1 {
        findings.push(format!("{pdfs} eAB-PDF-signed parts instead of one"));
    }
    if xmls != 1 {
        findings.push(format!("{xmls} eAB-XML parts instead of one"));
    }
    if attachments > 99 {
        findings.push(format!(
            "{attachments} eAB-Anhang attachments, more than 99"
        ));
    }
    if text > MAX_BODY_TEXT {
        findings.push(format!(
            "{text} characters of text outside the eAB parts (at most {MAX_BODY_TEXT}: no medical text in the body)"
        ));
    }
    Some(if findings.is_empty() {
        Ok(())
    } else {
        Err(findings.join("; "))
    })
}
