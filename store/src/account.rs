//! A member's whole account: what an export reads, and what cancellation deletes.
//!
//! Cancellation removes every record of the member (member, keys, devices, tokens,
//! open enrolment codes, key backup, uploads, smarthealth record, family, messenger
//! threads, every letter, and quarantined letters addressed to the member alone) in one commit, together with a `deleted` tracking event (without content)
//! for each letter and upload; then it punches the letters' bodies out of their
//! segments and compacts the database so that the records' bytes are gone from its
//! file too. The senders' own submission records and tracking histories stay: they
//! belong to the senders.

use redb::ReadableTable;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::db::Tx;

use crate::Store;
use crate::bodies::Extent;
use crate::credentials::EnrollmentCode;
use crate::credentials::revoke_tokens;
use crate::db::{
    ACCESS, DEVICES, ENROLLMENT_CODES, FAMILY, FILED, INBOX, KEY_BACKUPS, MEMBER_KEYS, MEMBERS,
    MESSAGES, Records, SMARTHEALTH, THREAD_REFS, THREADS, UPLOADS, get,
};
use crate::error::StoreError;
use crate::events::{Event, EventKind, append_events};
use crate::ids::{MessageId, TrackingId};
use crate::kvnr::Kvnr;
use crate::mailbox::Mailbox;
use crate::members::Device;
use crate::messages::{MessageMeta, filed_key};
use crate::quarantine::drop_for_member;
use crate::settings::count_usage;
use crate::submissions::SubmissionState;
use crate::uploads::Upload;

/// What cancelling an account deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// Letters deleted from the member's inboxes.
    pub letters: usize,
    /// Upload records deleted.
    pub uploads: usize,
}

/// Compactions put off until a batch of deletions ends.
#[derive(Default)]
pub(crate) struct Scrub {
    /// How many batches are running.
    deferred: AtomicUsize,
    /// Whether a deletion in one of them wants a compaction.
    pending: AtomicBool,
}

/// What one commit of an account's deletion removed.
struct Removed {
    /// What it counts.
    deleted: Deleted,
    /// Where the store kept the letters' bodies, to be punched.
    bodies: Vec<Extent>,
    /// Quarantined letters dropped, whose spool files go too.
    spooled: Vec<TrackingId>,
}

/// Removes every record of `table` whose key starts with `prefix`; returns their
/// values.
fn remove_prefix(tx: &Tx<'_>, table: Records, prefix: &str) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut table = tx.open_table(table)?;
    let mut found = Vec::new();
    for entry in table.range(prefix..)? {
        let (key, value) = entry?;
        if !key.value().starts_with(prefix) {
            break;
        }
        found.push((key.value().to_owned(), value.value().to_vec()));
    }
    let mut values = Vec::with_capacity(found.len());
    for (key, value) in found {
        table.remove(key.as_str())?;
        values.push(value);
    }
    Ok(values)
}

/// Removes every device of the member and revokes its tokens inside `tx`. Devices are
/// looked for by their member, not through the member's keys: a device whose key
/// record another device took over (possible before one key could serve only one
/// device) is found too.
fn remove_devices(tx: &Tx<'_>, kvnr: &Kvnr) -> Result<(), StoreError> {
    let mut devices = tx.open_table(DEVICES)?;
    let mut theirs = Vec::new();
    for entry in devices.iter()? {
        let (_, value) = entry?;
        let device: Device = serde_json::from_slice(value.value())?;
        if device.kvnr == *kvnr {
            theirs.push(device.id);
        }
    }
    for id in theirs {
        devices.remove(id.as_str())?;
        revoke_tokens(tx, &id)?;
    }
    Ok(())
}

