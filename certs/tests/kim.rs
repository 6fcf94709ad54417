//! `smime::unwrap` on gematik's KIM sample (`../shared/testdata/kim-samples`,
//! from gematik/api-kim): AuthEnvelopedData with AES-256-GCM, RSAES-OAEP to two
//! recipients and gematik's recipient attribute in `unauthAttrs`, around
//! RSASSA-PSS SignedData around a `message/rfc822` wrapper.
//!
//! The sample's signed layer (`.03.signedwrap`, `Content-Transfer-Encoding:
//! binary`) was damaged by its generator before encryption: every bare CR and
//! LF of the DER became CRLF (the body is exactly `.02.signedcms` so
//! converted). No reader can verify it as sent. The tests therefore check the
//! sample as sent up to that layer, and "reseal" it: the same AuthEnvelopedData
//! (RecipientInfos, nonce, unauthAttrs), with the content-encryption key
//! recovered by `openssl pkeyutl`, around the undamaged signed layer.
//!
//! The signer's issuing CA (GEM.SMCB-CA24 TEST-ONLY) is not part of the
//! sample, so the signer certificate is pinned as the trust anchor; it is taken
//! from the SignedData by the `openssl` CLI. All certificates expired in
//! 2023/2024: verification is as of the message's date.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{have, lf, openssl, pkcs7_entity as entity, reason};
use kvgate_certs::smime::{self, DecryptionKey, TrustAnchors, UnwrapError, Unwrapped};
use kvgate_certs::x509;

/// `Date: Sat, 20 Jun 2020 12:58:26 +0200` of the sample.
const SENT: u64 = 1_592_650_706;

/// The sample folder, or `None` (with a note) where it or `openssl` is absent.
fn samples() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/kim-samples");
    if dir.is_dir() && have("openssl") {
        Some(dir)
    } else {
        eprintln!("SKIPPED: {} or openssl is missing", dir.display());
        None
    }
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

/// The decryption key of `recipient-a` (hci-enc-2) or `recipient-b` (hci-enc-3).
fn recipient(dir: &Path, which: &str) -> DecryptionKey {
    let name = match which {
        "a" => "recipient-a/hci-enc-2-kim-bsp",
        _ => "recipient-b/hci-enc-3-kim-bsp",
    };
    DecryptionKey::from_pem(
        &read(dir, &format!("{name}.pem")),
        &read(dir, &format!("{name}.prv.pem")),
    )
    .unwrap()
}

/// Trust in the sample's signer certificate alone, extracted by `openssl cms`.
fn pinned_signer(dir: &Path) -> TrustAnchors {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("signer.pem");
    openssl(
        tmp.path(),
        &[
            "cms",
            "-verify",
            "-noverify",
            "-inform",
            "DER",
            "-in",
            dir.join("inputEmail.txt.02.signedcms").to_str().unwrap(),
            "-certsout",
            certs.to_str().unwrap(),
            "-out",
            tmp.path().join("content").to_str().unwrap(),
        ],
    );
    let signer = x509::parse_pem_chain(&std::fs::read(certs).unwrap()).unwrap();
    assert_eq!(signer.len(), 1);
    TrustAnchors::new(&signer).unwrap()
}

fn at_sending() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(SENT)
}

/// `inputEmail.txt` as signed: gematik's sender added `X-KIM-Dienstkennung`
/// at the end of the header block before wrapping it as `message/rfc822`.
fn signed_mail(dir: &Path) -> Vec<u8> {
    let input = lf(&read(dir, "inputEmail.txt"));
    let text = String::from_utf8(input).unwrap();
    let (headers, body) = text.split_once("\n\n").unwrap();
    format!("{headers}\nX-KIM-Dienstkennung: KIM-Mail;Default;V1.0\n\n{body}").into_bytes()
}

/// Unwraps AuthEnvelopedData `der` for `which` recipient, trusting the pinned signer, as of `at`.
fn unwrap_der(
    dir: &Path,
    der: &[u8],
    which: &str,
    at: SystemTime,
) -> Result<Unwrapped, UnwrapError> {
    smime::unwrap(
        &entity(der, "authenticated-enveloped-data"),
        &[recipient(dir, which)],
        &pinned_signer(dir),
        at,
    )
}

