//! The letter as the member receives it.
//!
//! Inside the encryption: the verified inner message, preceded by headers that record
//! the tracking ID, who signed it when, and how it was verified (certificate serial
//! and issuer, algorithms, revocation status). Outside: routing headers only (the subject
//! is the RFC 9788 placeholder `[...]`), since the outside is what is stored in clear
//! beside the ciphertext.

use std::borrow::Cow;

use kvgate_certs::SecretBytes;
use kvgate_certs::openpgp::StoredPgpMime;
use kvgate_certs::smime::Signer;
use kvgate_store::{Ciphertext, Timestamp, TrackingId};
use mail_parser::{Message, MessageParser, MimeHeaders};

use crate::wiped::WipedMessage;

/// Who signed a letter, as verified.
pub struct Provenance<'a> {
    /// The submission.
    pub tracking_id: &'a TrackingId,
    /// The signer certificate's subject.
    pub signer: &'a str,
    /// The signer certificate's SHA-256 fingerprint.
    pub fingerprint: &'a str,
    /// The signer certificate's serial number, hex.
    pub serial: &'a str,
    /// The signer certificate's issuer.
    pub issuer: &'a str,
    /// The signature and digest algorithms, e.g. `RSASSA-PSS with SHA256`.
    pub algorithms: &'a str,
    /// What revocation checking found for the signer's chain.
    pub revocation: &'a str,
    /// When the signature was verified.
    pub verified_at: Timestamp,
    /// The instant the signer's chain was validated for (the letter's receipt, unless
    /// `[smime] verify_at` says otherwise).
    pub chain_valid_at: Timestamp,
    /// A profile the letter breaks and why (e.g. `earztbrief-profile`), if delivered anyway.
    pub finding: Option<(&'a str, &'a str)>,
    /// Who else signed the same layer.
    pub co_signers: &'a [Signer],
    /// Whether the letter's From address is one of the signer certificate's.
    pub from_in_certificate: FromCheck<'a>,
}

/// Whether a letter's From address is among the e-mail addresses of the certificate
/// that signed it. RFC 8550 §3 has receiving agents check this where the certificate
/// holds addresses, and show the certificate's addresses where it fails: the member's
/// letter says which (`from-in-certificate`), and names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromCheck<'a> {
    /// The From address is one of the certificate's.
    Listed,
    /// The certificate holds these addresses, and the From address is none of them.
    NotListed(&'a [String]),
    /// The certificate holds no e-mail address (or the letter has no signer).
    NoAddresses,
}

impl<'a> FromCheck<'a> {
    /// Compares `from` (lowercase, or none) with a certificate's `emails` (lowercase).
    pub fn of(from: Option<&str>, emails: &'a [String]) -> Self {
        match emails {
            [] => FromCheck::NoAddresses,
            _ if from.is_some_and(|from| emails.iter().any(|email| email == from)) => {
                FromCheck::Listed
            }
            _ => FromCheck::NotListed(emails),
        }
    }

    /// The check in words: `yes`, or why not.
    pub fn describe(&self) -> String {
        match self {
            FromCheck::Listed => "yes".to_owned(),
            FromCheck::NoAddresses => "none (the certificate holds no e-mail address)".to_owned(),
            FromCheck::NotListed(emails) => {
                format!("no (the certificate's addresses: {})", emails.join(", "))
            }
        }
    }

    /// The check as the parameters of the member's verification header.
    fn parameters(&self) -> String {
        match self {
            FromCheck::Listed => "from-in-certificate=yes".to_owned(),
            FromCheck::NoAddresses => "from-in-certificate=none".to_owned(),
            FromCheck::NotListed(emails) => format!(
                "from-in-certificate=no;\r\n certificate-addresses=\"{}\"",
                header_safe(&emails.join(", "))
            ),
        }
    }
}

/// KIM's result headers for a letter that was decrypted and whose signature
/// verified, with the values gematik's own example of a delivered client mail
/// carries (gematik/api-kim `samples`, "Client-Mail finalisiert"), so KIM-aware
/// apps read the outcome as a KIM client module reports it.
const KIM_RESULTS: &str = "X-KIM-DecryptionResult: 00\r\nX-KIM-IntegrityCheckResult: 01\r\n";

/// The plaintext the member's keys receive, in two parts that are encrypted one
/// after the other: no copy of a large letter's body is made to prepend the trace
/// headers.
pub struct MemberLetter<'a> {
    /// The trace headers kvgate adds, then the inner message's own header fields.
    head: SecretBytes,
    /// The rest of the inner message: the empty line and the body.
    body: &'a [u8],
}