/// Deletes the member's letters (of one inbox, or all) inside `tx`, each with a
/// `deleted` tracking event saying `reason`; returns where their bodies are, which the
/// caller punches after the commit.
pub(crate) fn delete_letters(
    tx: &Tx<'_>,
    kvnr: &Kvnr,
    mailbox: Option<Mailbox>,
    reason: &str,
) -> Result<Vec<Extent>, StoreError> {
    let prefix = match mailbox {
        Some(mailbox) => format!("{kvnr}/{mailbox}/"),
        None => format!("{kvnr}/"),
    };
    let mut letters = Vec::new();
    for id in remove_prefix(tx, INBOX, &prefix)? {
        let id: MessageId = serde_json::from_slice(&id)?;
        let Some(meta) = get::<MessageMeta>(&tx.open_table(MESSAGES)?, id.as_str())? else {
            continue;
        };
        tx.open_table(MESSAGES)?.remove(id.as_str())?;
        count_usage(tx, &meta, false)?;
        tx.open_table(FILED)?
            .remove(filed_key(&meta.tracking_id, kvnr, meta.mailbox).as_str())?;
        let event = Event::new(EventKind::Deleted)
            .recipient(&meta.address)
            .detail(reason);
        append_events(tx, &meta.tracking_id, vec![event])?;
        letters.push(meta.body);
    }
    Ok(letters)
}

impl Store {
    /// Compacts after a deletion (see `compact`); a failure is logged, not returned:
    /// the deletion stands, but its bytes stay in the file until the next compaction.
    /// Within [`Store::deferring_scrub`], only once that ends.
    pub(crate) fn scrub(&self) {
        if self.scrub.deferred.load(Ordering::SeqCst) > 0 {
            self.scrub.pending.store(true, Ordering::SeqCst);
            return;
        }
        if let Err(error) = self.compact() {
            tracing::error!(%error, "deleted data is still in the database file: compaction failed");
        }
    }

    /// Runs `f` (deletions, one after another) and compacts once at its end instead of
    /// after each deletion: every compaction rewrites the whole file while every other
    /// store call waits.
    pub fn deferring_scrub<T>(&self, f: impl FnOnce() -> T) -> T {
        self.scrub.deferred.fetch_add(1, Ordering::SeqCst);
        let outcome = f();
        if self.scrub.deferred.fetch_sub(1, Ordering::SeqCst) == 1
            && self.scrub.pending.swap(false, Ordering::SeqCst)
        {
            self.scrub();
        }
        outcome
    }

    /// The ciphertext of one of the member's letters as stored, read only (unlike
    /// `fetch_message`, nothing is recorded); `None` for another member's.
    pub fn message_body(&self, kvnr: &Kvnr, id: &MessageId) -> Result<Option<Vec<u8>>, StoreError> {
        match self.message_meta(kvnr, id)? {
            Some(meta) => self.body(&meta),
            None => Ok(None),
        }
    }

    /// Deletes the member's account irrecoverably: the records in one commit (see the
    /// module documentation), then the letters' bodies, then the records' bytes
    /// from the database file (`compact`); `None` if there is no such member.
    pub fn delete_account(&self, kvnr: &Kvnr, reason: &str) -> Result<Option<Deleted>, StoreError> {
        let Some(removed) = self.delete_records(kvnr, reason)? else {
            return Ok(None);
        };
        self.discard_bodies(&removed.bodies);
        self.remove_spool_files(&removed.spooled);
        self.activity
            .ended(SubmissionState::Failed, removed.spooled.len() as u64);
        self.scrub();
        Ok(Some(removed.deleted))
    }

