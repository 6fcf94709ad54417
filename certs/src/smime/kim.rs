//! gematik's recipient attribute 1.2.276.0.76.4.173 (KIM): for every recipient,
//! its mail address and the encryption certificate (issuer and serial) the
//! letter is encrypted to. KIM puts it in the signed attributes of the
//! SignerInfo and in the `unauthAttrs` of the AuthEnvelopedData.

use der::asn1::{Ia5String, ObjectIdentifier};
use der::{Decode, Encode, Sequence};
use openssl::x509::{X509, X509Name};

use cms::cert::IssuerAndSerialNumber;
use cms::cert::x509::attr::Attribute;

use super::UnwrapError;

/// The attribute's OID.
const RECIPIENT_EMAILS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.276.0.76.4.173");

/// One value of the attribute: `SEQUENCE { rfc822Name IA5String, certID IssuerAndSerialNumber }`.
#[derive(Clone, Debug, Sequence)]
struct RecipientEmail {
    address: Ia5String,
    cert: IssuerAndSerialNumber,
}

/// A recipient as gematik's attribute names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KimRecipient {
    /// The recipient's mail address, lowercase.
    pub address: String,
    /// The issuer of its encryption certificate, readable.
    pub issuer: String,
    /// The serial number of its encryption certificate, uppercase hex.
    pub serial: String,
    /// Whether it came from the signed attributes (else from the unauthenticated ones).
    pub signed: bool,
    /// Whether the certificate is the gateway's that decrypted the letter.
    pub decrypting: bool,
    /// DER of the issuer name and the serial's magnitude, to compare with certificates.
    issuer_der: Vec<u8>,
    serial_bytes: Vec<u8>,
}

impl KimRecipient {
    /// Whether this entry names `cert`.
    pub(super) fn names(&self, cert: &X509) -> bool {
        let issuer = cert.issuer_name().to_der().ok();
        let serial = cert.serial_number().to_bn().map(|bn| bn.to_vec()).ok();
        issuer.as_deref() == Some(self.issuer_der.as_slice())
            && serial.as_deref() == Some(self.serial_bytes.as_slice())
    }
}

/// The recipients the attribute in `attributes` names (none without it).
pub(super) fn recipients<'a>(
    attributes: impl IntoIterator<Item = &'a Attribute>,
    signed: bool,
) -> Result<Vec<KimRecipient>, UnwrapError> {
    let malformed = |e: String| {
        UnwrapError::Malformed(format!("gematik's recipient attribute cannot be read: {e}"))
    };
    let mut found = Vec::new();
    for attribute in attributes.into_iter().filter(|a| a.oid == RECIPIENT_EMAILS) {
        for value in attribute.values.iter() {
            let entry: RecipientEmail = value.decode_as().map_err(|e| malformed(e.to_string()))?;
            let issuer_der = entry
                .cert
                .issuer
                .to_der()
                .map_err(|e| malformed(e.to_string()))?;
            let issuer = X509Name::from_der(&issuer_der)
                .map(|name| crate::x509::name_line(&name))
                .map_err(|e| malformed(super::error::reasons(&e)))?;
            let serial_bytes = strip_zeros(entry.cert.serial_number.as_bytes()).to_vec();
            found.push(KimRecipient {
                address: entry.address.to_string().to_ascii_lowercase(),
                issuer,
                serial: serial_bytes.iter().map(|b| format!("{b:02X}")).collect(),
                signed,
                decrypting: false,
                issuer_der,
                serial_bytes,
            });
        }
    }
    Ok(found)
}

/// The recipients named in the signed attributes of a SignerInfo (already verified by
/// OpenSSL), each attribute given as its DER.
pub(super) fn signed_recipients(attributes: &[Vec<u8>]) -> Result<Vec<KimRecipient>, UnwrapError> {
    let decoded = attributes
        .iter()
        .map(|der| Attribute::from_der(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| UnwrapError::Malformed(format!("a signed attribute cannot be read: {e}")))?;
    recipients(&decoded, true)
}

/// An unsigned big-endian integer without its leading zero octets.
pub(super) fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    &bytes[skip..]
}
