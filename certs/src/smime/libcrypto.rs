//! The few libcrypto CMS calls the `openssl` crate does not wrap, behind safe
//! functions. All `unsafe` code of this crate lives here.
//!
//! The functions are part of the vendored libcrypto that `openssl-sys` links.

#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;

use foreign_types_shared::{ForeignType, ForeignTypeRef};
use openssl::asn1::Asn1ObjectRef;
use openssl::cms::{CmsContentInfo, CmsContentInfoRef};
use openssl::error::ErrorStack;
use openssl::nid::Nid;
use openssl::pkey::{PKeyRef, Private};
use openssl::stack::Stack;
use openssl::x509::{X509, X509Ref};
use openssl_sys as ffi;

use crate::SecretBytes;

/// `NID_id_smime_ct_authEnvelopedData` (obj_mac.h), missing in `openssl-sys`.
const NID_AUTH_ENVELOPED: c_int = 1059;
/// `BIO_TYPE_CIPHER` (bio.h).
const BIO_TYPE_CIPHER: c_int = 10 | 0x0200;
/// `BIO_C_GET_CIPHER_STATUS` (bio.h), the control behind `BIO_get_cipher_status`.
const BIO_C_GET_CIPHER_STATUS: c_int = 113;

unsafe extern "C" {
    fn CMS_get0_type(cms: *const ffi::CMS_ContentInfo) -> *const ffi::ASN1_OBJECT;
    fn CMS_get0_SignerInfos(cms: *mut ffi::CMS_ContentInfo) -> *mut ffi::OPENSSL_STACK;
    fn CMS_SignerInfo_get0_algs(
        si: *mut c_void,
        pk: *mut *mut ffi::EVP_PKEY,
        signer: *mut *mut ffi::X509,
        pdig: *mut *mut ffi::X509_ALGOR,
        psig: *mut *mut ffi::X509_ALGOR,
    );
    fn CMS_get1_certs(cms: *mut ffi::CMS_ContentInfo) -> *mut ffi::stack_st_X509;
    fn CMS_signed_get_attr_count(si: *const c_void) -> c_int;
    fn CMS_signed_get_attr(si: *const c_void, loc: c_int) -> *mut ffi::X509_ATTRIBUTE;
    fn CMS_is_detached(cms: *mut ffi::CMS_ContentInfo) -> c_int;
    fn CMS_get0_eContentType(cms: *mut ffi::CMS_ContentInfo) -> *const ffi::ASN1_OBJECT;
    fn CMS_get0_content(cms: *mut ffi::CMS_ContentInfo) -> *mut *mut ffi::ASN1_OCTET_STRING;
    fn CMS_decrypt_set1_pkey(
        cms: *mut ffi::CMS_ContentInfo,
        pk: *mut ffi::EVP_PKEY,
        cert: *mut ffi::X509,
    ) -> c_int;
    fn CMS_dataInit(cms: *mut ffi::CMS_ContentInfo, icont: *mut ffi::BIO) -> *mut ffi::BIO;
    fn BIO_method_type(b: *const ffi::BIO) -> c_int;
    fn OPENSSL_cleanse(ptr: *mut c_void, len: usize);
}

/// The content type of a CMS ContentInfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ContentType {
    /// EnvelopedData (`authenticated: false`: its cipher, e.g. AES-CBC, does not
    /// protect integrity) or AuthEnvelopedData (`true`: AES-GCM).
    Enveloped {
        /// Whether it is AuthEnvelopedData.
        authenticated: bool,
    },
    /// SignedData.
    Signed,
    /// Anything else (data, digested, compressed, ...), by NID.
    Other(Nid),
}

/// The content type of `cms`.
pub(super) fn content_type(cms: &CmsContentInfoRef) -> ContentType {
    // SAFETY: `cms.as_ptr()` is a valid CMS_ContentInfo for the duration of the
    // borrow. CMS_get0_type returns a pointer into it (or NULL), which is used only
    // within this statement; OBJ_obj2nid accepts NULL and returns NID_undef.
    let nid = unsafe { ffi::OBJ_obj2nid(CMS_get0_type(cms.as_ptr())) };
    match nid {
        ffi::NID_pkcs7_enveloped => ContentType::Enveloped {
            authenticated: false,
        },
        NID_AUTH_ENVELOPED => ContentType::Enveloped {
            authenticated: true,
        },
        ffi::NID_pkcs7_signed => ContentType::Signed,
        other => ContentType::Other(Nid::from_raw(other)),
    }
}

