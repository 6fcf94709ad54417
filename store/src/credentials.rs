//! Device credentials: enrolment codes that expire, bearer tokens that expire and rotate.
//!
//! An enrolment code lives for a bounded time and survives a bounded number of wrong
//! codes tried for its member: each wrong try counts against every open code of that
//! KVNR, and a code that reached the limit is gone, so guessing codes cannot succeed.
//! A bearer token is 256 random bits, stored only as its SHA-256 and bound to one
//! device; it expires, and refreshing it replaces it (the old one stops working in the
//! same commit). Time is always passed in, so tests choose it.

use redb::ReadableTable;

use serde::{Deserialize, Serialize};

use crate::Store;
use crate::db::{
    DEVICES, ENROLLMENT_CODES, ReadRecords, TOKENS, Tx, get, put, random_hex, secret_hash,
};
use crate::error::StoreError;
use crate::ids::DeviceId;
use crate::kvnr::Kvnr;
use crate::members::Device;
use crate::time::Timestamp;

/// How long enrolment codes and tokens live, and how many wrong codes a member's open
/// codes survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialPolicy {
    /// Milliseconds an enrolment code is valid after it was issued.
    pub code_lifetime_ms: u64,
    /// Wrong codes tried for a KVNR after which its open codes are void.
    pub code_attempts: u32,
    /// Milliseconds a bearer token is valid after it was issued.
    pub token_lifetime_ms: u64,
}

impl Default for CredentialPolicy {
    /// Codes: 15 minutes and 5 wrong tries; tokens: 7 days.
    fn default() -> Self {
        CredentialPolicy {
            code_lifetime_ms: 15 * 60 * 1000,
            code_attempts: 5,
            token_lifetime_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// An open enrolment code, stored under the SHA-256 of the code.
#[derive(Serialize, Deserialize)]
pub(crate) struct EnrollmentCode {
    /// The member the code was issued for.
    pub kvnr: Kvnr,
    /// When it was issued.
    pub created_at: Timestamp,
    /// Wrong codes tried for this member since it was issued.
    #[serde(default)]
    pub failures: u32,
}

/// A stored bearer token (under the SHA-256 of the token).
#[derive(Serialize, Deserialize)]
struct TokenRecord {
    device: DeviceId,
    expires_at: Timestamp,
}

/// A bearer token as issued: shown once, stored hashed.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The token the app presents (64 hex digits).
    pub token: String,
    /// When it stops being accepted.
    pub expires_at: Timestamp,
}

/// What a presented bearer token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bearer {
    /// A valid token of this device, until `expires_at`.
    Valid {
        /// The device it is bound to.
        device: Device,
        /// When it expires.
        expires_at: Timestamp,
    },
    /// A token that was valid but has expired.
    Expired,
    /// No such token (never issued, rotated, or its device removed).
    Unknown,
}

/// Issues a token for `device` inside `tx`.
pub(crate) fn issue_token(
    tx: &Tx<'_>,
    device: &DeviceId,
    at: Timestamp,
    policy: &CredentialPolicy,
) -> Result<IssuedToken, StoreError> {
    let token = random_hex(32)?;
    let expires_at = Timestamp(at.0.saturating_add(policy.token_lifetime_ms));
    let record = TokenRecord {
        device: device.clone(),
        expires_at,
    };
    put(&mut tx.open_table(TOKENS)?, &secret_hash(&token), &record)?;
    Ok(IssuedToken { token, expires_at })
}

/// Revokes every token of `device` inside `tx`.
pub(crate) fn revoke_tokens(tx: &Tx<'_>, device: &DeviceId) -> Result<(), StoreError> {
    // Token hashes are not indexed by device; removal is rare, a scan is fine.
    let mut tokens = tx.open_table(TOKENS)?;
    let mut revoked = Vec::new();
    for entry in tokens.iter()? {
        let (hash, value) = entry?;
        if serde_json::from_slice::<TokenRecord>(value.value())?.device == *device {
            revoked.push(hash.value().to_owned());
        }
    }
    for hash in revoked {
        tokens.remove(hash.as_str())?;
    }
    Ok(())
}

/// Takes the open code `code` of `kvnr` inside `tx` if it is valid at `at`: true if it
/// was (and is now consumed). A wrong code counts against every open code of the KVNR;
/// expired codes and codes at the limit are removed. The caller commits either way.
pub(crate) fn take_code(
    tx: &Tx<'_>,
    kvnr: &Kvnr,
    code: &str,
    at: Timestamp,
    policy: &CredentialPolicy,
) -> Result<bool, StoreError> {
    let mut codes = tx.open_table(ENROLLMENT_CODES)?;
    let hash = secret_hash(code.trim());
    let presented = get::<EnrollmentCode>(&codes, &hash)?;
    if let Some(entry) = presented.filter(|e| e.kvnr == *kvnr) {
        codes.remove(hash.as_str())?;
        return Ok(at.0 < entry.created_at.0.saturating_add(policy.code_lifetime_ms));
    }
    let mut open = Vec::new();
    for entry in codes.iter()? {
        let (key, value) = entry?;
        let record: EnrollmentCode = serde_json::from_slice(value.value())?;
        if record.kvnr == *kvnr {
            open.push((key.value().to_owned(), record));
        }
    }
    for (key, mut record) in open {
        record.failures = record.failures.saturating_add(1);
        let expired = at.0 >= record.created_at.0.saturating_add(policy.code_lifetime_ms);
        if expired || record.failures >= policy.code_attempts {
            codes.remove(key.as_str())?;
        } else {
            put(&mut codes, &key, &record)?;
        }
    }
    Ok(false)
}

/// The state of a token inside a transaction's tables.
fn lookup(
    tokens: &impl ReadRecords,
    devices: &impl ReadRecords,
    token: &str,
    at: Timestamp,
) -> Result<Bearer, StoreError> {
    let Some(record) = get::<TokenRecord>(tokens, &secret_hash(token))? else {
        return Ok(Bearer::Unknown);
    };
    if at >= record.expires_at {
        return Ok(Bearer::Expired);
    }
    Ok(match get::<Device>(devices, record.device.as_str())? {
        Some(device) => Bearer::Valid {
            device,
            expires_at: record.expires_at,
        },
        None => Bearer::Unknown,
    })
}

impl Store {
    /// What the bearer token `token` is at `at`.
    pub fn bearer(&self, token: &str, at: Timestamp) -> Result<Bearer, StoreError> {
        self.read(|tx| lookup(&tx.open_table(TOKENS)?, &tx.open_table(DEVICES)?, token, at))
    }

