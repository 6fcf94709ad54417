//! What the retention rules need: membership end, the member's last access, and
//! closing one inbox. The rules themselves (how long after what) are the gateway's.

use redb::ReadableTable;

use crate::Store;
use crate::account::delete_letters;
use crate::db::{ACCESS, MEMBERS, SMARTHEALTH, get, put};
use crate::error::StoreError;
use crate::kvnr::Kvnr;
use crate::mailbox::Mailbox;
use crate::members::Member;
use crate::time::Timestamp;

/// Accesses closer together than this are recorded once (a day), so that reading
/// letters does not cost a durable write each time.
const ACCESS_RESOLUTION_MS: u64 = 24 * 3600 * 1000;

/// A member as the retention rules see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// The member.
    pub member: Member,
    /// When the member's app last used the API (to the day), or when the member was
    /// registered if never.
    pub last_access: Timestamp,
}

impl Store {
    /// Records that the membership of `kvnr` ended at `at`; `None` if not a member.
    pub fn end_membership(&self, kvnr: &Kvnr, at: Timestamp) -> Result<Option<Member>, StoreError> {
        self.write(|tx| {
            let mut members = tx.open_table(MEMBERS)?;
            let Some(mut member) = get::<Member>(&members, kvnr.as_str())? else {
                return Ok(None);
            };
            member.ended_at = Some(at);
            put(&mut members, kvnr.as_str(), &member)?;
            Ok(Some(member))
        })
    }

    /// Records that the member's app used the API at `at` (at most one write a day);
    /// nothing for a member who is gone (an account deleted while one of its requests
    /// ran leaves no record behind).
    pub fn record_access(&self, kvnr: &Kvnr, at: Timestamp) -> Result<(), StoreError> {
        let recent = |last: Option<Timestamp>| {
            last.is_some_and(|last| at.0 < last.0.saturating_add(ACCESS_RESOLUTION_MS))
        };
        let last = self.read(|tx| get::<Timestamp>(&tx.open_table(ACCESS)?, kvnr.as_str()))?;
        if recent(last) {
            return Ok(());
        }
        self.write(|tx| {
            let mut access = tx.open_table(ACCESS)?;
            if recent(get(&access, kvnr.as_str())?)
                || tx.open_table(MEMBERS)?.get(kvnr.as_str())?.is_none()
            {
                return Ok(());
            }
            put(&mut access, kvnr.as_str(), &at)
        })
    }

    /// Every member with their last access, by KVNR.
    pub fn retention(&self) -> Result<Vec<Retention>, StoreError> {
        self.read(|tx| {
            let access = tx.open_table(ACCESS)?;
            let mut out = Vec::new();
            for entry in tx.open_table(MEMBERS)?.iter()? {
                let (_, value) = entry?;
                let member: Member = serde_json::from_slice(value.value())?;
                let last_access = get::<Timestamp>(&access, member.kvnr.as_str())?
                    .map_or(member.created_at, |at| at.max(member.created_at));
                out.push(Retention {
                    member,
                    last_access,
                });
            }
            Ok(out)
        })
    }

    /// Closes the member's smarthealth inbox: its letters are deleted (each with a
    /// `deleted` event saying `reason`), smarthealth is off and its record gone, in one
    /// commit; then the letters' bodies are punched and the database is compacted.
    /// Returns how many letters went.
    pub fn close_smarthealth(&self, kvnr: &Kvnr, reason: &str) -> Result<usize, StoreError> {
        let letters = self.write(|tx| {
            let mut members = tx.open_table(MEMBERS)?;
            if let Some(mut member) = get::<Member>(&members, kvnr.as_str())? {
                member.smarthealth = false;
                put(&mut members, kvnr.as_str(), &member)?;
            }
            tx.open_table(SMARTHEALTH)?.remove(kvnr.as_str())?;
            delete_letters(tx, kvnr, Some(Mailbox::Smarthealth), reason)
        })?;
        self.discard_bodies(&letters);
        self.scrub();
        Ok(letters.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[test]
    fn access_of_a_member_who_is_gone_leaves_no_record() {
        let (_dir, store) = testing::open();
        let (alice, _) = testing::member(&store, "A123456780");
        store.delete_account(&alice, "cancelled").unwrap().unwrap();
        store.record_access(&alice, crate::time::now()).unwrap();
        let left = store
            .read(|tx| get::<Timestamp>(&tx.open_table(ACCESS)?, alice.as_str()))
            .unwrap();
        assert_eq!(left, None);
    }

    #[test]
    fn access_is_recorded_once_a_day_and_ending_is_kept() {
        let (_dir, store) = testing::open();
        let (alice, _) = testing::member(&store, "A123456780");
        let created = store.member(&alice).unwrap().unwrap().created_at;
        assert_eq!(store.retention().unwrap()[0].last_access, created);
        let day = ACCESS_RESOLUTION_MS;
        let t = Timestamp(created.0 + 10 * day);
        store.record_access(&alice, t).unwrap();
        store
            .record_access(&alice, Timestamp(t.0 + day - 1))
            .unwrap();
        assert_eq!(store.retention().unwrap()[0].last_access, t);
        store.record_access(&alice, Timestamp(t.0 + day)).unwrap();
        assert_eq!(
            store.retention().unwrap()[0].last_access,
            Timestamp(t.0 + day)
        );

        let ended = store.end_membership(&alice, t).unwrap().unwrap();
        assert_eq!(ended.ended_at, Some(t));
        assert_eq!(store.retention().unwrap()[0].member.ended_at, Some(t));
        let stranger = Kvnr::parse("B987654320").unwrap();
        assert_eq!(store.end_membership(&stranger, t).unwrap(), None);
    }
}