/// The type of the content SignedData `cms` signs (its eContentType), as its NID and
/// its name (or dotted OID); `None` if it has none.
pub(super) fn econtent_type(cms: &CmsContentInfoRef) -> Option<(Nid, String)> {
    // SAFETY: `cms` is valid for the borrow; CMS_get0_eContentType only reads it and
    // returns a pointer into it (or NULL), used only while `cms` is borrowed here.
    unsafe {
        let object = CMS_get0_eContentType(cms.as_ptr());
        if object.is_null() {
            clear_errors();
            return None;
        }
        let object = Asn1ObjectRef::from_ptr(object.cast_mut());
        Some((object.nid(), object.to_string()))
    }
}

/// Whether `cms` carries no content of its own (a detached signature).
pub(super) fn is_detached(cms: &CmsContentInfoRef) -> bool {
    // SAFETY: `cms` is valid for the borrow; CMS_is_detached only reads it and
    // returns 1 (detached), 0 (content present) or -1 (no content field).
    unsafe { CMS_is_detached(cms.as_ptr()) == 1 }
}

/// Why [`verify_signatures`] failed.
pub(super) enum SignatureFailure {
    /// The detached content is 2 GiB or more (OpenSSL's memory BIOs take an `int`).
    TooLarge,
    /// A signature does not verify, or the structure is wrong (OpenSSL's errors).
    Invalid(ErrorStack),
}

/// Checks the signatures of SignedData `cms` over its own content or over `detached`
/// with `CMS_verify`, without checking the signers' certificates (`CMS_NO_SIGNER_CERT_VERIFY`,
/// done by the caller) and without output: the `openssl` crate's wrapper always hands
/// OpenSSL a memory BIO for the content, which grows a third at a time and wipes every
/// buffer it leaves (3% of a 2 MiB letter's time), while the content is at hand anyway.
pub(super) fn verify_signatures(
    cms: &mut CmsContentInfoRef,
    detached: Option<&[u8]>,
) -> Result<(), SignatureFailure> {
    let detached_bio = match detached {
        None => ptr::null_mut(),
        Some(content) => {
            let len = c_int::try_from(content.len()).map_err(|_| SignatureFailure::TooLarge)?;
            // SAFETY: BIO_new_mem_buf makes a read-only BIO over the `len` octets of
            // `content`, which outlives it: it is freed below.
            let bio = unsafe { ffi::BIO_new_mem_buf(content.as_ptr().cast(), len) };
            if bio.is_null() {
                return Err(SignatureFailure::Invalid(ErrorStack::get()));
            }
            bio
        }
    };
    clear_errors();
    // SAFETY: `cms` is valid and exclusively borrowed; `detached_bio` is NULL or the
    // BIO made above; NULL certificates, store and output are allowed: with
    // CMS_NO_SIGNER_CERT_VERIFY no store is used, and the content is read into a
    // null BIO.
    let verified = unsafe {
        ffi::CMS_verify(
            cms.as_ptr(),
            ptr::null_mut(),
            ptr::null_mut(),
            detached_bio,
            ptr::null_mut(),
            ffi::CMS_NO_SIGNER_CERT_VERIFY,
        )
    };
    let result = if verified == 1 {
        Ok(())
    } else {
        Err(SignatureFailure::Invalid(ErrorStack::get()))
    };
    if !detached_bio.is_null() {
        // SAFETY: the BIO made above, no longer used.
        unsafe { ffi::BIO_free_all(detached_bio) };
    }
    result
}

