//! The message text decoder shared by DATA and BDAT: line-ending
//! normalisation, line and size limits, and (for DATA) dot-unstuffing and
//! end-of-data detection.
//!
//! **DATA.** Only `<CRLF>.<CRLF>` ends DATA (the CRLF that ends the DATA
//! command line counts as the first one). Bare LF or bare CR never start or
//! end a line for the purposes of dot handling, so sequences like `<LF>.<LF>`,
//! `<CR>.<CR>`, `<LF>.<CRLF>` or `<CRLF>.<LF>` stay inside the message and
//! cannot smuggle a second message past the server. A leading dot followed by
//! anything but CRLF is transparency stuffing and is removed (RFC 5321 §4.5.2).
//!
//! **Bare CR and LF** (DATA and BDAT alike) are *normalised*, not refused: a
//! bare CR or bare LF is written to the sink as CRLF, so the stored message has
//! canonical line endings and contains no ambiguous line break that a later
//! reader could interpret differently. A CR at the very end of the last BDAT
//! chunk is completed to CRLF by [`Decoder::finish`].
//!
//! **Limits.** A text line over 1000 octets (CRLF included, RFC 5321
//! §4.5.3.1.6) or a message over the size limit is not refused mid-stream:
//! the decoder keeps consuming input (so the end of the message is found and
//! no message text runs as commands), stops producing output, and reports
//! the refusal through [`Decoder::refusal`].

use super::conn::CHUNK;
use super::reply::Reply;

/// The longest text line, CRLF included (RFC 5321 §4.5.3.1.6), not counting
/// the removed stuffing dot.
const MAX_LINE: usize = 1000;

/// How the end of the message text is marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// DATA: dot-stuffed, ended by `<CRLF>.<CRLF>`.
    Dot,
    /// BDAT: counted chunks, taken literally (no dot handling).
    Counted,
}

/// Where the decoder is within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line (after CRLF, or at the start of DATA).
    LineStart,
    /// Inside a line.
    Text,
    /// After a CR inside a line or on an empty line.
    Cr,
    /// After a dot at the start of a line.
    Dot,
    /// After `.` CR at the start of a line.
    DotCr,
}

/// The incremental message text decoder (see the module documentation).
#[derive(Debug)]
pub(super) struct Decoder {
    framing: Framing,
    state: State,
    line_len: usize,
    size: u64,
    max_size: u64,
    too_big: bool,
    line_too_long: bool,
}

impl Decoder {
    /// A decoder at the start of a message of at most `max_size` octets.
    pub(super) fn new(framing: Framing, max_size: u64) -> Self {
        Self {
            framing,
            state: State::LineStart,
            line_len: 0,
            size: 0,
            max_size,
            too_big: false,
            line_too_long: false,
        }
    }