fn assert_is_the_sample(dir: &Path, unwrapped: &Unwrapped) {
    assert_eq!(lf(&unwrapped.content), signed_mail(dir));
    let rfc822wrap = lf(&read(dir, "inputEmail.txt.01.rfc822wrap"));
    assert_eq!(
        lf(&unwrapped.content),
        rfc822wrap
            .strip_prefix(b"Content-Type: message/rfc822\n\n".as_slice())
            .unwrap()
    );
    assert!(unwrapped.encrypted);
    let signer = unwrapped.signer.as_ref().unwrap();
    assert_eq!(signer.signature_algorithm, "RSASSA-PSS");
    assert_eq!(signer.digest_algorithm, "SHA256");
    assert!(
        signer.subject.contains("Asclepios ApothekeTEST-ONLY"),
        "{}",
        signer.subject
    );
    assert!(
        signer.issuer.contains("GEM.SMCB-CA24 TEST-ONLY"),
        "{}",
        signer.issuer
    );
    assert_eq!(signer.verified_at, at_sending());
}

/// The sample's AuthEnvelopedData with its content re-encrypted: `.03.signedwrap`'s
/// headers around the undamaged `.02.signedcms`, same key, nonce and attributes.
fn resealed(dir: &Path) -> Vec<u8> {
    let der = read(dir, "inputEmail.txt.04.encryptedcms");
    // Offsets from `openssl asn1parse` of the sample: recipient-b's encryptedKey
    // (the first RecipientInfo, serial 9F52A80078E4),
    // the GCM nonce, the encrypted content [0] (up to its end-of-contents) and the mac.
    assert_eq!(der[242..246], [0x04, 0x82, 0x01, 0x00]);
    assert_eq!(der[1006..1008], [0x04, 0x0c]);
    assert_eq!(der[1023..1025], [0xa0, 0x80]);
    assert_eq!(der[4408..4414], [0, 0, 0, 0, 0x04, 0x10]);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("ek"), &der[246..502]).unwrap();
    let key = dir.join("recipient-b/hci-enc-3-kim-bsp.prv.pem");
    let cek = openssl(
        tmp.path(),
        &[
            "pkeyutl",
            "-decrypt",
            "-inkey",
            key.to_str().unwrap(),
            "-in",
            "ek",
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha256",
            "-pkeyopt",
            "rsa_mgf1_md:sha256",
        ],
    );
    assert_eq!(cek.len(), 32);
    let wrap = read(dir, "inputEmail.txt.03.signedwrap");
    let headers_end = wrap.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut plaintext = wrap[..headers_end].to_vec();
    plaintext.extend_from_slice(&read(dir, "inputEmail.txt.02.signedcms"));
    let mut tag = [0u8; 16];
    let ciphertext = openssl::symm::encrypt_aead(
        openssl::symm::Cipher::aes_256_gcm(),
        &cek,
        Some(&der[1008..1020]),
        &[],
        &plaintext,
        &mut tag,
    )
    .unwrap();
    let mut out = der[..1025].to_vec();
    for chunk in ciphertext.chunks(1000) {
        out.extend_from_slice(&[0x04, 0x82]);
        out.extend_from_slice(&u16::try_from(chunk.len()).unwrap().to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&der[4408..4414]);
    out.extend_from_slice(&tag);
    out.extend_from_slice(&der[4430..]);
    out
}

/// The mail as sent (`.05.encryptedwrap`'s header) around the resealed DER.
fn resealed_mail(dir: &Path) -> Vec<u8> {
    let sent = read(dir, "inputEmail.txt.05.encryptedwrap");
    let header_end = sent.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut mail = sent[..header_end].to_vec();
    for line in openssl::base64::encode_block(&resealed(dir))
        .as_bytes()
        .chunks(76)
    {
        mail.extend_from_slice(line);
        mail.extend_from_slice(b"\r\n");
    }
    mail
}

/// `tests/fixtures/kim-resealed.eml` (used by the gateway's `kvgate verify`
/// tests) is exactly the resealed sample.
#[test]
fn the_resealed_fixture_is_the_resealed_sample() {
    let Some(dir) = samples() else { return };
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kim-resealed.eml"
    );
    assert_eq!(std::fs::read(fixture).unwrap(), resealed_mail(&dir));
    let unwrapped = smime::unwrap(
        &resealed_mail(&dir),
        &[recipient(&dir, "a")],
        &pinned_signer(&dir),
        at_sending(),
    )
    .unwrap();
    assert_is_the_sample(&dir, &unwrapped);
}

