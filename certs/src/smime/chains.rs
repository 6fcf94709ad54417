//! Signer chains validated before: a letter from a certificate seen before skips the
//! signature checks of its chain.
//!
//! Path validation of the same certificates against the same anchors, for the same
//! purpose, gives the same answer at every instant at which each certificate of the
//! path is within its validity: signatures, constraints, key usages and extensions do
//! not change with time. So a successful validation is kept, keyed by the signer
//! certificate and the untrusted certificates offered with it (everything path building
//! reads besides the anchors, purpose and instant, which belong to one
//! [`TrustAnchors`](super::TrustAnchors)), and a later letter with the same inputs reuses
//! its path when the letter's instant lies within the validity of every certificate on it.
//! Any other instant, and any other input, is validated in full and so gets its exact
//! refusal. Revocation is not kept here: it is checked for every letter. Only successes
//! are kept, at most [`CAPACITY`] of them, the oldest forgotten first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use openssl::asn1::Asn1Time;
use openssl::error::ErrorStack;
use openssl::sha::Sha256;
use openssl::stack::StackRef;
use openssl::x509::{X509, X509Ref};

/// How many validated paths are kept.
pub(super) const CAPACITY: usize = 1024;

/// What identifies a validation: SHA-256 over the signer certificate and the untrusted
/// certificates, each DER with its length before it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(super) struct Inputs([u8; 32]);

impl Inputs {
    /// The inputs of validating `signer` with the `untrusted` certificates.
    pub(super) fn of(signer: &X509Ref, untrusted: &StackRef<X509>) -> Result<Self, ErrorStack> {
        let mut hash = Sha256::new();
        for cert in std::iter::once(signer).chain(untrusted.iter()) {
            let der = cert.to_der()?;
            hash.update(&(der.len() as u64).to_be_bytes());
            hash.update(&der);
        }
        Ok(Inputs(hash.finish()))
    }
}

/// Paths validated before, shared by the clones of one set of trust anchors.
#[derive(Default)]
pub(super) struct ValidatedPaths {
    inner: Mutex<Paths>,
}

/// The kept paths and the order they were kept in.
#[derive(Default)]
struct Paths {
    by_inputs: HashMap<Inputs, Vec<X509>>,
    order: VecDeque<Inputs>,
}

impl ValidatedPaths {
    fn lock(&self) -> MutexGuard<'_, Paths> {
        // Every change is a single insert or remove: a panic cannot leave it half done.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The path validated before for `inputs` (signer first, anchor last), if every
    /// certificate on it is valid at `at` (seconds since the epoch, as the store's
    /// verification time).
    pub(super) fn get(&self, inputs: &Inputs, at: i64) -> Option<Vec<X509>> {
        let path = self.lock().by_inputs.get(inputs)?.clone();
        let at = Asn1Time::from_unix(at).ok()?;
        path.iter().all(|cert| valid_at(cert, &at)).then_some(path)
    }

    /// Keeps `path`, validated for `inputs`, forgetting the oldest beyond [`CAPACITY`].
    pub(super) fn keep(&self, inputs: Inputs, path: Vec<X509>) {
        let mut paths = self.lock();
        if paths.by_inputs.insert(inputs, path).is_some() {
            return;
        }
        paths.order.push_back(inputs);
        while paths.order.len() > CAPACITY {
            if let Some(oldest) = paths.order.pop_front() {
                paths.by_inputs.remove(&oldest);
            }
        }
    }
}

/// Whether `at` lies within `cert`'s validity as OpenSSL judges it: not before
/// `notBefore`, and before `notAfter`. A time that cannot be compared counts as outside.
fn valid_at(cert: &X509Ref, at: &Asn1Time) -> bool {
    use std::cmp::Ordering::Greater;
    let started = cert.not_before().compare(at).is_ok_and(|o| o != Greater);
    let running = cert.not_after().compare(at).is_ok_and(|o| o == Greater);
    started && running
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use openssl::stack::Stack;

    use super::*;
    use crate::devpki::{self, Profile};

    fn seconds(at: SystemTime) -> i64 {
        at.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
    }

    /// A CA valid for ten years and a signer valid for one day from `start`.
    fn path(start: SystemTime) -> Vec<X509> {
        let pki = devpki::generate("example.test", "praxis@example.test").unwrap();
        let mut profile = Profile::practice("Praxis", "praxis@example.test");
        profile.not_before = start;
        profile.not_after = start + Duration::from_secs(86_400);
        let signer = devpki::issue(&pki.ca, &profile).unwrap();
        [signer.cert_pem, pki.ca.cert_pem]
            .iter()
            .map(|pem| X509::from_pem(pem.as_bytes()).unwrap())
            .collect()
    }

    #[test]
    fn a_path_is_reused_only_within_the_validity_of_every_certificate() {
        let start = UNIX_EPOCH + Duration::from_secs(seconds(SystemTime::now()) as u64);
        let path = path(start);
        let paths = ValidatedPaths::default();
        let inputs = Inputs([7; 32]);
        paths.keep(inputs, path.clone());
        let start = seconds(start);
        let end = start + 86_400;
        for (at, reused) in [
            (start - 1, false),
            (start, true),
            (end - 1, true),
            (end, false),
        ] {
            let got = paths.get(&inputs, at);
            assert_eq!(got.is_some(), reused, "at {} s from the start", at - start);
            if let Some(got) = got {
                assert_eq!(got.len(), 2);
                assert_eq!(got[0].to_der().unwrap(), path[0].to_der().unwrap());
            }
        }
        assert!(paths.get(&Inputs([8; 32]), start).is_none());
    }

    #[test]
    fn the_inputs_name_the_signer_and_every_untrusted_certificate_in_order() {
        let now = SystemTime::now();
        let one = path(now);
        let other = path(now);
        let mut untrusted = Stack::new().unwrap();
        let of = |signer: &X509, untrusted: &StackRef<X509>| Inputs::of(signer, untrusted).unwrap();
        assert_eq!(of(&one[0], &untrusted), of(&one[0], &untrusted));
        assert_ne!(of(&one[0], &untrusted), of(&other[0], &untrusted));
        let bare = of(&one[0], &untrusted);
        untrusted.push(one[1].clone()).unwrap();
        assert_ne!(bare, of(&one[0], &untrusted));
        untrusted.push(other[1].clone()).unwrap();
        let mut reversed = Stack::new().unwrap();
        reversed.push(other[1].clone()).unwrap();
        reversed.push(one[1].clone()).unwrap();
        assert_ne!(of(&one[0], &untrusted), of(&one[0], &reversed));
    }

    #[test]
    fn the_oldest_path_is_forgotten_beyond_the_capacity() {
        let now = SystemTime::now();
        let path = path(now - Duration::from_secs(60));
        let paths = ValidatedPaths::default();
        let inputs = |i: usize| {
            let mut bytes = [0; 32];
            bytes[..8].copy_from_slice(&(i as u64).to_be_bytes());
            Inputs(bytes)
        };
        for i in 0..=CAPACITY {
            paths.keep(inputs(i), path.clone());
        }
        // Kept again: not counted twice.
        paths.keep(inputs(CAPACITY), path.clone());
        let at = seconds(now);
        assert!(paths.get(&inputs(0), at).is_none());
        assert!(paths.get(&inputs(1), at).is_some());
        assert!(paths.get(&inputs(CAPACITY), at).is_some());
        let kept = paths.lock();
        assert_eq!(
            (kept.by_inputs.len(), kept.order.len()),
            (CAPACITY, CAPACITY)
        );
    }
}
