//! AuthEnvelopedData (AES-GCM) made by the `openssl` CLI, rewritten where a test
//! needs a structure the CLI does not make: refusals that must not tell an
//! attacker which step failed, and tags shorter than their parameters declare.
//!
//! An `unauthAttrs [2]` added to a letter sends it down the DER path
//! (`smime::auth_enveloped`): OpenSSL's CMS parser refuses it, as it refuses KIM's.

mod common;

use std::time::SystemTime;

use common::der::Tlv;
use common::pki::TestPki;
use common::{have, openssl_status, pkcs7_entity, write};
use kvgate_certs::smime::{self, UnwrapError, Unwrapped};

const LETTER: &str = "From: <praxis@demo-practice.test>\nSubject: Befund\n\nalles gut\n";

/// Where the parts of a ContentInfo with AuthEnvelopedData are, as child indexes.
const KTRI: [usize; 4] = [1, 0, 1, 0];
const ENCRYPTED_KEY: usize = 3;
const GCM_PARAMETERS: [usize; 5] = [1, 0, 2, 1, 1];
const MAC: [usize; 3] = [1, 0, 3];
const AUTH_ENVELOPED: [usize; 2] = [1, 0];

/// A PKI with the gateway's RSA-2048 encryption certificate `gw`; `None` without openssl.
fn pki() -> Option<TestPki> {
    if !have("openssl") {
        return None;
    }
    let pki = TestPki::new(&Default::default());
    pki.issue("gw", "rsa2048", "encrypt");
    write(pki.path(), "letter.eml", LETTER);
    Some(pki)
}

/// The letter encrypted by `openssl cms -encrypt -aes-256-gcm` to `gw` with `extra`
/// options, as a DER tree.
fn encrypted(pki: &TestPki, name: &str, extra: &[&str]) -> Tlv {
    let mut options = vec!["-outform", "DER"];
    options.extend_from_slice(extra);
    pki.encrypt("letter.eml", name, "-aes-256-gcm", &["gw"], &options);
    Tlv::parse(&pki.read(name))
}

/// Adds an (unauthenticated) attribute 1.2.3.4 = NULL as `unauthAttrs [2]`.
fn with_unauth_attrs(mut letter: Tlv) -> Tlv {
    let attribute = Tlv::constructed(
        0x30,
        vec![
            Tlv::primitive(0x06, &[0x2a, 0x03, 0x04]),
            Tlv::constructed(0x31, vec![Tlv::primitive(0x05, &[])]),
        ],
    );
    letter
        .at(&AUTH_ENVELOPED)
        .children()
        .push(Tlv::constructed(0xa2, vec![attribute]));
    letter
}

fn unwrap(pki: &TestPki, letter: &Tlv) -> Result<Unwrapped, UnwrapError> {
    smime::unwrap(
        &pkcs7_entity(&letter.encode(), "authEnveloped-data"),
        &[pki.decryption_key("gw")],
        &pki.anchors(),
        SystemTime::now(),
    )
}

/// The refusal of `letter`, which must be `decryption-failed`.
fn refusal(pki: &TestPki, letter: &Tlv, what: &str) -> String {
    match unwrap(pki, letter) {
        Ok(_) => panic!("{what}: decrypted"),
        Err(e) => {
            assert_eq!(e.reason(), "decryption-failed", "{what}: {e}");
            e.to_string()
        }
    }
}

/// `openssl pkeyutl` wrapping `cek` for `gw` with `padding` (`pkcs1` or `oaep`).
fn wrap_key(pki: &TestPki, cek: &[u8], padding: &str) -> Vec<u8> {
    write(pki.path(), "cek.bin", cek);
    pki.run(&[
        "pkeyutl",
        "-encrypt",
        "-certin",
        "-inkey",
        "gw.pem",
        "-pkeyopt",
        &format!("rsa_padding_mode:{padding}"),
        "-in",
        "cek.bin",
        "-out",
        "wrapped.bin",
    ]);
    pki.read("wrapped.bin")
}

/// `letter` changed by `change`.
fn altered(letter: &Tlv, change: impl FnOnce(&mut Tlv)) -> Tlv {
    let mut copy = letter.clone();
    change(&mut copy);
    copy
}

