//! A member's own settings: app communication, and the smarthealth record (activation
//! with the accepted terms version, storage used, and letters refused over quota).

use serde::{Deserialize, Serialize};

use crate::Store;
use crate::db::{MEMBERS, ReadRecords, SMARTHEALTH, Tx, USAGE, get, put};
use crate::error::StoreError;
use crate::kvnr::Kvnr;
use crate::mailbox::Mailbox;
use crate::members::Member;
use crate::messages::MessageMeta;
use crate::time::Timestamp;

/// How many quota refusals a member's record keeps (the latest).
const REFUSALS_KEPT: usize = 20;

/// A letter refused because the member's smarthealth storage was full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaRefusal {
    /// When it was refused.
    pub at: Timestamp,
    /// The sender that tried to deliver it.
    pub sender_id: String,
    /// Its size in octets (as declared with SIZE=, or as received).
    pub size: u64,
    /// Storage used at that moment, in octets.
    pub used: u64,
    /// The quota, in octets.
    pub quota: u64,
}

/// The stored part of a member's smarthealth record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Record {
    terms_version: Option<String>,
    activated_at: Option<Timestamp>,
    refusals: Vec<QuotaRefusal>,
}

/// A member's smarthealth record as the member sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smarthealth {
    /// Whether smarthealth is active.
    pub active: bool,
    /// The terms version the member accepted (none if the insurer activated it).
    pub terms_version: Option<String>,
    /// When the member activated it through the app.
    pub activated_at: Option<Timestamp>,
    /// Octets of ciphertext stored in the member's smarthealth inbox.
    pub used: u64,
    /// The latest letters refused over quota, oldest first.
    pub refusals: Vec<QuotaRefusal>,
}

/// Changes the member record of `kvnr` with `change` in one commit; `None` if there
/// is no such member.
fn update_member(
    store: &Store,
    kvnr: &Kvnr,
    change: impl FnOnce(&mut Member),
) -> Result<Option<Member>, StoreError> {
    store.write(|tx| {
        let mut members = tx.open_table(MEMBERS)?;
        let Some(mut member) = get::<Member>(&members, kvnr.as_str())? else {
            return Ok(None);
        };
        change(&mut member);
        put(&mut members, kvnr.as_str(), &member)?;
        Ok(Some(member))
    })
}

impl Store {
    /// Turns the member's app communication on or off; `None` if not a member.
    pub fn set_app_communication(
        &self,
        kvnr: &Kvnr,
        on: bool,
    ) -> Result<Option<Member>, StoreError> {
        update_member(self, kvnr, |m| m.app_communication = on)
    }

    /// Activates the member's smarthealth inbox at `at` with the accepted terms
    /// version, in one commit; false if not a member.
    pub fn activate_smarthealth(
        &self,
        kvnr: &Kvnr,
        terms_version: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let mut members = tx.open_table(MEMBERS)?;
            let Some(mut member) = get::<Member>(&members, kvnr.as_str())? else {
                return Ok(false);
            };
            member.smarthealth = true;
            put(&mut members, kvnr.as_str(), &member)?;
            let mut records = tx.open_table(SMARTHEALTH)?;
            let mut record = get::<Record>(&records, kvnr.as_str())?.unwrap_or_default();
            record.terms_version = Some(terms_version.to_owned());
            record.activated_at = Some(at);
            put(&mut records, kvnr.as_str(), &record)?;
            Ok(true)
        })
    }

    /// Octets of ciphertext in the member's smarthealth inbox.
    pub fn smarthealth_used(&self, kvnr: &Kvnr) -> Result<u64, StoreError> {
        self.read(|tx| used(&tx.open_table(USAGE)?, kvnr, Mailbox::Smarthealth))
    }

    /// The member's smarthealth record; `None` if not a member.
    pub fn smarthealth(&self, kvnr: &Kvnr) -> Result<Option<Smarthealth>, StoreError> {
        self.read(|tx| {
            let Some(member) = get::<Member>(&tx.open_table(MEMBERS)?, kvnr.as_str())? else {
                return Ok(None);
            };
            let record =
                get::<Record>(&tx.open_table(SMARTHEALTH)?, kvnr.as_str())?.unwrap_or_default();
            Ok(Some(Smarthealth {
                active: member.smarthealth,
                terms_version: record.terms_version,
                activated_at: record.activated_at,
                used: used(&tx.open_table(USAGE)?, kvnr, Mailbox::Smarthealth)?,
                refusals: record.refusals,
            }))
        })
    }

    /// Records that a letter for the member was refused over quota (the latest
    /// [`REFUSALS_KEPT`] are kept), so the member's app can show why it never came.
    pub fn record_quota_refusal(
        &self,
        kvnr: &Kvnr,
        refusal: QuotaRefusal,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut records = tx.open_table(SMARTHEALTH)?;
            let mut record = get::<Record>(&records, kvnr.as_str())?.unwrap_or_default();
            record.refusals.push(refusal);
            let excess = record.refusals.len().saturating_sub(REFUSALS_KEPT);
            record.refusals.drain(..excess);
            put(&mut records, kvnr.as_str(), &record)
        })
    }
}

/// Octets of ciphertext in the member's `mailbox`, from its `usage` table.
pub(crate) fn used(
    usage: &impl ReadRecords,
    kvnr: &Kvnr,
    mailbox: Mailbox,
) -> Result<u64, StoreError> {
    let key = format!("{kvnr}/{mailbox}");
    Ok(get::<u64>(usage, &key)?.unwrap_or(0))
}

