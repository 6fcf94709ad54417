//! ASCII armor (RFC 9580 §6) of an OpenPGP message, written as the binary message
//! is produced: 64 characters a line, CRLF line ends, as a MIME body needs them.
//! The CRC-24 checksum line is written although RFC 9580 §6.1 makes it optional:
//! GnuPG 2.2 reads a message without one into its END line and fails to decrypt it
//! whenever the last line has no padding.

use base64_simd::AsOut as _;

use super::crc24;

/// Octets per armor line (64 base64 characters).
const LINE: usize = 48;

/// The armor's first line and the blank line after it.
const HEAD: &[u8] = b"-----BEGIN PGP MESSAGE-----\r\n\r\n";

/// The armor's last line.
const TAIL: &[u8] = b"-----END PGP MESSAGE-----\r\n";

/// Octets of the armor [`Armor`] makes for a message of `octets` octets.
pub(super) fn armored_len(octets: usize) -> usize {
    let text = |octets: usize| octets.div_ceil(3) * 4 + 2;
    let last = octets % LINE;
    let lines = octets / LINE * text(LINE) + if last > 0 { text(last) } else { 0 };
    // The checksum line is '=' and three octets in base64.
    HEAD.len() + lines + 1 + text(3) + TAIL.len()
}

/// The state of an armor being written: each call appends to the `out` it is given,
/// so a message can be armored into one buffer or into a buffer a piece.
#[derive(Debug)]
pub(super) struct Armor {
    /// Octets of a line not yet complete.
    pending: [u8; LINE],
    held: usize,
    /// The checksum of everything armored so far.
    crc: u32,
}

impl Armor {
    /// Starts a `PGP MESSAGE` armor at the end of `out`.
    pub(super) fn start(out: &mut Vec<u8>) -> Self {
        out.extend_from_slice(HEAD);
        Armor {
            pending: [0; LINE],
            held: 0,
            crc: crc24::INIT,
        }
    }

    /// Armors `buf`, the next octets of the message, onto `out`.
    pub(super) fn push(&mut self, out: &mut Vec<u8>, mut buf: &[u8]) {
        self.crc = crc24::update(self.crc, buf);
        if self.held > 0 {
            let take = buf.len().min(LINE - self.held);
            self.pending[self.held..self.held + take].copy_from_slice(&buf[..take]);
            self.held += take;
            buf = &buf[take..];
            if self.held < LINE {
                return;
            }
            line(out, &self.pending);
            self.held = 0;
        }
        let whole = buf.len() / LINE * LINE;
        out.reserve(whole / LINE * (LINE / 3 * 4 + 2));
        for octets in buf[..whole].chunks_exact(LINE) {
            line(out, octets);
        }
        let rest = &buf[whole..];
        self.pending[..rest.len()].copy_from_slice(rest);
        self.held = rest.len();
    }

    /// Writes the last (short) line, the checksum and the armor tail onto `out`.
    pub(super) fn finish(self, out: &mut Vec<u8>) {
        if self.held > 0 {
            line(out, &self.pending[..self.held]);
        }
        out.push(b'=');
        line(out, &(self.crc >> 8).to_be_bytes()[1..]);
        out.extend_from_slice(TAIL);
    }
}

/// Appends one armor line encoding `octets` (at most [`LINE`]).
fn line(out: &mut Vec<u8>, octets: &[u8]) {
    let mut text = [0u8; LINE / 3 * 4];
    let encoded = base64_simd::STANDARD.encode(octets, text.as_mut_slice().as_out());
    out.extend_from_slice(encoded);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    #[test]
    fn lines_are_64_characters_whatever_the_pushes() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 31 % 256) as u8).collect();
        // `data` armored in pushes of `step` octets.
        let armored = |step: usize| {
            let mut out = Vec::new();
            let mut armor = Armor::start(&mut out);
            for piece in data.chunks(step) {
                armor.push(&mut out, piece);
            }
            armor.finish(&mut out);
            out
        };
        let expected = armored(data.len());
        for step in [1, 5, 47, 48, 49, 100] {
            assert_eq!(armored(step), expected, "pushes of {step}");
        }
        let text = String::from_utf8(expected).unwrap();
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines[0], "-----BEGIN PGP MESSAGE-----");
        assert_eq!(lines[1], "");
        let body = &lines[2..lines.len() - 3];
        assert!(body[..body.len() - 1].iter().all(|l| l.len() == 64));
        assert_eq!(STANDARD.decode(body.concat()).unwrap(), data);
        let checksum = (crc24::update(crc24::INIT, &data) >> 8).to_be_bytes();
        let checksum = format!("={}", STANDARD.encode(&checksum[1..]));
        assert_eq!(lines[lines.len() - 3], checksum);
        assert_eq!(lines[lines.len() - 2], "-----END PGP MESSAGE-----");
        assert_eq!(lines[lines.len() - 1], "");
    }

    #[test]
    fn armored_len_is_what_the_armor_writes() {
        for octets in (0..200).chain([4095, 4096, 4097, 2_000_003]) {
            let mut out = Vec::new();
            let mut armor = Armor::start(&mut out);
            armor.push(&mut out, &vec![0xa5; octets]);
            armor.finish(&mut out);
            assert_eq!(armored_len(octets), out.len(), "{octets} octets");
        }
    }
}