#[test]
fn every_failure_from_key_transport_to_the_tag_is_one_refusal() {
    let Some(pki) = pki() else { return };
    for (padding, extra) in [
        ("pkcs1", &[][..]),
        ("oaep", &["-keyopt", "rsa_padding_mode:oaep"][..]),
    ] {
        let letter = with_unauth_attrs(encrypted(&pki, &format!("{padding}.der"), extra));
        // OpenSSL cannot parse it: what follows is the DER path's answer.
        write(pki.path(), "unparsable.der", letter.encode());
        let (parsed, _) = openssl_status(
            pki.path(),
            &["cms", "-cmsout", "-inform", "DER", "-in", "unparsable.der"],
        );
        assert!(
            !parsed,
            "OpenSSL parses unauthAttrs now: the DER path is no longer tested"
        );
        let unwrapped = unwrap(&pki, &letter).unwrap();
        assert_eq!(common::lf(&unwrapped.content), LETTER.as_bytes());
        assert!(unwrapped.encrypted && unwrapped.signer.is_none());

        let variants = [
            (
                "corrupted wrapped key",
                altered(&letter, |l| {
                    l.at(&KTRI).children()[ENCRYPTED_KEY].octets()[100] ^= 0x40
                }),
            ),
            (
                "wrapped key of the wrong length",
                altered(&letter, |l| {
                    *l.at(&KTRI).children()[ENCRYPTED_KEY].octets() =
                        wrap_key(&pki, &[7; 16], padding);
                }),
            ),
            (
                "wrapped key of the right length, another key",
                altered(&letter, |l| {
                    *l.at(&KTRI).children()[ENCRYPTED_KEY].octets() =
                        wrap_key(&pki, &[7; 32], padding);
                }),
            ),
            (
                "wrapped key of zeros",
                altered(&letter, |l| {
                    l.at(&KTRI).children()[ENCRYPTED_KEY].octets().fill(0);
                }),
            ),
            (
                "corrupted tag",
                altered(&letter, |l| l.at(&MAC).octets()[15] ^= 0x01),
            ),
            (
                "truncated tag",
                altered(&letter, |l| l.at(&MAC).octets().truncate(4)),
            ),
        ];
        let refusals: Vec<(&str, String)> = variants
            .iter()
            .map(|(what, variant)| (*what, refusal(&pki, variant, what)))
            .collect();
        for (what, text) in &refusals {
            eprintln!("{padding}, {what}: {text}");
            assert_eq!(text, &refusals[0].1, "{padding}: {what} is told apart");
        }
    }
}

/// `letter` with a `mac` of `len` octets (the first ones of its tag) and, if given,
/// GCM parameters declaring `icv_len`.
fn with_tag(letter: &Tlv, len: usize, icv_len: Option<u8>) -> Tlv {
    altered(letter, |l| {
        l.at(&MAC).octets().truncate(len);
        if let Some(icv_len) = icv_len {
            // GCMParameters: nonce, icvLen (the CLI writes it: 16).
            *l.at(&GCM_PARAMETERS).children()[1].octets() = vec![icv_len];
        }
    })
}

#[test]
fn a_tag_other_than_declared_fails_like_an_altered_tag_in_both_paths() {
    let Some(pki) = pki() else { return };
    let made = encrypted(&pki, "gcm.der", &[]);
    assert_eq!(
        made.clone().at(&GCM_PARAMETERS).children()[1].octets(),
        &[16]
    );
    for (path, letter) in [("OpenSSL", made.clone()), ("DER", with_unauth_attrs(made))] {
        assert!(unwrap(&pki, &letter).is_ok(), "{path}: the letter as made");
        let flipped = refusal(
            &pki,
            &altered(&letter, |l| l.at(&MAC).octets()[0] ^= 0x01),
            "flipped tag",
        );
        for (what, variant) in [
            ("4 of 16 octets", with_tag(&letter, 4, None)),
            ("12 of 16 octets", with_tag(&letter, 12, None)),
            ("16 octets, 12 declared", with_tag(&letter, 16, Some(12))),
            ("8 octets, 8 declared", with_tag(&letter, 8, Some(8))),
            ("4 octets, 4 declared", with_tag(&letter, 4, Some(4))),
        ] {
            let text = refusal(&pki, &variant, what);
            eprintln!("{path}, {what}: {text}");
            assert_eq!(text, flipped, "{path}: {what}");
        }
    }
}