/// A copy of the content embedded in `cms` (the eContent of signed data), or `None`
/// when it has none. OpenSSL frees its strings without clearing them, so the original
/// is wiped in place once copied.
pub(super) fn take_content(cms: &mut CmsContentInfoRef) -> Option<SecretBytes> {
    // SAFETY: `cms` is valid and exclusively borrowed. CMS_get0_content returns a
    // pointer to its content field (or NULL); a non-NULL string it points at is owned
    // by `cms`, and its `length` octets at `ASN1_STRING_get0_data` stay valid while
    // `cms` is not changed. Nothing else reads them while they are copied and wiped.
    unsafe {
        let content = CMS_get0_content(cms.as_ptr());
        if content.is_null() || (*content).is_null() {
            return None;
        }
        let string = (*content).cast::<ffi::ASN1_STRING>();
        let data = ffi::ASN1_STRING_get0_data(string);
        let len = usize::try_from(ffi::ASN1_STRING_length(string)).unwrap_or(0);
        if data.is_null() || len == 0 {
            return Some(SecretBytes::default());
        }
        let copy = SecretBytes::from(std::slice::from_raw_parts(data, len).to_vec());
        OPENSSL_cleanse(data.cast_mut().cast(), len);
        Some(copy)
    }
}

/// Empties this thread's OpenSSL error queue.
fn clear_errors() {
    // SAFETY: ERR_clear_error only touches the calling thread's error queue.
    unsafe { ffi::ERR_clear_error() }
}

/// Takes this thread's queued OpenSSL errors as one line of reason strings.
///
/// Unlike `ErrorStack::get`, this leaves out each error's free-text data: the
/// MIME parser puts bytes of the message there (e.g. a content type), and the
/// `openssl` crate panics when they are not UTF-8 (found by fuzzing).
fn take_error_reasons() -> String {
    let mut reasons: Vec<String> = Vec::new();
    loop {
        // SAFETY: ERR_get_error pops the oldest error code of this thread's
        // queue; 0 means the queue is empty.
        let code = unsafe { ffi::ERR_get_error() };
        if code == 0 {
            break;
        }
        // SAFETY: ERR_reason_error_string returns NULL or a pointer to a static,
        // NUL-terminated string of the library.
        let text = unsafe { ffi::ERR_reason_error_string(code) };
        reasons.push(if text.is_null() {
            format!("OpenSSL error {code:#x}")
        } else {
            // SAFETY: `text` is non-NULL, static and NUL-terminated.
            unsafe { CStr::from_ptr(text) }
                .to_string_lossy()
                .into_owned()
        });
    }
    reasons.dedup();
    if reasons.is_empty() {
        "no details from OpenSSL".to_owned()
    } else {
        reasons.join("; ")
    }
}

/// Why [`decrypt`] failed.
pub(super) enum DecryptFailure {
    /// The key could not open the envelope (OpenSSL's errors; none queued when no
    /// RecipientInfo names the certificate).
    Key(ErrorStack),
    /// The key opened it, but the content did not decrypt (bad padding or a wrong
    /// authentication tag).
    Content,
}

