//! ESMTP parameters of MAIL and RCPT (RFC 1870 SIZE, RFC 6152 BODY, RFC 3461 DSN,
//! RFC 6531 SMTPUTF8).
//!
//! DSN values arrive as xtext (RFC 3461 §4). They are decoded here, and a
//! decoded value that contains a control character (CR and LF above all) is
//! refused: these values end up in DSN header fields, where a line break
//! would let a client forge headers.

use super::reply::Reply;

/// The longest ENVID (RFC 3461 §4.4), after xtext decoding.
const MAX_ENVID: usize = 100;
/// The longest ORCPT value (RFC 3461 §4.2), after xtext decoding.
const MAX_ORCPT: usize = 500;

/// `BODY=` (RFC 6152): how the message body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `BODY=7BIT`.
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
}

/// `RET=` (RFC 3461 §4.3): how much of the message a failure DSN returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    /// `RET=FULL`: the whole message.
    Full,
    /// `RET=HDRS`: the header only.
    Headers,
}

/// `NOTIFY=` (RFC 3461 §4.1): when the sender wants a DSN for a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notify {
    /// `NOTIFY=NEVER`: no DSN at all.
    Never,
    /// A list of `SUCCESS`, `FAILURE` and `DELAY` (at least one is true).
    On {
        /// `SUCCESS`: on delivery.
        success: bool,
        /// `FAILURE`: on failure.
        failure: bool,
        /// `DELAY`: when delivery is delayed.
        delay: bool,
    },
}

/// `ORCPT=` (RFC 3461 §4.2): the recipient as the original sender wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalRecipient {
    /// The address type as given, e.g. `rfc822`.
    pub addr_type: String,
    /// The address, xtext-decoded; never contains a control character.
    pub address: String,
}

/// The parameters of a `MAIL FROM` command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=`: the size the client declares, in octets.
    pub size: Option<u64>,
    /// `BODY=`: the body encoding.
    pub body: Option<Body>,
    /// `RET=`: what a failure DSN returns.
    pub ret: Option<Ret>,
    /// `ENVID=`: the envelope identifier, xtext-decoded; printable ASCII only.
    pub envid: Option<String>,
    /// `SMTPUTF8`: the envelope or message may contain UTF-8.
    pub smtputf8: bool,
}

/// The parameters of a `RCPT TO` command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptParams {
    /// `NOTIFY=`: when to send a DSN for this recipient.
    pub notify: Option<Notify>,
    /// `ORCPT=`: the original recipient.
    pub orcpt: Option<OriginalRecipient>,
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
                ("BODY", Some(v)) => {
                    let body = keyword(
                        v,
                        &[("7BIT", Body::SevenBit), ("8BITMIME", Body::EightBitMime)],
                    );
                    set(
                        &mut parsed.body,
                        body.ok_or_else(|| invalid("BODY"))?,
                        "BODY",
                    )?;
                }
                ("RET", Some(v)) => {
                    let ret = keyword(v, &[("FULL", Ret::Full), ("HDRS", Ret::Headers)]);
                    set(&mut parsed.ret, ret.ok_or_else(|| invalid("RET"))?, "RET")?;
                }
                ("ENVID", Some(v)) => {
                    let envid = xtext(v)
                        .filter(|e| e.len() <= MAX_ENVID && e.is_ascii())
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

/// The value of a case-insensitive keyword out of `choices`.
fn keyword<T: Copy>(value: &str, choices: &[(&str, T)]) -> Option<T> {
    choices
        .iter()
        .find(|(name, _)| value.eq_ignore_ascii_case(name))
        .map(|&(_, v)| v)
}

fn notify(value: &str) -> Result<Notify, Reply> {
    if value.eq_ignore_ascii_case("NEVER") {
        return Ok(Notify::Never);
    }
    let (mut success, mut failure, mut delay) = (false, false, false);
    for item in value.split(',') {
        let flag = match item.to_ascii_uppercase().as_str() {
            "SUCCESS" => &mut success,
            "FAILURE" => &mut failure,
            "DELAY" => &mut delay,
            // NEVER in a list, an empty item or an unknown word.
            _ => return Err(invalid("NOTIFY")),
        };
        if *flag {
            return Err(invalid("NOTIFY"));
        }
        *flag = true;
    }
    Ok(Notify::On {
        success,
        failure,
        delay,
    })
}

fn orcpt(value: &str) -> Result<OriginalRecipient, Reply> {
    let (addr_type, addr) = value.split_once(';').ok_or_else(|| invalid("ORCPT"))?;
    let type_ok = !addr_type.is_empty()
        && addr_type
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let address = xtext(addr)
        .filter(|a| type_ok && !a.is_empty() && a.len() <= MAX_ORCPT)
        .ok_or_else(|| invalid("ORCPT"))?;
    Ok(OriginalRecipient {
        addr_type: addr_type.to_owned(),
        address,
    })
}

/// Decodes xtext (RFC 3461 §4): printable ASCII except `+` and `=`, and `+XX`
/// upper-case hexadecimal escapes. `None` if malformed, not UTF-8, or if the
/// decoded text contains a control character (e.g. an encoded CR or LF).
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
    String::from_utf8(out)
        .ok()
        .filter(|s| !s.chars().any(char::is_control))
}