impl MemberLetter<'_> {
    /// The plaintext, as consecutive parts.
    pub fn parts(&self) -> [&[u8]; 2] {
        [&self.head, self.body]
    }
}

/// Whether a header field is one only the gateway sets: a sender's own would pass
/// for the gateway's verdict on its letter.
fn reserved(name: &[u8]) -> bool {
    let name = name.trim_ascii().to_ascii_lowercase();
    name.starts_with(b"x-kvgate-")
        || name == b"x-kim-decryptionresult"
        || name == b"x-kim-integritycheckresult"
}

/// Appends the header block of `message` to `head` without the fields only the
/// gateway sets ([`reserved`]) and without lines that continue no field (they would
/// continue the gateway's last one); returns the rest of `message`, from its empty
/// line on.
fn append_own_fields<'m>(head: &mut SecretBytes, message: &'m [u8]) -> &'m [u8] {
    let mut rest = message;
    let mut keep = false;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |p| p + 1);
        let line = &rest[..end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if !line.starts_with(b" ") && !line.starts_with(b"\t") {
            keep = line
                .iter()
                .position(|&b| b == b':')
                .is_none_or(|colon| !reserved(&line[..colon]));
        }
        if keep {
            head.extend_from_slice(line);
        }
        rest = &rest[end..];
    }
    rest
}

/// The plaintext the member's keys receive: trace headers (kvgate's verification
/// block and KIM's result headers), then the inner `message` (the one
/// [`LetterHeaders::message`] found: unwrapped from `message/rfc822` where the sender
/// wrapped it, as KIM does).
pub fn member_letter<'a>(message: &'a [u8], provenance: &Provenance<'_>) -> MemberLetter<'a> {
    let signer = header_safe(provenance.signer);
    let mut head = SecretBytes::from(
        format!(
            "X-Kvgate-Tracking-Id: {}\r\n\
             X-Kvgate-Signature: verified; signer=\"{signer}\"; sha256={};\r\n at={}\r\n\
             X-Kvgate-Verification: serial={}; issuer=\"{}\";\r\n algorithms=\"{}\";\r\n \
             revocation=\"{}\";\r\n chain-valid-at={};\r\n {}\r\n",
            provenance.tracking_id,
            provenance.fingerprint,
            provenance.verified_at.to_rfc3339(),
            header_safe(provenance.serial),
            header_safe(provenance.issuer),
            header_safe(provenance.algorithms),
            header_safe(provenance.revocation),
            provenance.chain_valid_at.to_rfc3339(),
            provenance.from_in_certificate.parameters(),
        )
        .into_bytes(),
    );
    for other in provenance.co_signers {
        head.extend_from_slice(
            format!(
                "X-Kvgate-Co-Signer: signer=\"{}\"; sha256={}\r\n",
                header_safe(&other.subject),
                other.fingerprint
            )
            .as_bytes(),
        );
    }
    head.extend_from_slice(KIM_RESULTS.as_bytes());
    if let Some((code, detail)) = provenance.finding {
        head.extend_from_slice(
            format!(
                "X-Kvgate-Finding: {}; detail=\"{}\"\r\n",
                header_safe(code),
                header_safe(detail)
            )
            .as_bytes(),
        );
    }
    let body = append_own_fields(&mut head, message);
    MemberLetter { head, body }
}

/// The headers of a letter's inner message (unwrapped from `message/rfc822` where
/// the sender wrapped it), parsed once for every question the pipeline asks of them.
pub struct LetterHeaders<'a> {
    /// The inner message: the verified content, or the message it wraps.
    message: &'a [u8],
    parsed: Option<WipedMessage<'a>>,
}

/// The message IDs (without angle brackets) in `<…>` tokens of a header value.
fn angle_ids(raw: &str) -> Vec<String> {
    raw.split('<')
        .skip(1)
        .filter_map(|part| part.split_once('>'))
        .map(|(id, _)| id.trim().to_owned())
        .filter(|id| !id.is_empty() && !id.contains(char::is_whitespace))
        .collect()
}

/// The most octets of a KIM header value kept (routing metadata, not content).
const KIM_HEADER_MAX: usize = 200;