/// Decrypts the enveloped or auth-enveloped `cms` with `key`, whose certificate is
/// `cert`, as `CMS_decrypt` does, but reads the plaintext straight into one buffer
/// sized to the ciphertext instead of through a memory BIO and a copy: a large
/// letter's plaintext exists once.
pub(super) fn decrypt(
    cms: &CmsContentInfoRef,
    key: &PKeyRef<Private>,
    cert: &X509Ref,
) -> Result<SecretBytes, DecryptFailure> {
    // SAFETY: `cms` is valid for the borrow. For (auth-)enveloped data
    // CMS_get0_content returns a pointer to the encryptedContent field (or NULL);
    // ASN1_STRING_length only reads the string it points to, if any.
    let ciphertext = unsafe {
        let content = CMS_get0_content(cms.as_ptr());
        if content.is_null() || (*content).is_null() {
            0
        } else {
            ffi::ASN1_STRING_length((*content).cast_const().cast())
        }
    };
    clear_errors();
    // SAFETY: all three pointers are valid for the borrows. CMS_decrypt_set1_pkey
    // takes its own references to the key and certificate and stores the content
    // key in `cms`.
    if unsafe { CMS_decrypt_set1_pkey(cms.as_ptr(), key.as_ptr(), cert.as_ptr()) } != 1 {
        return Err(DecryptFailure::Key(ErrorStack::get()));
    }
    // OpenSSL would check the tag with as many octets as `mac` holds.
    if content_type(cms)
        == (ContentType::Enveloped {
            authenticated: true,
        })
        && !der_without_content(cms).is_ok_and(|der| super::auth_enveloped::openssl_tag_fits(&der))
    {
        clear_errors();
        return Err(DecryptFailure::Content);
    }
    // SAFETY: `cms` now holds the content key; CMS_dataInit returns a new BIO
    // chain (ours to free) that decrypts the embedded content as it is read.
    let bio = unsafe { CMS_dataInit(cms.as_ptr(), ptr::null_mut()) };
    if bio.is_null() {
        return Err(DecryptFailure::Key(ErrorStack::get()));
    }
    // Padding never makes the plaintext longer than the ciphertext.
    let mut plaintext = SecretBytes::from(Vec::with_capacity(
        usize::try_from(ciphertext).unwrap_or(0) + 64,
    ));
    let result = loop {
        if plaintext.len() == plaintext.capacity() {
            grow_wiped(&mut plaintext);
        }
        let room = plaintext.capacity() - plaintext.len();
        let room = c_int::try_from(room).unwrap_or(c_int::MAX);
        // SAFETY: `bio` is valid; BIO_read writes at most `room` bytes into the
        // vector's spare capacity, which is that large, and returns how many.
        let read = unsafe {
            ffi::BIO_read(
                bio,
                plaintext.as_mut_ptr().add(plaintext.len()).cast(),
                room,
            )
        };
        if let Ok(read @ 1..) = usize::try_from(read) {
            let filled = plaintext.len() + read;
            // SAFETY: BIO_read initialised `read` more bytes, within capacity.
            unsafe { plaintext.set_len(filled) };
            continue;
        }
        // The end: a cipher BIO reports here whether the final block (padding) or
        // the authentication tag checked out, as cms_copy_content asks.
        // SAFETY: `bio` is valid; both calls only read its state.
        let cipher_failed = unsafe {
            BIO_method_type(bio) == BIO_TYPE_CIPHER
                && ffi::BIO_ctrl(bio, BIO_C_GET_CIPHER_STATUS, 0, ptr::null_mut()) <= 0
        };
        break if read < 0 || cipher_failed {
            Err(DecryptFailure::Content)
        } else {
            Ok(())
        };
    };
    // SAFETY: `bio` is ours and no longer used.
    unsafe { ffi::BIO_free_all(bio) };
    clear_errors();
    result.map(|()| plaintext)
}

/// The DER of (auth-)enveloped `cms` with its encrypted content left out: the rest
/// is small, and holds fields OpenSSL has no accessor for (the `mac`, the cipher's
/// parameters).
fn der_without_content(cms: &CmsContentInfoRef) -> Result<Vec<u8>, ErrorStack> {
    // SAFETY: `cms` is valid for the borrow and used by nothing else meanwhile (its
    // owner is decrypting it on this thread). CMS_get0_content returns a pointer to
    // the encryptedContent field (or NULL). The field is OPTIONAL: while it is NULL,
    // i2d encodes the structure without it; the pointer is put back before returning,
    // so the string stays owned by `cms` and nothing is freed or leaked.
    unsafe {
        let slot = CMS_get0_content(cms.as_ptr());
        if slot.is_null() {
            return cms.to_der();
        }
        let content = std::mem::replace(&mut *slot, ptr::null_mut());
        let der = cms.to_der();
        *slot = content;
        der
    }
}

/// Doubles the capacity of `buffer`, wiping the old allocation (a `Vec` would free it
/// as it is).
fn grow_wiped(buffer: &mut SecretBytes) {
    let mut larger = SecretBytes::with_capacity((buffer.capacity() * 2).max(4096));
    larger.extend_from_slice(buffer);
    *buffer = larger;
}

