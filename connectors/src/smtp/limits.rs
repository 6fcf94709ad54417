//! Connection limits: how many sessions a server runs at once, overall and
//! per client certificate.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, PoisonError};

use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The SHA-256 fingerprint of a client's end-entity certificate.
type Fingerprint = [u8; 32];

/// The counters behind the limits, shared by all listeners of one server.
pub(super) struct ConnectionLimits {
    overall: Arc<Semaphore>,
    per_certificate: usize,
    by_certificate: Arc<Mutex<HashMap<Fingerprint, usize>>>,
}

/// One session's place under the per-certificate limit; dropping it frees it.
pub(super) struct CertificateSlot {
    fingerprint: Fingerprint,
    by_certificate: Arc<Mutex<HashMap<Fingerprint, usize>>>,
}

impl ConnectionLimits {
    /// At most `overall` sessions in all, `per_certificate` per client certificate.
    pub(super) fn new(overall: usize, per_certificate: usize) -> Self {
        Self {
            overall: Arc::new(Semaphore::new(overall.min(Semaphore::MAX_PERMITS))),
            per_certificate,
            by_certificate: Arc::default(),
        }
    }

    /// A place for one more session, or `None` if the server is full.
    pub(super) fn admit(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.overall).try_acquire_owned().ok()
    }

    /// A place for one more session with this end-entity certificate, or
    /// `None` if the certificate already has its maximum of sessions.
    pub(super) fn admit_certificate(&self, leaf: &CertificateDer<'_>) -> Option<CertificateSlot> {
        let fingerprint: Fingerprint = Sha256::digest(leaf.as_ref()).into();
        let mut counts = self
            .by_certificate
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(fingerprint).or_insert(0);
        if *count >= self.per_certificate {
            return None;
        }
        *count += 1;
        Some(CertificateSlot {
            fingerprint,
            by_certificate: Arc::clone(&self.by_certificate),
        })
    }
}

impl Drop for CertificateSlot {
    fn drop(&mut self) {
        let mut counts = self
            .by_certificate
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Entry::Occupied(mut entry) = counts.entry(self.fingerprint) {
            *entry.get_mut() -= 1;
            if *entry.get() == 0 {
                entry.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sessions_per_certificate_and_overall() {
        let limits = ConnectionLimits::new(2, 1);
        let (a, b) = (CertificateDer::from(vec![1]), CertificateDer::from(vec![2]));
        let slot_a = limits.admit_certificate(&a).unwrap();
        assert!(limits.admit_certificate(&a).is_none());
        let slot_b = limits.admit_certificate(&b).unwrap();
        drop(slot_a);
        assert!(limits.admit_certificate(&a).is_some());
        drop(slot_b);
        assert!(limits.by_certificate.lock().unwrap().is_empty());

        let first = limits.admit().unwrap();
        let _second = limits.admit().unwrap();
        assert!(limits.admit().is_none());
        drop(first);
        assert!(limits.admit().is_some());
    }
}