    /// Replaces a valid token by a new one for the same device, in one commit: the old
    /// token stops working. An expired or unknown token is refused with what it is.
    pub fn refresh_token(
        &self,
        token: &str,
        at: Timestamp,
        policy: &CredentialPolicy,
    ) -> Result<Result<IssuedToken, Bearer>, StoreError> {
        self.write(|tx| {
            let found = lookup(&tx.open_table(TOKENS)?, &tx.open_table(DEVICES)?, token, at)?;
            let Bearer::Valid { device, .. } = found else {
                return Ok(Err(found));
            };
            tx.open_table(TOKENS)?.remove(secret_hash(token).as_str())?;
            issue_token(tx, &device.id, at, policy).map(Ok)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use crate::time::now;

    const MINUTE: u64 = 60 * 1000;

    fn later(minutes: u64) -> Timestamp {
        Timestamp(now().0 + minutes * MINUTE)
    }

    #[test]
    fn a_code_expires_after_its_lifetime() {
        let (_dir, store) = testing::open();
        let policy = CredentialPolicy::default();
        let (alice, code) = testing::member(&store, "A123456780");
        let late = store.enroll(&alice, &code, "phone", "FP", "K", later(16), &policy);
        assert!(late.unwrap().is_none(), "a code 16 minutes old is refused");
        // It is gone, not only refused now.
        let retry = store.enroll(&alice, &code, "phone", "FP", "K", now(), &policy);
        assert!(retry.unwrap().is_none());

        let code = store.add_enrollment_code(&alice).unwrap();
        let in_time = store.enroll(&alice, &code, "phone", "FP", "K", later(14), &policy);
        assert!(in_time.unwrap().is_some(), "a code 14 minutes old is taken");
    }

    #[test]
    fn five_wrong_codes_void_the_members_open_codes_and_no_one_elses() {
        let (_dir, store) = testing::open();
        let policy = CredentialPolicy::default();
        let (alice, code) = testing::member(&store, "A123456780");
        let (bob, bobs_code) = testing::member(&store, "X110411319");
        for guess in 0..5 {
            let wrong = format!("00000-00000-00000-0000{guess}");
            let r = store.enroll(&alice, &wrong, "x", "FP", "K", now(), &policy);
            assert!(r.unwrap().is_none());
        }
        let right = store.enroll(&alice, &code, "phone", "FP", "K", now(), &policy);
        assert!(right.unwrap().is_none(), "the right code comes too late");
        // Four wrong tries leave a code usable.
        let code = store.add_enrollment_code(&alice).unwrap();
        for _ in 0..4 {
            let r = store.enroll(&alice, "nope", "x", "FP", "K", now(), &policy);
            assert!(r.unwrap().is_none());
        }
        assert!(
            store
                .enroll(&alice, &code, "phone", "FP", "K", now(), &policy)
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .enroll(&bob, &bobs_code, "bob", "FP2", "K2", now(), &policy)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn tokens_expire_and_refreshing_replaces_them() {
        let (_dir, store) = testing::open();
        let policy = CredentialPolicy {
            token_lifetime_ms: 10 * MINUTE,
            ..CredentialPolicy::default()
        };
        let (alice, code) = testing::member(&store, "A123456780");
        let start = now();
        let enrolled = store
            .enroll(&alice, &code, "phone", "FP", "K", start, &policy)
            .unwrap()
            .unwrap();
        assert_eq!(enrolled.token.len(), 64);
        assert_eq!(enrolled.expires_at, Timestamp(start.0 + 10 * MINUTE));
        let just_before = Timestamp(start.0 + 10 * MINUTE - 1);
        assert!(matches!(
            store.bearer(&enrolled.token, just_before).unwrap(),
            Bearer::Valid { device, .. } if device.id == enrolled.device.id
        ));
        let at_expiry = Timestamp(start.0 + 10 * MINUTE);
        assert_eq!(
            store.bearer(&enrolled.token, at_expiry).unwrap(),
            Bearer::Expired
        );
        assert_eq!(
            store
                .refresh_token(&enrolled.token, at_expiry, &policy)
                .unwrap()
                .unwrap_err(),
            Bearer::Expired
        );

        let fresh = store
            .refresh_token(&enrolled.token, just_before, &policy)
            .unwrap()
            .unwrap();
        assert_ne!(fresh.token, enrolled.token);
        assert_eq!(fresh.expires_at, Timestamp(just_before.0 + 10 * MINUTE));
        assert_eq!(
            store.bearer(&enrolled.token, start).unwrap(),
            Bearer::Unknown
        );
        assert!(matches!(
            store.bearer(&fresh.token, at_expiry).unwrap(),
            Bearer::Valid { .. }
        ));
        assert_eq!(
            store
                .refresh_token(&enrolled.token, start, &policy)
                .unwrap()
                .unwrap_err(),
            Bearer::Unknown
        );
    }
}
