//! AuthEnvelopedData (RFC 5083, AES-GCM per RFC 5084) read with a DER library
//! where OpenSSL's CMS parser refuses it: gematik's KIM profile puts its
//! recipient attribute into `unauthAttrs [2]`. The structure is decoded by the
//! `cms`/`der` crates (after BER is rewritten as DER); OpenSSL does the
//! cryptography: RSA key transport with the gateway key and AES-GCM.

use der::asn1::{Any, ObjectIdentifier, OctetString};
use der::{Decode, Encode, Sequence};
use openssl::md::{Md, MdRef};
use openssl::pkey::Private;
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::Padding;
use openssl::symm::Cipher;
use openssl::x509::X509;

use cms::cert::x509::attr::Attributes;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{
    EncryptedContentInfo, KeyTransRecipientInfo, OriginatorInfo, RecipientIdentifier,
    RecipientInfo, RecipientInfos,
};

use super::ber;
use super::error::reasons;
use super::kim::{self, KimRecipient, strip_zeros};
use super::{DecryptionKey, UnwrapError};
use crate::SecretBytes;

/// id-ct-authEnvelopedData (RFC 5083).
pub(super) const AUTH_ENVELOPED_DATA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.23");
/// id-data: the decrypted (or signed) content is a MIME entity.
pub(super) const DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
/// The content-type attribute (RFC 5652 11.1).
pub(super) const CONTENT_TYPE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
/// rsaEncryption: PKCS#1 v1.5 key transport.
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// id-RSAES-OAEP (RFC 8017).
const RSAES_OAEP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.7");
/// id-mgf1.
const MGF1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8");
/// id-aes128-GCM, id-aes192-GCM, id-aes256-GCM (RFC 5084).
const GCM: [ObjectIdentifier; 3] = [
    ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.6"),
    ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.26"),
    ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.46"),
];
/// id-pSpecified: the OAEP label.
const P_SPECIFIED: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.9");

/// AuthEnvelopedData as RFC 5083 defines it, `unauthAttrs` with `[2] IMPLICIT`.
#[derive(Clone, Debug, Sequence)]
struct AuthEnvelopedData {
    version: CmsVersion,
    #[asn1(
        context_specific = "0",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    originator_info: Option<OriginatorInfo>,
    recip_infos: RecipientInfos,
    auth_encrypted_content: EncryptedContentInfo,
    #[asn1(
        context_specific = "1",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    auth_attrs: Option<Attributes>,
    mac: OctetString,
    #[asn1(
        context_specific = "2",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    unauth_attrs: Option<Attributes>,
}

/// GCMParameters (RFC 5084).
#[derive(Clone, Debug, Sequence)]
struct GcmParameters {
    nonce: OctetString,
    #[asn1(default = "default_icv_len")]
    icv_len: u8,
}

fn default_icv_len() -> u8 {
    12
}

/// RSAES-OAEP-params (RFC 8017); absent fields mean SHA-1, MGF1-SHA-1, no label.
#[derive(Clone, Debug, Sequence)]
struct OaepParameters {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    hash: Option<AlgorithmIdentifier>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    mask_gen: Option<AlgorithmIdentifier>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    label_source: Option<AlgorithmIdentifier>,
}

/// An AlgorithmIdentifier with any parameters.
#[derive(Clone, Debug, Sequence)]
struct AlgorithmIdentifier {
    oid: ObjectIdentifier,
    parameters: Option<Any>,
}

/// A readable AuthEnvelopedData: what [`decrypt`] needs.
pub(super) struct Parsed {
    data: AuthEnvelopedData,
}

impl Parsed {
    /// The recipients gematik's attribute names in `unauthAttrs`.
    pub fn recipients(&self) -> Result<Vec<KimRecipient>, UnwrapError> {
        match &self.data.unauth_attrs {
            Some(attrs) => kim::recipients(attrs.iter(), false),
            None => Ok(Vec::new()),
        }
    }
}

