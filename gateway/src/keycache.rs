//! Members' OpenPGP certificates, parsed once and reused for every letter to them.
//!
//! The store is still asked for a member's keys on every letter (a cheap read); the
//! cached parse is used only while those keys are exactly the ones it was made from,
//! so an added, replaced or withdrawn key takes effect with the next letter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kvgate_certs::openpgp::{MemberKey, PgpError, Recipients};
use kvgate_store::{Kvnr, Store, StoreError};

/// How many members' certificates are kept; when full, the cache starts over.
const CAPACITY: usize = 4096;

/// A member's keys as the store gave them, and their parse.
type Entry = (Vec<MemberKey>, Arc<Recipients>);

/// Parsed certificates by member, with the armored keys they were parsed from.
#[derive(Default)]
pub struct KeyCache {
    members: Mutex<HashMap<Kvnr, Entry>>,
}

impl KeyCache {
    /// The parsed certificates of `keys`, the member's current active keys.
    pub fn recipients(
        &self,
        kvnr: &Kvnr,
        keys: Vec<MemberKey>,
    ) -> Result<Arc<Recipients>, PgpError> {
        if let Some((cached, parsed)) = self.lock().get(kvnr)
            && *cached == keys
        {
            return Ok(parsed.clone());
        }
        let parsed = Arc::new(Recipients::parse(&keys)?);
        let mut members = self.lock();
        if members.len() >= CAPACITY {
            members.clear();
        }
        members.insert(kvnr.clone(), (keys, parsed.clone()));
        Ok(parsed)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Kvnr, Entry>> {
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The member's active OpenPGP keys as the store holds them, in the form the OpenPGP
/// library takes.
pub fn member_keys(store: &Store, kvnr: &Kvnr) -> Result<Vec<MemberKey>, StoreError> {
    Ok(store
        .member_keys(kvnr)?
        .into_iter()
        .map(|k| MemberKey {
            fingerprint: k.fingerprint,
            armored: k.armored,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use kvgate_certs::openpgp::generate_member_key;

    use super::*;

    #[test]
    fn a_parse_is_reused_until_the_keys_change() {
        let cache = KeyCache::default();
        let kvnr = Kvnr::parse("A123456780").unwrap();
        let (_, first) = generate_member_key("first <a@example.test>").unwrap();
        let (_, second) = generate_member_key("second <b@example.test>").unwrap();
        let a = cache.recipients(&kvnr, vec![first.clone()]).unwrap();
        let again = cache.recipients(&kvnr, vec![first.clone()]).unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        let changed = cache.recipients(&kvnr, vec![first, second]).unwrap();
        assert!(!Arc::ptr_eq(&a, &changed));
    }
}