impl<'a> LetterHeaders<'a> {
    /// Parses the headers of the message in `inner` (the verified content): its own,
    /// or those of the message it wraps if it is a `message/rfc822` entity.
    pub fn parse(inner: &'a [u8]) -> Self {
        let parse = |octets| {
            MessageParser::default()
                .parse_headers(octets)
                .map(WipedMessage::from)
        };
        let parsed = parse(inner);
        let wrapped = parsed
            .as_deref()
            .is_some_and(is_rfc822_wrapper)
            .then(|| body_of(inner))
            .flatten();
        match wrapped {
            Some(message) => LetterHeaders {
                message,
                parsed: parse(message),
            },
            None => LetterHeaders {
                message: inner,
                parsed,
            },
        }
    }

    /// The inner message itself, headers and body.
    pub fn message(&self) -> &'a [u8] {
        self.message
    }

    /// The `From` address, lowercase, if it names exactly one mailbox.
    pub fn from_address(&self) -> Option<String> {
        match self.parsed.as_ref()?.from()?.as_list() {
            Some([only]) => Some(only.address()?.to_ascii_lowercase()),
            _ => None,
        }
    }

    /// How the letter threads: its own Message-ID and the IDs it replies to
    /// (In-Reply-To first, then References, latest first), all without angle
    /// brackets.
    pub fn threading(&self) -> (Option<String>, Vec<String>) {
        let Some(parsed) = &self.parsed else {
            return (None, Vec::new());
        };
        let own = parsed
            .header_raw("Message-ID")
            .and_then(|raw| angle_ids(raw).into_iter().next());
        let mut replies_to = parsed
            .header_raw("In-Reply-To")
            .map(angle_ids)
            .unwrap_or_default();
        let mut references = parsed
            .header_raw("References")
            .map(angle_ids)
            .unwrap_or_default();
        references.reverse();
        replies_to.extend(references);
        (own, replies_to)
    }

    /// The `Sender` header: `None` without one, `Some(None)` if it does not name
    /// exactly one mailbox, else its address, lowercase.
    pub fn sender_address(&self) -> Option<Option<String>> {
        let sender = self.parsed.as_ref()?.sender()?;
        Some(match sender.as_list() {
            Some([only]) => only.address().map(str::to_ascii_lowercase),
            _ => None,
        })
    }

    /// The value of KIM header `name` (e.g. `X-KIM-Dienstkennung`), unfolded and
    /// trimmed, if present and at most 200 octets of printable ASCII.
    pub fn kim_header(&self, name: &str) -> Option<String> {
        let value = self
            .parsed
            .as_ref()?
            .header_raw(name)?
            .split(['\r', '\n'])
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        (!value.is_empty()
            && value.len() <= KIM_HEADER_MAX
            && value.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
        .then_some(value)
    }

    /// Where the sender asked for a disposition notification: the single address of
    /// `Disposition-Notification-To`, lowercase, if there is exactly one.
    pub fn disposition_notification_to(&self) -> Option<String> {
        let raw = self
            .parsed
            .as_ref()?
            .header_raw("Disposition-Notification-To")?
            .trim();
        if raw.matches('@').count() != 1 || raw.contains(',') {
            return None;
        }
        let address = match (raw.find('<'), raw.rfind('>')) {
            (Some(open), Some(close)) if open < close => &raw[open + 1..close],
            _ => raw,
        };
        let address = address.trim();
        (!address.is_empty() && !address.contains(char::is_whitespace))
            .then(|| address.to_ascii_lowercase())
    }

    /// The letter's own `Message-ID`, in angle brackets.
    pub fn message_id(&self) -> Option<String> {
        let id = self.parsed.as_ref()?.message_id()?;
        Some(format!("<{id}>"))
    }
}

/// The outer headers of the encrypted letter: routing data only (with KIM's
/// service identifier `dienstkennung`, which KIM carries in clear).
pub fn outer_headers(
    from: &str,
    to: &str,
    tracking_id: &TrackingId,
    index: usize,
    domain: &str,
    at: Timestamp,
    dienstkennung: Option<&str>,
) -> Vec<(String, String)> {
    let mut headers = vec![
        ("From".to_owned(), format!("<{}>", header_safe(from))),
        ("To".to_owned(), format!("<{}>", header_safe(to))),
        ("Date".to_owned(), rfc5322_date(at)),
        (
            "Message-ID".to_owned(),
            format!("<{tracking_id}.{index}@{domain}>"),
        ),
        ("Subject".to_owned(), "[...]".to_owned()),
        ("X-Kvgate-Tracking-Id".to_owned(), tracking_id.to_string()),
    ];
    if let Some(dienstkennung) = dienstkennung {
        headers.push(("X-KIM-Dienstkennung".to_owned(), dienstkennung.to_owned()));
    }
    headers
}

