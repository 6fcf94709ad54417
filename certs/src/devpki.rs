//! A development PKI made with OpenSSL: a CA, the gateway's TLS and S/MIME
//! certificate, and practice certificates (TLS client and S/MIME signer).
//!
//! The CA's key is RSA-2048; an end entity's is RSA-2048 unless its profile asks
//! for an ECC curve ([`KeyKind`]). Signatures are SHA-256, certificates X.509 v3
//! with random positive 128-bit serials and subject and authority key identifiers.
//! The CA can also issue a CRL ([`crl`]).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{
    CrlNumber, X509, X509Builder, X509CrlBuilder, X509Name, X509NameBuilder, X509RevokedBuilder,
};
use zeroize::Zeroizing;

use crate::error::{CertError, Context};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);
const CA_NAME: &str = "kvgate development CA";
const DEV_ORGANIZATION: &str = "kvgate development";

/// A certificate with its private key, both PEM.
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: Zeroizing<String>,
}

/// The development PKI written by `kvgate init`.
pub struct DevPki {
    /// The self-signed CA, trust anchor of everything else.
    pub ca: Issued,
    /// The gateway: TLS server certificate and S/MIME recipient.
    pub gateway: Issued,
    /// A demo practice: TLS client certificate and S/MIME signer.
    pub practice: Issued,
}

/// What an end-entity certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// TLS server and S/MIME: EKU serverAuth + emailProtection, KU digitalSignature +
    /// keyEncipherment (keyAgreement for an ECC key).
    Gateway,
    /// TLS client and S/MIME signer: EKU clientAuth + emailProtection, KU
    /// digitalSignature + nonRepudiation + keyEncipherment (keyAgreement for ECC).
    Practice,
}

/// The kind of key an end-entity certificate gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA with a 2048-bit modulus.
    #[default]
    Rsa2048,
    /// ECC on NIST P-256 (secp256r1).
    EcP256,
    /// ECC on brainpoolP256r1 (RFC 5639), as on German health professional cards.
    BrainpoolP256r1,
}

/// What goes into an end-entity certificate.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Subject common name.
    pub common_name: String,
    /// Subject organisation.
    pub organization: String,
    /// Key usages.
    pub usage: Usage,
    /// The kind of key to generate.
    pub key: KeyKind,
    /// Mail addresses (SAN rfc822Name).
    pub emails: Vec<String>,
    /// Host names (SAN dNSName).
    pub dns: Vec<String>,
    /// IP addresses (SAN iPAddress).
    pub ips: Vec<IpAddr>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

impl Profile {
    /// A practice certificate for `email`, valid from an hour ago for two years.
    /// The organisation is the domain of `email`.
    pub fn practice(cn: &str, email: &str) -> Profile {
        let organization = email.rsplit_once('@').map_or(email, |(_, domain)| domain);
        let now = SystemTime::now();
        Profile {
            common_name: cn.to_owned(),
            organization: organization.to_owned(),
            usage: Usage::Practice,
            key: KeyKind::Rsa2048,
            emails: vec![email.to_owned()],
            dns: Vec::new(),
            ips: Vec::new(),
            not_before: now - HOUR,
            not_after: now + 2 * 365 * DAY,
        }
    }

    /// The gateway certificate of `domain`: SAN DNS `localhost`, IP `127.0.0.1` and
    /// mail `gateway@<domain>`, valid from an hour ago for two years.
    pub fn gateway(domain: &str) -> Profile {
        let now = SystemTime::now();
        Profile {
            common_name: format!("kvgate gateway {domain}"),
            organization: domain.to_owned(),
            usage: Usage::Gateway,
            key: KeyKind::Rsa2048,
            emails: vec![format!("gateway@{domain}")],
            dns: vec!["localhost".to_owned()],
            ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            not_before: now - HOUR,
            not_after: now + 2 * 365 * DAY,
        }
    }
}

/// Generates a CA and, issued by it, the gateway certificate for `domain` and a
/// practice certificate ("Demo Practice") for `practice_email`.
pub fn generate(domain: &str, practice_email: &str) -> Result<DevPki, CertError> {
    let ca = generate_ca()?;
    let gateway = issue(&ca, &Profile::gateway(domain))?;
    let practice = issue(&ca, &Profile::practice("Demo Practice", practice_email))?;
    Ok(DevPki {
        ca,
        gateway,
        practice,
    })
}

