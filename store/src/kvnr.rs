//! The Krankenversichertennummer (KVNR), the member's lifelong insurance number.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A syntactically valid KVNR: one capital letter, nine digits, the last a check digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Kvnr(String);

/// Why a string is not a KVNR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvnrError {
    /// Not ten characters long.
    #[error("a KVNR has 10 characters (one capital letter and nine digits), this has {0}")]
    Length(usize),
    /// The first character is not a capital letter A–Z.
    #[error("a KVNR starts with a capital letter A-Z")]
    Letter,
    /// One of characters 2–10 is not a digit.
    #[error("a KVNR has nine digits after its letter")]
    Digits,
    /// The check digit does not match.
    #[error("the KVNR check digit is wrong (expected {expected})")]
    CheckDigit {
        /// The check digit the other nine characters call for.
        expected: u8,
    },
}

impl Kvnr {
    /// Parses and validates a KVNR, including its check digit.
    pub fn parse(s: &str) -> Result<Self, KvnrError> {
        let bytes = s.as_bytes();
        if bytes.len() != 10 {
            return Err(KvnrError::Length(s.chars().count()));
        }
        let letter = bytes[0];
        if !letter.is_ascii_uppercase() {
            return Err(KvnrError::Letter);
        }
        if !bytes[1..].iter().all(u8::is_ascii_digit) {
            return Err(KvnrError::Digits);
        }
        let expected = check_digit(letter, &bytes[1..9]);
        if bytes[9] - b'0' != expected {
            return Err(KvnrError::CheckDigit { expected });
        }
        Ok(Kvnr(s.to_owned()))
    }

    /// The KVNR as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The check digit: the letter as its two-digit alphabet position, then the first eight
/// digits; weights 1, 2, 1, 2, …; the digit sums of the products added up, modulo 10.
fn check_digit(letter: u8, digits: &[u8]) -> u8 {
    let position = letter - b'A' + 1;
    let sequence = [position / 10, position % 10]
        .into_iter()
        .chain(digits.iter().map(|d| d - b'0'));
    let sum: u32 = sequence
        .enumerate()
        .map(|(i, d)| {
            let product = u32::from(d) * if i % 2 == 0 { 1 } else { 2 };
            product / 10 + product % 10
        })
        .sum();
    (sum % 10) as u8
}

impl FromStr for Kvnr {
    type Err = KvnrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kvnr::parse(s)
    }
}

impl TryFrom<String> for Kvnr {
    type Error = KvnrError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Kvnr::parse(&s)
    }
}

impl From<Kvnr> for String {
    fn from(k: Kvnr) -> String {
        k.0
    }
}

impl fmt::Display for Kvnr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_numbers() {
        for s in ["A123456780", "X110411319", "Z987654321"] {
            assert_eq!(
                Kvnr::parse(s).map(|k| k.to_string()),
                Ok(s.to_owned()),
                "{s}"
            );
        }
    }

    #[test]
    fn wrong_check_digit() {
        assert_eq!(
            Kvnr::parse("A123456781"),
            Err(KvnrError::CheckDigit { expected: 0 })
        );
    }

    #[test]
    fn wrong_shape() {
        assert_eq!(Kvnr::parse("a123456780"), Err(KvnrError::Letter));
        assert_eq!(Kvnr::parse("A12345678"), Err(KvnrError::Length(9)));
        assert_eq!(Kvnr::parse("A1234567800"), Err(KvnrError::Length(11)));
        assert_eq!(Kvnr::parse(""), Err(KvnrError::Length(0)));
        assert_eq!(Kvnr::parse("A12345678X"), Err(KvnrError::Digits));
        assert_eq!(Kvnr::parse("1123456780"), Err(KvnrError::Letter));
        assert_eq!(Kvnr::parse("Ä12345678"), Err(KvnrError::Letter));
    }

    #[test]
    fn serde_validates() {
        let ok: Result<Kvnr, _> = serde_json::from_str("\"A123456780\"");
        assert!(ok.is_ok());
        let bad: Result<Kvnr, _> = serde_json::from_str("\"A123456781\"");
        assert!(bad.is_err());
    }
}