/// One upper-case hexadecimal digit (RFC 3461 §4: `hexchar` is upper case).
fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
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
                body: Some(Body::EightBitMime),
                ret: Some(Ret::Headers),
                envid: Some("a+b=c".into()),
                smtputf8: true,
            }
        );
        assert_eq!(MailParams::parse("").unwrap(), MailParams::default());
        let p = MailParams::parse(" BODY=7bit RET=FULL").unwrap();
        assert_eq!((p.body, p.ret), (Some(Body::SevenBit), Some(Ret::Full)));
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
        assert_eq!(code(" RET=ALL"), "501 5.5.4 Invalid RET parameter\r\n");
        assert_eq!(
            code(" RET=FULL RET=HDRS"),
            "501 5.5.4 Duplicate RET parameter\r\n"
        );
        assert_eq!(code(" ENVID=a=b"), "501 5.5.4 Invalid ENVID parameter\r\n");
        assert_eq!(code(" ENVID=a+4"), "501 5.5.4 Invalid ENVID parameter\r\n");
        assert_eq!(
            code(" SMTPUTF8=yes"),
            "501 5.5.4 Invalid SMTPUTF8 parameter\r\n"
        );
    }

    #[test]
    fn refuses_hostile_xtext() {
        let code = |s: &str| MailParams::parse(s).unwrap_err().to_string();
        for hostile in [
            "x+0D+0ABcc:+20evil",
            "x+0A",
            "x+0D",
            "x+00",
            "x+7F",
            "x+C3+A4",
            "x+0d",
        ] {
            assert_eq!(
                code(&format!(" ENVID={hostile}")),
                "501 5.5.4 Invalid ENVID parameter\r\n",
                "{hostile}"
            );
        }
        let rcpt = |s: &str| RcptParams::parse(s).unwrap_err().to_string();
        assert_eq!(
            rcpt(" ORCPT=rfc822;a@b.de+0D+0ASubject:+20x"),
            "501 5.5.4 Invalid ORCPT parameter\r\n"
        );
        assert_eq!(
            rcpt(" ORCPT=rfc822;a+C2+85b@c.de"),
            "501 5.5.4 Invalid ORCPT parameter\r\n"
        );
    }

    #[test]
    fn parses_rcpt_params() {
        let p = RcptParams::parse(" NOTIFY=success,failure ORCPT=rfc822;a+40b.de").unwrap();
        assert_eq!(
            p.notify,
            Some(Notify::On {
                success: true,
                failure: true,
                delay: false
            })
        );
        assert_eq!(
            p.orcpt,
            Some(OriginalRecipient {
                addr_type: "rfc822".into(),
                address: "a@b.de".into()
            })
        );
        assert_eq!(
            RcptParams::parse(" NOTIFY=never").unwrap().notify,
            Some(Notify::Never)
        );
        let utf8 = RcptParams::parse(" ORCPT=utf-8;m+C3+BCller@b.de").unwrap();
        assert_eq!(utf8.orcpt.unwrap().address, "müller@b.de");
        let code = |s: &str| RcptParams::parse(s).unwrap_err().to_string();
        for bad in [
            " NOTIFY=NEVER,DELAY",
            " NOTIFY=DELAY,NEVER",
            " NOTIFY=DELAY,DELAY",
            " NOTIFY=",
            " NOTIFY=SUCCESS,",
            " NOTIFY=SOMETIMES",
        ] {
            assert_eq!(code(bad), "501 5.5.4 Invalid NOTIFY parameter\r\n", "{bad}");
        }
        assert_eq!(
            code(" NOTIFY=NEVER NOTIFY=NEVER"),
            "501 5.5.4 Duplicate NOTIFY parameter\r\n"
        );
        assert_eq!(
            code(" ORCPT=a@b.de"),
            "501 5.5.4 Invalid ORCPT parameter\r\n"
        );
        assert_eq!(
            code(" ORCPT=rfc822;"),
            "501 5.5.4 Invalid ORCPT parameter\r\n"
        );
        assert_eq!(code(" X=1"), "555 5.5.4 Unsupported parameter\r\n");
    }
}
