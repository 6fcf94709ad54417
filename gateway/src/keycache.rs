//! Members' OpenPGP certificates, parsed once and reused for every letter to them.
//!
//! The store is still asked for a member's keys on every letter (a cheap read); the
//! cached parse is used only while those keys are exactly the ones it was made from,
//! so an added, replaced or withdrawn key takes effect with the next letter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use kvgate_certs::openpgp::{MemberKey, PgpError, Recipients};
use kvgate_store::Kvnr;

/// How many members' certificates are kept; when full, the cache starts over.
const CAPACITY: usize = 4096;

/// Parsed certificates by member, with the armored keys they were parsed from.
#[derive(Default)]
pub struct KeyCache {
    members: Mutex<HashMap<Kvnr, (Vec<MemberKey>, Arc<Recipients>)>>,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Kvnr, (Vec<MemberKey>, Arc<Recipients>)>> {
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
