//! Members, their OpenPGP keys, enrolment codes and devices.

use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::Store;
use crate::birthdate::BirthDate;
use crate::credentials::{CredentialPolicy, EnrollmentCode, issue_token, take_code};
use crate::db::{
    DEVICES, ENROLLMENT_CODES, MEMBER_KEYS, MEMBERS, Tx, USAGE, any_under, get, put, random_hex,
    scan, secret_hash,
};
use crate::error::StoreError;
use crate::ids::DeviceId;
use crate::kvnr::Kvnr;
use crate::mailbox::Mailbox;
use crate::settings::used;
use crate::time::{Timestamp, now};

/// An insured member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member's insurance number.
    pub kvnr: Kvnr,
    /// The member's name, as the insurer knows it (never a letter's content).
    pub name: String,
    /// Whether the member activated the smarthealth inbox.
    pub smarthealth: bool,
    /// Whether the member turned on app communication (Postfach letters).
    pub app_communication: bool,
    /// When the member was registered.
    pub created_at: Timestamp,
    /// When the membership ended, if it did.
    pub ended_at: Option<Timestamp>,
    /// The member's date of birth, if the insurer registered it.
    #[serde(default)]
    pub birth_date: Option<BirthDate>,
}

/// A member as a letter's addressee: what taking a recipient reads of them, in one
/// read transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addressee {
    /// The member.
    pub member: Member,
    /// Whether the member has at least one active OpenPGP key.
    pub has_key: bool,
    /// Octets of ciphertext in the member's smarthealth inbox.
    pub smarthealth_used: u64,
}

fn addressee(tx: &ReadTransaction, kvnr: &Kvnr) -> Result<Option<Addressee>, StoreError> {
    let Some(member) = get::<Member>(&tx.open_table(MEMBERS)?, kvnr.as_str())? else {
        return Ok(None);
    };
    Ok(Some(Addressee {
        member,
        has_key: any_under(&tx.open_table(MEMBER_KEYS)?, &format!("{kvnr}/"))?,
        smarthealth_used: used(&tx.open_table(USAGE)?, kvnr, Mailbox::Smarthealth)?,
    }))
}

/// What `member add` registers.
#[derive(Debug, Clone)]
pub struct NewMember {
    /// The member's insurance number.
    pub kvnr: Kvnr,
    /// The member's name.
    pub name: String,
    /// Whether smarthealth is active.
    pub smarthealth: bool,
    /// Whether app communication is on.
    pub app_communication: bool,
    /// The member's date of birth, if known.
    pub birth_date: Option<BirthDate>,
}

/// Where a member's key came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "device")]
pub enum KeyOrigin {
    /// Registered by the operator (`member add --key`).
    Provisioned,
    /// The key of an enrolled device.
    Device(DeviceId),
    /// The member's recovery key, whose secret the app keeps in the key backup.
    Recovery,
}

/// One of a member's active OpenPGP public keys: every letter is encrypted to all of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberKey {
    /// The member the key belongs to.
    pub kvnr: Kvnr,
    /// The OpenPGP fingerprint (uppercase hex).
    pub fingerprint: String,
    /// The ASCII-armored public certificate.
    pub armored: String,
    /// Where the key came from.
    pub origin: KeyOrigin,
    /// When it was added.
    pub added_at: Timestamp,
}

/// An enrolled device of a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// The device's ID.
    pub id: DeviceId,
    /// The member the device belongs to.
    pub kvnr: Kvnr,
    /// The name the member gave the device.
    pub name: String,
    /// Fingerprint of the device's OpenPGP key.
    pub key_fingerprint: String,
    /// When it was enrolled.
    pub enrolled_at: Timestamp,
}

/// A device that was just enrolled, with its bearer token (shown once, stored hashed).
#[derive(Debug, Clone)]
pub struct EnrolledDevice {
    /// The new device.
    pub device: Device,
    /// The bearer token the app presents from now on.
    pub token: String,
    /// When the token expires (the app refreshes it before).
    pub expires_at: Timestamp,
}

pub(crate) fn key_id(kvnr: &Kvnr, fingerprint: &str) -> String {
    format!("{kvnr}/{fingerprint}")
}

