//! Letters as a practice sends them, made before the clock starts: a text part and a
//! PDF attachment, signed with the demo practice's key and encrypted to the gateway.

use anyhow::Context;
use base64::Engine;
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
    let signer_cert = installation.pki("demo-practice.pem")?;
    let signer_key = installation.pki("demo-practice.key")?;
    let gateway = installation.pki("gateway.pem")?;
    members
        .iter()
        .enumerate()
        .map(|(index, member)| {
            let plain = letter(&member.address, size, index as u64);
            let signed = compose::sign(&plain, &signer_cert, &signer_key)
                .context("signing a letter")?;
            let encrypted = compose::encrypt(&signed, &gateway).context("encrypting a letter")?;
            let mut message = format!(
                "From: <{PRACTICE}>\r\nTo: <{}>\r\nSubject: [...]\r\nMessage-ID: <bench-{size}-{index}@demo-practice.test>\r\n",
                member.address
            )
            .into_bytes();
            message.extend_from_slice(&encrypted);
            Ok(Letter {
                recipient: member.address.clone(),
                message,
                plain_octets: plain.len(),
            })
        })
        .collect()
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