/// Issues an end-entity certificate as described by `profile`, signed by `ca`.
pub fn issue(ca: &Issued, profile: &Profile) -> Result<Issued, CertError> {
    let ca_cert = X509::from_pem(ca.cert_pem.as_bytes()).context("reading the CA certificate")?;
    let ca_key =
        PKey::private_key_from_pem(ca.key_pem.as_bytes()).context("reading the CA private key")?;
    let ca_public = ca_cert.public_key().context("reading the CA public key")?;
    if !ca_public.public_eq(&ca_key) {
        return Err(CertError::KeyMismatch {
            subject: crate::x509::subject_line(&ca_cert),
        });
    }
    let key = new_key(profile.key)?;
    let subject = name(&profile.common_name, &profile.organization)?;
    let mut builder = builder(
        &subject,
        ca_cert.subject_name(),
        &key,
        profile.not_before,
        profile.not_after,
    )?;

    builder
        .append_extension(
            BasicConstraints::new()
                .critical()
                .build()
                .context("basicConstraints")?,
        )
        .context("adding basicConstraints")?;
    let mut key_usage = KeyUsage::new();
    key_usage.critical().digital_signature();
    let mut extended = ExtendedKeyUsage::new();
    match profile.usage {
        Usage::Gateway => extended.server_auth(),
        Usage::Practice => {
            key_usage.non_repudiation();
            extended.client_auth()
        }
    };
    extended.email_protection();
    // Keys are transported to an RSA key, agreed with an ECC key (RFC 5753 §7.1).
    match profile.key {
        KeyKind::Rsa2048 => key_usage.key_encipherment(),
        KeyKind::EcP256 | KeyKind::BrainpoolP256r1 => key_usage.key_agreement(),
    };
    builder
        .append_extension(key_usage.build().context("keyUsage")?)
        .context("adding keyUsage")?;
    builder
        .append_extension(extended.build().context("extendedKeyUsage")?)
        .context("adding extendedKeyUsage")?;

    let ski = SubjectKeyIdentifier::new()
        .build(&builder.x509v3_context(Some(&ca_cert), None))
        .context("subjectKeyIdentifier")?;
    let aki = AuthorityKeyIdentifier::new()
        .keyid(true)
        .build(&builder.x509v3_context(Some(&ca_cert), None))
        .context("authorityKeyIdentifier")?;
    builder
        .append_extension(ski)
        .context("adding subjectKeyIdentifier")?;
    builder
        .append_extension(aki)
        .context("adding authorityKeyIdentifier")?;

    if !(profile.emails.is_empty() && profile.dns.is_empty() && profile.ips.is_empty()) {
        let mut san = SubjectAlternativeName::new();
        for email in &profile.emails {
            san.email(email);
        }
        for dns in &profile.dns {
            san.dns(dns);
        }
        for ip in &profile.ips {
            san.ip(&ip.to_string());
        }
        let san = san
            .build(&builder.x509v3_context(Some(&ca_cert), None))
            .context("subjectAltName")?;
        builder
            .append_extension(san)
            .context("adding subjectAltName")?;
    }

    builder
        .sign(&ca_key, MessageDigest::sha256())
        .context("signing the certificate")?;
    finish(builder.build(), &key)
}

/// A CRL of `ca` (PEM) that lists `revoked` (certificates it issued, PEM) as
/// revoked since now, issued now and next updated after `valid_for`.
pub fn crl(ca: &Issued, revoked: &[&str], valid_for: Duration) -> Result<String, CertError> {
    let ca_cert = X509::from_pem(ca.cert_pem.as_bytes()).context("reading the CA certificate")?;
    let ca_key =
        PKey::private_key_from_pem(ca.key_pem.as_bytes()).context("reading the CA private key")?;
    let now = SystemTime::now();
    let this_update = asn1_time(now)?;
    let next_update = asn1_time(now + valid_for)?;
    let mut builder = X509CrlBuilder::new().context("creating a CRL")?;
    builder
        .set_issuer_name(ca_cert.subject_name())
        .context("setting the CRL issuer")?;
    builder
        .set_last_update(&this_update)
        .context("setting thisUpdate")?;
    builder
        .set_next_update(&next_update)
        .context("setting nextUpdate")?;
    let aki = AuthorityKeyIdentifier::new()
        .keyid(true)
        .build(
            &X509Builder::new()
                .context("creating a context")?
                .x509v3_context(Some(&ca_cert), None),
        )
        .context("authorityKeyIdentifier")?;
    builder
        .append_extension(aki)
        .context("adding authorityKeyIdentifier")?;
    let number = BigNum::from_u32(1).context("creating the CRL number")?;
    builder
        .append_extension(
            CrlNumber::new(number)
                .context("CRL number")?
                .build()
                .context("CRL number")?,
        )
        .context("adding the CRL number")?;
    for pem in revoked {
        let cert = X509::from_pem(pem.as_bytes()).context("reading a revoked certificate")?;
        let mut entry = X509RevokedBuilder::new().context("creating a CRL entry")?;
        entry
            .set_serial_number(cert.serial_number())
            .context("setting the revoked serial")?;
        entry
            .set_revocation_date(&this_update)
            .context("setting the revocation date")?;
        builder
            .add_revoked(entry.build())
            .context("adding a CRL entry")?;
    }
    builder
        .sign(&ca_key, MessageDigest::sha256())
        .context("signing the CRL")?;
    let crl = builder.build().context("finishing the CRL")?;
    let pem = crl.to_pem().context("encoding the CRL")?;
    // PEM is ASCII: the lossy conversion never replaces anything.
    Ok(String::from_utf8_lossy(&pem).into_owned())
}

