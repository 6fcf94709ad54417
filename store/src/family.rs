//! A member's registered family members: people the member may send documents and
//! requests for, by KVNR and name. Nothing else of theirs is reachable through it.

use serde::{Deserialize, Serialize};

use crate::Store;
use crate::db::{FAMILY, get, put, scan};
use crate::error::StoreError;
use crate::kvnr::Kvnr;
use crate::time::Timestamp;

/// Most family members one member may register.
pub const MAX_FAMILY: usize = 20;

/// A family member registered by a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyMember {
    /// The family member's KVNR.
    pub kvnr: Kvnr,
    /// Their name, as the member gave it.
    pub name: String,
    /// When the member registered them.
    pub added_at: Timestamp,
}

/// Why a family member could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyRefusal {
    /// This KVNR is already registered.
    Exists,
    /// The member has [`MAX_FAMILY`] family members already.
    Full,
}

fn family_key(owner: &Kvnr, kvnr: &Kvnr) -> String {
    format!("{owner}/{kvnr}")
}

impl Store {
    /// Registers a family member of `owner`, in one commit.
    pub fn add_family_member(
        &self,
        owner: &Kvnr,
        member: &FamilyMember,
    ) -> Result<Result<(), FamilyRefusal>, StoreError> {
        self.write(|tx| {
            let mut family = tx.open_table(FAMILY)?;
            let key = family_key(owner, &member.kvnr);
            if get::<FamilyMember>(&family, &key)?.is_some() {
                return Ok(Err(FamilyRefusal::Exists));
            }
            if scan::<FamilyMember>(&family, &format!("{owner}/"))?.len() >= MAX_FAMILY {
                return Ok(Err(FamilyRefusal::Full));
            }
            put(&mut family, &key, member)?;
            Ok(Ok(()))
        })
    }

    /// The family members `owner` registered, by KVNR.
    pub fn family(&self, owner: &Kvnr) -> Result<Vec<FamilyMember>, StoreError> {
        self.read(|tx| scan(&tx.open_table(FAMILY)?, &format!("{owner}/")))
    }

    /// Removes a family member of `owner`; false if there was none with that KVNR.
    pub fn remove_family_member(&self, owner: &Kvnr, kvnr: &Kvnr) -> Result<bool, StoreError> {
        self.write(|tx| {
            let removed = tx
                .open_table(FAMILY)?
                .remove(family_key(owner, kvnr).as_str())?
                .is_some();
            Ok(removed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use crate::time::now;

    fn relative(kvnr: &str) -> FamilyMember {
        FamilyMember {
            kvnr: Kvnr::parse(kvnr).unwrap(),
            name: "Kid".into(),
            added_at: now(),
        }
    }

    #[test]
    fn family_members_belong_to_the_member_who_added_them() {
        let (_dir, store) = testing::open();
        let (alice, _) = testing::member(&store, "A123456780");
        let (bob, _) = testing::member(&store, "X110411319");
        let kid = relative("C123456784");
        assert_eq!(store.add_family_member(&alice, &kid).unwrap(), Ok(()));
        assert_eq!(
            store.add_family_member(&alice, &kid).unwrap(),
            Err(FamilyRefusal::Exists)
        );
        assert_eq!(store.family(&alice).unwrap()[0].kvnr, kid.kvnr);
        assert!(store.family(&bob).unwrap().is_empty());
        assert!(!store.remove_family_member(&bob, &kid.kvnr).unwrap());
        assert_eq!(store.family(&alice).unwrap(), vec![kid.clone()]);
        assert!(store.remove_family_member(&alice, &kid.kvnr).unwrap());
        assert!(store.family(&alice).unwrap().is_empty());
    }

    #[test]
    fn a_member_registers_at_most_max_family() {
        let (_dir, store) = testing::open();
        let (alice, _) = testing::member(&store, "A123456780");
        // Valid KVNRs E000000010.., each with the check digit that fits.
        let valid = (10..).map(|n| {
            (0..10)
                .find_map(|check| Kvnr::parse(&format!("E{n:08}{check}")).ok())
                .unwrap()
        });
        for kvnr in valid.take(MAX_FAMILY + 1).collect::<Vec<_>>() {
            let fits = store.family(&alice).unwrap().len() < MAX_FAMILY;
            let member = FamilyMember {
                kvnr,
                name: "N".into(),
                added_at: now(),
            };
            let expected = if fits {
                Ok(())
            } else {
                Err(FamilyRefusal::Full)
            };
            assert_eq!(store.add_family_member(&alice, &member).unwrap(), expected);
        }
        assert_eq!(store.family(&alice).unwrap().len(), MAX_FAMILY);
    }
}
