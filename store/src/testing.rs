//! What the store's unit tests share: a fresh store and registered members.

use crate::Store;
use crate::credentials::CredentialPolicy;
use crate::kvnr::Kvnr;
use crate::members::{EnrolledDevice, NewMember};
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
