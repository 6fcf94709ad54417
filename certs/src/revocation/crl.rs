//! Certificate revocation lists (RFC 5280 §5): parsing, currency, scope, and the
//! status of one certificate. Only complete CRLs answer: a delta CRL, an indirect
//! one, one limited to some reasons or attribute certificates, or one with a
//! critical extension (of the CRL or of an entry) that is not understood is no
//! answer; one limited to end-entity or CA certificates, or to a distribution point,
//! answers only for the certificates it covers.

use std::cmp::Ordering;

use cms::cert::x509::ext::Extension;
use cms::cert::x509::ext::pkix::crl::dp::IssuingDistributionPoint;
use cms::cert::x509::ext::pkix::name::{DistributionPointName, GeneralName};
use der::asn1::{AnyRef, ObjectIdentifier};
use der::{Decode, Reader, SliceReader, Tagged};
use openssl::asn1::Asn1Time;
use openssl::x509::{CrlStatus, GeneralNameRef, X509, X509Crl};

use super::Answer;
use crate::error::reasons;

/// CRL extensions understood (RFC 5280 §5.2) that do not limit the CRL's scope:
/// authorityKeyIdentifier, issuerAltName, cRLNumber, freshestCRL,
/// authorityInfoAccess.
const CRL_EXTENSIONS: [&str; 5] = [
    "2.5.29.35",
    "2.5.29.18",
    "2.5.29.20",
    "2.5.29.46",
    "1.3.6.1.5.5.7.1.1",
];
/// deltaCRLIndicator: the CRL lists only changes since a base CRL.
const DELTA_CRL_INDICATOR: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.27");
/// issuingDistributionPoint: what the CRL covers.
const ISSUING_DISTRIBUTION_POINT: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.28");
/// CRL entry extensions understood (RFC 5280 §5.3): reasonCode, holdInstructionCode,
/// invalidityDate. certificateIssuer (2.5.29.29, indirect CRLs) is not.
const ENTRY_EXTENSIONS: [&str; 3] = ["2.5.29.21", "2.5.29.23", "2.5.29.24"];

/// A CRL with what it covers, read once when it is loaded or fetched.
pub(super) struct Crl {
    crl: X509Crl,
    /// What the CRL covers, or why it cannot give a complete answer.
    scope: Result<Scope, String>,
}

/// The limits an issuingDistributionPoint puts on a complete CRL.
#[derive(Debug, Default, PartialEq, Eq)]
struct Scope {
    /// onlyContainsUserCerts.
    only_end_entities: bool,
    /// onlyContainsCACerts.
    only_cas: bool,
    /// The URIs of its distribution point name, if it names one.
    points: Option<Vec<String>>,
}

impl Crl {
    /// Reads the scope of `crl`.
    pub(super) fn new(crl: X509Crl) -> Self {
        let scope = crl
            .to_der()
            .map_err(|e| format!("the CRL cannot be encoded: {}", reasons(&e)))
            .and_then(|der| scope(&der));
        Crl { crl, scope }
    }
}

/// Parses a CRL as fetched: DER, or PEM.
pub(super) fn parse(body: &[u8]) -> Result<Crl, String> {
    let parsed = if body.starts_with(b"-----") {
        X509Crl::from_pem(body)
    } else {
        X509Crl::from_der(body)
    };
    parsed
        .map(Crl::new)
        .map_err(|e| format!("not a CRL: {}", reasons(&e)))
}

/// Whether `crl` is issued under the name of `cert`'s issuer.
pub(super) fn covers(crl: &Crl, cert: &X509) -> bool {
    crl.crl
        .issuer_name()
        .try_cmp(cert.issuer_name())
        .is_ok_and(|o| o == Ordering::Equal)
}

/// Whether `crl` is in force now: issued in the past, next update in the future.
pub(super) fn is_current(crl: &Crl) -> bool {
    let Ok(now) = Asn1Time::days_from_now(0) else {
        return false;
    };
    crl.crl.last_update() <= now && crl.crl.next_update().is_some_and(|next| next > now)
}