/// Whether `der` (BER or DER) is a ContentInfo of AuthEnvelopedData; reads it.
/// `None` when it is some other content type or no ContentInfo at all.
pub(super) fn parse(der: &[u8]) -> Option<Result<Parsed, UnwrapError>> {
    // Only a ContentInfo naming AuthEnvelopedData right after its header is read
    // further: SEQUENCE, a length (definite or not), then the OID.
    let oid = AUTH_ENVELOPED_DATA.to_der().ok()?;
    let header = match der.get(1)? {
        0x80 => 2,
        &first if first < 0x80 => 2,
        &first => 2 + usize::from(first & 0x7f),
    };
    if der.first() != Some(&0x30) || der.get(header..header + oid.len())? != oid.as_slice() {
        return None;
    }
    let mut tree = match ber::parse(der) {
        Ok(tree) => tree,
        Err(e) => {
            return Some(Err(UnwrapError::Malformed(format!(
                "the AuthEnvelopedData cannot be read: {e}"
            ))));
        }
    };
    Some(read(&mut tree))
}

/// Decodes the tree of a ContentInfo with AuthEnvelopedData.
fn read(tree: &mut ber::Node) -> Result<Parsed, UnwrapError> {
    let malformed = |what: String| UnwrapError::Malformed(format!("the AuthEnvelopedData {what}"));
    // BER may split encryptedContent ([0] IMPLICIT OCTET STRING of the
    // EncryptedContentInfo, the first SEQUENCE after the RecipientInfos SET)
    // into segments; DER needs it whole.
    if let Some(body) = tree
        .children_mut()
        .get_mut(1)
        .and_then(|explicit| explicit.children_mut().first_mut())
    {
        let fields = body.children_mut();
        let after_set = fields
            .iter()
            .position(|f| f.tag == 0x31)
            .map_or(0, |i| i + 1);
        if let Some(content) = fields
            .get_mut(after_set)
            .filter(|f| f.tag == 0x30)
            .and_then(|info| info.children_mut().get_mut(2))
            .filter(|f| f.tag == 0xa0)
        {
            content
                .join_segments()
                .map_err(|e| malformed(e.to_string()))?;
        }
    }
    let info = ContentInfo::from_der(&tree.to_der())
        .map_err(|e| malformed(format!("cannot be decoded: {e}")))?;
    let data: AuthEnvelopedData = info
        .content
        .decode_as()
        .map_err(|e| malformed(format!("cannot be decoded: {e}")))?;
    if data.version != CmsVersion::V0 {
        return Err(malformed(format!(
            "has version {}, not 0",
            data.version as u8
        )));
    }
    let content = &data.auth_encrypted_content;
    if content.content_type != DATA {
        return Err(malformed(format!(
            "encrypts content of type {}, not data",
            content.content_type
        )));
    }
    if let Some(attrs) = &data.auth_attrs {
        // RFC 5083 2.1: authenticated attributes name the content type.
        let named = attrs.iter().find(|a| a.oid == CONTENT_TYPE);
        let matches = named.is_some_and(|a| {
            a.values.len() == 1
                && a.values
                    .iter()
                    .all(|v| v.decode_as::<ObjectIdentifier>().ok() == Some(DATA))
        });
        if !matches {
            return Err(malformed(
                "has authenticated attributes without the matching content-type attribute"
                    .to_owned(),
            ));
        }
    }
    if content.encrypted_content.is_none() {
        return Err(malformed("carries no encrypted content".to_owned()));
    }
    Ok(Parsed { data })
}

/// The one refusal, per gateway key, of every failure from key transport to the tag
/// check. RFC 3218 §2.3: which RSA step failed, or whether the recovered key had the
/// right length, must not be told apart (Bleichenbacher's and Manger's oracles);
/// a failed or ill-sized key transport goes on with a random key, and the tag check
/// fails with it.
const NOT_AUTHENTIC: &str =
    "the content does not authenticate (key, content or authentication tag altered)";

