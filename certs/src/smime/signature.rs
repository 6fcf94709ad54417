//! Verifying one SignedData layer: algorithms, signature, then the signer's chain.

use std::time::SystemTime;

use openssl::cms::CmsContentInfo;
use openssl::nid::Nid;
use openssl::pkey::Id;
use openssl::stack::StackRef;
use openssl::x509::store::X509StoreRef;
use openssl::x509::{X509, X509Ref, X509StoreContext};
use openssl_sys as ffi;

use cms::cert::x509::attr::Attribute;
use der::Decode;
use der::asn1::ObjectIdentifier;

use super::auth_enveloped::{CONTENT_TYPE, DATA};
use super::chains::Inputs;
use super::error::{has_cms_reason, reasons};
use super::keys;
use super::kim::{self, KimRecipient};
use super::libcrypto::{self, SignatureFailure};
use super::{Signer, TrustAnchors, UnwrapError};
use crate::SecretBytes;
use crate::revocation::Refusal;

/// `CMS_R_NO_CONTENT` (cmserr.h).
const CMS_R_NO_CONTENT: i32 = 127;
/// `CMS_R_SIGNER_CERTIFICATE_NOT_FOUND` (cmserr.h).
const CMS_R_SIGNER_CERTIFICATE_NOT_FOUND: i32 = 138;

/// Digest and signature algorithms refused in signatures.
const WEAK: [Nid; 11] = [
    Nid::MD2,
    Nid::MD4,
    Nid::MD5,
    Nid::MD5_SHA1,
    Nid::SHA1,
    Nid::MD2WITHRSAENCRYPTION,
    Nid::MD4WITHRSAENCRYPTION,
    Nid::MD5WITHRSAENCRYPTION,
    Nid::SHA1WITHRSAENCRYPTION,
    Nid::ECDSA_WITH_SHA1,
    Nid::DSAWITHSHA1,
];

/// The signed content and who signed it.
pub(super) struct Verified {
    /// The content the signature covers.
    pub content: SecretBytes,
    /// The first signer.
    pub signer: Signer,
    /// The other signers, if the layer has more than one SignerInfo (each verified and
    /// chained like the first).
    pub co_signers: Vec<Signer>,
    /// The recipients gematik's attribute names in the first signer's signed attributes.
    pub recipients: Vec<KimRecipient>,
}

/// Verifies SignedData `cms` over its own content or over `detached`: every
/// signer must use strong algorithms, sign correctly and chain to `anchors` at `at`.
pub(super) fn verify(
    mut cms: CmsContentInfo,
    detached: Option<SecretBytes>,
    anchors: &TrustAnchors,
    at: SystemTime,
) -> Result<Verified, UnwrapError> {
    let infos = libcrypto::signer_infos(&cms);
    if infos.is_empty() {
        return Err(UnwrapError::Malformed(
            "the signed data has no signer".to_owned(),
        ));
    }
    for info in &infos {
        for nid in [info.digest, info.signature] {
            if WEAK.contains(&nid) {
                return Err(UnwrapError::WeakAlgorithm {
                    algorithm: nid.long_name().unwrap_or("unknown").to_owned(),
                });
            }
        }
    }

    check_content_type(&cms, &infos)?;

    libcrypto::verify_signatures(&mut cms, detached.as_deref().map(Vec::as_slice))
        .map_err(signature_refusal)?;

    let content = match detached {
        Some(content) => content,
        None => libcrypto::take_content(&mut cms).ok_or_else(|| {
            UnwrapError::Malformed("the signed data carries no content".to_owned())
        })?,
    };

    let chain_failure = |e: openssl::error::ErrorStack| UnwrapError::UntrustedSigner {
        subject: "unknown".to_owned(),
        detail: format!("the chain could not be checked: {}", reasons(&e)),
    };
    let mut untrusted = libcrypto::certificates(&cms).map_err(chain_failure)?;
    for intermediate in anchors.intermediates() {
        untrusted
            .push(intermediate.clone())
            .map_err(chain_failure)?;
    }
    let at_seconds = keys::unix_seconds(at);
    let ocsp_store = anchors.ocsp_store().map_err(chain_failure)?;
    let mut first = None;
    let mut co_signers = Vec::new();
    for info in libcrypto::signer_infos(&cms) {
        let cert = info.cert.ok_or_else(|| UnwrapError::UntrustedSigner {
            subject: "unknown".to_owned(),
            detail: "the signer's certificate is not included in the message".to_owned(),
        })?;
        let inputs = Inputs::of(&cert, &untrusted).map_err(chain_failure)?;
        let chain = match anchors.validated().get(&inputs, at_seconds) {
            Some(chain) => chain,
            None => {
                let store = anchors.store_at(at_seconds).map_err(chain_failure)?;
                let chain = check_chain(&store, &cert, &untrusted)?;
                anchors.validated().keep(inputs, chain.clone());
                chain
            }
        };
        let revocation = anchors
            .revocation()
            .check(&chain, &ocsp_store)
            .map_err(|refusal| match refusal {
                Refusal::Revoked { subject, detail } => {
                    UnwrapError::SignerRevoked { subject, detail }
                }
                Refusal::Unknown { subject, detail } => {
                    UnwrapError::RevocationUnknown { subject, detail }
                }
                Refusal::NoSource { subject } => UnwrapError::RevocationNoSource { subject },
            })?;
        let signer = signer_of(&cert, info.digest, info.signature, revocation, at)?;
        if first.is_none() {
            first = Some((signer, info.signed_attributes));
        } else {
            co_signers.push(signer);
        }
    }
    let (signer, attributes) =
        first.ok_or_else(|| UnwrapError::Malformed("the signed data has no signer".to_owned()))?;
    Ok(Verified {
        content,
        recipients: kim::signed_recipients(&attributes)?,
        signer,
        co_signers,
    })
}

