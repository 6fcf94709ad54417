//! SMTP replies (RFC 5321 §4.2) with enhanced status codes (RFC 2034, RFC 3463).

use std::fmt;

/// An enhanced mail system status code `class.subject.detail`, e.g. `5.1.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnhancedStatus(pub u8, pub u16, pub u16);

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One SMTP reply: a three-digit code, an enhanced status code (absent only on
/// the greeting, the HELO/EHLO answer and the 354 go-ahead) and a text that may
/// span several lines (separated by `\n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The reply code, e.g. 250.
    pub code: u16,
    /// The enhanced status code, e.g. 2.0.0.
    pub status: Option<EnhancedStatus>,
    /// The human-readable text; `\n` separates the lines of a multi-line reply.
    pub text: String,
}

impl Reply {
    /// A reply with an enhanced status code, e.g. `Reply::new(550, (5, 1, 1), "No such member")`.
    pub fn new(code: u16, status: (u8, u16, u16), text: impl Into<String>) -> Self {
        Self {
            code,
            status: Some(EnhancedStatus(status.0, status.1, status.2)),
            text: text.into(),
        }
    }

    /// A reply without an enhanced status code (greeting, HELO/EHLO, 354).
    pub(super) fn bare(code: u16, text: impl Into<String>) -> Self {
        Self {
            code,
            status: None,
            text: text.into(),
        }
    }
}

/// The wire form: every line is `code-[status ]text` except the last, which is
/// `code [status ]text`; each line ends in CRLF. CR characters in the text are
/// dropped so that a text can never forge extra reply lines.
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut lines = self.text.split('\n').peekable();
        while let Some(line) = lines.next() {
            let sep = if lines.peek().is_some() { '-' } else { ' ' };
            write!(f, "{}{sep}", self.code)?;
            let line = line.replace('\r', "");
            match (&self.status, line.is_empty()) {
                (Some(status), true) => write!(f, "{status}")?,
                (Some(status), false) => write!(f, "{status} {line}")?,
                (None, _) => f.write_str(&line)?,
            }
            f.write_str("\r\n")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line() {
        let r = Reply::new(550, (5, 1, 1), "No such member");
        assert_eq!(r.to_string(), "550 5.1.1 No such member\r\n");
    }

    #[test]
    fn multi_line_with_status() {
        let r = Reply::new(550, (5, 7, 1), "first\r\nsecond");
        assert_eq!(r.to_string(), "550-5.7.1 first\r\n550 5.7.1 second\r\n");
    }

    #[test]
    fn bare_multi_line() {
        let r = Reply::bare(250, "host\nSIZE 10\nDSN");
        assert_eq!(r.to_string(), "250-host\r\n250-SIZE 10\r\n250 DSN\r\n");
    }

    #[test]
    fn empty_text() {
        assert_eq!(Reply::new(250, (2, 0, 0), "").to_string(), "250 2.0.0\r\n");
    }
}
