//! Durable state of kvgate.
//!
//! Everything the gateway must not lose lives here: members and their keys, devices,
//! senders, trust anchors, submissions and their tracking events, the spool of accepted
//! letters and the members' inboxes. The embedded backend is [redb], opened by one
//! process at a time (while `kvgate serve` runs, the admin commands go through it).
//! Every write is one redb transaction committed with immediate durability (fsync), and
//! every state change commits together with the tracking event that describes it.
//!
//! Nothing readable of a letter is stored: message bodies are OpenPGP ciphertext, and
//! the only clear-text fields are routing metadata (member, inbox, tracking ID, sizes,
//! times, sender ID). Letter octets are never in the database (redb keeps freed pages
//! until compaction) but in segment files in `bodies/` beside it: a filed letter's
//! ciphertext, and a small accepted letter until it is processed. Each is made durable
//! before the commit that records it and punched out after the one that drops it (a
//! deleted letter at once, a processed one within moments), so its bytes leave the
//! disk with it.

mod account;
mod activity;
mod birthdate;
mod bodies;
mod credentials;
mod db;
mod devices;
mod error;
mod events;
mod family;
mod group;
mod ids;
mod inbox;
mod kvnr;
mod lifecycle;
mod locks;
mod mailbox;
mod members;
mod messages;
mod outbound;
mod puncher;
mod quarantine;
mod recovery;
mod senders;
mod settings;
mod shared_sync;
mod spool;
mod submissions;
#[cfg(test)]
mod testing;
mod threads;
mod time;
mod uploads;

pub use account::Deleted;
pub use activity::ActivityCounts;
pub use birthdate::{BirthDate, InvalidBirthDate, SMARTHEALTH_MIN_AGE};
pub use credentials::{Bearer, CredentialPolicy, IssuedToken};
pub use db::Store;
pub use error::StoreError;
pub use events::{ChainBreak, Event, EventKind, verify_chain};
pub use family::{FamilyMember, FamilyRefusal, MAX_FAMILY};
pub use ids::{DeviceId, MalformedId, MessageId, OutboundId, TrackingId};
// issue 9b: messenger threads.
pub use ids::ThreadId;
pub use inbox::{Page, PageQuery};
pub use kvnr::{Kvnr, KvnrError};
pub use lifecycle::Retention;
pub use mailbox::{Mailbox, UnknownMailbox};
pub use members::{Addressee, Device, EnrolledDevice, KeyOrigin, Member, MemberKey, NewMember};
pub use messages::{Ciphertext, MessageMeta, NewMessage};
pub use outbound::{Outbound, OutboundAttempt, QueueRequest};
pub use quarantine::Quarantined;
pub use senders::{Sender, SenderKind};
pub use settings::{QuotaRefusal, Smarthealth};
pub use spool::{INLINE_MAX, Spool, SpoolFile, Spooled};
pub use submissions::{Recipient, Submission, SubmissionState};
pub use time::{BadTimestamp, Timestamp, now};
pub use uploads::Upload;
// issue 9b: member app sending.
pub use threads::{Thread, ThreadRef};
pub use uploads::{BasicUpload, Cap, Sending, UploadKind};
