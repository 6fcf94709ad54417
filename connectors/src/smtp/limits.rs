//! Connection limits: how many sessions a server runs at once, overall, per
//! client address and per client certificate.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The SHA-256 fingerprint of a client's end-entity certificate.
type Fingerprint = [u8; 32];

/// The counters behind the limits, shared by all listeners of one server.
pub(super) struct ConnectionLimits {
    overall: Arc<Semaphore>,
    by_address: Tally<IpAddr>,
    /// Whether loopback clients are left out of the per-address count.
    loopback_exempt: bool,
    by_certificate: Tally<Fingerprint>,
}

/// Sessions counted by a key (a client address, a certificate), each key up to a cap.
struct Tally<K> {
    cap: usize,
    counts: Arc<Mutex<HashMap<K, usize>>>,
}

/// One session's place in a [`Tally`]; dropping it frees it.
pub(super) struct Slot<K: Eq + Hash> {
    key: K,
    counts: Arc<Mutex<HashMap<K, usize>>>,
}

/// One session's place under the per-certificate limit.
pub(super) type CertificateSlot = Slot<Fingerprint>;

/// A session's places under the overall and the per-address limit, held for its
/// whole life (from before the TLS handshake).
pub(super) struct Admission {
    _overall: OwnedSemaphorePermit,
    _address: Option<Slot<IpAddr>>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Busy {
    /// The server runs its maximum of sessions.
    Server,
    /// The client's address has its maximum of sessions.
    Address,
}

impl ConnectionLimits {
    /// At most `overall` sessions in all, `per_address` per client IP address
    /// (loopback addresses not counted if `loopback_exempt`), `per_certificate`
    /// per client certificate.
    pub(super) fn new(
        overall: usize,
        per_address: usize,
        loopback_exempt: bool,
        per_certificate: usize,
    ) -> Self {
        Self {
            overall: Arc::new(Semaphore::new(overall.min(Semaphore::MAX_PERMITS))),
            by_address: Tally::new(per_address),
            loopback_exempt,
            by_certificate: Tally::new(per_certificate),
        }
    }

    /// A place for one more session from `client`, or why there is none. The
    /// address is counted in its canonical form (an IPv4-mapped IPv6 address as
    /// the IPv4 address).
    pub(super) fn admit(&self, client: IpAddr) -> Result<Admission, Busy> {
        let client = client.to_canonical();
        let address = if self.loopback_exempt && client.is_loopback() {
            None
        } else {
            Some(self.by_address.take(client).ok_or(Busy::Address)?)
        };
        let overall = Arc::clone(&self.overall)
            .try_acquire_owned()
            .map_err(|_| Busy::Server)?;
        Ok(Admission {
            _overall: overall,
            _address: address,
        })
    }

    /// A place for one more session with this end-entity certificate, or
    /// `None` if the certificate already has its maximum of sessions.
    pub(super) fn admit_certificate(&self, leaf: &CertificateDer<'_>) -> Option<CertificateSlot> {
        self.by_certificate
            .take(Sha256::digest(leaf.as_ref()).into())
    }
}

impl<K: Eq + Hash + Clone> Tally<K> {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            counts: Arc::default(),
        }
    }

    /// A place for one more session under `key`, or `None` if it has its maximum.
    fn take(&self, key: K) -> Option<Slot<K>> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.get(&key).is_some_and(|&count| count >= self.cap) || self.cap == 0 {
            return None;
        }
        *counts.entry(key.clone()).or_insert(0) += 1;
        Some(Slot {
            key,
            counts: Arc::clone(&self.counts),
        })
    }
}

impl<K: Eq + Hash> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn counts_sessions_per_certificate_and_overall() {
        let limits = ConnectionLimits::new(2, 10, false, 1);
        let (a, b) = (CertificateDer::from(vec![1]), CertificateDer::from(vec![2]));
        let slot_a = limits.admit_certificate(&a).unwrap();
        assert!(limits.admit_certificate(&a).is_none());
        let slot_b = limits.admit_certificate(&b).unwrap();
        drop(slot_a);
        assert!(limits.admit_certificate(&a).is_some());
        drop(slot_b);
        assert!(limits.by_certificate.counts.lock().unwrap().is_empty());

        let client = IpAddr::from([192, 0, 2, 1]);
        let first = limits.admit(client).unwrap();
        let _second = limits.admit(client).unwrap();
        assert_eq!(limits.admit(client).err(), Some(Busy::Server));
        drop(first);
        assert!(limits.admit(client).is_ok());
    }

    #[test]
    fn counts_sessions_per_address_in_canonical_form() {
        let limits = ConnectionLimits::new(10, 2, true, 10);
        let v4 = IpAddr::from([192, 0, 2, 1]);
        let mapped = IpAddr::from(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        let first = limits.admit(v4).unwrap();
        let _second = limits.admit(mapped).unwrap();
        assert_eq!(limits.admit(v4).err(), Some(Busy::Address));
        // Another address, and loopback (exempt here), are not affected.
        let _other = limits.admit(IpAddr::from([192, 0, 2, 2])).unwrap();
        let local: Vec<_> = (0..3)
            .map(|_| limits.admit(IpAddr::from(Ipv6Addr::LOCALHOST)).unwrap())
            .collect();
        drop(first);
        assert!(limits.admit(v4).is_ok());
        drop(local);
        assert_eq!(limits.by_address.counts.lock().unwrap().len(), 2);

        let strict = ConnectionLimits::new(10, 1, false, 10);
        let _local = strict.admit(IpAddr::from(Ipv4Addr::LOCALHOST)).unwrap();
        assert_eq!(
            strict.admit(IpAddr::from(Ipv4Addr::LOCALHOST)).err(),
            Some(Busy::Address)
        );
    }
}