/// A new enrolment code: 80 random bits in four groups of five hex digits.
fn new_code() -> Result<String, StoreError> {
    let raw = random_hex(10)?;
    Ok(raw
        .as_bytes()
        .chunks(5)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect::<Vec<_>>()
        .join("-"))
}

impl Store {
    /// Registers a member with an optional provisioned key (fingerprint, armored), and
    /// returns a single-use enrolment code for the member's first device.
    pub fn add_member(
        &self,
        new: NewMember,
        key: Option<(String, String)>,
    ) -> Result<String, StoreError> {
        let code = new_code()?;
        self.write(|tx| {
            let mut members = tx.open_table(MEMBERS)?;
            if members.get(new.kvnr.as_str())?.is_some() {
                return Err(StoreError::Exists("member"));
            }
            let at = now();
            let member = Member {
                kvnr: new.kvnr.clone(),
                name: new.name,
                smarthealth: new.smarthealth,
                app_communication: new.app_communication,
                created_at: at,
                ended_at: None,
                birth_date: new.birth_date,
            };
            put(&mut members, new.kvnr.as_str(), &member)?;
            if let Some((fingerprint, armored)) = key {
                let record = MemberKey {
                    kvnr: new.kvnr.clone(),
                    fingerprint,
                    armored,
                    origin: KeyOrigin::Provisioned,
                    added_at: at,
                };
                let mut keys = tx.open_table(MEMBER_KEYS)?;
                put(&mut keys, &key_id(&new.kvnr, &record.fingerprint), &record)?;
            }
            let mut codes = tx.open_table(ENROLLMENT_CODES)?;
            let entry = EnrollmentCode {
                kvnr: new.kvnr.clone(),
                created_at: at,
                failures: 0,
            };
            put(&mut codes, &secret_hash(&code), &entry)?;
            Ok(())
        })?;
        Ok(code)
    }

    /// Issues another single-use enrolment code for an existing member.
    pub fn add_enrollment_code(&self, kvnr: &Kvnr) -> Result<String, StoreError> {
        let code = new_code()?;
        self.write(|tx| {
            if get::<Member>(&tx.open_table(MEMBERS)?, kvnr.as_str())?.is_none() {
                return Err(StoreError::NotFound("member"));
            }
            let entry = EnrollmentCode {
                kvnr: kvnr.clone(),
                created_at: now(),
                failures: 0,
            };
            put(
                &mut tx.open_table(ENROLLMENT_CODES)?,
                &secret_hash(&code),
                &entry,
            )
        })?;
        Ok(code)
    }

    /// The member with this KVNR, if registered.
    pub fn member(&self, kvnr: &Kvnr) -> Result<Option<Member>, StoreError> {
        self.read(|tx| get(&tx.open_table(MEMBERS)?, kvnr.as_str()))
    }

    /// The member `kvnr` as a letter's addressee; `None` if not a member.
    pub fn addressee(&self, kvnr: &Kvnr) -> Result<Option<Addressee>, StoreError> {
        self.read(|tx| addressee(tx, kvnr))
    }

    /// Like [`addressee`](Self::addressee), but `None` at once instead of waiting
    /// while a compaction holds the database: for the SMTP listener's async workers.
    pub fn addressee_at_once(&self, kvnr: &Kvnr) -> Option<Result<Option<Addressee>, StoreError>> {
        self.read_at_once(|tx| addressee(tx, kvnr))
    }

    /// The member's active OpenPGP keys.
    pub fn member_keys(&self, kvnr: &Kvnr) -> Result<Vec<MemberKey>, StoreError> {
        self.read(|tx| scan(&tx.open_table(MEMBER_KEYS)?, &format!("{kvnr}/")))
    }