/// The self-signed development CA, valid from an hour ago for ten years.
fn generate_ca() -> Result<Issued, CertError> {
    let key = new_key(KeyKind::Rsa2048)?;
    let subject = name(CA_NAME, DEV_ORGANIZATION)?;
    let now = SystemTime::now();
    let mut builder = builder(&subject, &subject, &key, now - HOUR, now + 10 * 365 * DAY)?;
    builder
        .append_extension(
            BasicConstraints::new()
                .critical()
                .ca()
                .build()
                .context("basicConstraints")?,
        )
        .context("adding basicConstraints")?;
    builder
        .append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .context("keyUsage")?,
        )
        .context("adding keyUsage")?;
    let ski = SubjectKeyIdentifier::new()
        .build(&builder.x509v3_context(None, None))
        .context("subjectKeyIdentifier")?;
    builder
        .append_extension(ski)
        .context("adding subjectKeyIdentifier")?;
    // The issuer is the certificate itself: its key id is the one just added.
    let aki = AuthorityKeyIdentifier::new()
        .keyid(true)
        .build(&builder.x509v3_context(None, None))
        .context("authorityKeyIdentifier")?;
    builder
        .append_extension(aki)
        .context("adding authorityKeyIdentifier")?;
    builder
        .sign(&key, MessageDigest::sha256())
        .context("signing the CA certificate")?;
    finish(builder.build(), &key)
}

/// A fresh key of `kind`.
fn new_key(kind: KeyKind) -> Result<PKey<Private>, CertError> {
    let curve = match kind {
        KeyKind::Rsa2048 => {
            let rsa = Rsa::generate(2048).context("generating an RSA key")?;
            return PKey::from_rsa(rsa).context("wrapping the RSA key");
        }
        KeyKind::EcP256 => Nid::X9_62_PRIME256V1,
        KeyKind::BrainpoolP256r1 => Nid::BRAINPOOL_P256R1,
    };
    let group = EcGroup::from_curve_name(curve).context("choosing the curve")?;
    let ec = EcKey::generate(&group).context("generating an ECC key")?;
    PKey::from_ec_key(ec).context("wrapping the ECC key")
}

/// A subject name `CN=<cn>, O=<organization>`.
fn name(cn: &str, organization: &str) -> Result<X509Name, CertError> {
    let mut name = X509NameBuilder::new().context("building a name")?;
    name.append_entry_by_text("CN", cn)
        .context("setting the common name")?;
    name.append_entry_by_text("O", organization)
        .context("setting the organisation")?;
    Ok(name.build())
}

/// A v3 certificate builder with subject, issuer, key, serial and validity set.
fn builder(
    subject: &openssl::x509::X509NameRef,
    issuer: &openssl::x509::X509NameRef,
    key: &PKey<Private>,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<X509Builder, CertError> {
    if not_after <= not_before {
        return Err(CertError::Validity(
            "not_after must be later than not_before".to_owned(),
        ));
    }
    let mut builder = X509Builder::new().context("creating a certificate")?;
    builder.set_version(2).context("setting the version")?;
    let mut serial = BigNum::new().context("creating a serial")?;
    // 128 random bits with the top bit set: positive, never zero, 17 DER octets.
    serial
        .rand(128, MsbOption::ONE, false)
        .context("drawing a serial")?;
    let serial = serial.to_asn1_integer().context("encoding the serial")?;
    builder
        .set_serial_number(&serial)
        .context("setting the serial")?;
    builder
        .set_subject_name(subject)
        .context("setting the subject")?;
    builder
        .set_issuer_name(issuer)
        .context("setting the issuer")?;
    builder.set_pubkey(key).context("setting the public key")?;
    let not_before = asn1_time(not_before)?;
    let not_after = asn1_time(not_after)?;
    builder
        .set_not_before(&not_before)
        .context("setting notBefore")?;
    builder
        .set_not_after(&not_after)
        .context("setting notAfter")?;
    Ok(builder)
}

/// `time` as an ASN.1 time.
fn asn1_time(time: SystemTime) -> Result<Asn1Time, CertError> {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| CertError::Validity("a time before 1970".to_owned()))?
        .as_secs();
    let seconds = seconds
        .try_into()
        .map_err(|_| CertError::Validity("a time too far in the future".to_owned()))?;
    Asn1Time::from_unix(seconds).context("encoding a time")
}

/// PEM of the certificate and its key.
fn finish(cert: X509, key: &PKey<Private>) -> Result<Issued, CertError> {
    // PEM is ASCII: the lossy conversion never replaces anything.
    let cert_pem =
        String::from_utf8_lossy(&cert.to_pem().context("encoding the certificate")?).into_owned();
    let key_pem = Zeroizing::new(
        key.private_key_to_pem_pkcs8()
            .context("encoding the private key")?,
    );
    let key_pem = Zeroizing::new(String::from_utf8_lossy(&key_pem).into_owned());
    Ok(Issued { cert_pem, key_pem })
}