/// Decrypts with the first of `keys` a key-transport RecipientInfo names (by
/// issuer and serial or by subject key identifier); returns the plaintext and
/// the key's certificate. The GCM tag (`mac`) is verified, with the
/// authenticated attributes as additional data, before any plaintext is returned.
pub(super) fn decrypt<'k>(
    parsed: &Parsed,
    keys: &'k [DecryptionKey],
) -> Result<(SecretBytes, &'k X509), UnwrapError> {
    let data = &parsed.data;
    let mut failures = Vec::new();
    for key in keys {
        for recipient in data.recip_infos.0.iter() {
            let RecipientInfo::Ktri(ktri) = recipient else {
                continue;
            };
            if !names(&ktri.rid, &key.cert) {
                continue;
            }
            match open_with(data, ktri, key) {
                Ok(plaintext) => return Ok((plaintext, &key.cert)),
                Err(e) => failures.push(format!("{}: {e}", crate::x509::subject_line(&key.cert))),
            }
        }
    }
    if !failures.is_empty() {
        return Err(UnwrapError::DecryptionFailed(failures.join("; ")));
    }
    Err(super::not_for_gateway(keys))
}

/// Recovers the content-encryption key of `ktri` with `key` and opens the content.
/// What the structure says (algorithms, parameters) is refused precisely; from key
/// transport through the tag check every failure is [`NOT_AUTHENTIC`].
fn open_with(
    data: &AuthEnvelopedData,
    ktri: &KeyTransRecipientInfo,
    key: &DecryptionKey,
) -> Result<SecretBytes, String> {
    let gcm = Gcm::of(data)?;
    let mut transport = key_transport(ktri, key)?;
    let cek = recover_cek(
        &mut transport,
        ktri.enc_key.as_bytes(),
        gcm.cipher.key_len(),
    )?;
    gcm.open(&cek).ok_or_else(|| NOT_AUTHENTIC.to_owned())
}

/// Whether `rid` names `cert`.
fn names(rid: &RecipientIdentifier, cert: &X509) -> bool {
    match rid {
        RecipientIdentifier::IssuerAndSerialNumber(id) => {
            let issuer = cert.issuer_name().to_der().ok();
            let serial = cert.serial_number().to_bn().map(|bn| bn.to_vec()).ok();
            issuer.is_some()
                && id.issuer.to_der().ok() == issuer
                && serial.as_deref() == Some(strip_zeros(id.serial_number.as_bytes()))
        }
        RecipientIdentifier::SubjectKeyIdentifier(ski) => cert
            .subject_key_id()
            .is_some_and(|own| own.as_slice() == ski.0.as_bytes()),
    }
}

/// A decryption context of the gateway's RSA key set up for the key transport
/// `ktri` names (PKCS#1 v1.5 or RSAES-OAEP with its parameters).
fn key_transport(
    ktri: &KeyTransRecipientInfo,
    key: &DecryptionKey,
) -> Result<PkeyCtx<Private>, String> {
    let failed = |e: openssl::error::ErrorStack| {
        format!("the key transport cannot be set up: {}", reasons(&e))
    };
    let mut ctx = PkeyCtx::new(&key.key).map_err(failed)?;
    ctx.decrypt_init().map_err(failed)?;
    let algorithm = &ktri.key_enc_alg;
    if algorithm.oid == RSA_ENCRYPTION {
        ctx.set_rsa_padding(Padding::PKCS1).map_err(failed)?;
    } else if algorithm.oid == RSAES_OAEP {
        let params = match &algorithm.parameters {
            Some(any) => any
                .decode_as::<OaepParameters>()
                .map_err(|e| format!("the RSAES-OAEP parameters cannot be read: {e}"))?,
            None => OaepParameters {
                hash: None,
                mask_gen: None,
                label_source: None,
            },
        };
        let hash = digest(params.hash.as_ref())?;
        let mgf_hash = match &params.mask_gen {
            None => digest(None)?,
            Some(mgf) if mgf.oid == MGF1 => {
                let inner = mgf
                    .parameters
                    .as_ref()
                    .map(|p| p.decode_as::<AlgorithmIdentifier>())
                    .transpose()
                    .map_err(|e| format!("the MGF1 parameters cannot be read: {e}"))?;
                digest(inner.as_ref())?
            }
            Some(other) => return Err(format!("unsupported mask generation {}", other.oid)),
        };
        ctx.set_rsa_padding(Padding::PKCS1_OAEP).map_err(failed)?;
        ctx.set_rsa_oaep_md(hash).map_err(failed)?;
        ctx.set_rsa_mgf1_md(mgf_hash).map_err(failed)?;
        if let Some(source) = &params.label_source {
            let label = match (&source.oid, &source.parameters) {
                (oid, Some(p)) if *oid == P_SPECIFIED => p
                    .decode_as::<OctetString>()
                    .map_err(|e| format!("the OAEP label cannot be read: {e}"))?,
                (oid, _) => return Err(format!("unsupported OAEP label source {oid}")),
            };
            if !label.as_bytes().is_empty() {
                ctx.set_rsa_oaep_label(label.as_bytes()).map_err(failed)?;
            }
        }
    } else {
        return Err(format!(
            "unsupported key transport algorithm {}",
            algorithm.oid
        ));
    }
    Ok(ctx)
}

