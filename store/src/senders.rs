//! Senders (practices and the insurer's back office), their certificates, and the
//! trust anchors their certificates chain to.

use serde::{Deserialize, Serialize};

use crate::Store;
use crate::db::{SENDER_CERTS, SENDERS, TRUST_ANCHORS, get, put, scan};
use crate::error::StoreError;

/// What kind of organisation a sender is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SenderKind {
    /// A physician's practice system: letters go to smarthealth.
    Practice,
    /// The insurer's back office: letters go to the Postfach.
    Insurer,
}

/// A registered sender: one identity that owns several certificates (TLS client
/// certificate, S/MIME signing certificate, …) and may use several addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    /// The operator's ID for the sender.
    pub id: String,
    /// Practice or insurer.
    pub kind: SenderKind,
    /// Envelope and From addresses the sender may use (lowercase).
    pub addresses: Vec<String>,
    /// SHA-256 fingerprints of the sender's certificates.
    pub certificates: Vec<String>,
}

impl Sender {
    /// Whether the sender may use `address` (compared case-insensitively).
    pub fn may_use(&self, address: &str) -> bool {
        self.addresses
            .iter()
            .any(|a| a.eq_ignore_ascii_case(address))
    }

    /// Whether the certificate with this SHA-256 fingerprint is one of the sender's.
    pub fn owns(&self, fingerprint: &str) -> bool {
        self.certificates
            .iter()
            .any(|c| c.eq_ignore_ascii_case(fingerprint))
    }
}

impl Store {
    /// Registers a sender, or adds a certificate and address to an existing one. A
    /// certificate already registered to another sender is refused.
    pub fn add_sender_certificate(
        &self,
        id: &str,
        kind: SenderKind,
        fingerprint: &str,
        address: Option<&str>,
    ) -> Result<Sender, StoreError> {
        let fingerprint = fingerprint.to_ascii_lowercase();
        self.write(|tx| {
            let mut certs = tx.open_table(SENDER_CERTS)?;
            match get::<String>(&certs, &fingerprint)? {
                Some(owner) if owner != id => return Err(StoreError::Exists("certificate")),
                _ => put(&mut certs, &fingerprint, &id)?,
            }
            let mut senders = tx.open_table(SENDERS)?;
            let mut sender = get::<Sender>(&senders, id)?.unwrap_or_else(|| Sender {
                id: id.to_owned(),
                kind,
                addresses: Vec::new(),
                certificates: Vec::new(),
            });
            if sender.kind != kind {
                return Err(StoreError::Exists("sender of another kind"));
            }
            if !sender.owns(&fingerprint) {
                sender.certificates.push(fingerprint.clone());
            }
            if let Some(address) = address
                && !sender.may_use(address)
            {
                sender.addresses.push(address.to_ascii_lowercase());
            }
            put(&mut senders, id, &sender)?;
            Ok(sender)
        })
    }

    /// The sender that owns the certificate with this SHA-256 fingerprint.
    pub fn sender_by_certificate(&self, fingerprint: &str) -> Result<Option<Sender>, StoreError> {
        self.read(|tx| {
            let certs = tx.open_table(SENDER_CERTS)?;
            match get::<String>(&certs, &fingerprint.to_ascii_lowercase())? {
                Some(id) => get(&tx.open_table(SENDERS)?, &id),
                None => Ok(None),
            }
        })
    }

    /// The sender with this ID.
    pub fn sender(&self, id: &str) -> Result<Option<Sender>, StoreError> {
        self.read(|tx| get(&tx.open_table(SENDERS)?, id))
    }

    /// Adds a trust anchor (a CA certificate in PEM) under its SHA-256 fingerprint.
    /// Returns false if it was already there.
    pub fn add_trust_anchor(&self, fingerprint: &str, pem: &str) -> Result<bool, StoreError> {
        let fingerprint = fingerprint.to_ascii_lowercase();
        self.write(|tx| {
            let mut anchors = tx.open_table(TRUST_ANCHORS)?;
            if get::<String>(&anchors, &fingerprint)?.is_some() {
                return Ok(false);
            }
            put(&mut anchors, &fingerprint, &pem)?;
            Ok(true)
        })
    }

    /// Every trust anchor, as PEM.
    pub fn trust_anchors(&self) -> Result<Vec<String>, StoreError> {
        self.read(|tx| scan(&tx.open_table(TRUST_ANCHORS)?, ""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_owns_several_certificates_and_none_of_anothers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store
            .add_sender_certificate("p1", SenderKind::Practice, "AA", Some("Praxis@X.test"))
            .unwrap();
        let s = store
            .add_sender_certificate("p1", SenderKind::Practice, "bb", None)
            .unwrap();
        assert_eq!(s.certificates, vec!["aa", "bb"]);
        assert!(s.may_use("praxis@x.test"));
        assert!(!s.may_use("other@x.test"));
        assert!(matches!(
            store.add_sender_certificate("p2", SenderKind::Practice, "aa", None),
            Err(StoreError::Exists(_))
        ));
        assert_eq!(store.sender_by_certificate("BB").unwrap().unwrap().id, "p1");
        assert!(store.sender_by_certificate("cc").unwrap().is_none());
        assert!(store.add_trust_anchor("ff", "PEM").unwrap());
        assert!(!store.add_trust_anchor("FF", "PEM").unwrap());
        assert_eq!(store.trust_anchors().unwrap(), vec!["PEM"]);
    }
}
