//! Fuzzes `smime::unwrap` with malformed CMS: the input is the DER body of an
//! `application/pkcs7-mime` entity (first byte even) or a whole message (odd).
//! Every input must end in `Ok` or a reason code, never a crash or a hang.

#![no_main]

use std::sync::OnceLock;
use std::time::SystemTime;

use kvgate_certs::devpki::{self, DevPki};
use kvgate_certs::smime::{self, DecryptionKey, TrustAnchors};
use kvgate_certs::x509;
use libfuzzer_sys::fuzz_target;

/// The gateway key and anchors, made once. Nothing here depends on the fuzzer's
/// input: the `unwrap()`s can only fail on the harness's first run (a broken dev
/// PKI), never on an input, and the fuzz target is not shipped.
fn setup() -> &'static (DevPki, Vec<DecryptionKey>, TrustAnchors) {
    static SETUP: OnceLock<(DevPki, Vec<DecryptionKey>, TrustAnchors)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let pki = devpki::generate("kvgate.test", "praxis@demo-practice.test").unwrap();
        let key = DecryptionKey::from_pem(
            pki.gateway.cert_pem.as_bytes(),
            pki.gateway.key_pem.as_bytes(),
        )
        .unwrap();
        let anchors =
            TrustAnchors::new(&x509::parse_pem_chain(pki.ca.cert_pem.as_bytes()).unwrap())
                .unwrap();
        (pki, vec![key], anchors)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (_, keys, anchors) = setup();
    let message = if mode % 2 == 0 {
        let mut entity = b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\
Content-Transfer-Encoding: binary\r\n\r\n"
            .to_vec();
        entity.extend_from_slice(rest);
        entity
    } else {
        rest.to_vec()
    };
    if let Err(e) = smime::unwrap(&message, keys, anchors, SystemTime::now()) {
        assert!(!e.reason().is_empty());
    }
});
