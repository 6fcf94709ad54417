//! Certificate revocation lists (RFC 5280 §5): parsing, currency, and the
//! status of one certificate. Delta and indirect CRLs are not supported.

use std::cmp::Ordering;

use openssl::asn1::Asn1Time;
use openssl::x509::{CrlStatus, GeneralNameRef, X509, X509Crl};

use super::Answer;
use crate::error::reasons;

/// Parses a CRL as fetched: DER, or PEM.
pub(super) fn parse(body: &[u8]) -> Result<X509Crl, String> {
    let parsed = if body.starts_with(b"-----") {
        X509Crl::from_pem(body)
    } else {
        X509Crl::from_der(body)
    };
    parsed.map_err(|e| format!("not a CRL: {}", reasons(&e)))
}

/// Whether `crl` is issued under the name of `cert`'s issuer.
pub(super) fn covers(crl: &X509Crl, cert: &X509) -> bool {
    crl.issuer_name()
        .try_cmp(cert.issuer_name())
        .is_ok_and(|o| o == Ordering::Equal)
}

/// Whether `crl` is in force now: issued in the past, next update in the future.
pub(super) fn is_current(crl: &X509Crl) -> bool {
    let Ok(now) = Asn1Time::days_from_now(0) else {
        return false;
    };
    crl.last_update() <= now && crl.next_update().is_some_and(|next| next > now)
}

/// The status of `cert` according to `crl`, which must be current, issued by
/// `issuer` and signed with its key.
pub(super) fn status(crl: &X509Crl, cert: &X509, issuer: &X509) -> Result<Answer, String> {
    if !covers(crl, cert) {
        return Err("the CRL is of another issuer".to_owned());
    }
    let key = issuer
        .public_key()
        .map_err(|e| format!("the issuer key cannot be read: {}", reasons(&e)))?;
    if !crl.verify(&key).unwrap_or(false) {
        return Err("the CRL signature does not verify with the issuer's key".to_owned());
    }
    if !is_current(crl) {
        return Err("the CRL is not current (next update passed or missing)".to_owned());
    }
    Ok(match crl.get_by_cert(cert) {
        CrlStatus::Revoked(entry) => {
            Answer::Revoked(format!("revoked on {}", entry.revocation_date()))
        }
        CrlStatus::NotRevoked | CrlStatus::RemoveFromCrl(_) => Answer::Good,
    })
}

/// The `http://` addresses of `cert`'s CRL distribution points.
pub(super) fn distribution_points(cert: &X509) -> Vec<String> {
    let Some(points) = cert.crl_distribution_points() else {
        return Vec::new();
    };
    points
        .iter()
        .filter_map(|point| point.distpoint())
        .filter_map(|name| name.fullname())
        .flat_map(|names| names.iter().filter_map(GeneralNameRef::uri))
        .filter(|uri| uri.starts_with("http://"))
        .map(str::to_owned)
        .collect()
}
