//! OCSP (RFC 6960): one request per certificate to the responder its Authority
//! Information Access names; the response must be signed by the issuer or a
//! responder it delegated to, be current, and speak about this certificate.

use openssl::hash::MessageDigest;
use openssl::ocsp::{
    OcspCertId, OcspCertStatus, OcspFlag, OcspRequest, OcspResponse, OcspResponseStatus,
};
use openssl::stack::Stack;
use openssl::x509::X509;
use openssl::x509::store::X509StoreRef;
use std::time::Duration;

use super::{Answer, http};
use crate::error::reasons;

/// Allowed clock difference with the responder, in seconds.
const CLOCK_SKEW: u32 = 300;

/// The oldest answer taken, in seconds since its thisUpdate: 7 days. A response
/// without nextUpdate (RFC 6960 §4.2.2.1: newer information is always available)
/// would otherwise count however old it is, and a replayed old "good" would outlive
/// a revocation. With nextUpdate, the response must also not have passed it.
const MAX_AGE: u32 = 7 * 86_400;

/// The `http://` OCSP responders of `cert`.
pub(super) fn responders(cert: &X509) -> Vec<String> {
    cert.ocsp_responders()
        .map(|urls| {
            urls.iter()
                .map(|url| url.to_string())
                .filter(|url| url.starts_with("http://"))
                .collect()
        })
        .unwrap_or_default()
}

/// Identifies `cert` of `issuer` in the cache: issuer fingerprint and serial.
pub(super) fn cache_key(cert: &X509, issuer: &X509) -> Result<String, String> {
    let issuer = crate::x509::fingerprint(issuer).map_err(|e| e.to_string())?;
    let serial = crate::x509::serial_hex(cert).map_err(|e| e.to_string())?;
    Ok(format!("{issuer}/{serial}"))
}

/// Asks `url` about `cert`; `issuers` starts with its issuer, `store` holds the
/// trust anchors the response signer must chain to.
pub(super) fn query(
    url: &str,
    cert: &X509,
    issuers: &[X509],
    store: &X509StoreRef,
    timeout: Duration,
) -> Result<Answer, String> {
    let failed = |what: &str, e: openssl::error::ErrorStack| format!("{what}: {}", reasons(&e));
    let issuer = &issuers[0];
    // SHA-1 is what the CertID of RFC 6960 responders expect; it is an
    // identifier here, not a signature.
    let id = || OcspCertId::from_cert(MessageDigest::sha1(), cert, issuer);
    let mut request = OcspRequest::new().map_err(|e| failed("making the request", e))?;
    request
        .add_id(id().map_err(|e| failed("making the request", e))?)
        .map_err(|e| failed("making the request", e))?;
    let der = request
        .to_der()
        .map_err(|e| failed("encoding the request", e))?;
    let body = http::post(url, "application/ocsp-request", &der, timeout)?;
    let response =
        OcspResponse::from_der(&body).map_err(|e| failed("the response is not OCSP", e))?;
    if response.status() != OcspResponseStatus::SUCCESSFUL {
        return Err(format!(
            "the responder answered with status {}",
            response.status().as_raw()
        ));
    }
    let basic = response
        .basic()
        .map_err(|e| failed("the response has no basic response", e))?;
    let mut untrusted = Stack::new().map_err(|e| failed("checking the response", e))?;
    for cert in issuers {
        untrusted
            .push(cert.clone())
            .map_err(|e| failed("checking the response", e))?;
    }
    basic
        .verify(&untrusted, store, OcspFlag::empty())
        .map_err(|e| failed("the response signature is not trusted", e))?;
    let id = id().map_err(|e| failed("checking the response", e))?;
    let status = basic
        .find_status(&id)
        .ok_or("the response does not mention the certificate")?;
    status
        .check_validity(CLOCK_SKEW, Some(MAX_AGE))
        .map_err(|e| failed("the response is not current", e))?;
    match status.status {
        OcspCertStatus::GOOD => Ok(Answer::Good),
        OcspCertStatus::REVOKED => Ok(Answer::Revoked(match status.revocation_time {
            Some(time) => format!("revoked at {time}"),
            None => "revoked".to_owned(),
        })),
        _ => Err("the responder does not know the certificate".to_owned()),
    }
}