/// The content-encryption key `wrapped` holds, if RSA decryption succeeds and gives
/// `len` octets; else a random key of `len` octets, chosen without a branch on the
/// outcome (RFC 3218 §2.3.2), so that only the tag check can fail.
fn recover_cek(
    ctx: &mut PkeyCtx<Private>,
    wrapped: &[u8],
    len: usize,
) -> Result<SecretBytes, String> {
    // Drawn before decrypting: whether it is used must not change the work done.
    let mut random = SecretBytes::from(vec![0; len]);
    openssl::rand::rand_bytes(&mut random)
        .map_err(|e| format!("no random key could be drawn: {}", reasons(&e)))?;
    let mut recovered = SecretBytes::default();
    let decrypted = ctx.decrypt_to_vec(wrapped, &mut recovered).is_ok();
    let fits = decrypted & (recovered.len() == len);
    let keep = 0u8.wrapping_sub(u8::from(std::hint::black_box(fits)));
    let mut cek = SecretBytes::with_capacity(len);
    cek.extend(
        random
            .iter()
            .enumerate()
            .map(|(i, &r)| (recovered.get(i).copied().unwrap_or(0) & keep) | (r & !keep)),
    );
    Ok(cek)
}

/// The digest an OAEP or MGF1 AlgorithmIdentifier names (absent: SHA-1).
fn digest(algorithm: Option<&AlgorithmIdentifier>) -> Result<&'static MdRef, String> {
    let Some(algorithm) = algorithm else {
        return Ok(Md::sha1());
    };
    match algorithm.oid.to_string().as_str() {
        "1.3.14.3.2.26" => Ok(Md::sha1()),
        "2.16.840.1.101.3.4.2.4" => Ok(Md::sha224()),
        "2.16.840.1.101.3.4.2.1" => Ok(Md::sha256()),
        "2.16.840.1.101.3.4.2.2" => Ok(Md::sha384()),
        "2.16.840.1.101.3.4.2.3" => Ok(Md::sha512()),
        other => Err(format!("unsupported digest {other}")),
    }
}

/// The AES-GCM opening of an AuthEnvelopedData: cipher, nonce, tag and additional data.
struct Gcm<'d> {
    cipher: Cipher,
    nonce: OctetString,
    tag: &'d [u8],
    aad: Vec<u8>,
    ciphertext: &'d [u8],
}

