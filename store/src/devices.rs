//! A member's enrolled devices: listing, renaming and removing them.
//!
//! A device is found through the member's keys (every device key is recorded with its
//! device as origin), so listing never scans other members' devices. Removing a device
//! takes its key off the member's active keys and revokes its tokens in the same
//! commit: the next letter filed is no longer encrypted to it.

use crate::db::Tx;

use crate::Store;
use crate::credentials::revoke_tokens;
use crate::db::{DEVICES, MEMBER_KEYS, get, put, scan};
use crate::error::StoreError;
use crate::ids::DeviceId;
use crate::kvnr::Kvnr;
use crate::members::{Device, KeyOrigin, MemberKey, key_id};

/// The member's device with this ID inside `tx`; another member's device is `None`.
fn own_device(tx: &Tx<'_>, kvnr: &Kvnr, id: &DeviceId) -> Result<Option<Device>, StoreError> {
    Ok(get::<Device>(&tx.open_table(DEVICES)?, id.as_str())?.filter(|d| d.kvnr == *kvnr))
}

impl Store {
    /// The member's enrolled devices, oldest first.
    pub fn devices(&self, kvnr: &Kvnr) -> Result<Vec<Device>, StoreError> {
        self.read(|tx| {
            let devices = tx.open_table(DEVICES)?;
            let keys: Vec<MemberKey> = scan(&tx.open_table(MEMBER_KEYS)?, &format!("{kvnr}/"))?;
            let mut out = Vec::new();
            for key in keys {
                if let KeyOrigin::Device(id) = key.origin
                    && let Some(device) = get::<Device>(&devices, id.as_str())?
                {
                    out.push(device);
                }
            }
            out.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(out)
        })
    }

    /// Renames one of the member's devices; `None` if the member has no such device.
    pub fn rename_device(
        &self,
        kvnr: &Kvnr,
        id: &DeviceId,
        name: &str,
    ) -> Result<Option<Device>, StoreError> {
        self.write(|tx| {
            let Some(mut device) = own_device(tx, kvnr, id)? else {
                return Ok(None);
            };
            device.name = name.to_owned();
            put(&mut tx.open_table(DEVICES)?, id.as_str(), &device)?;
            Ok(Some(device))
        })
    }

    /// Removes one of the member's devices with its key and its tokens, in one commit.
    /// Returns false if the member has no such device.
    pub fn remove_device(&self, kvnr: &Kvnr, id: &DeviceId) -> Result<bool, StoreError> {
        self.write(|tx| {
            let Some(device) = own_device(tx, kvnr, id)? else {
                return Ok(false);
            };
            tx.open_table(DEVICES)?.remove(id.as_str())?;
            let mut keys = tx.open_table(MEMBER_KEYS)?;
            let key = key_id(kvnr, &device.key_fingerprint);
            if get::<MemberKey>(&keys, &key)?
                .is_some_and(|k| k.origin == KeyOrigin::Device(id.clone()))
            {
                keys.remove(key.as_str())?;
            }
            revoke_tokens(tx, id)?;
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::credentials::Bearer;
    use crate::testing;
    use crate::time::now;

    #[test]
    fn a_removed_device_loses_its_key_and_token_and_others_are_untouched() {
        let (_dir, store) = testing::open();
        let (alice, code) = testing::member(&store, "A123456780");
        let phone = testing::enroll(&store, &alice, &code, "phone", "FP1");
        let code = store.add_enrollment_code(&alice).unwrap();
        let tablet = testing::enroll(&store, &alice, &code, "tablet", "FP2");
        let (bob, code) = testing::member(&store, "X110411319");
        let bobs = testing::enroll(&store, &bob, &code, "bob", "FP3");

        let names: Vec<_> = store
            .devices(&alice)
            .unwrap()
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(names, ["phone", "tablet"]);

        // Bob cannot touch Alice's device, and Alice not Bob's.
        assert!(!store.remove_device(&bob, &phone.device.id).unwrap());
        assert_eq!(
            store.rename_device(&alice, &bobs.device.id, "x").unwrap(),
            None
        );

        let renamed = store
            .rename_device(&alice, &tablet.device.id, "old tablet")
            .unwrap();
        assert_eq!(renamed.unwrap().name, "old tablet");

        assert!(store.remove_device(&alice, &phone.device.id).unwrap());
        assert!(!store.remove_device(&alice, &phone.device.id).unwrap());
        assert_eq!(store.bearer(&phone.token, now()).unwrap(), Bearer::Unknown);
        assert!(matches!(
            store.bearer(&tablet.token, now()).unwrap(),
            Bearer::Valid { .. }
        ));
        let keys: Vec<_> = store
            .member_keys(&alice)
            .unwrap()
            .into_iter()
            .map(|k| k.fingerprint)
            .collect();
        assert_eq!(keys, ["FP2"]);
        assert_eq!(store.member_keys(&bob).unwrap().len(), 1);
    }
}
