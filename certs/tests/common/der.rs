//! A minimal DER tree, for tests that rewrite what the `openssl` CLI made (a
//! truncated tag, an added attribute, another OID) and encode it again with
//! correct lengths. Definite lengths and single-octet tags only; panics on anything
//! else, as a test helper may.

/// One element: its identifier octet and its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlv {
    /// The identifier octet.
    pub tag: u8,
    /// The contents.
    pub value: Value,
}

/// The contents of an element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Contents octets of a primitive element.
    Primitive(Vec<u8>),
    /// The elements inside a constructed one.
    Constructed(Vec<Tlv>),
}

impl Tlv {
    /// Reads the one element `der` holds.
    pub fn parse(der: &[u8]) -> Tlv {
        let (tlv, rest) = Tlv::read(der);
        assert!(rest.is_empty(), "{} octets after the element", rest.len());
        tlv
    }

    /// A primitive element.
    pub fn primitive(tag: u8, octets: &[u8]) -> Tlv {
        Tlv {
            tag,
            value: Value::Primitive(octets.to_vec()),
        }
    }

    /// A constructed element.
    pub fn constructed(tag: u8, children: Vec<Tlv>) -> Tlv {
        Tlv {
            tag,
            value: Value::Constructed(children),
        }
    }

    fn read(input: &[u8]) -> (Tlv, &[u8]) {
        let tag = input[0];
        assert_ne!(tag & 0x1f, 0x1f, "multi-octet tag");
        let (len, rest) = match input[1] {
            short @ 0..0x80 => (usize::from(short), &input[2..]),
            0x80 => panic!("indefinite length"),
            long => {
                let count = usize::from(long & 0x7f);
                let len = input[2..2 + count]
                    .iter()
                    .fold(0, |len, &b| (len << 8) | usize::from(b));
                (len, &input[2 + count..])
            }
        };
        let (mut contents, rest) = rest.split_at(len);
        let value = if tag & 0x20 == 0 {
            Value::Primitive(contents.to_vec())
        } else {
            let mut children = Vec::new();
            while !contents.is_empty() {
                let (child, after) = Tlv::read(contents);
                children.push(child);
                contents = after;
            }
            Value::Constructed(children)
        };
        (Tlv { tag, value }, rest)
    }

    /// The DER encoding.
    pub fn encode(&self) -> Vec<u8> {
        let contents = match &self.value {
            Value::Primitive(octets) => octets.clone(),
            Value::Constructed(children) => children.iter().flat_map(Tlv::encode).collect(),
        };
        let mut out = vec![self.tag];
        if contents.len() < 0x80 {
            out.push(contents.len() as u8);
        } else {
            let len = contents.len().to_be_bytes();
            let skip = len.iter().take_while(|&&b| b == 0).count();
            out.push(0x80 | (len.len() - skip) as u8);
            out.extend_from_slice(&len[skip..]);
        }
        out.extend(contents);
        out
    }

    /// The element reached by taking child `path[0]`, then its child `path[1]`, ...
    pub fn at(&mut self, path: &[usize]) -> &mut Tlv {
        path.iter()
            .fold(self, |node, &index| &mut node.children()[index])
    }

    /// The elements inside a constructed element.
    pub fn children(&mut self) -> &mut Vec<Tlv> {
        match &mut self.value {
            Value::Constructed(children) => children,
            Value::Primitive(_) => panic!("a primitive element has no children"),
        }
    }

    /// The contents octets of a primitive element.
    pub fn octets(&mut self) -> &mut Vec<u8> {
        match &mut self.value {
            Value::Primitive(octets) => octets,
            Value::Constructed(_) => panic!("a constructed element has no octets of its own"),
        }
    }
}