/// The status of `cert` (a CA certificate if `is_ca`) according to `crl`, which must
/// be current, issued by `issuer`, signed with its key, and complete for `cert`.
pub(super) fn status(crl: &Crl, cert: &X509, issuer: &X509, is_ca: bool) -> Result<Answer, String> {
    if !covers(crl, cert) {
        return Err("the CRL is of another issuer".to_owned());
    }
    let key = issuer
        .public_key()
        .map_err(|e| format!("the issuer key cannot be read: {}", reasons(&e)))?;
    if !crl.crl.verify(&key).unwrap_or(false) {
        return Err("the CRL signature does not verify with the issuer's key".to_owned());
    }
    if !is_current(crl) {
        return Err("the CRL is not current (next update passed or missing)".to_owned());
    }
    let scope = crl
        .scope
        .as_ref()
        .map_err(|why| format!("the CRL cannot give a complete answer: {why}"))?;
    check_scope(scope, cert, is_ca)?;
    Ok(match crl.crl.get_by_cert(cert) {
        CrlStatus::Revoked(entry) => {
            Answer::Revoked(format!("revoked on {}", entry.revocation_date()))
        }
        CrlStatus::NotRevoked | CrlStatus::RemoveFromCrl(_) => Answer::Good,
    })
}

/// Whether a CRL of `scope` covers `cert`.
fn check_scope(scope: &Scope, cert: &X509, is_ca: bool) -> Result<(), String> {
    if scope.only_end_entities && is_ca {
        return Err("the CRL covers end-entity certificates only".to_owned());
    }
    if scope.only_cas && !is_ca {
        return Err("the CRL covers CA certificates only".to_owned());
    }
    if let Some(points) = &scope.points {
        let own = uris(cert);
        if !points.iter().any(|point| own.contains(point)) {
            return Err(format!(
                "the CRL covers the certificates of distribution point {}, not this one's",
                points.join(", ")
            ));
        }
    }
    Ok(())
}

/// The `http://` addresses of `cert`'s CRL distribution points.
pub(super) fn distribution_points(cert: &X509) -> Vec<String> {
    uris(cert)
        .into_iter()
        .filter(|uri| uri.starts_with("http://"))
        .collect()
}

/// Every URI of `cert`'s CRL distribution points.
fn uris(cert: &X509) -> Vec<String> {
    let Some(points) = cert.crl_distribution_points() else {
        return Vec::new();
    };
    points
        .iter()
        .filter_map(|point| point.distpoint())
        .filter_map(|name| name.fullname())
        .flat_map(|names| names.iter().filter_map(GeneralNameRef::uri))
        .map(str::to_owned)
        .collect()
}

/// The scope of the CRL `der`, or why it cannot give a complete answer.
fn scope(der: &[u8]) -> Result<Scope, String> {
    let unreadable = |e: der::Error| format!("the CRL cannot be read: {e}");
    let list = elements(AnyRef::from_der(der).map_err(unreadable)?.value()).map_err(unreadable)?;
    let tbs = list.first().ok_or("the CRL is empty")?;
    let mut scope = Scope::default();
    for field in elements(tbs.value()).map_err(unreadable)? {
        match field.tag() {
            // revokedCertificates: each entry's extensions.
            der::Tag::Sequence if is_entry_list(&field) => {
                for entry in elements(field.value()).map_err(unreadable)? {
                    let parts = elements(entry.value()).map_err(unreadable)?;
                    if let Some(extensions) = parts.get(2) {
                        check_entry_extensions(extensions)?;
                    }
                }
            }
            // [0] EXPLICIT crlExtensions.
            tag if tag.octet() == 0xa0 => {
                let extensions = AnyRef::from_der(field.value()).map_err(unreadable)?;
                for extension in elements(extensions.value()).map_err(unreadable)? {
                    let extension: Extension = extension.decode_as().map_err(unreadable)?;
                    read_crl_extension(&extension, &mut scope)?;
                }
            }
            _ => {}
        }
    }
    Ok(scope)
}

