//! Identifiers: tracking IDs, message IDs and device IDs.
//!
//! All three are 128-bit values written in Crockford base32 (26 characters): the first
//! 48 bits are the creation time in milliseconds, so IDs sort by time; the remaining 80
//! bits are random. IDs made by one process within the same millisecond are made
//! larger than the one before, so they sort in the order they were made too.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::locks::lock;
use crate::time::now;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The value of the last ID this process made.
static LAST: Mutex<u128> = Mutex::new(0);

fn new_id() -> Result<String, StoreError> {
    let mut random = [0u8; 10];
    getrandom::fill(&mut random)?;
    let millis = u128::from(now().as_millis() & 0xFFFF_FFFF_FFFF);
    let mut value = millis << 80;
    for (i, b) in random.iter().enumerate() {
        value |= u128::from(*b) << (72 - 8 * i);
    }
    {
        let mut last = lock(&LAST);
        if value <= *last {
            // The same millisecond (or a clock set back): after the last, by a random
            // step of up to 2^32, so that consecutive IDs are not one apart.
            value = last.saturating_add(1 + (value & 0xFFFF_FFFF));
        }
        *last = value;
    }
    Ok((0..26)
        .rev()
        .map(|i| char::from(ALPHABET[((value >> (5 * i)) & 31) as usize]))
        .collect())
}

fn is_id(s: &str) -> bool {
    s.len() == 26 && s.bytes().all(|b| ALPHABET.contains(&b)) && s.as_bytes()[0] <= b'7'
}

/// An identifier is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {kind}: {value:?}")]
pub struct MalformedId {
    kind: &'static str,
    value: String,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// A new, unique, time-ordered identifier.
            pub fn generate() -> Result<Self, StoreError> {
                new_id().map($name)
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = MalformedId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                if is_id(s) {
                    Ok($name(s.to_owned()))
                } else {
                    Err(MalformedId { kind: $kind, value: s.to_owned() })
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = MalformedId;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// The tracking ID of one submission: what a sender gets in the SMTP 250 reply.
    TrackingId,
    "tracking ID"
);
id_type!(
    /// The ID of one message in a member's inbox.
    MessageId,
    "message ID"
);
id_type!(
    /// The ID of one enrolled device of a member.
    DeviceId,
    "device ID"
);
id_type!(
    /// The ID of one message in the outbound queue (a receipt, later an upload).
    OutboundId,
    "outbound ID"
);

// issue 9b: messenger threads.
id_type!(
    /// The ID of one messenger thread between a member and the insurer.
    ThreadId,
    "thread ID"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_sort_by_time() {
        let a = TrackingId::generate().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = TrackingId::generate().unwrap();
        assert!(a < b);
        assert_eq!(a.as_str().parse::<TrackingId>().unwrap(), a);
        assert_eq!(a.as_str().len(), 26);
    }

    #[test]
    fn ids_made_in_one_millisecond_sort_in_the_order_they_were_made() {
        let ids: Vec<DeviceId> = (0..1000).map(|_| DeviceId::generate().unwrap()).collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn rejects_foreign_text() {
        assert!("../../etc/passwd".parse::<TrackingId>().is_err());
        assert!("01ARZ3NDEKTSV4RRFFQ69G5FAI".parse::<MessageId>().is_err());
        assert!("81ARZ3NDEKTSV4RRFFQ69G5FAV".parse::<MessageId>().is_err());
        assert!("01ARZ3NDEKTSV4RRFFQ69G5FAV".parse::<MessageId>().is_ok());
    }
}
