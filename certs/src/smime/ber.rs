//! Reading BER (indefinite lengths, constructed strings) into a tree that is
//! written back as DER, so a DER library can decode what practice systems send.
//!
//! Bounded: at most [`MAX_DEPTH`] nested elements, lengths never beyond the input,
//! and at most [`MIN_ELEMENTS`] elements plus one per 64 octets of input (so a
//! flood of empty elements cannot make the tree many times larger than the input).

/// The deepest nesting read; CMS structures need about a dozen levels.
pub(super) const MAX_DEPTH: usize = 32;

/// Elements always allowed, whatever the input's size.
pub(super) const MIN_ELEMENTS: usize = 4096;

/// Tag of a universal, primitive OCTET STRING.
const OCTET_STRING: u8 = 0x04;
/// The constructed bit of an identifier octet.
const CONSTRUCTED: u8 = 0x20;

/// Why BER could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum BerError {
    /// The input ends inside an element.
    #[error("the encoding ends inside an element")]
    Truncated,
    /// A length is longer than what follows, or bytes follow the outermost element.
    #[error("an element's length does not fit the encoding")]
    BadLength,
    /// Tag numbers above 30, which CMS never uses.
    #[error("an element uses a multi-octet tag")]
    HighTag,
    /// A primitive element with an indefinite length.
    #[error("a primitive element has an indefinite length")]
    IndefinitePrimitive,
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("the elements nest more than {MAX_DEPTH} deep")]
    TooDeep,
    /// More elements than the input's size allows.
    #[error("the encoding holds too many elements for its size")]
    TooMany,
    /// A constructed string whose segments are not octet strings.
    #[error("a constructed octet string holds something else")]
    BadSegment,
}

/// One element: its identifier octet and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Node {
    /// The identifier octet (class, constructed bit, tag number).
    pub tag: u8,
    /// The contents.
    pub value: Value,
}

/// The contents of an element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Value {
    /// Contents octets of a primitive element.
    Primitive(Vec<u8>),
    /// The elements inside a constructed one.
    Constructed(Vec<Node>),
}

impl Node {
    /// The elements inside; none for a primitive element.
    pub fn children(&self) -> &[Node] {
        match &self.value {
            Value::Constructed(children) => children,
            Value::Primitive(_) => &[],
        }
    }

    /// The elements inside, mutable; none for a primitive element.
    pub fn children_mut(&mut self) -> &mut [Node] {
        match &mut self.value {
            Value::Constructed(children) => children,
            Value::Primitive(_) => &mut [],
        }
    }

    /// Turns a constructed string (BER segments, each an OCTET STRING) into the
    /// primitive element DER requires, keeping the tag's class and number. Used
    /// where the schema says the element is an (implicitly tagged) OCTET STRING.
    pub fn join_segments(&mut self) -> Result<(), BerError> {
        if let Value::Constructed(segments) = &self.value {
            let mut joined = Vec::new();
            for segment in segments {
                match (&segment.value, segment.tag & !CONSTRUCTED) {
                    (Value::Primitive(octets), OCTET_STRING) => joined.extend_from_slice(octets),
                    _ => return Err(BerError::BadSegment),
                }
            }
            self.tag &= !CONSTRUCTED;
            self.value = Value::Primitive(joined);
        }
        Ok(())
    }

    /// The DER encoding: definite lengths throughout.
    pub fn to_der(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.push(self.tag);
        match &self.value {
            Value::Primitive(octets) => {
                write_length(octets.len(), out);
                out.extend_from_slice(octets);
            }
            Value::Constructed(children) => {
                let mut inner = Vec::new();
                for child in children {
                    child.write(&mut inner);
                }
                write_length(inner.len(), out);
                out.extend_from_slice(&inner);
            }
        }
    }
}

/// Reads one BER element that spans all of `input`. Universal constructed
/// OCTET STRINGs become primitive ones; implicitly tagged ones are left for
/// the caller, who knows the schema ([`Node::join_segments`]).
pub(super) fn parse(input: &[u8]) -> Result<Node, BerError> {
    let mut budget = MIN_ELEMENTS + input.len() / 64;
    let (node, rest) = element(input, 0, &mut budget)?;
    match rest {
        [] => Ok(node),
        _ => Err(BerError::BadLength),
    }
}