impl<'d> Gcm<'d> {
    /// Reads what `data` says about its AES-GCM encryption. A tag (`mac`) other than
    /// the parameters declare is [`NOT_AUTHENTIC`], like any altered tag.
    fn of(data: &'d AuthEnvelopedData) -> Result<Self, String> {
        let info = &data.auth_encrypted_content;
        let algorithm = &info.content_enc_alg;
        let cipher = match algorithm.oid.to_string().as_str() {
            "2.16.840.1.101.3.4.1.6" => Cipher::aes_128_gcm(),
            "2.16.840.1.101.3.4.1.26" => Cipher::aes_192_gcm(),
            "2.16.840.1.101.3.4.1.46" => Cipher::aes_256_gcm(),
            other => return Err(format!("unsupported content encryption {other}")),
        };
        let params = algorithm
            .parameters
            .as_ref()
            .ok_or("the AES-GCM parameters are missing")?
            .decode_as::<GcmParameters>()
            .map_err(|e| format!("the AES-GCM parameters cannot be read: {e}"))?;
        let tag = data.mac.as_bytes();
        if !tag_fits(params.icv_len, tag.len()) {
            return Err(NOT_AUTHENTIC.to_owned());
        }
        let aad = match &data.auth_attrs {
            // RFC 5083 2.1: the DER of the attributes with a SET OF tag.
            Some(attrs) => attrs
                .to_der()
                .map_err(|e| format!("the authenticated attributes cannot be encoded: {e}"))?,
            None => Vec::new(),
        };
        let ciphertext = info
            .encrypted_content
            .as_ref()
            .map(OctetString::as_bytes)
            .unwrap_or_default();
        Ok(Gcm {
            cipher,
            nonce: params.nonce,
            tag,
            aad,
            ciphertext,
        })
    }

    /// The plaintext, if the tag verifies with `cek`.
    fn open(&self, cek: &[u8]) -> Option<SecretBytes> {
        openssl::symm::decrypt_aead(
            self.cipher,
            cek,
            Some(self.nonce.as_bytes()),
            &self.aad,
            self.ciphertext,
            self.tag,
        )
        .ok()
        .map(SecretBytes::from)
    }
}

/// Whether the `mac` of AuthEnvelopedData that OpenSSL parsed is as long as its
/// AES-GCM parameters declare ([`tag_fits`]). OpenSSL checks as many tag octets as
/// `mac` holds, whatever `icvLen` says: a `mac` of 4 octets would pass with odds of
/// 2^-32 for a forger. `der` is the ContentInfo as OpenSSL encodes it, without the
/// encrypted content (large, and not needed here). Other ciphers pass: OpenSSL
/// decrypts AES-GCM only.
pub(super) fn openssl_tag_fits(der: &[u8]) -> bool {
    let Ok(tree) = ber::parse(der) else {
        return false;
    };
    let Some(body) = tree
        .children()
        .get(1)
        .and_then(|tagged| tagged.children().first())
    else {
        return false;
    };
    // version, [0] originatorInfo?, recipientInfos SET, authEncryptedContentInfo,
    // [1] authAttrs?, mac, [2] unauthAttrs?
    let mut after_set = body.children().iter().skip_while(|f| f.tag != 0x31).skip(1);
    let (Some(info), Some(mac)) = (after_set.next(), after_set.find(|f| f.tag != 0xa1)) else {
        return false;
    };
    let (Some(algorithm), ber::Value::Primitive(mac)) = (info.children().get(1), &mac.value) else {
        return false;
    };
    let Ok(algorithm) = AlgorithmIdentifier::from_der(&algorithm.to_der()) else {
        return false;
    };
    if !GCM.contains(&algorithm.oid) {
        return true;
    }
    algorithm
        .parameters
        .and_then(|p| p.decode_as::<GcmParameters>().ok())
        .is_some_and(|params| tag_fits(params.icv_len, mac.len()))
}

/// Whether a `mac` of `tag_len` octets is what GCM parameters with `icv_len`
/// declare: RFC 5084 allows 12 to 16 octets, and the tag must have them all.
fn tag_fits(icv_len: u8, tag_len: usize) -> bool {
    (12..=16).contains(&icv_len) && tag_len == usize::from(icv_len)
}