    /// Enrols a device at `at` with a single-use code: the code is consumed, the
    /// device's key joins the member's active keys, and a bearer token is issued. A
    /// wrong, expired or voided code, or a code of another member, is `None` (nothing
    /// is disclosed); the wrong try is counted (see `credentials`) and committed.
    #[allow(clippy::too_many_arguments)]
    pub fn enroll(
        &self,
        kvnr: &Kvnr,
        code: &str,
        device_name: &str,
        key_fingerprint: &str,
        key_armored: &str,
        at: Timestamp,
        policy: &CredentialPolicy,
    ) -> Result<Option<EnrolledDevice>, StoreError> {
        let id = DeviceId::generate()?;
        self.write(|tx| {
            if !take_code(tx, kvnr, code, at, policy)? {
                return Ok(None);
            }
            // A key the operator provisioned becomes the device's; the recovery key or
            // another device's is refused, which aborts the commit (the code stays
            // usable with another key).
            if matches!(
                key_holder(tx, kvnr, key_fingerprint)?,
                Some(KeyOrigin::Recovery | KeyOrigin::Device(_))
            ) {
                return Err(StoreError::Exists("member key"));
            }
            let device = Device {
                id: id.clone(),
                kvnr: kvnr.clone(),
                name: device_name.to_owned(),
                key_fingerprint: key_fingerprint.to_owned(),
                enrolled_at: at,
            };
            put(&mut tx.open_table(DEVICES)?, id.as_str(), &device)?;
            let issued = issue_token(tx, &id, at, policy)?;
            let key = MemberKey {
                kvnr: kvnr.clone(),
                fingerprint: key_fingerprint.to_owned(),
                armored: key_armored.to_owned(),
                origin: KeyOrigin::Device(id.clone()),
                added_at: at,
            };
            put(
                &mut tx.open_table(MEMBER_KEYS)?,
                &key_id(kvnr, key_fingerprint),
                &key,
            )?;
            Ok(Some(EnrolledDevice {
                device,
                token: issued.token,
                expires_at: issued.expires_at,
            }))
        })
    }
}