/// Reads one element from the start of `input`; returns it and what follows.
fn element<'i>(
    input: &'i [u8],
    depth: usize,
    budget: &mut usize,
) -> Result<(Node, &'i [u8]), BerError> {
    if depth > MAX_DEPTH {
        return Err(BerError::TooDeep);
    }
    *budget = budget.checked_sub(1).ok_or(BerError::TooMany)?;
    let (&tag, rest) = input.split_first().ok_or(BerError::Truncated)?;
    if tag & 0x1f == 0x1f {
        return Err(BerError::HighTag);
    }
    let (length, rest) = length(rest)?;
    let constructed = tag & CONSTRUCTED != 0;
    let (value, rest) = match (constructed, length) {
        (false, None) => return Err(BerError::IndefinitePrimitive),
        (false, Some(len)) => {
            let (octets, rest) = rest.split_at_checked(len).ok_or(BerError::BadLength)?;
            (Value::Primitive(octets.to_vec()), rest)
        }
        (true, Some(len)) => {
            let (mut inner, rest) = rest.split_at_checked(len).ok_or(BerError::BadLength)?;
            let mut children = Vec::new();
            while !inner.is_empty() {
                let (child, after) = element(inner, depth + 1, budget)?;
                children.push(child);
                inner = after;
            }
            (Value::Constructed(children), rest)
        }
        (true, None) => {
            let mut inner = rest;
            let mut children = Vec::new();
            loop {
                if let [0, 0, after @ ..] = inner {
                    break (Value::Constructed(children), after);
                }
                let (child, after) = element(inner, depth + 1, budget)?;
                children.push(child);
                inner = after;
            }
        }
    };
    let mut node = Node { tag, value };
    if tag == OCTET_STRING | CONSTRUCTED {
        node.join_segments()?;
    }
    Ok((node, rest))
}

/// Reads a length: `None` for the indefinite form.
fn length(input: &[u8]) -> Result<(Option<usize>, &[u8]), BerError> {
    let (&first, rest) = input.split_first().ok_or(BerError::Truncated)?;
    match first {
        0x80 => Ok((None, rest)),
        0..0x80 => Ok((Some(usize::from(first)), rest)),
        _ => {
            let count = usize::from(first & 0x7f);
            if count > 4 {
                return Err(BerError::BadLength);
            }
            let (octets, rest) = rest.split_at_checked(count).ok_or(BerError::Truncated)?;
            let len = octets
                .iter()
                .fold(0usize, |len, &octet| (len << 8) | usize::from(octet));
            if len > rest.len() {
                return Err(BerError::BadLength);
            }
            Ok((Some(len), rest))
        }
    }
}

/// Writes a DER length.
fn write_length(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        // In range: checked just above.
        out.push(len as u8);
        return;
    }
    let octets = len.to_be_bytes();
    let skip = octets.iter().take_while(|&&b| b == 0).count();
    out.push(0x80 | (octets.len() - skip) as u8);
    out.extend_from_slice(&octets[skip..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indefinite_lengths_and_segments_become_der() {
        // SEQUENCE (indefinite) { OCTET STRING constructed { "ab", "c" }, [0] constructed { "d" } }
        let ber = [
            0x30, 0x80, 0x24, 0x80, 0x04, 0x02, b'a', b'b', 0x04, 0x01, b'c', 0, 0, 0xa0, 0x03,
            0x04, 0x01, b'd', 0, 0,
        ];
        let mut node = parse(&ber).unwrap();
        assert_eq!(
            node.to_der(),
            [
                0x30, 0x0a, 0x04, 0x03, b'a', b'b', b'c', 0xa0, 0x03, 0x04, 0x01, b'd'
            ]
        );
        node.children_mut()[1].join_segments().unwrap();
        assert_eq!(
            node.to_der(),
            [0x30, 0x08, 0x04, 0x03, b'a', b'b', b'c', 0x80, 0x01, b'd']
        );
    }

    #[test]
    fn refuses_what_does_not_fit() {
        assert_eq!(parse(&[0x30, 0x80, 0x04, 0x00]), Err(BerError::Truncated));
        assert_eq!(
            parse(&[0x04, 0x84, 0xff, 0xff, 0xff, 0xff, 0x00]),
            Err(BerError::BadLength)
        );
        assert_eq!(
            parse(&[0x04, 0x80, 0, 0]),
            Err(BerError::IndefinitePrimitive)
        );
        assert_eq!(parse(&[0x04, 0x00, 0x00]), Err(BerError::BadLength));
        let mut deep = Vec::new();
        for _ in 0..1000 {
            deep.extend_from_slice(&[0x30, 0x80]);
        }
        assert_eq!(parse(&deep), Err(BerError::TooDeep));
        let mut flood = vec![0x30, 0x80];
        for _ in 0..20_000 {
            flood.extend_from_slice(&[0x04, 0x00]);
        }
        flood.extend_from_slice(&[0, 0]);
        assert_eq!(parse(&flood), Err(BerError::TooMany));
    }
}
