//! Parsing of SMTP command lines (RFC 5321 §4.1).

use super::address::{mailbox, split_path};
use super::params::{MailParams, RcptParams};
use super::reply::Reply;

/// The command verbs the server knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verb {
    Ehlo,
    Helo,
    Mail,
    Rcpt,
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
    Bdat,
    Unknown,
}

/// Splits a command line (without its line ending) into the verb and its
/// argument text (without the separating space; trailing blanks removed).
pub(super) fn split(line: &str) -> (Verb, &str) {
    let line = line.trim_end_matches([' ', '\t']);
    let (word, args) = line.split_once(' ').unwrap_or((line, ""));
    let verb = match word.to_ascii_uppercase().as_str() {
        "EHLO" => Verb::Ehlo,
        "HELO" => Verb::Helo,
        "MAIL" => Verb::Mail,
        "RCPT" => Verb::Rcpt,
        "DATA" => Verb::Data,
        "RSET" => Verb::Rset,
        "NOOP" => Verb::Noop,
        "QUIT" => Verb::Quit,
        "VRFY" => Verb::Vrfy,
        "EXPN" => Verb::Expn,
        "HELP" => Verb::Help,
        "STARTTLS" => Verb::StartTls,
        "BDAT" => Verb::Bdat,
        _ => Verb::Unknown,
    };
    (verb, args)
}

/// A parsed `MAIL FROM` command.
#[derive(Debug)]
pub(super) struct Mail<'a> {
    /// The sender mailbox; empty for the null reverse path `<>`.
    pub(super) reverse_path: &'a str,
    pub(super) params: MailParams,
}

/// A parsed `RCPT TO` command.
#[derive(Debug)]
pub(super) struct Rcpt<'a> {
    /// The recipient mailbox (or `Postmaster`).
    pub(super) forward_path: &'a str,
    pub(super) params: RcptParams,
}

/// A parsed `BDAT` command (RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Bdat {
    /// The chunk size in octets.
    pub(super) size: u64,
    /// Whether this is the last chunk (`LAST`).
    pub(super) last: bool,
}

/// Parses the arguments of `BDAT`: `chunk-size [LAST]`.
pub(super) fn parse_bdat(args: &str) -> Result<Bdat, Reply> {
    let syntax = || Reply::new(501, (5, 5, 4), "Syntax: BDAT chunk-size [LAST]");
    let mut words = args.split(' ');
    let size = words
        .next()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(syntax)?;
    let last = match (words.next(), words.next()) {
        (None, _) => false,
        (Some(word), None) if word.eq_ignore_ascii_case("LAST") => true,
        _ => return Err(syntax()),
    };
    Ok(Bdat { size, last })
}

/// Parses the arguments of `MAIL`: `FROM:<reverse-path> [params]`.
pub(super) fn parse_mail(args: &str) -> Result<Mail<'_>, Reply> {
    let path = strip_keyword(args, "FROM:")
        .ok_or_else(|| Reply::new(501, (5, 5, 2), "Syntax: MAIL FROM:<address>"))?;
    let bad_sender = || Reply::new(501, (5, 1, 7), "Bad sender address syntax");
    let (inner, rest) = split_path(path).ok_or_else(bad_sender)?;
    let reverse_path = if inner.is_empty() {
        inner
    } else {
        mailbox(inner).ok_or_else(bad_sender)?
    };
    let params = MailParams::parse(rest)?;
    if !params.smtputf8 && !reverse_path.is_ascii() {
        return Err(utf8_required());
    }
    Ok(Mail {
        reverse_path,
        params,
    })
}

/// Parses the arguments of `RCPT`: `TO:<forward-path> [params]`; `smtputf8`
/// tells whether the transaction's MAIL allowed UTF-8 addresses.
pub(super) fn parse_rcpt(args: &str, smtputf8: bool) -> Result<Rcpt<'_>, Reply> {
    let path = strip_keyword(args, "TO:")
        .ok_or_else(|| Reply::new(501, (5, 5, 2), "Syntax: RCPT TO:<address>"))?;
    let bad_recipient = || Reply::new(501, (5, 1, 3), "Bad recipient address syntax");
    let (inner, rest) = split_path(path).ok_or_else(bad_recipient)?;
    let forward_path = if inner.eq_ignore_ascii_case("postmaster") {
        inner
    } else {
        mailbox(inner).ok_or_else(bad_recipient)?
    };
    let params = RcptParams::parse(rest)?;
    if !smtputf8 && !forward_path.is_ascii() {
        return Err(utf8_required());
    }
    Ok(Rcpt {
        forward_path,
        params,
    })
}