/// What one SignerInfo of a SignedData says.
pub(super) struct SignerInfo {
    /// The digest algorithm.
    pub digest: Nid,
    /// The signature algorithm.
    pub signature: Nid,
    /// The signer's certificate, known after a successful `CMS_verify`.
    pub cert: Option<X509>,
    /// Its signed attributes, each as the DER of an `Attribute`.
    pub signed_attributes: Vec<Vec<u8>>,
}

/// The SignerInfos of a SignedData `cms` (empty for any other content type).
pub(super) fn signer_infos(cms: &CmsContentInfoRef) -> Vec<SignerInfo> {
    let mut infos = Vec::new();
    // SAFETY: `cms` is valid for the borrow. CMS_get0_SignerInfos only reads it
    // and returns its internal stack, or NULL (with an error queued) when it is
    // not SignedData; the stack and its elements stay owned by `cms`.
    let stack = unsafe { CMS_get0_SignerInfos(cms.as_ptr()) };
    if stack.is_null() {
        clear_errors(); // drop the queued "not signed data" error
        return infos;
    }
    // SAFETY: `stack` is a valid, non-NULL stack owned by `cms`.
    let count = unsafe { ffi::OPENSSL_sk_num(stack) };
    for index in 0..count {
        let mut signer: *mut ffi::X509 = ptr::null_mut();
        let mut digest: *mut ffi::X509_ALGOR = ptr::null_mut();
        let mut signature: *mut ffi::X509_ALGOR = ptr::null_mut();
        // SAFETY: `index` is in 0..count, so the element is a valid
        // CMS_SignerInfo owned by `cms`. CMS_SignerInfo_get0_algs writes borrowed
        // pointers (possibly NULL) into the out-parameters that are non-NULL and
        // skips the NULL `pk` one.
        let info = unsafe {
            let info = ffi::OPENSSL_sk_value(stack, index);
            CMS_SignerInfo_get0_algs(
                info,
                ptr::null_mut(),
                &mut signer,
                &mut digest,
                &mut signature,
            );
            info
        };
        let cert = if signer.is_null() {
            None
        } else {
            // SAFETY: `signer` is a valid X509 owned by the SignerInfo; `to_owned`
            // takes a new reference, so the result outlives `cms` soundly.
            Some(unsafe { X509Ref::from_ptr(signer) }.to_owned())
        };
        infos.push(SignerInfo {
            digest: algorithm(digest),
            signature: algorithm(signature),
            cert,
            signed_attributes: signed_attributes(info),
        });
    }
    infos
}

/// The DER of each signed attribute of SignerInfo `info` (one that cannot be encoded
/// is left out).
fn signed_attributes(info: *const c_void) -> Vec<Vec<u8>> {
    // SAFETY: `info` is a valid CMS_SignerInfo owned by a live CMS_ContentInfo; the
    // count and the attributes are only read, and each attribute stays owned by it.
    let count = unsafe { CMS_signed_get_attr_count(info) };
    let mut attributes = Vec::new();
    for loc in 0..count {
        // SAFETY: `loc` is in 0..count, so the attribute exists (non-NULL checked).
        let attribute = unsafe { CMS_signed_get_attr(info, loc) };
        if attribute.is_null() {
            continue;
        }
        // SAFETY: i2d with a NULL buffer only returns the encoded length.
        let len = unsafe { ffi::i2d_X509_ATTRIBUTE(attribute, ptr::null_mut()) };
        let Ok(size) = usize::try_from(len) else {
            continue;
        };
        let mut der = vec![0u8; size];
        let mut out = der.as_mut_ptr();
        // SAFETY: `der` has exactly the `len` octets i2d writes; it advances `out`.
        let written = unsafe { ffi::i2d_X509_ATTRIBUTE(attribute, &mut out) };
        if written == len {
            attributes.push(der);
        }
    }
    clear_errors();
    attributes
}