/// Counts a message filed (`filed`) or deleted in its inbox's usage, inside the
/// transaction that files or deletes it; an inbox emptied leaves no record.
pub(crate) fn count_usage(tx: &Tx<'_>, meta: &MessageMeta, filed: bool) -> Result<(), StoreError> {
    let key = format!("{}/{}", meta.kvnr, meta.mailbox);
    let mut usage = tx.open_table(USAGE)?;
    let before = get::<u64>(&usage, &key)?.unwrap_or(0);
    let after = if filed {
        before.saturating_add(meta.size)
    } else {
        before.saturating_sub(meta.size)
    };
    if after == 0 {
        usage.remove(key.as_str())?;
        Ok(())
    } else {
        put(&mut usage, &key, &after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use crate::time::now;

    #[test]
    fn smarthealth_usage_follows_filing_and_deletion() {
        let (_dir, store) = testing::open();
        let (alice, _) = testing::member(&store, "A123456780");
        let (bob, _) = testing::member(&store, "X110411319");
        let (first, _) = testing::file(&store, &alice, Mailbox::Smarthealth, &[1; 100]);
        testing::file(&store, &alice, Mailbox::Smarthealth, &[2; 30]);
        testing::file(&store, &alice, Mailbox::Postfach, &[3; 7]);
        testing::file(&store, &bob, Mailbox::Smarthealth, &[4; 5]);
        assert_eq!(store.smarthealth_used(&alice).unwrap(), 130);
        assert_eq!(store.smarthealth_used(&bob).unwrap(), 5);
        assert!(store.delete_message(&alice, &first).unwrap());
        assert_eq!(store.smarthealth_used(&alice).unwrap(), 30);
        assert_eq!(store.smarthealth(&alice).unwrap().unwrap().used, 30);
        // Closing smarthealth empties it: no usage record is left behind.
        store.close_smarthealth(&alice, "test").unwrap();
        assert_eq!(store.smarthealth_used(&alice).unwrap(), 0);
        let left = store
            .read(|tx| {
                Ok(tx
                    .open_table(USAGE)?
                    .get("A123456780/smarthealth")?
                    .is_some())
            })
            .unwrap();
        assert!(!left);
        assert_eq!(store.smarthealth_used(&bob).unwrap(), 5);
    }

    #[test]
    fn a_quota_is_checked_in_the_commit_that_files_the_letter() {
        let (_dir, store) = testing::open();
        let (alice, _) = testing::member(&store, "A123456780");
        let with_quota = |octets: &[u8], quota| {
            let mut message = testing::submitted(&store, &alice, Mailbox::Smarthealth, octets);
            message.quota = Some(quota);
            store.file_message(message, Vec::new())
        };
        with_quota(&[1; 60], 100).unwrap();
        // 60 + 40 reaches the quota exactly; one octet more does not fit.
        assert!(matches!(
            with_quota(&[2; 41], 100),
            Err(StoreError::Full("inbox"))
        ));
        with_quota(&[3; 40], 100).unwrap();
        assert_eq!(store.smarthealth_used(&alice).unwrap(), 100);
    }

    #[test]
    fn usage_and_size_count_the_message_a_member_fetches() {
        let (_dir, store) = testing::open();
        let (alice, _) = testing::member(&store, "A123456780");
        let mut message = testing::submitted(&store, &alice, Mailbox::Smarthealth, b"BINARY");
        message.ciphertext.size = 8;
        let id = store.file_message(message, Vec::new()).unwrap();
        assert_eq!(store.smarthealth_used(&alice).unwrap(), 8);
        let (meta, stored) = store.fetch_message(&alice, &id).unwrap().unwrap();
        assert_eq!((meta.size, stored.as_slice()), (8, &b"BINARY"[..]));
    }

    #[test]
    fn settings_change_only_their_member_and_refusals_are_capped() {
        let (_dir, store) = testing::open();
        let (alice, _) = testing::member(&store, "A123456780");
        let (bob, _) = testing::member(&store, "X110411319");
        let off = store.set_app_communication(&alice, false).unwrap().unwrap();
        assert!(!off.app_communication);
        assert!(store.member(&bob).unwrap().unwrap().app_communication);
        let stranger = Kvnr::parse("B987654320").unwrap();
        assert_eq!(store.set_app_communication(&stranger, true).unwrap(), None);

        assert!(store.activate_smarthealth(&alice, "T1", now()).unwrap());
        let record = store.smarthealth(&alice).unwrap().unwrap();
        assert_eq!(
            (record.active, record.terms_version.as_deref(), record.used),
            (true, Some("T1"), 0)
        );
        assert_eq!(
            store.smarthealth(&bob).unwrap().unwrap().terms_version,
            None
        );

        for size in 0..25 {
            let refusal = QuotaRefusal {
                at: now(),
                sender_id: "p".into(),
                size,
                used: 0,
                quota: 1,
            };
            store.record_quota_refusal(&alice, refusal).unwrap();
        }
        let sizes: Vec<u64> = store
            .smarthealth(&alice)
            .unwrap()
            .unwrap()
            .refusals
            .iter()
            .map(|r| r.size)
            .collect();
        assert_eq!(sizes, (5..25).collect::<Vec<_>>());
        assert!(
            store
                .smarthealth(&bob)
                .unwrap()
                .unwrap()
                .refusals
                .is_empty()
        );
    }
}
