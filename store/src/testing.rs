//! What the store's unit tests share: a fresh store, registered members and filed
//! letters. Compiled for tests only (also declared `#[cfg(test)]` in `lib.rs`): its
//! `unwrap()`s fail a test, never the gateway.

#![cfg(test)]

use std::path::Path;

use crate::Store;
use crate::credentials::CredentialPolicy;
use crate::ids::{MessageId, TrackingId};
use crate::kvnr::Kvnr;
use crate::mailbox::Mailbox;
use crate::members::{EnrolledDevice, NewMember};
use crate::messages::{Ciphertext, NewMessage};
use crate::submissions::{Recipient, Submission, SubmissionState};
use crate::time::now;

/// A fresh store in a temporary directory (removed when the directory is dropped).
pub(crate) fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("kvgate.redb")).unwrap();
    (dir, store)
}

/// Registers a member with app communication and smarthealth on; returns the KVNR
/// and the first enrolment code.
pub(crate) fn member(store: &Store, kvnr: &str) -> (Kvnr, String) {
    let kvnr = Kvnr::parse(kvnr).unwrap();
    let new = NewMember {
        kvnr: kvnr.clone(),
        name: "M".into(),
        smarthealth: true,
        app_communication: true,
        birth_date: None,
    };
    let code = store.add_member(new, None).unwrap();
    (kvnr, code)
}

/// Enrols a device now with the default credential policy; panics if the code is refused.
pub(crate) fn enroll(
    store: &Store,
    kvnr: &Kvnr,
    code: &str,
    name: &str,
    fingerprint: &str,
) -> EnrolledDevice {
    store
        .enroll(
            kvnr,
            code,
            name,
            fingerprint,
            "KEY",
            now(),
            &CredentialPolicy::default(),
        )
        .unwrap()
        .expect("the enrolment code is accepted")
}

/// `octets` stored as the message a member fetches.
pub(crate) fn ciphertext(octets: &[u8]) -> Ciphertext {
    Ciphertext {
        stored: octets.to_vec(),
        size: octets.len() as u64,
    }
}

/// Accepts a submission for `kvnr`'s `mailbox`; returns the message that files
/// `ciphertext` for it.
pub(crate) fn submitted(
    store: &Store,
    kvnr: &Kvnr,
    mailbox: Mailbox,
    ciphertext: &[u8],
) -> NewMessage {
    let tracking_id = TrackingId::generate().unwrap();
    let address = format!("{kvnr}@{mailbox}.kvgate.test");
    store
        .accept_submission(
            &Submission {
                tracking_id: tracking_id.clone(),
                sender_id: "p1".into(),
                mail_from: "praxis@p1.test".into(),
                recipients: vec![Recipient {
                    kvnr: kvnr.clone(),
                    mailbox: Some(mailbox),
                    address: address.clone(),
                    notify: None,
                    orcpt: None,
                }],
                size: ciphertext.len() as u64,
                received_at: now(),
                state: SubmissionState::Accepted,
                ret: None,
                envid: None,
                released: false,
            },
            None,
        )
        .unwrap();
    NewMessage {
        tracking_id,
        kvnr: kvnr.clone(),
        mailbox,
        address,
        ciphertext: self::ciphertext(ciphertext),
        on_read: None,
        thread: None,
        message_id: None,
        quota: None,
    }
}

/// Files a letter of `ciphertext` for `kvnr` in `mailbox`; returns its ID and tracking
/// ID.
pub(crate) fn file(
    store: &Store,
    kvnr: &Kvnr,
    mailbox: Mailbox,
    ciphertext: &[u8],
) -> (MessageId, TrackingId) {
    let message = submitted(store, kvnr, mailbox, ciphertext);
    let tracking_id = message.tracking_id.clone();
    (
        store.file_message(message, Vec::new()).unwrap(),
        tracking_id,
    )
}

/// The contents of every file in the body directory of the store opened in `dir`, one
/// after another (to look for a letter's bytes on disk).
pub(crate) fn bodies_on_disk(dir: &Path) -> Vec<u8> {
    let mut paths: Vec<_> = std::fs::read_dir(dir.join("bodies"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    paths.sort();
    paths
        .iter()
        .flat_map(|path| std::fs::read(path).unwrap())
        .collect()
}

/// Whether `needle` occurs in `haystack`.
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}