/// What is recorded of the signer with certificate `cert`.
fn signer_of(
    cert: &X509Ref,
    digest: Nid,
    signature: Nid,
    revocation: crate::revocation::RevocationStatus,
    at: SystemTime,
) -> Result<Signer, UnwrapError> {
    let unreadable = |e: openssl::error::ErrorStack| {
        UnwrapError::Malformed(format!(
            "the signer certificate cannot be read: {}",
            reasons(&e)
        ))
    };
    let cert_der = cert.to_der().map_err(unreadable)?;
    let serial = crate::x509::serial_hex(cert)
        .map_err(|e| UnwrapError::Malformed(format!("the signer certificate: {e}")))?;
    Ok(Signer {
        fingerprint: crate::x509::fingerprint_der(&cert_der),
        subject: crate::x509::subject_line(cert),
        serial,
        issuer: crate::x509::name_line(cert.issuer_name()),
        emails: cert
            .subject_alt_names()
            .map(|names| {
                names
                    .iter()
                    .filter_map(|name| name.email())
                    .map(str::to_ascii_lowercase)
                    .collect()
            })
            .unwrap_or_default(),
        digest_algorithm: algorithm_name(digest),
        signature_algorithm: algorithm_name(signature),
        revocation,
        verified_at: at,
        cert_der,
    })
}

/// Checks that SignedData `cms` signs a message: eContentType id-data, and every
/// content-type signed attribute (RFC 5652 §11.1: one value, equal to eContentType;
/// OpenSSL does not compare them) id-data too.
fn check_content_type(
    cms: &CmsContentInfo,
    infos: &[libcrypto::SignerInfo],
) -> Result<(), UnwrapError> {
    match libcrypto::econtent_type(cms) {
        Some((Nid::PKCS7_DATA, _)) => {}
        Some((_, name)) => {
            return Err(UnwrapError::UnexpectedContentType(format!(
                "it is of type {name}, not data (1.2.840.113549.1.7.1)"
            )));
        }
        None => {
            return Err(UnwrapError::Malformed(
                "the signed data names no content type".to_owned(),
            ));
        }
    }
    for der in infos.iter().flat_map(|info| &info.signed_attributes) {
        let attribute = Attribute::from_der(der).map_err(|e| {
            UnwrapError::Malformed(format!("a signed attribute cannot be read: {e}"))
        })?;
        if attribute.oid != CONTENT_TYPE {
            continue;
        }
        let named: Vec<_> = attribute
            .values
            .iter()
            .map(|value| value.decode_as::<ObjectIdentifier>())
            .collect();
        if !matches!(named.as_slice(), [Ok(oid)] if *oid == DATA) {
            let named: Vec<String> = named
                .iter()
                .map(|oid| {
                    oid.as_ref()
                        .map_or_else(|_| "unreadable".to_owned(), ToString::to_string)
                })
                .collect();
            return Err(UnwrapError::UnexpectedContentType(format!(
                "a signer's content-type attribute names {}, the content is data",
                named.join(", ")
            )));
        }
    }
    Ok(())
}