    /// Deletes every record of the member in one commit; returns what went.
    fn delete_records(&self, kvnr: &Kvnr, reason: &str) -> Result<Option<Removed>, StoreError> {
        self.write(|tx| {
            if tx.open_table(MEMBERS)?.remove(kvnr.as_str())?.is_none() {
                return Ok(None);
            }
            let letters = delete_letters(tx, kvnr, None, reason)?;
            let (quarantined, kept) = drop_for_member(tx, kvnr, reason)?;
            let uploads = remove_prefix(tx, UPLOADS, &format!("{kvnr}/"))?;
            for upload in &uploads {
                let upload: Upload = serde_json::from_slice(upload)?;
                let event = Event::new(EventKind::Deleted).detail(reason);
                append_events(tx, &upload.tracking_id, vec![event])?;
            }
            remove_prefix(tx, MEMBER_KEYS, &format!("{kvnr}/"))?;
            remove_devices(tx, kvnr)?;
            let mut codes = tx.open_table(ENROLLMENT_CODES)?;
            let mut open = Vec::new();
            for entry in codes.iter()? {
                let (key, value) = entry?;
                if serde_json::from_slice::<EnrollmentCode>(value.value())?.kvnr == *kvnr {
                    open.push(key.value().to_owned());
                }
            }
            for key in open {
                codes.remove(key.as_str())?;
            }
            tx.open_table(KEY_BACKUPS)?.remove(kvnr.as_str())?;
            tx.open_table(SMARTHEALTH)?.remove(kvnr.as_str())?;
            tx.open_table(ACCESS)?.remove(kvnr.as_str())?;
            remove_prefix(tx, FAMILY, &format!("{kvnr}/"))?;
            remove_prefix(tx, THREADS, &format!("{kvnr}/"))?;
            remove_prefix(tx, THREAD_REFS, &format!("{kvnr}/"))?;
            let deleted = Deleted {
                letters: letters.len(),
                uploads: uploads.len(),
            };
            let mut bodies = letters;
            bodies.extend(kept);
            Ok(Some(Removed {
                deleted,
                bodies,
                spooled: quarantined,
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Bearer;
    use crate::db::{ALL_TABLES, put};
    use crate::events::tests::submission;
    use crate::members::{KeyOrigin, MemberKey, key_id};
    use crate::testing;
    use crate::threads::{ThreadRef, record_sent};
    use crate::time::now;
    use crate::{Quarantined, Recipient, SubmissionState, ThreadId, TrackingId};
    use redb::TableHandle;

    /// The keys of every table that name `kvnr`.
    fn keys_naming(store: &Store, kvnr: &Kvnr) -> Vec<String> {
        store
            .read(|tx| {
                let mut found = Vec::new();
                for table in ALL_TABLES {
                    for entry in tx.open_table(table)?.iter()? {
                        let key = entry?.0.value().to_owned();
                        if key.contains(kvnr.as_str()) {
                            found.push(format!("{}: {key}", table.name()));
                        }
                    }
                }
                Ok(found)
            })
            .unwrap()
    }

    #[test]
    fn deletions_in_a_batch_are_compacted_once_at_its_end() {
        let (dir, store) = testing::open();
        let file = || std::fs::read(dir.path().join("kvgate.redb")).unwrap();
        let kvnrs = ["A123456780", "X110411319"];
        let members: Vec<Kvnr> = kvnrs
            .iter()
            .map(|kvnr| testing::member(&store, kvnr).0)
            .collect();
        store.deferring_scrub(|| {
            for member in &members {
                store.delete_account(member, "cancelled").unwrap().unwrap();
            }
            let left = file();
            assert!(
                kvnrs
                    .iter()
                    .any(|kvnr| testing::contains(&left, kvnr.as_bytes())),
                "compacted before the batch ended"
            );
        });
        let left = file();
        for kvnr in kvnrs {
            assert!(!testing::contains(&left, kvnr.as_bytes()), "{kvnr} is left");
        }
    }

    #[test]
    fn cancellation_leaves_no_device_thread_or_filing_that_names_the_member() {
        let (dir, store) = testing::open();
        let (alice, code) = testing::member(&store, "A123456780");
        let (bob, bobs_code) = testing::member(&store, "X110411319");
        let phone = testing::enroll(&store, &alice, &code, "phone", "FP1");
        let tablet_code = store.add_enrollment_code(&alice).unwrap();
        let tablet = testing::enroll(&store, &alice, &tablet_code, "tablet", "FP2");
        let bobs = testing::enroll(&store, &bob, &bobs_code, "phone", "FP3");
        // The phone's key record names the tablet, as when a second device could
        // enrol with the same key: the phone is found through no key of the member.
        store
            .write(|tx| {
                let key = MemberKey {
                    kvnr: alice.clone(),
                    fingerprint: "FP1".into(),
                    armored: "KEY".into(),
                    origin: KeyOrigin::Device(tablet.device.id.clone()),
                    added_at: now(),
                };
                put(
                    &mut tx.open_table(MEMBER_KEYS)?,
                    &key_id(&alice, "FP1"),
                    &key,
                )
            })
            .unwrap();
        let thread = ThreadRef {
            thread: ThreadId::generate().unwrap(),
            origin: None,
            message_id: "m.1@kvgate.test".into(),
        };
        store
            .write(|tx| record_sent(tx, &alice, &thread, now()))
            .unwrap();
        let (deleted, _) = testing::file(&store, &alice, Mailbox::Smarthealth, b"DELETED");
        assert!(store.delete_message(&alice, &deleted).unwrap());
        testing::file(&store, &alice, Mailbox::Smarthealth, b"KEPT");
        let late = testing::submitted(&store, &alice, Mailbox::Smarthealth, b"LATE");
        // Quarantined: a letter to Alice alone, one too large to be kept by the store
        // (in a spool file of its own), and one to Alice and Bob.
        let hers = TrackingId::generate().unwrap();
        store
            .accept_submission(&submission(&hers), Some(b"QUARANTINED".to_vec()))
            .unwrap();
        let spool = crate::Spool::open(&dir.path().join("spool")).unwrap();
        store.attach_spool(spool.clone());
        let large = TrackingId::generate().unwrap();
        std::fs::write(spool.path(&large), b"LARGE").unwrap();
        store.accept_submission(&submission(&large), None).unwrap();
        let shared = TrackingId::generate().unwrap();
        let mut both = submission(&shared);
        both.recipients.push(Recipient {
            kvnr: bob.clone(),
            address: format!("{bob}@smarthealth.kvgate.test"),
            ..both.recipients[0].clone()
        });
        store
            .accept_submission(&both, Some(b"SHARED".to_vec()))
            .unwrap();
        for id in [&hers, &large, &shared] {
            let entry = Quarantined::new(id.clone(), "malformed", "d".into(), 1);
            store.quarantine(entry, Vec::new(), Vec::new()).unwrap();
        }
        assert!(!keys_naming(&store, &alice).is_empty());

        let gone = store.delete_account(&alice, "cancelled").unwrap().unwrap();
        assert_eq!(gone.letters, 1);
        assert_eq!(keys_naming(&store, &alice), Vec::<String>::new());
        for token in [&phone.token, &tablet.token] {
            assert_eq!(store.bearer(token, now()).unwrap(), Bearer::Unknown);
        }
        assert!(store.threads(&alice).unwrap().is_empty());
        // A letter encrypted while the account went is not filed for nobody.
        assert!(matches!(
            store.file_message(late, Vec::new()),
            Err(StoreError::NotFound("member"))
        ));
        store.bodies.settle();
        let on_disk = testing::bodies_on_disk(dir.path());
        for letter in [&b"DELETED"[..], b"KEPT", b"LATE", b"QUARANTINED"] {
            assert!(!testing::contains(&on_disk, letter));
        }
        // Her quarantined letter went with her; the one Bob shares stays for him.
        let left: Vec<TrackingId> = store
            .quarantined()
            .unwrap()
            .into_iter()
            .map(|entry| entry.tracking_id)
            .collect();
        assert_eq!(left, [shared]);
        assert!(testing::contains(&on_disk, b"SHARED"));
        for id in [&hers, &large] {
            let gone = store.submission(id).unwrap().unwrap();
            assert_eq!(gone.state, SubmissionState::Failed);
        }
        assert!(!spool.path(&large).exists(), "the spool file stayed");
        // Bob keeps his device.
        assert!(matches!(
            store.bearer(&bobs.token, now()).unwrap(),
            Bearer::Valid { .. }
        ));
        assert!(!keys_naming(&store, &bob).is_empty());
    }
}
