//! The gateway's own decryption keys and the trust anchors of signers.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openssl::error::ErrorStack;
use openssl::pkey::{PKey, Private};
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
use openssl::x509::{X509, X509PurposeId};

use super::chains::ValidatedPaths;
use crate::error::{CertError, Context};
use crate::revocation::{Revocation, RevocationPolicy};

/// A gateway certificate with its private key: what letters are encrypted to.
pub struct DecryptionKey {
    pub(super) cert: X509,
    pub(super) key: PKey<Private>,
}

impl DecryptionKey {
    /// Reads a certificate and its private key (PEM) and checks that they belong together.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, CertError> {
        let cert = X509::from_pem(cert_pem).context("reading the decryption certificate")?;
        let key = PKey::private_key_from_pem(key_pem).context("reading the decryption key")?;
        let public = cert
            .public_key()
            .context("reading the certificate's public key")?;
        if !public.public_eq(&key) {
            return Err(CertError::KeyMismatch {
                subject: crate::x509::subject_line(&cert),
            });
        }
        Ok(DecryptionKey { cert, key })
    }
}

impl fmt::Debug for DecryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptionKey")
            .field("cert", &crate::x509::subject_line(&self.cert))
            .finish_non_exhaustive()
    }
}

/// The certificates a signer's chain must reach, intermediates known beforehand,
/// and how revocation is checked. Clones share the revocation caches and the paths
/// validated before.
#[derive(Clone)]
pub struct TrustAnchors {
    anchors: Vec<X509>,
    intermediates: Vec<X509>,
    revocation: Arc<Revocation>,
    validated: Arc<ValidatedPaths>,
}

impl TrustAnchors {
    /// Trust exactly `anchors` (no system roots), with revocation checked by
    /// the default policy (hard-fail, no CRL files). An anchor may be a root,
    /// an intermediate CA or a pinned end-entity certificate: chains end at
    /// the first certificate found among them.
    pub fn new(anchors: &[X509]) -> Result<Self, CertError> {
        let anchors = anchors.to_vec();
        // Building a store once checks that OpenSSL accepts every anchor.
        store(&anchors, None, None).context("adding a trust anchor")?;
        Ok(TrustAnchors {
            anchors,
            intermediates: Vec::new(),
            revocation: Arc::new(Revocation::new(RevocationPolicy::default())),
            validated: Arc::default(),
        })
    }

    /// Adds intermediate CA certificates (a configured store) that chains may
    /// use besides those carried in the message. They are not trusted as anchors.
    pub fn with_intermediates(mut self, intermediates: &[X509]) -> Self {
        self.intermediates.extend_from_slice(intermediates);
        self
    }

    /// Replaces the revocation checking (policy, CRL files, fresh caches).
    pub fn with_revocation(mut self, revocation: Revocation) -> Self {
        self.revocation = Arc::new(revocation);
        self
    }

    /// An X509 store of the anchors that verifies for S/MIME signing at `at`
    /// ([`unix_seconds`]).
    pub(super) fn store_at(&self, at: i64) -> Result<X509Store, ErrorStack> {
        store(&self.anchors, Some(at), Some(X509PurposeId::SMIME_SIGN))
    }

    /// An X509 store of the anchors for OCSP responses (now, any purpose).
    pub(super) fn ocsp_store(&self) -> Result<X509Store, ErrorStack> {
        store(&self.anchors, None, None)
    }

    /// The configured intermediates.
    pub(super) fn intermediates(&self) -> &[X509] {
        &self.intermediates
    }

    /// The revocation checking.
    pub(super) fn revocation(&self) -> &Revocation {
        &self.revocation
    }

    /// The signer paths validated before against these anchors.
    pub(super) fn validated(&self) -> &ValidatedPaths {
        &self.validated
    }
}

/// `at` as the seconds since the epoch that validation uses; times before 1970 become
/// 1970, which no certificate of ours covers.
pub(super) fn unix_seconds(at: SystemTime) -> i64 {
    let seconds = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

impl fmt::Debug for TrustAnchors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let subjects: Vec<String> = self
            .anchors
            .iter()
            .map(|a| crate::x509::subject_line(a))
            .collect();
        f.debug_struct("TrustAnchors")
            .field("anchors", &subjects)
            .field("intermediates", &self.intermediates.len())
            .field("revocation", &self.revocation)
            .finish()
    }
}

/// OpenSSL's security level for signer chains: 112-bit strength, so RSA, DSA and DH
/// keys of at least 2048 bits, elliptic curves of at least 224, and no certificate
/// signed with SHA-1 or MD5 (the anchor's self-signature aside).
pub(super) const AUTH_LEVEL: i32 = 2;

/// A store of `anchors` with, if given, the verification time (seconds since the
/// epoch) and purpose; with a purpose (signer chains), at [`AUTH_LEVEL`].
fn store(
    anchors: &[X509],
    at: Option<i64>,
    purpose: Option<X509PurposeId>,
) -> Result<X509Store, ErrorStack> {
    let mut builder = X509StoreBuilder::new()?;
    for anchor in anchors {
        builder.add_cert(anchor.clone())?;
    }
    let mut param = X509VerifyParam::new()?;
    // An anchor need not be self-signed: an operator may trust an intermediate CA
    // or pin a signer certificate (e.g. when the issuing CA is not at hand).
    param.set_flags(X509VerifyFlags::PARTIAL_CHAIN)?;
    if let Some(purpose) = purpose {
        param.set_purpose(purpose)?;
        param.set_auth_level(AUTH_LEVEL);
    }
    if let Some(at) = at {
        param.set_time(at);
    }
    builder.set_param(&param)?;
    Ok(builder.build())
}
