//! ESMTP parameters of MAIL and RCPT (RFC 1870 SIZE, RFC 6152 BODY, RFC 3461 DSN,
//! RFC 6531 SMTPUTF8).

use super::reply::Reply;

/// The longest ENVID (RFC 3461 §4.4), after xtext decoding.
const MAX_ENVID: usize = 100;
/// The longest ORCPT value (RFC 3461 §4.2), after xtext decoding.
const MAX_ORCPT: usize = 500;

/// The parameters of a `MAIL FROM` command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=`: the size the client declares, in octets.
    pub size: Option<u64>,
    /// `BODY=`: `7BIT` or `8BITMIME` (upper case).
    pub body: Option<String>,
    /// `RET=`: `FULL` or `HDRS` (upper case).
    pub ret: Option<String>,
    /// `ENVID=`: the envelope identifier, xtext-decoded.
    pub envid: Option<String>,
    /// `SMTPUTF8`: the envelope or message may contain UTF-8.
    pub smtputf8: bool,
}

/// The parameters of a `RCPT TO` command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptParams {
    /// `NOTIFY=`: `NEVER` or a comma list of `SUCCESS`, `FAILURE`, `DELAY` (upper case).
    pub notify: Option<String>,
    /// `ORCPT=`: `addr-type;original-recipient`, the address xtext-decoded.
    pub orcpt: Option<String>,
}

impl MailParams {
    /// Parses the space-separated parameters after the reverse path.
    pub(super) fn parse(params: &str) -> Result<Self, Reply> {
        let mut parsed = Self::default();
        for (key, value) in split(params) {
            let key = key.to_ascii_uppercase();
            match (key.as_str(), value) {
                ("SIZE", Some(v)) => {
                    let size = v
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                        .then(|| v.parse::<u64>().ok())
                        .flatten()
                        .ok_or_else(|| invalid("SIZE"))?;
                    set(&mut parsed.size, size, "SIZE")?;
                }
                ("BODY", Some(v)) => set(
                    &mut parsed.body,
                    one_of(v, &["7BIT", "8BITMIME"], "BODY")?,
                    "BODY",
                )?,
                ("RET", Some(v)) => {
                    set(&mut parsed.ret, one_of(v, &["FULL", "HDRS"], "RET")?, "RET")?
                }
                ("ENVID", Some(v)) => {
                    let envid = xtext(v)
                        .filter(|e| e.len() <= MAX_ENVID)
                        .ok_or_else(|| invalid("ENVID"))?;
                    set(&mut parsed.envid, envid, "ENVID")?;
                }
                ("SMTPUTF8", None) if !parsed.smtputf8 => parsed.smtputf8 = true,
                ("SMTPUTF8", None) => return Err(duplicate("SMTPUTF8")),
                ("SIZE" | "BODY" | "RET" | "ENVID" | "SMTPUTF8", _) => return Err(invalid(&key)),
                _ => return Err(unsupported()),
            }
        }
        Ok(parsed)
    }
}

impl RcptParams {
    /// Parses the space-separated parameters after the forward path.
    pub(super) fn parse(params: &str) -> Result<Self, Reply> {
        let mut parsed = Self::default();
        for (key, value) in split(params) {
            let key = key.to_ascii_uppercase();
            match (key.as_str(), value) {
                ("NOTIFY", Some(v)) => set(&mut parsed.notify, notify(v)?, "NOTIFY")?,
                ("ORCPT", Some(v)) => set(&mut parsed.orcpt, orcpt(v)?, "ORCPT")?,
                ("NOTIFY" | "ORCPT", None) => return Err(invalid(&key)),
                _ => return Err(unsupported()),
            }
        }
        Ok(parsed)
    }
}

/// `KEY[=VALUE]` pairs separated by spaces.
fn split(params: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    params
        .split(' ')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (p, None),
        })
}

fn set<T>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), Reply> {
    if slot.is_some() {
        return Err(duplicate(name));
    }
    *slot = Some(value);
    Ok(())
}

fn one_of(value: &str, allowed: &[&str], name: &str) -> Result<String, Reply> {
    let upper = value.to_ascii_uppercase();
    if allowed.contains(&upper.as_str()) {
        Ok(upper)
    } else {
        Err(invalid(name))
    }
}

