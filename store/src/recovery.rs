//! A member's recovery key and client-encrypted key backup.
//!
//! The recovery key is an OpenPGP public key every letter is also encrypted to, so a
//! new device can read old letters once it restored the key's secret. That secret
//! travels in the key backup: an opaque blob the app encrypted, which the gateway
//! keeps but cannot read.

use crate::Store;
use crate::db::{KEY_BACKUPS, MEMBER_KEYS, put, scan};
use crate::error::StoreError;
use crate::kvnr::Kvnr;
use crate::members::{KeyOrigin, MemberKey, key_holder, key_id};
use crate::time::now;

impl Store {
    /// Registers the member's recovery key, replacing any earlier one, in one commit;
    /// `Exists` if it is the key of one of the member's devices.
    pub fn set_recovery_key(
        &self,
        kvnr: &Kvnr,
        fingerprint: &str,
        armored: &str,
    ) -> Result<MemberKey, StoreError> {
        self.write(|tx| {
            if matches!(
                key_holder(tx, kvnr, fingerprint)?,
                Some(KeyOrigin::Device(_))
            ) {
                return Err(StoreError::Exists("member key"));
            }
            let mut keys = tx.open_table(MEMBER_KEYS)?;
            let existing: Vec<MemberKey> = scan(&keys, &format!("{kvnr}/"))?;
            for old in existing.iter().filter(|k| k.origin == KeyOrigin::Recovery) {
                keys.remove(key_id(kvnr, &old.fingerprint).as_str())?;
            }
            let key = MemberKey {
                kvnr: kvnr.clone(),
                fingerprint: fingerprint.to_owned(),
                armored: armored.to_owned(),
                origin: KeyOrigin::Recovery,
                added_at: now(),
            };
            put(&mut keys, &key_id(kvnr, fingerprint), &key)?;
            Ok(key)
        })
    }

    /// The member's recovery key, if one is registered.
    pub fn recovery_key(&self, kvnr: &Kvnr) -> Result<Option<MemberKey>, StoreError> {
        Ok(self
            .member_keys(kvnr)?
            .into_iter()
            .find(|k| k.origin == KeyOrigin::Recovery))
    }

    /// Stores the member's key backup, replacing the earlier one.
    pub fn put_key_backup(&self, kvnr: &Kvnr, blob: &[u8]) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.open_table(KEY_BACKUPS)?.insert(kvnr.as_str(), blob)?;
            Ok(())
        })
    }

    /// The member's key backup, if one is stored.
    pub fn key_backup(&self, kvnr: &Kvnr) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|tx| {
            let backups = tx.open_table(KEY_BACKUPS)?;
            Ok(backups.get(kvnr.as_str())?.map(|b| b.value().to_vec()))
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::testing;

    #[test]
    fn a_new_recovery_key_replaces_the_old_one_and_keeps_device_keys() {
        let (_dir, store) = testing::open();
        let (kvnr, code) = testing::member(&store, "A123456780");
        testing::enroll(&store, &kvnr, &code, "phone", "DEV");
        store.set_recovery_key(&kvnr, "R1", "K1").unwrap();
        store.set_recovery_key(&kvnr, "R2", "K2").unwrap();
        let fingerprints: Vec<_> = store
            .member_keys(&kvnr)
            .unwrap()
            .into_iter()
            .map(|k| k.fingerprint)
            .collect();
        assert_eq!(fingerprints, ["DEV", "R2"]);
        assert_eq!(store.recovery_key(&kvnr).unwrap().unwrap().armored, "K2");

        assert_eq!(store.key_backup(&kvnr).unwrap(), None);
        store.put_key_backup(&kvnr, b"one").unwrap();
        store.put_key_backup(&kvnr, b"two").unwrap();
        assert_eq!(store.key_backup(&kvnr).unwrap().unwrap(), b"two");
    }
}
