//! Letters as a practice sends them, made before the clock starts: a text part and a
//! PDF attachment, signed with the demo practice's key and encrypted to the gateway.

use anyhow::Context;
use base64::Engine;
use kvgate::client::smtp::DataText;
use kvgate_certs::compose;

use crate::members::Member;
use crate::server::Installation;

/// The address the demo practice of `kvgate init` sends from.
pub const PRACTICE: &str = "praxis@demo-practice.test";

/// One letter ready to submit.
pub struct Letter {
    /// The envelope and header recipient.
    pub recipient: String,
    /// The whole message as submitted: outer headers and the S/MIME entity.
    pub message: Vec<u8>,
    /// The message as DATA sends it, stuffed once here rather than at every send: the
    /// load generator shares the cores with the server.
    pub data: DataText,
    /// Octets of the letter the practice wrote (before signing and encryption).
    pub plain_octets: usize,
}

/// The size of a letter (before signing and encryption) whose submitted S/MIME
/// message is about `message_size` octets: signing and encrypting each wrap the entity
/// in base64 lines of 76 characters plus CRLF, 78 octets for every 57.
pub fn plain_size_for(message_size: usize) -> usize {
    message_size / 78 * 57 / 78 * 57
}

/// One letter of about `size` octets (before signing and encryption) for each member.
pub fn compose(
    installation: &Installation,
    members: &[Member],
    size: usize,
) -> anyhow::Result<Vec<Letter>> {
    let practice = Practice::of(installation)?;
    members
        .iter()
        .enumerate()
        .map(|(index, member)| practice.letter(&member.address, size, index as u64))
        .collect()
}

/// The demo practice of an installation, writing to its gateway.
pub struct Practice {
    signer_cert: Vec<u8>,
    signer_key: Vec<u8>,
    gateway: Vec<u8>,
}

impl Practice {
    /// The demo practice's certificate and key, and the gateway's certificate.
    pub fn of(installation: &Installation) -> anyhow::Result<Self> {
        Ok(Practice {
            signer_cert: installation.pki("demo-practice.pem")?,
            signer_key: installation.pki("demo-practice.key")?,
            gateway: installation.pki("gateway.pem")?,
        })
    }

    /// A letter of about `size` octets (before signing and encryption) to
    /// `recipient`, signed and encrypted to the gateway; `seed` makes its PDF its own.
    pub fn letter(&self, recipient: &str, size: usize, seed: u64) -> anyhow::Result<Letter> {
        let plain = letter(recipient, size, seed);
        let signed = compose::sign(&plain, &self.signer_cert, &self.signer_key)
            .context("signing a letter")?;
        let encrypted = compose::encrypt(&signed, &self.gateway).context("encrypting a letter")?;
        let mut message = format!(
            "From: <{PRACTICE}>\r\nTo: <{recipient}>\r\nSubject: [...]\r\nMessage-ID: <bench-{size}-{seed}@demo-practice.test>\r\n"
        )
        .into_bytes();
        message.extend_from_slice(&encrypted);
        Ok(Letter {
            recipient: recipient.to_owned(),
            data: DataText::new(&message),
            message,
            plain_octets: plain.len(),
        })
    }
}

/// A MIME letter of about `size` octets whose PDF attachment fills what the headers
/// and text leave; `seed` makes each member's PDF different.
fn letter(recipient: &str, size: usize, seed: u64) -> Vec<u8> {
    let mut out = format!(
        "From: Demo Practice <{PRACTICE}>\r\n\
         To: <{recipient}>\r\n\
         Subject: Befund\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"bench\"\r\n\r\n\
         --bench\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n\
         Guten Tag, anbei Ihr Befund.\r\n\
         --bench\r\n\
         Content-Type: application/pdf; name=\"befund.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"befund.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n"
    )
    .into_bytes();
    let closing = b"--bench--\r\n";
    // Base64 in lines of 76 characters plus CRLF carries 57 octets per 78.
    let room = size.saturating_sub(out.len() + closing.len());
    let encoded = base64::engine::general_purpose::STANDARD.encode(pdf(room / 78 * 57, seed));
    for line in encoded.as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(closing);
    out
}

/// A PDF-looking file of `size` octets with incompressible content.
fn pdf(size: usize, seed: u64) -> Vec<u8> {
    let head = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n";
    let tail = b"\n%%EOF\n";
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let body = (0..size.saturating_sub(head.len() + tail.len())).map(|_| {
        // xorshift64: cheap bytes that neither compress nor repeat.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state.to_le_bytes()[0]
    });
    head.iter()
        .copied()
        .chain(body)
        .chain(tail.iter().copied())
        .collect()
}