/// Strips a case-insensitive keyword such as `FROM:` and any blanks after it
/// (tolerated although RFC 5321 has none).
fn strip_keyword<'a>(args: &'a str, keyword: &str) -> Option<&'a str> {
    let head = args.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| args[keyword.len()..].trim_start_matches(' '))
}

fn utf8_required() -> Reply {
    Reply::new(
        553,
        (5, 6, 7),
        "UTF-8 address requires the SMTPUTF8 parameter",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::params::Notify;

    #[test]
    fn parses_bdat() {
        assert_eq!(
            parse_bdat("0 LAST"),
            Ok(Bdat {
                size: 0,
                last: true
            })
        );
        assert_eq!(
            parse_bdat("1234 last"),
            Ok(Bdat {
                size: 1234,
                last: true
            })
        );
        assert_eq!(
            parse_bdat("17"),
            Ok(Bdat {
                size: 17,
                last: false
            })
        );
        for bad in [
            "",
            "LAST",
            "-1",
            "+5",
            "1 LAST x",
            "1 FIRST",
            "1  LAST",
            "99999999999999999999",
        ] {
            assert_eq!(
                parse_bdat(bad).unwrap_err().to_string(),
                "501 5.5.4 Syntax: BDAT chunk-size [LAST]\r\n",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn splits_verbs() {
        assert_eq!(split("ehlo client.de"), (Verb::Ehlo, "client.de"));
        assert_eq!(split("QUIT  "), (Verb::Quit, ""));
        assert_eq!(split("MAIL FROM:<a@b.de>"), (Verb::Mail, "FROM:<a@b.de>"));
        assert_eq!(split("bdat 10 LAST"), (Verb::Bdat, "10 LAST"));
        assert_eq!(split("XBDAT 10"), (Verb::Unknown, "10"));
    }

    #[test]
    fn parses_mail() {
        let m = parse_mail("FROM:<a@b.de> SIZE=10").unwrap();
        assert_eq!(m.reverse_path, "a@b.de");
        assert_eq!(m.params.size, Some(10));
        assert_eq!(parse_mail("from: <>").unwrap().reverse_path, "");
        let err = |s| parse_mail(s).unwrap_err().to_string();
        assert_eq!(
            err("FROM:a@b.de"),
            "501 5.1.7 Bad sender address syntax\r\n"
        );
        assert_eq!(err("FROM:<a@>"), "501 5.1.7 Bad sender address syntax\r\n");
        assert_eq!(
            err("TO:<a@b.de>"),
            "501 5.5.2 Syntax: MAIL FROM:<address>\r\n"
        );
        assert_eq!(
            err("FROM:<ä@b.de>"),
            "553 5.6.7 UTF-8 address requires the SMTPUTF8 parameter\r\n"
        );
        assert_eq!(
            parse_mail("FROM:<ä@b.de> SMTPUTF8").unwrap().reverse_path,
            "ä@b.de"
        );
    }

    #[test]
    fn parses_rcpt() {
        let r = parse_rcpt("TO:<x@y.de> NOTIFY=NEVER", false).unwrap();
        assert_eq!(r.forward_path, "x@y.de");
        assert_eq!(r.params.notify, Some(Notify::Never));
        assert_eq!(
            parse_rcpt("TO:<Postmaster>", false).unwrap().forward_path,
            "Postmaster"
        );
        let err = |s| parse_rcpt(s, false).unwrap_err().to_string();
        assert_eq!(err("TO:<>"), "501 5.1.3 Bad recipient address syntax\r\n");
        assert_eq!(
            err("TO:<x y@z.de>"),
            "501 5.1.3 Bad recipient address syntax\r\n"
        );
        assert_eq!(
            err("FROM:<x@y.de>"),
            "501 5.5.2 Syntax: RCPT TO:<address>\r\n"
        );
    }
}