/// The NID of an AlgorithmIdentifier (NID_undef for NULL).
fn algorithm(alg: *const ffi::X509_ALGOR) -> Nid {
    if alg.is_null() {
        return Nid::UNDEF;
    }
    let mut object: *const ffi::ASN1_OBJECT = ptr::null();
    // SAFETY: `alg` is a valid, non-NULL X509_ALGOR owned by a live
    // CMS_ContentInfo; X509_ALGOR_get0 writes a borrowed pointer into `object` and
    // ignores the NULL out-parameters. OBJ_obj2nid accepts NULL.
    let nid = unsafe {
        ffi::X509_ALGOR_get0(&mut object, ptr::null_mut(), ptr::null_mut(), alg);
        ffi::OBJ_obj2nid(object)
    };
    Nid::from_raw(nid)
}

/// All certificates carried in `cms` (the signer's and any intermediates).
pub(super) fn certificates(cms: &CmsContentInfoRef) -> Result<Stack<X509>, ErrorStack> {
    // SAFETY: `cms` is valid for the borrow; CMS_get1_certs only reads it and
    // returns a new stack of new references (ours to free), or NULL if none.
    let stack = unsafe { CMS_get1_certs(cms.as_ptr()) };
    if stack.is_null() {
        clear_errors();
        return Stack::new();
    }
    // SAFETY: `stack` is a non-NULL STACK_OF(X509) that we own with owned
    // elements, exactly what `Stack<X509>` frees with `sk_X509_pop_free`.
    Ok(unsafe { Stack::from_ptr(stack) })
}

/// A CMS structure read from an S/MIME entity by OpenSSL's MIME parser, with the
/// detached content of a `multipart/signed` (CRLF-canonical, as signed).
pub(super) struct SmimeRead {
    /// The signature (or the whole CMS of an `application/pkcs7-mime`).
    pub cms: CmsContentInfo,
    /// The first part of a `multipart/signed`.
    pub detached: Option<SecretBytes>,
}

/// Reads `entity` with `SMIME_read_CMS`. `entity` must be shorter than 2 GiB.
/// The error is OpenSSL's reasons, without their free-text data (see
/// [`take_error_reasons`]).
pub(super) fn smime_read(entity: &[u8]) -> Result<SmimeRead, String> {
    let Ok(len) = c_int::try_from(entity.len()) else {
        return Err("the entity is larger than 2 GiB".to_owned());
    };
    // SAFETY: BIO_new_mem_buf makes a read-only BIO over `entity`, which outlives
    // it: the BIO is freed below before returning.
    let bio = unsafe { ffi::BIO_new_mem_buf(entity.as_ptr().cast(), len) };
    if bio.is_null() {
        return Err(take_error_reasons());
    }
    let mut content: *mut ffi::BIO = ptr::null_mut();
    // SAFETY: `bio` is valid; SMIME_read_CMS returns a new CMS_ContentInfo (ours)
    // or NULL, and sets `content` only on success, to a new memory BIO (ours)
    // independent of `bio`, or leaves it NULL when nothing is detached.
    let cms = unsafe { ffi::SMIME_read_CMS(bio, &mut content) };
    // SAFETY: `bio` is ours and no longer used.
    unsafe { ffi::BIO_free_all(bio) };
    if cms.is_null() {
        return Err(take_error_reasons());
    }
    // SAFETY: `cms` is a non-NULL CMS_ContentInfo that we own.
    let cms = unsafe { CmsContentInfo::from_ptr(cms) };
    let detached = if content.is_null() {
        None
    } else {
        let mut data: *mut c_char = ptr::null_mut();
        // SAFETY: `content` is a valid memory BIO that we own. BIO_get_mem_data
        // points `data` at its `n` readable bytes, which stay valid until the BIO
        // is changed or freed; we copy them, wipe them and then free the BIO.
        let bytes = unsafe {
            let n = ffi::BIO_get_mem_data(content, &mut data);
            let bytes = match usize::try_from(n) {
                Ok(n) if n > 0 && !data.is_null() => {
                    let copy = SecretBytes::from(
                        std::slice::from_raw_parts(data.cast::<u8>(), n).to_vec(),
                    );
                    OPENSSL_cleanse(data.cast(), n);
                    copy
                }
                _ => SecretBytes::default(),
            };
            ffi::BIO_free_all(content);
            bytes
        };
        Some(bytes)
    };
    Ok(SmimeRead { cms, detached })
}