#[test]
fn the_mail_as_sent_decrypts_for_each_recipient_up_to_its_damaged_signed_layer() {
    let Some(dir) = samples() else { return };
    let mail = read(&dir, "inputEmail.txt.05.encryptedwrap");
    let anchors = pinned_signer(&dir);
    for which in ["a", "b"] {
        let result = smime::unwrap(&mail, &[recipient(&dir, which)], &anchors, at_sending());
        // Decrypted (the tag verified): the refusal is about the signed layer inside.
        let error = result.err().unwrap();
        assert_eq!(error.reason(), "malformed");
        assert!(
            error
                .to_string()
                .contains("sent as binary and has CRLF line breaks"),
            "{error}"
        );
    }
}

#[test]
fn resealed_sample_decrypts_and_verifies_for_each_recipient() {
    let Some(dir) = samples() else { return };
    let mail = entity(&resealed(&dir), "authenticated-enveloped-data");
    let anchors = pinned_signer(&dir);
    for which in ["a", "b"] {
        let unwrapped =
            smime::unwrap(&mail, &[recipient(&dir, which)], &anchors, at_sending()).unwrap();
        assert_is_the_sample(&dir, &unwrapped);
    }
    // Both keys at once: either RecipientInfo will do.
    let both = [recipient(&dir, "b"), recipient(&dir, "a")];
    let unwrapped = smime::unwrap(&mail, &both, &anchors, at_sending()).unwrap();
    assert_is_the_sample(&dir, &unwrapped);
}

#[test]
fn both_auth_enveloped_labels_are_read() {
    let Some(dir) = samples() else { return };
    let der = resealed(&dir);
    let anchors = pinned_signer(&dir);
    for label in ["authenticated-enveloped-data", "authEnveloped-data"] {
        let unwrapped = smime::unwrap(
            &entity(&der, label),
            &[recipient(&dir, "a")],
            &anchors,
            at_sending(),
        )
        .unwrap();
        assert_is_the_sample(&dir, &unwrapped);
    }
}

#[test]
fn a_tampered_tag_fails_decryption() {
    let Some(dir) = samples() else { return };
    let mut der = read(&dir, "inputEmail.txt.04.encryptedcms");
    // The mac (OCTET STRING of 16) follows the end-of-contents octets of the
    // encrypted content and of the EncryptedContentInfo.
    let marker = [0u8, 0, 0, 0, 0x04, 0x10];
    let at: Vec<usize> = der
        .windows(marker.len())
        .enumerate()
        .filter(|(_, w)| *w == marker)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1);
    der[at[0] + marker.len() + 15] ^= 0x01;
    let result = unwrap_der(&dir, &der, "a", at_sending());
    assert_eq!(reason(result), "decryption-failed");
}

#[test]
fn tampered_ciphertext_fails_decryption() {
    let Some(dir) = samples() else { return };
    let mut der = read(&dir, "inputEmail.txt.04.encryptedcms");
    // Inside the first 1000-octet segment of the encrypted content.
    der[1100] ^= 0x80;
    let result = unwrap_der(&dir, &der, "b", at_sending());
    assert_eq!(reason(result), "decryption-failed");
}

#[test]
fn verified_now_the_signer_has_expired() {
    let Some(dir) = samples() else { return };
    let result = unwrap_der(&dir, &resealed(&dir), "a", SystemTime::now());
    assert_eq!(reason(result), "signer-expired");
}

#[test]
fn without_the_signers_ca_the_signer_is_untrusted() {
    let Some(dir) = samples() else { return };
    let mail = entity(&resealed(&dir), "authenticated-enveloped-data");
    let mut roots =
        x509::parse_pem_chain(&read(&dir, "recipient-a/GEM.RCA2-TEST-ONLY.pem")).unwrap();
    roots.extend(
        x509::parse_pem_chain(&read(&dir, "recipient-a/GEM.KOMP-CA24-TEST-ONLY.pem")).unwrap(),
    );
    let anchors = TrustAnchors::new(&roots).unwrap();
    let result = smime::unwrap(&mail, &[recipient(&dir, "a")], &anchors, at_sending());
    assert_eq!(reason(result), "untrusted-signer");
}

