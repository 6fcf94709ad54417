//! ASCII armor (RFC 9580 §6) of an OpenPGP message, written as the binary message
//! is produced: 64 characters a line, CRLF line ends, as a MIME body needs them.
//! The CRC-24 checksum line is written although RFC 9580 §6.1 makes it optional:
//! GnuPG 2.2 reads a message without one into its END line and fails to decrypt it
//! whenever the last line has no padding.

use std::io::{self, Write};

use base64_simd::AsOut as _;

/// Octets per armor line (64 base64 characters).
const LINE: usize = 48;

/// CRC-24 of RFC 9580 §6.1 (initial value, generator), kept in the upper 24 bits of
/// a 32-bit register so that eight octets are folded in per step ("slicing by 8").
const CRC24_INIT: u32 = 0x00B7_04CE << 8;
const CRC24_POLY: u32 = 0x0186_4CFB << 8;

/// `TABLES[k][b]`: octet `b` followed by `k` zero octets, through the register.
const TABLES: [[u32; 256]; 8] = {
    let mut tables = [[0u32; 256]; 8];
    let mut b = 0;
    while b < 256 {
        let mut crc = (b as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ CRC24_POLY
            } else {
                crc << 1
            };
            bit += 1;
        }
        tables[0][b] = crc;
        b += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut b = 0;
        while b < 256 {
            let previous = tables[k - 1][b];
            tables[k][b] = tables[0][(previous >> 24) as usize] ^ (previous << 8);
            b += 1;
        }
        k += 1;
    }
    tables
};

/// The register after `octets`.
fn crc24(mut crc: u32, octets: &[u8]) -> u32 {
    let t = &TABLES;
    let mut groups = octets.chunks_exact(8);
    for group in &mut groups {
        let x = crc ^ u32::from_be_bytes([group[0], group[1], group[2], group[3]]);
        let y = u32::from_be_bytes([group[4], group[5], group[6], group[7]]);
        crc = t[7][(x >> 24) as usize]
            ^ t[6][(x >> 16) as usize & 0xFF]
            ^ t[5][(x >> 8) as usize & 0xFF]
            ^ t[4][x as usize & 0xFF]
            ^ t[3][(y >> 24) as usize]
            ^ t[2][(y >> 16) as usize & 0xFF]
            ^ t[1][(y >> 8) as usize & 0xFF]
            ^ t[0][y as usize & 0xFF];
    }
    for &octet in groups.remainder() {
        crc = (crc << 8) ^ t[0][((crc >> 24) as u8 ^ octet) as usize];
    }
    crc
}

/// Armors what is written to it into the end of `out`; [`Armor::finish`] writes the
/// last line and the tail.
pub(super) struct Armor<'a> {
    out: &'a mut Vec<u8>,
    /// Octets of a line not yet complete.
    pending: [u8; LINE],
    held: usize,
    /// The checksum of everything written so far.
    crc: u32,
}

impl<'a> Armor<'a> {
    /// Starts a `PGP MESSAGE` armor at the end of `out`.
    pub(super) fn message(out: &'a mut Vec<u8>) -> Self {
        out.extend_from_slice(b"-----BEGIN PGP MESSAGE-----\r\n\r\n");
        Armor {
            out,
            pending: [0; LINE],
            held: 0,
            crc: CRC24_INIT,
        }
    }

    /// Writes the last (short) line, the checksum and the armor tail.
    pub(super) fn finish(self) {
        let Armor {
            out,
            pending,
            held,
            crc,
        } = self;
        if held > 0 {
            line(out, &pending[..held]);
        }
        out.push(b'=');
        line(out, &(crc >> 8).to_be_bytes()[1..]);
        out.extend_from_slice(b"-----END PGP MESSAGE-----\r\n");
    }
}

/// Appends one armor line encoding `octets` (at most [`LINE`]).
fn line(out: &mut Vec<u8>, octets: &[u8]) {
    let mut text = [0u8; LINE / 3 * 4];
    let encoded = base64_simd::STANDARD.encode(octets, text.as_mut_slice().as_out());
    out.extend_from_slice(encoded);
    out.extend_from_slice(b"\r\n");
}

impl Write for Armor<'_> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let written = buf.len();
        self.crc = crc24(self.crc, buf);
        if self.held > 0 {
            let take = buf.len().min(LINE - self.held);
            self.pending[self.held..self.held + take].copy_from_slice(&buf[..take]);
            self.held += take;
            buf = &buf[take..];
            if self.held < LINE {
                return Ok(written);
            }
            line(self.out, &self.pending);
            self.held = 0;
        }
        let whole = buf.len() / LINE * LINE;
        self.out.reserve(whole / LINE * (LINE / 3 * 4 + 2));
        for octets in buf[..whole].chunks_exact(LINE) {
            line(self.out, octets);
        }
        let rest = &buf[whole..];
        self.pending[..rest.len()].copy_from_slice(rest);
        self.held = rest.len();
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    /// CRC-24 an octet at a time, straight from the definition.
    fn crc24_bitwise(octets: &[u8]) -> u32 {
        let mut crc: u32 = 0x00B7_04CE;
        for &octet in octets {
            crc ^= u32::from(octet) << 16;
            for _ in 0..8 {
                crc <<= 1;
                if crc & 0x0100_0000 != 0 {
                    crc ^= 0x0186_4CFB;
                }
            }
        }
        crc & 0x00FF_FFFF
    }

    #[test]
    fn crc24_is_openpgps() {
        // The check value of CRC-24/OPENPGP.
        assert_eq!(crc24(CRC24_INIT, b"123456789") >> 8, 0x0021_CF02);
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 131 % 251) as u8).collect();
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 999, 1000] {
            let whole = crc24(CRC24_INIT, &data[..len]) >> 8;
            let split = crc24(crc24(CRC24_INIT, &data[..len / 3]), &data[len / 3..len]) >> 8;
            assert_eq!(
                (whole, split),
                (crc24_bitwise(&data[..len]), whole),
                "{len}"
            );
        }
    }

    #[test]
    fn lines_are_64_characters_whatever_the_writes() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 31 % 256) as u8).collect();
        let expected = {
            let mut out = Vec::new();
            let mut armor = Armor::message(&mut out);
            armor.write_all(&data).unwrap();
            armor.finish();
            out
        };
        for step in [1, 5, 47, 48, 49, 100] {
            let mut out = Vec::new();
            let mut armor = Armor::message(&mut out);
            for piece in data.chunks(step) {
                armor.write_all(piece).unwrap();
            }
            armor.finish();
            assert_eq!(out, expected, "writes of {step}");
        }
        let text = String::from_utf8(expected).unwrap();
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines[0], "-----BEGIN PGP MESSAGE-----");
        assert_eq!(lines[1], "");
        let body = &lines[2..lines.len() - 3];
        assert!(body[..body.len() - 1].iter().all(|l| l.len() == 64));
        assert_eq!(STANDARD.decode(body.concat()).unwrap(), data);
        let checksum = (crc24(CRC24_INIT, &data) >> 8).to_be_bytes();
        let checksum = format!("={}", STANDARD.encode(&checksum[1..]));
        assert_eq!(lines[lines.len() - 3], checksum);
        assert_eq!(lines[lines.len() - 2], "-----END PGP MESSAGE-----");
        assert_eq!(lines[lines.len() - 1], "");
    }
}
