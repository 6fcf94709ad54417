//! The member's inboxes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One of a member's inboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mailbox {
    /// Letters from the insurer, where the member turned on app communication.
    Postfach,
    /// The member's electronic health record: physicians' letters and findings.
    Smarthealth,
    /// Copies of what the member sent from the app (uploads, requests), encrypted to
    /// the member's keys like every letter, so they can read them again.
    Sent,
}

/// The name is not one of the mailboxes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown mailbox {0:?} (expected postfach, smarthealth or sent)")]
pub struct UnknownMailbox(pub String);

impl Mailbox {
    /// Every mailbox.
    pub const ALL: [Mailbox; 3] = [Mailbox::Postfach, Mailbox::Smarthealth, Mailbox::Sent];
    /// The mailboxes senders deliver to (`sent` is filled by the member's app only).
    pub const INBOUND: [Mailbox; 2] = [Mailbox::Postfach, Mailbox::Smarthealth];

    /// The lowercase name used in addresses and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Mailbox::Postfach => "postfach",
            Mailbox::Smarthealth => "smarthealth",
            Mailbox::Sent => "sent",
        }
    }
}

impl FromStr for Mailbox {
    type Err = UnknownMailbox;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mailbox::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownMailbox(s.to_owned()))
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