    /// Decodes `input` into `out` until the input is used up, `out` is full
    /// ([`CHUNK`]) or the terminator is found. Returns the number of input
    /// octets consumed and whether the terminator was found. Once the message
    /// is refused, nothing more is written to `out`.
    pub(super) fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        let mut i = 0;
        while let Some(&b) = input.get(i) {
            // One input octet produces at most three output octets.
            if out.len() + 3 > CHUNK {
                return (i, false);
            }
            let lines = self.ordinary_lines(&input[i..], out);
            if lines > 0 {
                i += lines;
                continue;
            }
            if self.is_text(b) {
                // The octets up to the next CR or LF are text: copied as one run.
                let rest = &input[i..];
                let room = rest.len().min(CHUNK - out.len());
                let run = memchr::memchr2(b'\r', b'\n', &rest[..room]).unwrap_or(room);
                self.text_run(&rest[..run], out);
                i += run;
                continue;
            }
            i += 1;
            match (self.state, b) {
                (State::LineStart, b'.') if self.framing == Framing::Dot => {
                    self.state = State::Dot;
                }
                (State::Dot, b'\r') => self.state = State::DotCr,
                (State::DotCr, b'\n') => return (i, true),
                (State::Cr, b'\n') => {
                    self.line_break(out);
                    self.state = State::LineStart;
                }
                // A bare CR (after the stuffing dot or inside a line), then `b`.
                (State::DotCr | State::Cr, _) => {
                    self.line_break(out);
                    self.text(b, out);
                }
                // In a line, or after a stuffing dot (which is dropped).
                (State::LineStart | State::Text | State::Dot, _) => self.text(b, out),
            }
        }
        (input.len(), false)
    }

    /// Copies the ordinary lines at the start of `input` to `out` as one run, and
    /// returns how many octets they are (0 if none): whole lines ended by CRLF, with
    /// no other CR or LF, within the line limit, that fit the size limit and `out`,
    /// and (in DATA) of which none but the first starts with a dot. Everything else,
    /// a dot at a line start among it, is left to the octet-by-octet decoding.
    fn ordinary_lines(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let dots = self.framing == Framing::Dot;
        let at_dot = self.state == State::LineStart && dots && input.first() == Some(&b'.');
        if !matches!(self.state, State::LineStart | State::Text) || at_dot {
            return 0;
        }
        let size_room =
            usize::try_from(self.max_size.saturating_sub(self.size)).unwrap_or(usize::MAX);
        let input = &input[..input.len().min(CHUNK - out.len()).min(size_room)];
        let (mut end, mut line_len) = (0, self.line_len);
        while let Some(found) = memchr::memchr2(b'\r', b'\n', &input[end..]) {
            let cr = end + found;
            let crlf = input[cr] == b'\r' && input.get(cr + 1) == Some(&b'\n');
            if !crlf || line_len + (cr - end) > MAX_LINE - 2 {
                break;
            }
            (end, line_len) = (cr + 2, 0);
            if dots && input.get(end) == Some(&b'.') {
                break;
            }
        }
        if end > 0 {
            (self.state, self.line_len) = (State::LineStart, 0);
            self.emit(&input[..end], out);
        }
        end
    }

    /// Whether `b` is plain text in the current state: neither CR nor LF, in a line
    /// or after a stuffing dot, or at a line start unless it is a DATA dot.
    fn is_text(&self, b: u8) -> bool {
        if b == b'\r' || b == b'\n' {
            return false;
        }
        match self.state {
            State::Text | State::Dot => true,
            State::LineStart => b != b'.' || self.framing != Framing::Dot,
            State::Cr | State::DotCr => false,
        }
    }

    /// Ends a counted (BDAT) message: a CR left pending at the end of the
    /// last chunk becomes CRLF. Writes at most two octets to `out`.
    pub(super) fn finish(&mut self, out: &mut Vec<u8>) {
        if self.state == State::Cr {
            self.line_break(out);
        }
        self.state = State::LineStart;
    }

    /// An octet inside a line.
    fn text(&mut self, b: u8, out: &mut Vec<u8>) {
        match b {
            b'\r' => self.state = State::Cr,
            // A bare LF: a line break, but not a line start for dot handling.
            b'\n' => {
                self.state = State::Text;
                self.line_break(out);
            }
            _ => self.text_run(&[b], out),
        }
    }

    /// Octets inside a line, none of them CR or LF.
    /// Octets past the line limit or the size limit are counted, not written: the
    /// message is refused from the first of them on.
    fn text_run(&mut self, run: &[u8], out: &mut Vec<u8>) {
        self.state = State::Text;
        let line_room = (MAX_LINE - 2).saturating_sub(self.line_len);
        let size_room = self.max_size.saturating_sub(self.size);
        let fits = run
            .len()
            .min(line_room)
            .min(usize::try_from(size_room).unwrap_or(usize::MAX));
        self.line_len += run.len();
        self.emit(&run[..fits], out);
        if fits < run.len() {
            self.line_too_long |= self.line_len > MAX_LINE - 2;
            self.emit(&run[fits..], out);
        }
    }

    fn line_break(&mut self, out: &mut Vec<u8>) {
        self.line_len = 0;
        self.emit(b"\r\n", out);
    }

    fn emit(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.size = self.size.saturating_add(bytes.len() as u64);
        if self.size > self.max_size {
            self.too_big = true;
        }
        if self.refusal().is_none() {
            out.extend_from_slice(bytes);
        }
    }

    /// Why the message is refused, if it is.
    pub(super) fn refusal(&self) -> Option<Reply> {
        if self.too_big {
            Some(Reply::new(552, (5, 3, 4), "Message too big"))
        } else if self.line_too_long {
            Some(Reply::new(554, (5, 6, 0), "Line too long"))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` in pieces of `step` octets; returns the output, the
    /// unconsumed rest, and whether the terminator was found.
    fn run(input: &[u8], step: usize, max: u64) -> (Vec<u8>, Vec<u8>, bool, Option<Reply>) {
        let mut d = Decoder::new(Framing::Dot, max);
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < input.len() {
            let end = (pos + step).min(input.len());
            let mut chunk = Vec::new();
            let (used, done) = d.decode(&input[pos..end], &mut chunk);
            out.extend_from_slice(&chunk);
            pos += used;
            if done {
                return (out, input[pos..].to_vec(), true, d.refusal());
            }
        }
        (out, Vec::new(), false, d.refusal())
    }

    fn decode_all(input: &[u8]) -> (Vec<u8>, Vec<u8>, bool) {
        let whole = run(input, input.len().max(1), u64::MAX);
        for step in [1, 2, 3, 7] {
            let piecewise = run(input, step, u64::MAX);
            assert_eq!(
                (&whole.0, &whole.1, whole.2),
                (&piecewise.0, &piecewise.1, piecewise.2)
            );
        }
        (whole.0, whole.1, whole.2)
    }

    #[test]
    fn ends_only_at_crlf_dot_crlf() {
        let (out, rest, done) = decode_all(b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n");
        assert!(done);
        assert_eq!(out, b"Subject: x\r\n\r\nbody\r\n");
        assert_eq!(rest, b"QUIT\r\n");
        assert_eq!(decode_all(b".\r\n"), (Vec::new(), Vec::new(), true));
    }

    #[test]
    fn unstuffs_dots() {
        let (out, _, done) = decode_all(b"..hidden\r\n...\r\n.x\r\na.b\r\n.\r\n");
        assert!(done);
        assert_eq!(out, b".hidden\r\n..\r\nx\r\na.b\r\n");
    }

    #[test]
    fn smuggling_sequences_stay_in_the_body() {
        for (input, body) in [
            (&b"a\n.\nMAIL\r\n.\r\n"[..], &b"a\r\n.\r\nMAIL\r\n"[..]),
            (b"a\r.\rMAIL\r\n.\r\n", b"a\r\n.\r\nMAIL\r\n"),
            (b"a\n.\r\nMAIL\r\n.\r\n", b"a\r\n.\r\nMAIL\r\n"),
            (b"a\r\n.\nMAIL\r\n.\r\n", b"a\r\n\r\nMAIL\r\n"),
            (b"a\r\n.\rMAIL\r\n.\r\n", b"a\r\n\r\nMAIL\r\n"),
            (b"a\r.\r\nMAIL\r\n.\r\n", b"a\r\n.\r\nMAIL\r\n"),
            (b"a\r\r\n.\r\r\nMAIL\r\n.\r\n", b"a\r\n\r\n\r\n\r\nMAIL\r\n"),
        ] {
            let (out, rest, done) = decode_all(input);
            assert!(done, "{input:?}");
            assert_eq!(out, body, "{input:?}");
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn long_text_is_the_same_in_runs_across_chunks() {
        let (mut input, mut body) = (Vec::new(), Vec::new());
        for i in 0..4000 {
            let line = format!("{i:070}\r\n");
            // Every seventh line starts with a dot, stuffed on the wire.
            if i % 7 == 0 {
                input.extend_from_slice(b"..");
                body.push(b'.');
            }
            input.extend_from_slice(line.as_bytes());
            body.extend_from_slice(line.as_bytes());
        }
        input.extend_from_slice(b".\r\n");
        assert!(body.len() > 4 * CHUNK);
        let (out, rest, done) = decode_all(&input);
        assert!(done && rest.is_empty());
        assert_eq!(out, body);
    }

    #[test]
    fn lines_taken_whole_decode_as_octet_by_octet() {
        // Text of dots, letters, CR and LF in every mix, lines short and long.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..300 {
            let mut input = Vec::new();
            for _ in 0..next(40) {
                let line = match next(8) {
                    0 => 990 + next(20) as usize,
                    _ => next(80) as usize,
                };
                for _ in 0..line {
                    input
                        .push([b'a', b'.', b'x', b'\r', b'\n', b'z', b'z', b'z'][next(8) as usize]);
                }
                input.extend_from_slice([&b"\r\n"[..], b"\n", b"\r", b"\r\n."][next(4) as usize]);
            }
            input.extend_from_slice(b"\r\n.\r\n");
            for max in [u64::MAX, next(3000)] {
                let whole = run(&input, input.len(), max);
                assert_eq!(
                    whole,
                    run(&input, 1, max),
                    "{:?}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
    }

    #[test]
    fn normalises_bare_line_breaks() {
        let (out, _, _) = decode_all(b"a\nb\rc\r\rd\r\n.\r\n");
        assert_eq!(out, b"a\r\nb\r\nc\r\n\r\nd\r\n");
    }

    #[test]
    fn limits_line_length() {
        let mut ok = vec![b'x'; 998];
        ok.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(run(&ok, 4096, u64::MAX).3, None);
        let mut long = vec![b'x'; 999];
        long.extend_from_slice(b"\r\nmore\r\n.\r\n");
        let (out, _, done, refusal) = run(&long, 4096, u64::MAX);
        assert!(done);
        assert_eq!(out, vec![b'x'; 998]);
        assert_eq!(refusal, Some(Reply::new(554, (5, 6, 0), "Line too long")));
    }

    #[test]
    fn limits_size() {
        assert_eq!(run(b"abc\r\n.\r\n", 100, 5).3, None);
        let (_, _, done, refusal) = run(b"abcd\r\n.\r\n", 100, 5);
        assert!(done);
        assert_eq!(refusal, Some(Reply::new(552, (5, 3, 4), "Message too big")));
    }

    #[test]
    fn output_stays_within_chunk() {
        let input = vec![b'\n'; 3 * CHUNK];
        let mut d = Decoder::new(Framing::Dot, u64::MAX);
        let mut out = Vec::new();
        let (used, done) = d.decode(&input, &mut out);
        assert!(!done);
        assert!(out.len() <= CHUNK && out.len() > CHUNK - 3);
        assert_eq!(used * 2, out.len());
    }

    #[test]
    fn counted_text_keeps_dots_and_normalises_across_chunks() {
        let mut d = Decoder::new(Framing::Counted, u64::MAX);
        let mut out = Vec::new();
        for chunk in [&b".\r\n.\nx\r"[..], b"\ny\r"] {
            assert_eq!(d.decode(chunk, &mut out), (chunk.len(), false));
        }
        d.finish(&mut out);
        assert_eq!(out, b".\r\n.\r\nx\r\ny\r\n");
        assert_eq!(d.refusal(), None);
    }
}