/// A readable name of an algorithm, e.g. `SHA256` or `RSASSA-PSS`.
fn algorithm_name(nid: Nid) -> String {
    nid.short_name()
        .or_else(|_| nid.long_name())
        .unwrap_or("unknown")
        .to_owned()
}

/// The refusal for signatures that [`libcrypto::verify_signatures`] did not accept.
fn signature_refusal(failure: SignatureFailure) -> UnwrapError {
    let e = match failure {
        SignatureFailure::Invalid(e) => e,
        SignatureFailure::TooLarge => {
            return UnwrapError::Malformed("the signed content is larger than 2 GiB".to_owned());
        }
    };
    if has_cms_reason(&e, CMS_R_SIGNER_CERTIFICATE_NOT_FOUND) {
        UnwrapError::UntrustedSigner {
            subject: "unknown".to_owned(),
            detail: "the signer's certificate is not included in the message".to_owned(),
        }
    } else if has_cms_reason(&e, CMS_R_NO_CONTENT) {
        UnwrapError::Malformed("the signed data carries no content".to_owned())
    } else {
        UnwrapError::BadSignature(reasons(&e))
    }
}

/// Checks that `cert` chains to the store's anchors (S/MIME signing purpose, the
/// store's time), with intermediates from `untrusted`; returns the chain, leaf
/// first and anchor last.
fn check_chain(
    store: &X509StoreRef,
    cert: &X509,
    untrusted: &StackRef<X509>,
) -> Result<Vec<X509>, UnwrapError> {
    let subject = crate::x509::subject_line(cert);
    let outcome = X509StoreContext::new().and_then(|mut context| {
        context.init(store, cert, untrusted, |c| {
            let valid = c.verify_cert()?;
            let chain: Vec<X509> = c
                .chain()
                .map(|chain| chain.iter().map(X509Ref::to_owned).collect())
                .unwrap_or_default();
            let failing = c.current_cert().map(X509Ref::to_owned);
            Ok((valid, c.error(), c.error_depth(), chain, failing))
        })
    });
    let (valid, result, depth, chain, failing) =
        outcome.map_err(|e| UnwrapError::UntrustedSigner {
            subject: subject.clone(),
            detail: format!("the chain could not be checked: {}", reasons(&e)),
        })?;
    if valid {
        return Ok(chain);
    }
    let which = if depth == 0 {
        "the signer certificate".to_owned()
    } else {
        format!("the certificate at depth {depth} of its chain")
    };
    let detail = format!("{} ({which})", result.error_string());
    match result.as_raw() {
        ffi::X509_V_ERR_CERT_HAS_EXPIRED | ffi::X509_V_ERR_CERT_NOT_YET_VALID => {
            Err(UnwrapError::SignerExpired { subject, detail })
        }
        ffi::X509_V_ERR_INVALID_PURPOSE => Err(UnwrapError::SignerUsage { subject, detail }),
        ffi::X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION => {
            Err(UnwrapError::CriticalExtension { subject, detail })
        }
        ffi::X509_V_ERR_EE_KEY_TOO_SMALL | ffi::X509_V_ERR_CA_KEY_TOO_SMALL => {
            let weak = failing.as_deref().unwrap_or(cert);
            Err(UnwrapError::SignerWeakKey {
                subject: crate::x509::subject_line(weak),
                detail: format!("{} ({which}); {KEY_SIZES}", key_size(weak)),
            })
        }
        ffi::X509_V_ERR_CA_MD_TOO_WEAK => Err(UnwrapError::WeakAlgorithm {
            algorithm: format!(
                "{} of {which}",
                failing.as_deref().map_or_else(
                    || "the signature".to_owned(),
                    |c| algorithm_name(c.signature_algorithm().object().nid())
                )
            ),
        }),
        _ => Err(UnwrapError::UntrustedSigner { subject, detail }),
    }
}

/// The key sizes [`keys::AUTH_LEVEL`] requires, for refusals.
const KEY_SIZES: &str =
    "at least 2048 bits are required for RSA, DSA and DH, 224 for elliptic curves";

/// The size and type of `cert`'s public key, e.g. `a 1024-bit RSA key`.
fn key_size(cert: &X509Ref) -> String {
    let Ok(key) = cert.public_key() else {
        return "a key that cannot be read".to_owned();
    };
    let kind = match key.id() {
        Id::RSA | Id::RSA_PSS => "RSA",
        Id::DSA => "DSA",
        Id::DH | Id::DHX => "DH",
        Id::EC => "elliptic-curve",
        _ => "public",
    };
    format!("a {}-bit {kind} key", key.bits())
}