/// Where the member's key with this fingerprint comes from, inside `tx`; `None` if
/// there is no such key or it was the key of a device no longer enrolled. One key
/// serves one device: a second device with the same key would take over the key's
/// record, and the first would be neither listed nor removed with the account.
pub(crate) fn key_holder(
    tx: &Tx<'_>,
    kvnr: &Kvnr,
    fingerprint: &str,
) -> Result<Option<KeyOrigin>, StoreError> {
    let Some(key) = get::<MemberKey>(&tx.open_table(MEMBER_KEYS)?, &key_id(kvnr, fingerprint))?
    else {
        return Ok(None);
    };
    if let KeyOrigin::Device(id) = &key.origin
        && tx.open_table(DEVICES)?.get(id.as_str())?.is_none()
    {
        return Ok(None);
    }
    Ok(Some(key.origin))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Bearer;
    use crate::testing;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("kvgate.redb")).unwrap();
        (dir, store)
    }

    fn alice() -> NewMember {
        NewMember {
            kvnr: Kvnr::parse("A123456780").unwrap(),
            name: "Alice".into(),
            smarthealth: true,
            app_communication: false,
            birth_date: None,
        }
    }

    #[test]
    fn enrolment_code_is_single_use_and_bound_to_the_member() {
        let (_dir, store) = store();
        let kvnr = alice().kvnr;
        let code = store.add_member(alice(), None).unwrap();
        assert!(matches!(
            store.add_member(alice(), None),
            Err(StoreError::Exists("member"))
        ));
        let other = Kvnr::parse("X110411319").unwrap();
        let policy = CredentialPolicy::default();
        let enroll = |kvnr: &Kvnr, name, fp| {
            store
                .enroll(kvnr, &code, name, fp, "KEY", now(), &policy)
                .unwrap()
        };
        assert!(enroll(&other, "phone", "FP").is_none());
        let enrolled = enroll(&kvnr, "phone", "FP1").unwrap();
        assert!(enroll(&kvnr, "tablet", "FP2").is_none());
        let Bearer::Valid { device, .. } = store.bearer(&enrolled.token, now()).unwrap() else {
            panic!("the token is valid")
        };
        assert_eq!(device.kvnr, kvnr);
        assert_eq!(device.name, "phone");
        assert_eq!(store.bearer("nonsense", now()).unwrap(), Bearer::Unknown);
        let keys = store.member_keys(&kvnr).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].origin, KeyOrigin::Device(device.id));
    }

    #[test]
    fn a_key_serves_one_device_and_the_code_survives_a_refusal() {
        let (_dir, store) = store();
        let kvnr = alice().kvnr;
        let code = store.add_member(alice(), None).unwrap();
        let policy = CredentialPolicy::default();
        let enroll = |code: &str, fp| store.enroll(&kvnr, code, "d", fp, "KEY", now(), &policy);
        let phone = enroll(&code, "FP1").unwrap().unwrap();
        let second = store.add_enrollment_code(&kvnr).unwrap();
        assert!(matches!(
            enroll(&second, "FP1"),
            Err(StoreError::Exists("member key"))
        ));
        store.set_recovery_key(&kvnr, "REC", "KEY").unwrap();
        assert!(matches!(
            enroll(&second, "REC"),
            Err(StoreError::Exists("member key"))
        ));
        assert!(matches!(
            store.set_recovery_key(&kvnr, "FP1", "KEY"),
            Err(StoreError::Exists("member key"))
        ));
        // The refused tries left the code usable; a removed device's key is free again.
        assert!(store.remove_device(&kvnr, &phone.device.id).unwrap());
        let tablet = enroll(&second, "FP1").unwrap().unwrap();
        let keys = store.member_keys(&kvnr).unwrap();
        let fp1 = keys.iter().find(|k| k.fingerprint == "FP1").unwrap();
        assert_eq!(fp1.origin, KeyOrigin::Device(tablet.device.id));
    }

    #[test]
    fn a_member_has_a_key_only_once_one_of_their_own_is_active() {
        let (_dir, store) = store();
        let kvnr = alice().kvnr;
        let code = store.add_member(alice(), None).unwrap();
        // Sorts just before Alice: the first key at or after its prefix is hers.
        let (before, _) = testing::member(&store, "A000000002");
        let has_key = |kvnr| store.addressee(kvnr).unwrap().unwrap().has_key;
        assert!(!has_key(&kvnr));
        store
            .enroll(
                &kvnr,
                &code,
                "phone",
                "FP1",
                "KEY",
                now(),
                &CredentialPolicy::default(),
            )
            .unwrap()
            .unwrap();
        assert!(has_key(&kvnr));
        assert!(!has_key(&before));
    }

    #[test]
    fn an_addressee_is_read_whole_and_at_once_unless_a_compaction_holds_the_store() {
        use std::sync::{Arc, mpsc};

        let (_dir, store) = testing::open();
        let (kvnr, code) = testing::member(&store, "A123456780");
        let stranger = Kvnr::parse("B987654320").unwrap();
        assert!(matches!(store.addressee_at_once(&stranger), Some(Ok(None))));
        let fresh = store.addressee(&kvnr).unwrap().unwrap();
        assert_eq!((fresh.has_key, fresh.smarthealth_used), (false, 0));
        testing::enroll(&store, &kvnr, &code, "phone", "FP1");
        testing::file(&store, &kvnr, Mailbox::Smarthealth, b"12345");
        let expected = Addressee {
            member: store.member(&kvnr).unwrap().unwrap(),
            has_key: true,
            smarthealth_used: store.smarthealth_used(&kvnr).unwrap(),
        };
        assert!(expected.smarthealth_used > 0);
        assert_eq!(store.addressee(&kvnr).unwrap(), Some(expected.clone()));

        // A transaction held open makes the compaction wait for it, holding the
        // database meanwhile: the read at once does not wait.
        let store = Arc::new(store);
        let (opened, is_open) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let reader = {
            let store = store.clone();
            std::thread::spawn(move || {
                store.read(|_| {
                    opened.send(()).unwrap();
                    released.recv().unwrap();
                    Ok(())
                })
            })
        };
        is_open.recv().unwrap();
        let compaction = {
            let store = store.clone();
            std::thread::spawn(move || store.compact())
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.addressee_at_once(&kvnr).is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "the compaction never held the store"
            );
            std::thread::yield_now();
        }
        release.send(()).unwrap();
        reader.join().unwrap().unwrap();
        compaction.join().unwrap().unwrap();
        assert!(matches!(store.addressee_at_once(&kvnr), Some(Ok(Some(a))) if a == expected));
    }
}