#[test]
fn a_gateway_key_it_is_not_addressed_to_is_not_for_gateway() {
    let Some(dir) = samples() else { return };
    let tmp = tempfile::tempdir().unwrap();
    openssl(
        tmp.path(),
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "key.pem",
        ],
    );
    openssl(
        tmp.path(),
        &[
            "req",
            "-new",
            "-x509",
            "-key",
            "key.pem",
            "-subj",
            "/CN=other gateway",
            "-days",
            "1",
            "-out",
            "cert.pem",
        ],
    );
    let other = DecryptionKey::from_pem(
        &std::fs::read(tmp.path().join("cert.pem")).unwrap(),
        &std::fs::read(tmp.path().join("key.pem")).unwrap(),
    )
    .unwrap();
    let mail = read(&dir, "inputEmail.txt.05.encryptedwrap");
    let result = smime::unwrap(&mail, &[other], &pinned_signer(&dir), at_sending());
    assert_eq!(reason(result), "not-for-gateway");
}

#[test]
fn gematik_recipient_attribute_maps_addresses_to_certificates() {
    let Some(dir) = samples() else { return };
    let mail = resealed_mail(&dir);
    let anchors = pinned_signer(&dir);
    for (which, serial, address) in [
        ("a", "FF22A88FFD24", "mustersender@komle.de"),
        ("b", "9F52A80078E4", "musterempfaenger@komle.de"),
    ] {
        let unwrapped =
            smime::unwrap(&mail, &[recipient(&dir, which)], &anchors, at_sending()).unwrap();
        let all: Vec<(&str, &str, bool, bool)> = unwrapped
            .recipients
            .iter()
            .map(|r| {
                (
                    r.address.as_str(),
                    r.serial.as_str(),
                    r.signed,
                    r.decrypting,
                )
            })
            .collect();
        // Signed attributes first (the inner layer is verified), then unauthAttrs.
        let mut expected = vec![
            ("mustersender@komle.de", "FF22A88FFD24", true),
            ("musterempfaenger@komle.de", "9F52A80078E4", true),
            ("mustersender@komle.de", "FF22A88FFD24", false),
            ("musterempfaenger@komle.de", "9F52A80078E4", false),
        ]
        .into_iter()
        .map(|(a, s, signed)| (a, s, signed, s == serial))
        .collect::<Vec<_>>();
        expected.sort();
        let mut all_sorted = all.clone();
        all_sorted.sort();
        assert_eq!(all_sorted, expected, "{which}");
        assert!(
            unwrapped
                .recipients
                .iter()
                .all(|r| r.issuer.contains("CN=GEM.KOMP-CA24 TEST-ONLY")),
            "{:?}",
            unwrapped.recipients
        );
        let ours: Vec<&str> = unwrapped
            .recipients
            .iter()
            .filter(|r| r.decrypting)
            .map(|r| r.address.as_str())
            .collect();
        assert_eq!(ours, [address, address], "{which}");
    }
}

#[test]
fn a_flood_of_empty_elements_behind_the_auth_enveloped_oid_is_malformed() {
    // ContentInfo { id-ct-authEnvelopedData, [0] { 200,000 empty OCTET STRINGs } }
    let mut der = vec![0x30, 0x80, 0x06, 0x0b];
    der.extend_from_slice(&[
        0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x17,
    ]);
    der.extend_from_slice(&[0xa0, 0x80]);
    for _ in 0..200_000 {
        der.extend_from_slice(&[0x04, 0x00]);
    }
    der.extend_from_slice(&[0, 0, 0, 0]);
    let result = smime::unwrap(
        &entity(&der, "authEnveloped-data"),
        &[],
        &TrustAnchors::new(&[]).unwrap(),
        SystemTime::now(),
    );
    let error = result.err().unwrap();
    assert_eq!(error.reason(), "malformed");
    assert_eq!(
        error.to_string(),
        "the S/MIME structure is malformed: the AuthEnvelopedData cannot be read: \
         the encoding holds too many elements for its size"
    );
}
