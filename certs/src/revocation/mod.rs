//! Revocation checking of a validated certificate chain: CRLs loaded from files
//! and fetched from the certificates' distribution points, and OCSP against the
//! responders their Authority Information Access names, with a hard-fail
//! (default) or soft-fail policy and caching of answers.
//!
//! Every certificate of a chain except the trust anchor is checked. For each,
//! the sources are tried in this order until one gives an answer: a CRL file of
//! its issuer, its OCSP responders, its CRL distribution points. A revoked
//! certificate is refused even when verifying as of an earlier time: a
//! revocation for key compromise makes every signature of that key suspect.

mod crl;
mod http;
mod ocsp;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openssl::x509::store::X509StoreRef;
use openssl::x509::{X509, X509Crl};

use crl::Crl;

use crate::error::{CertError, Context};

/// What to do when a certificate names revocation sources but none answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailMode {
    /// Refuse the signature (`revocation-unknown`): the safe default.
    #[default]
    Hard,
    /// Accept it, recording that the status could not be checked.
    Soft,
    /// As [`FailMode::Hard`], and a certificate that names no source (no CRL
    /// distribution point, no OCSP responder) and that no CRL file covers is refused
    /// too (`revocation-no-source`), where the other modes record it as not checked.
    /// For a PKI whose every certificate has a source: not the development PKI.
    Strict,
}

/// How revocation is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevocationPolicy {
    /// Hard or soft fail when no source answers.
    pub fail_mode: FailMode,
    /// Connect, read and write timeout of one fetch.
    pub timeout: Duration,
    /// How long an OCSP answer is reused.
    pub ocsp_cache_for: Duration,
}

impl Default for RevocationPolicy {
    fn default() -> Self {
        RevocationPolicy {
            fail_mode: FailMode::Hard,
            timeout: Duration::from_secs(10),
            ocsp_cache_for: Duration::from_secs(3600),
        }
    }
}

/// The revocation status of a whole chain, as recorded with a verified letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationStatus {
    /// Every certificate of the chain was found not revoked.
    Good {
        /// Where each answer came from, e.g. `OCSP http://ocsp.example/`.
        sources: Vec<String>,
    },
    /// At least one certificate could not be checked: it names no source, or
    /// (soft-fail) no source answered.
    NotChecked {
        /// Which certificates, and why.
        detail: String,
    },
}

impl fmt::Display for RevocationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RevocationStatus::Good { sources } => write!(f, "not revoked ({})", sources.join("; ")),
            RevocationStatus::NotChecked { detail } => write!(f, "not checked: {detail}"),
        }
    }
}

/// Why a chain was refused.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// A certificate is revoked.
    Revoked {
        /// Subject of the revoked certificate.
        subject: String,
        /// When and by which source.
        detail: String,
    },
    /// Hard-fail: a certificate's status could not be established.
    Unknown {
        /// Subject of the certificate.
        subject: String,
        /// What each source said.
        detail: String,
    },
    /// Strict: a certificate names no source and no CRL file covers it, which no
    /// later try changes.
    NoSource {
        /// Subject of the certificate.
        subject: String,
    },
}

/// What the sources said about one certificate.
enum Finding {
    /// Not revoked, according to this source.
    Good(String),
    /// Revoked: when and by which source.
    Revoked(String),
    /// Sources exist but none answered; what each said.
    Unknown(Vec<String>),
    /// The certificate names no source and no CRL file covers it.
    NoSource,
}

/// A definitive answer of one source.
#[derive(Debug, Clone)]
enum Answer {
    Good,
    Revoked(String),
}

/// Revocation checking with its CRL files, policy and caches. Shared by all
/// verifications (it is `Sync`).
pub struct Revocation {
    policy: RevocationPolicy,
    crl_files: Vec<Crl>,
    /// CRLs fetched from distribution points, by address.
    crl_cache: Mutex<HashMap<String, Arc<Crl>>>,
    /// OCSP answers by issuer fingerprint and serial, with when they were fetched.
    ocsp_cache: Mutex<HashMap<String, (Instant, Answer)>>,
}

impl Revocation {
    /// Revocation checking with `policy` and no CRL files.
    pub fn new(policy: RevocationPolicy) -> Self {
        Revocation {
            policy,
            crl_files: Vec::new(),
            crl_cache: Mutex::new(HashMap::new()),
            ocsp_cache: Mutex::new(HashMap::new()),
        }
    }

    /// Adds a CRL read from a file (PEM or DER). It is used for certificates of
    /// its issuer while it is current; afterwards their distribution points are
    /// asked for a newer one.
    pub fn with_crl(mut self, crl: &[u8]) -> Result<Self, CertError> {
        let crl = if crl.starts_with(b"-----") {
            X509Crl::from_pem(crl)
        } else {
            X509Crl::from_der(crl)
        }
        .context("reading a CRL")?;
        self.crl_files.push(Crl::new(crl));
        Ok(self)
    }