/// Whether a SEQUENCE of the tbsCertList is revokedCertificates (a SEQUENCE of
/// SEQUENCEs that start with a serial number), not the signature algorithm or issuer.
fn is_entry_list(field: &AnyRef<'_>) -> bool {
    elements(field.value()).is_ok_and(|entries| {
        entries.first().is_some_and(|entry| {
            entry.tag() == der::Tag::Sequence
                && elements(entry.value())
                    .is_ok_and(|parts| parts.first().is_some_and(|p| p.tag() == der::Tag::Integer))
        })
    })
}

/// Applies one CRL extension to `scope`; an extension that makes the CRL incomplete,
/// or a critical one not understood, is the reason it cannot answer.
fn read_crl_extension(extension: &Extension, scope: &mut Scope) -> Result<(), String> {
    let oid = extension.extn_id;
    if oid == DELTA_CRL_INDICATOR {
        return Err("it is a delta CRL".to_owned());
    }
    if oid == ISSUING_DISTRIBUTION_POINT {
        let point = IssuingDistributionPoint::from_der(extension.extn_value.as_bytes())
            .map_err(|e| format!("its issuingDistributionPoint cannot be read: {e}"))?;
        return read_issuing_point(&point, scope);
    }
    if extension.critical && !CRL_EXTENSIONS.contains(&oid.to_string().as_str()) {
        return Err(format!("it has the unknown critical extension {oid}"));
    }
    Ok(())
}

/// What an issuingDistributionPoint says, into `scope`.
fn read_issuing_point(point: &IssuingDistributionPoint, scope: &mut Scope) -> Result<(), String> {
    if point.only_some_reasons.is_some() {
        return Err("it covers only some revocation reasons".to_owned());
    }
    if point.indirect_crl {
        return Err("it is an indirect CRL".to_owned());
    }
    if point.only_contains_attribute_certs {
        return Err("it covers attribute certificates only".to_owned());
    }
    scope.only_end_entities = point.only_contains_user_certs;
    scope.only_cas = point.only_contains_ca_certs;
    scope.points = match &point.distribution_point {
        None => None,
        Some(DistributionPointName::FullName(names)) => Some(
            names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::UniformResourceIdentifier(uri) => Some(uri.to_string()),
                    _ => None,
                })
                .collect(),
        ),
        Some(DistributionPointName::NameRelativeToCRLIssuer(_)) => {
            return Err("its distribution point is named relative to the issuer".to_owned());
        }
    };
    Ok(())
}

/// Refuses the entry extensions `extensions` (a SEQUENCE of Extension) that make
/// the CRL indirect or are critical and not understood.
fn check_entry_extensions(extensions: &AnyRef<'_>) -> Result<(), String> {
    let unreadable = |e: der::Error| format!("a CRL entry cannot be read: {e}");
    for extension in elements(extensions.value()).map_err(unreadable)? {
        let extension: Extension = extension.decode_as().map_err(unreadable)?;
        let oid = extension.extn_id.to_string();
        if oid == "2.5.29.29" {
            return Err("it is an indirect CRL (an entry names a certificate issuer)".to_owned());
        }
        if extension.critical && !ENTRY_EXTENSIONS.contains(&oid.as_str()) {
            return Err(format!("an entry has the unknown critical extension {oid}"));
        }
    }
    Ok(())
}

/// The elements `contents` holds, one after the other.
fn elements(contents: &[u8]) -> Result<Vec<AnyRef<'_>>, der::Error> {
    let mut reader = SliceReader::new(contents)?;
    let mut found = Vec::new();
    while !reader.is_finished() {
        found.push(reader.decode()?);
    }
    Ok(found)
}
