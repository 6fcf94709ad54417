//! What the store's unit tests share: a fresh store and registered members.

use crate::Store;
use crate::kvnr::Kvnr;
use crate::members::NewMember;

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
    };
    let code = store.add_member(new, None).unwrap();
    (kvnr, code)
}