/// A letter sealed for a member as the store keeps it, with the size the member
/// fetches (its OpenPGP part armored).
pub(crate) fn ciphertext(sealed: StoredPgpMime) -> Ciphertext {
    Ciphertext {
        size: sealed.message_len() as u64,
        stored: sealed.into_stored(),
    }
}

/// Whether a parsed entity is a `message/rfc822` wrapper.
fn is_rfc822_wrapper(entity: &Message<'_>) -> bool {
    entity.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("message")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("rfc822"))
    })
}

/// The body of a MIME entity: everything after the first empty line.
fn body_of(entity: &[u8]) -> Option<&[u8]> {
    let crlf = entity
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4);
    let lf = entity.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    let start = match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    entity.get(start..)
}

/// A value safe inside a quoted header parameter: no quotes, backslashes or line breaks.
pub(crate) fn header_safe(value: &str) -> Cow<'_, str> {
    if value.contains(['"', '\\', '\r', '\n']) {
        Cow::Owned(value.replace(['"', '\\', '\r', '\n'], " "))
    } else {
        Cow::Borrowed(value)
    }
}

/// An RFC 5322 date, e.g. `Sat, 28 Nov 2026 19:30:00 +0000`.
pub(crate) fn rfc5322_date(at: Timestamp) -> String {
    let secs = i64::try_from(at.as_millis() / 1000).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc2822)
                .ok()
        })
        .unwrap_or_else(|| "Thu, 01 Jan 1970 00:00:00 +0000".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A letter's provenance as tests need it: signed by `CN=Demo Practice`.
    fn provenance(id: &TrackingId) -> Provenance<'_> {
        Provenance {
            tracking_id: id,
            signer: "CN=Demo Practice",
            fingerprint: "ab",
            serial: "1F",
            issuer: "CN=CA",
            algorithms: "RSA with SHA256",
            revocation: "not checked",
            verified_at: Timestamp(0),
            chain_valid_at: Timestamp(0),
            finding: None,
            co_signers: &[],
            from_in_certificate: FromCheck::Listed,
        }
    }

    #[test]
    fn a_reply_names_what_it_answers() {
        let letter =
            b"Message-ID: <answer.1@insurer.test>\r\nIn-Reply-To: <message.X@kvgate.test>\r\n\
                       References: <a@x> <b@y>\r\nSubject: Re\r\n\r\nbody";
        assert_eq!(
            LetterHeaders::parse(letter).threading(),
            (
                Some("answer.1@insurer.test".to_owned()),
                vec![
                    "message.X@kvgate.test".to_owned(),
                    "b@y".to_owned(),
                    "a@x".to_owned()
                ]
            )
        );
        assert_eq!(
            LetterHeaders::parse(b"Subject: none\r\n\r\nbody").threading(),
            (None, Vec::new())
        );
    }

    #[test]
    fn unwraps_message_rfc822_and_reads_from() {
        let inner = b"Content-Type: message/rfc822\r\n\r\nFrom: Praxis <Praxis@Example.test>\r\nSubject: x\r\n\r\nbody\r\n";
        assert_eq!(
            LetterHeaders::parse(inner).from_address().as_deref(),
            Some("praxis@example.test")
        );
        let id: TrackingId = "01ARZ3NDEKTSV4RRFFQ69G5FAV".parse().unwrap();
        let p = Provenance {
            signer: "CN=A \"B\"",
            algorithms: "RSASSA-PSS with SHA256",
            revocation: "not revoked (OCSP http://ocsp.test/)",
            ..provenance(&id)
        };
        let letter = member_letter(LetterHeaders::parse(inner).message(), &p);
        let text = String::from_utf8(letter.parts().concat()).unwrap();
        assert!(text.starts_with("X-Kvgate-Tracking-Id: 01ARZ3NDEKTSV4RRFFQ69G5FAV\r\n"));
        assert!(text.contains("signer=\"CN=A  B \""));
        assert!(text.contains(
            "X-Kvgate-Verification: serial=1F; issuer=\"CN=CA\";\r\n \
             algorithms=\"RSASSA-PSS with SHA256\";\r\n \
             revocation=\"not revoked (OCSP http://ocsp.test/)\";\r\n \
             chain-valid-at=1970-01-01T00:00:00.000Z;\r\n from-in-certificate=yes\r\n"
        ));
        assert!(text.ends_with("From: Praxis <Praxis@Example.test>\r\nSubject: x\r\n\r\nbody\r\n"));
    }

    #[test]
    fn the_from_address_is_compared_with_the_signer_certificates() {
        let emails = ["praxis@p.test".to_owned(), "kim@p.test".to_owned()];
        assert_eq!(
            FromCheck::of(Some("kim@p.test"), &emails),
            FromCheck::Listed
        );
        assert_eq!(
            FromCheck::of(Some("kim@p.test"), &[]),
            FromCheck::NoAddresses
        );
        let other = FromCheck::of(Some("other@p.test"), &emails);
        assert_eq!(other, FromCheck::NotListed(&emails));
        assert_eq!(FromCheck::of(None, &emails), FromCheck::NotListed(&emails));

        let id: TrackingId = "01ARZ3NDEKTSV4RRFFQ69G5FAV".parse().unwrap();
        let p = Provenance {
            from_in_certificate: other,
            ..provenance(&id)
        };
        let letter = member_letter(b"From: other@p.test\r\n\r\nbody", &p);
        let text = String::from_utf8(letter.parts().concat()).unwrap();
        assert!(
            text.contains(
                "chain-valid-at=1970-01-01T00:00:00.000Z;\r\n from-in-certificate=no;\r\n \
                 certificate-addresses=\"praxis@p.test, kim@p.test\"\r\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_sender_cannot_pass_its_own_headers_for_the_gateways_verdict() {
        let id: TrackingId = "01ARZ3NDEKTSV4RRFFQ69G5FAV".parse().unwrap();
        let p = provenance(&id);
        let inner = b" 99 (folded into the gateway's last field)\r\n\
            X-Kvgate-Signature: verified; signer=\"CN=Prof. Dr. Famous\";\r\n at=x\r\n\
            From: praxis@p.test\r\n\
            x-kvgate-tracking-id: 01FAKE\r\n\
            X-KIM-IntegrityCheckResult: 01\r\n\
            X-KIM-Dienstkennung: Arztbrief;Entlassbrief;V1.0\r\n\
            Subject: Befund\r\n continued\r\n\
            \r\n\
            X-Kvgate-Signature: in the body, untouched\r\n";
        let letter = member_letter(inner, &p);
        let text = String::from_utf8(letter.parts().concat()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let fields: Vec<&str> = head
            .split("\r\n")
            .filter(|line| !line.starts_with(' '))
            .map(|line| line.split(':').next().unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "X-Kvgate-Tracking-Id",
                "X-Kvgate-Signature",
                "X-Kvgate-Verification",
                "X-KIM-DecryptionResult",
                "X-KIM-IntegrityCheckResult",
                "From",
                "X-KIM-Dienstkennung",
                "Subject",
            ]
        );
        assert!(head.contains("signer=\"CN=Demo Practice\""), "{head}");
        assert!(!head.contains("Famous") && !head.contains("99") && !head.contains("FAKE"));
        assert!(head.ends_with("Subject: Befund\r\n continued"), "{head}");
        assert_eq!(body, "X-Kvgate-Signature: in the body, untouched\r\n");
    }

    #[test]
    fn reads_the_disposition_notification_address() {
        let letter = b"From: a@p.test\r\nDisposition-Notification-To: Praxis <Praxis@P.test>\r\nMessage-ID: <x1@p.test>\r\n\r\nbody";
        assert_eq!(
            LetterHeaders::parse(letter)
                .disposition_notification_to()
                .as_deref(),
            Some("praxis@p.test")
        );
        assert_eq!(
            LetterHeaders::parse(letter).message_id().as_deref(),
            Some("<x1@p.test>")
        );
        let two = b"Disposition-Notification-To: a@p.test, b@p.test\r\n\r\nbody";
        assert_eq!(
            LetterHeaders::parse(two).disposition_notification_to(),
            None
        );
        assert_eq!(
            LetterHeaders::parse(b"From: a@p.test\r\n\r\nbody").disposition_notification_to(),
            None
        );
    }

    #[test]
    fn dates_are_rfc5322() {
        assert_eq!(
            rfc5322_date(Timestamp(1_795_894_200_123)),
            "Sat, 28 Nov 2026 19:30:00 +0000"
        );
    }
}