    /// Checks every certificate of `chain` (leaf first, trust anchor last) but
    /// the anchor. `ocsp_store` holds the trust anchors for OCSP responses.
    pub(crate) fn check(
        &self,
        chain: &[X509],
        ocsp_store: &X509StoreRef,
    ) -> Result<RevocationStatus, Refusal> {
        if chain.len() < 2 {
            return Ok(RevocationStatus::NotChecked {
                detail: "the signer certificate is itself a trust anchor".to_owned(),
            });
        }
        let mut sources = Vec::new();
        let mut unchecked = Vec::new();
        for (index, pair) in chain.windows(2).enumerate() {
            let (cert, issuer) = (&pair[0], &pair[1]);
            let subject = crate::x509::subject_line(cert);
            // Path validation made every certificate above the signer a CA.
            let is_ca = index > 0;
            match self.check_one(cert, issuer, is_ca, &chain[index + 1..], ocsp_store) {
                Finding::Good(source) => sources.push(source),
                Finding::Revoked(detail) => return Err(Refusal::Revoked { subject, detail }),
                Finding::Unknown(problems) => {
                    let detail = problems.join("; ");
                    if self.policy.fail_mode != FailMode::Soft {
                        return Err(Refusal::Unknown { subject, detail });
                    }
                    unchecked.push(format!("{subject}: no source answered ({detail})"));
                }
                Finding::NoSource if self.policy.fail_mode == FailMode::Strict => {
                    return Err(Refusal::NoSource { subject });
                }
                Finding::NoSource => {
                    unchecked.push(format!("{subject}: names no CRL or OCSP source"));
                }
            }
        }
        if unchecked.is_empty() {
            Ok(RevocationStatus::Good { sources })
        } else {
            Ok(RevocationStatus::NotChecked {
                detail: unchecked.join("; "),
            })
        }
    }

    /// Asks the sources of `cert` (a CA certificate if `is_ca`) in turn; `issuers`
    /// starts with its issuer.
    fn check_one(
        &self,
        cert: &X509,
        issuer: &X509,
        is_ca: bool,
        issuers: &[X509],
        ocsp_store: &X509StoreRef,
    ) -> Finding {
        let mut problems = Vec::new();
        let mut conclude = |source: String, result: Result<Answer, String>| match result {
            Ok(Answer::Good) => Some(Finding::Good(source)),
            Ok(Answer::Revoked(when)) => Some(Finding::Revoked(format!("{when} ({source})"))),
            Err(problem) => {
                problems.push(format!("{source}: {problem}"));
                None
            }
        };
        for file in self.crl_files.iter().filter(|c| crl::covers(c, cert)) {
            if let Some(found) = conclude(
                "CRL file".to_owned(),
                crl::status(file, cert, issuer, is_ca),
            ) {
                return found;
            }
        }
        for url in ocsp::responders(cert) {
            let answer = self.ocsp(&url, cert, issuers, ocsp_store);
            if let Some(found) = conclude(format!("OCSP {url}"), answer) {
                return found;
            }
        }
        for url in crl::distribution_points(cert) {
            let answer = self
                .fetched_crl(&url)
                .and_then(|fetched| crl::status(&fetched, cert, issuer, is_ca));
            if let Some(found) = conclude(format!("CRL {url}"), answer) {
                return found;
            }
        }
        if problems.is_empty() {
            Finding::NoSource
        } else {
            Finding::Unknown(problems)
        }
    }

    /// The CRL at `url`: the cached one while current, else fetched anew.
    fn fetched_crl(&self, url: &str) -> Result<Arc<Crl>, String> {
        let mut cache = self
            .crl_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(cached) = cache.get(url).filter(|c| crl::is_current(c)) {
            return Ok(Arc::clone(cached));
        }
        let body = http::get(url, self.policy.timeout)?;
        let fetched = Arc::new(crl::parse(&body)?);
        cache.insert(url.to_owned(), Arc::clone(&fetched));
        Ok(fetched)
    }

    /// The OCSP answer for `cert` from `url`, cached for the policy's time.
    fn ocsp(
        &self,
        url: &str,
        cert: &X509,
        issuers: &[X509],
        store: &X509StoreRef,
    ) -> Result<Answer, String> {
        let key = ocsp::cache_key(cert, &issuers[0])?;
        let mut cache = self
            .ocsp_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((fetched, answer)) = cache.get(&key)
            && fetched.elapsed() < self.policy.ocsp_cache_for
        {
            return Ok(answer.clone());
        }
        let answer = ocsp::query(url, cert, issuers, store, self.policy.timeout)?;
        cache.insert(key, (Instant::now(), answer.clone()));
        Ok(answer)
    }
}

impl fmt::Debug for Revocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revocation")
            .field("policy", &self.policy)
            .field("crl_files", &self.crl_files.len())
            .finish_non_exhaustive()
    }
}