fn notify(value: &str) -> Result<String, Reply> {
    let upper = value.to_ascii_uppercase();
    let items: Vec<&str> = upper.split(',').collect();
    let ok = if items.contains(&"NEVER") {
        items.len() == 1
    } else {
        items.iter().enumerate().all(|(i, item)| {
            ["SUCCESS", "FAILURE", "DELAY"].contains(item) && !items[..i].contains(item)
        })
    };
    if ok {
        Ok(upper)
    } else {
        Err(invalid("NOTIFY"))
    }
}

fn orcpt(value: &str) -> Result<String, Reply> {
    let (addr_type, addr) = value.split_once(';').ok_or_else(|| invalid("ORCPT"))?;
    let type_ok = !addr_type.is_empty()
        && addr_type
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let addr = xtext(addr)
        .filter(|a| type_ok && !a.is_empty() && a.len() <= MAX_ORCPT)
        .ok_or_else(|| invalid("ORCPT"))?;
    Ok(format!("{addr_type};{addr}"))
}

/// Decodes xtext (RFC 3461 §4): printable ASCII except `+` and `=`, and `+XX`
/// hexadecimal escapes. `None` if malformed or not UTF-8.
fn xtext(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                let hi = hex(*bytes.get(i + 1)?)?;
                let lo = hex(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b @ b'!'..=b'~' if b != b'=' => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn invalid(name: &str) -> Reply {
    Reply::new(501, (5, 5, 4), format!("Invalid {name} parameter"))
}

fn duplicate(name: &str) -> Reply {
    Reply::new(501, (5, 5, 4), format!("Duplicate {name} parameter"))
}

fn unsupported() -> Reply {
    Reply::new(555, (5, 5, 4), "Unsupported parameter")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mail_params() {
        let p = MailParams::parse(" SIZE=1234 body=8bitmime RET=hdrs ENVID=a+2Bb+3Dc SMTPUTF8")
            .unwrap();
        assert_eq!(
            p,
            MailParams {
                size: Some(1234),
                body: Some("8BITMIME".into()),
                ret: Some("HDRS".into()),
                envid: Some("a+b=c".into()),
                smtputf8: true,
            }
        );
        assert_eq!(MailParams::parse("").unwrap(), MailParams::default());
    }

    #[test]
    fn refuses_bad_mail_params() {
        let code = |s: &str| MailParams::parse(s).unwrap_err().to_string();
        assert_eq!(code(" FOO=1"), "555 5.5.4 Unsupported parameter\r\n");
        assert_eq!(code(" AUTH=<>"), "555 5.5.4 Unsupported parameter\r\n");
        assert_eq!(code(" SIZE=-1"), "501 5.5.4 Invalid SIZE parameter\r\n");
        assert_eq!(code(" SIZE"), "501 5.5.4 Invalid SIZE parameter\r\n");
        assert_eq!(
            code(" SIZE=1 SIZE=2"),
            "501 5.5.4 Duplicate SIZE parameter\r\n"
        );
        assert_eq!(
            code(" BODY=BINARYMIME"),
            "501 5.5.4 Invalid BODY parameter\r\n"
        );
        assert_eq!(code(" ENVID=a=b"), "501 5.5.4 Invalid ENVID parameter\r\n");
        assert_eq!(code(" ENVID=a+4"), "501 5.5.4 Invalid ENVID parameter\r\n");
        assert_eq!(
            code(" SMTPUTF8=yes"),
            "501 5.5.4 Invalid SMTPUTF8 parameter\r\n"
        );
    }

    #[test]
    fn parses_rcpt_params() {
        let p = RcptParams::parse(" NOTIFY=success,failure ORCPT=rfc822;a+40b.de").unwrap();
        assert_eq!(p.notify.as_deref(), Some("SUCCESS,FAILURE"));
        assert_eq!(p.orcpt.as_deref(), Some("rfc822;a@b.de"));
        let code = |s: &str| RcptParams::parse(s).unwrap_err().to_string();
        assert_eq!(
            code(" NOTIFY=NEVER,DELAY"),
            "501 5.5.4 Invalid NOTIFY parameter\r\n"
        );
        assert_eq!(
            code(" NOTIFY=DELAY,DELAY"),
            "501 5.5.4 Invalid NOTIFY parameter\r\n"
        );
        assert_eq!(
            code(" ORCPT=a@b.de"),
            "501 5.5.4 Invalid ORCPT parameter\r\n"
        );
        assert_eq!(code(" X=1"), "555 5.5.4 Unsupported parameter\r\n");
    }
}
