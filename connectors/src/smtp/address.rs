//! Syntax of SMTP paths and mailboxes (RFC 5321 §4.1.2, RFC 6531 for UTF-8).

use std::net::{Ipv4Addr, Ipv6Addr};

/// The longest path RFC 5321 §4.5.3.1.3 allows, brackets included.
const MAX_PATH: usize = 256;
/// The longest local part (RFC 5321 §4.5.3.1.1).
const MAX_LOCAL_PART: usize = 64;
/// The longest domain (RFC 5321 §4.5.3.1.2).
const MAX_DOMAIN: usize = 255;
/// The longest domain label (RFC 1035).
const MAX_LABEL: usize = 63;

/// Splits `<path> rest` into the text between the angle brackets and the rest
/// (empty or starting with a space). `None` if it is not a bracketed path.
pub(super) fn split_path(input: &str) -> Option<(&str, &str)> {
    let inner = input.strip_prefix('<')?;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in inner.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => {
                let rest = &inner[i + 1..];
                if !(rest.is_empty() || rest.starts_with(' ')) || i + 2 > MAX_PATH {
                    return None;
                }
                return Some((&inner[..i], rest));
            }
            _ => {}
        }
    }
    None
}

/// The mailbox of a path's inner text: a leading source route
/// (`@a,@b:`, obsolete but allowed) is checked and removed. `None` if the
/// syntax is wrong.
pub(super) fn mailbox(path: &str) -> Option<&str> {
    let mailbox = match path.strip_prefix('@') {
        Some(routed) => {
            let (route, mailbox) = routed.split_once(':')?;
            let route_ok = route.split(",@").all(is_domain);
            if !route_ok {
                return None;
            }
            mailbox
        }
        None => path,
    };
    is_mailbox(mailbox).then_some(mailbox)
}

fn is_mailbox(s: &str) -> bool {
    let Some(at) = s.rfind('@') else {
        return false;
    };
    is_local_part(&s[..at]) && is_domain(&s[at + 1..])
}

fn is_local_part(s: &str) -> bool {
    if s.is_empty() || s.len() > MAX_LOCAL_PART {
        return false;
    }
    match s.strip_prefix('"').and_then(|q| q.strip_suffix('"')) {
        Some(quoted) => is_quoted_content(quoted),
        None => s
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext)),
    }
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

fn is_quoted_content(s: &str) -> bool {
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        let ok = match c {
            '\\' => chars.next().is_some_and(|e| (' '..='~').contains(&e)),
            '"' => false,
            c => (' '..='~').contains(&c) || !c.is_ascii(),
        };
        if !ok {
            return false;
        }
    }
    true
}

fn is_domain(s: &str) -> bool {
    if let Some(literal) = s.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
        return match literal.strip_prefix("IPv6:") {
            Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
            None => literal.parse::<Ipv4Addr>().is_ok(),
        };
    }
    !s.is_empty() && s.len() <= MAX_DOMAIN && s.split('.').all(is_label)
}

fn is_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= MAX_LABEL
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_paths() {
        assert_eq!(split_path("<a@b.de>"), Some(("a@b.de", "")));
        assert_eq!(split_path("<> SIZE=1"), Some(("", " SIZE=1")));
        assert_eq!(split_path("<\"a>b\"@c.de> X"), Some(("\"a>b\"@c.de", " X")));
        assert_eq!(split_path("a@b.de"), None);
        assert_eq!(split_path("<a@b.de"), None);
        assert_eq!(split_path("<a@b.de>x"), None);
    }

    #[test]
    fn checks_mailboxes() {
        for ok in [
            "a@b.de",
            "first.last+tag@sub.example.org",
            "\"a b\"@x.de",
            "user@[127.0.0.1]",
            "user@[IPv6:::1]",
            "müller@bücher.de",
        ] {
            assert_eq!(mailbox(ok), Some(ok), "{ok}");
        }
        assert_eq!(mailbox("@r1.de,@r2.de:a@b.de"), Some("a@b.de"));
        for bad in [
            "",
            "a",
            "a@",
            "@b.de",
            "a..b@c.de",
            ".a@c.de",
            "a b@c.de",
            "a@-b.de",
            "a@b..de",
            "a@[300.1.1.1]",
            "a@b.de\u{0}",
            "\"a\"b\"@c.de",
        ] {
            assert_eq!(mailbox(bad), None, "{bad:?}");
        }
    }
}
