//! The S/MIME signature on reports: `multipart/signed` (RFC 8551 §3.5.3) with a
//! detached SHA-256 SignedData by the gateway's certificate, so a practice system can
//! check a receipt with `openssl cms -verify`.

use std::path::Path;

use base64::Engine;
use zeroize::Zeroizing;

use super::ReportError;

/// The certificate and key reports are signed with.
pub struct ReportSigner {
    cert_pem: Vec<u8>,
    key_pem: Zeroizing<Vec<u8>>,
}

impl ReportSigner {
    /// Reads the PEM certificate and key (the gateway's S/MIME identity).
    pub fn load(cert: &Path, key: &Path) -> std::io::Result<Self> {
        Ok(ReportSigner {
            cert_pem: std::fs::read(cert)?,
            key_pem: Zeroizing::new(std::fs::read(key)?),
        })
    }

    /// `headers` (top-level, each ending in CRLF) followed by `entity` signed as
    /// `multipart/signed`. `entity` is a MIME entity with CRLF line ends; it is signed
    /// exactly as it appears in the first part.
    pub fn sign(&self, headers: &[u8], entity: &[u8]) -> Result<Vec<u8>, ReportError> {
        let signature = kvgate_certs::compose::sign_detached(entity, &self.cert_pem, &self.key_pem)
            .map_err(|e| ReportError::Sign(e.to_string()))?;
        let boundary = boundary_for(entity);
        let mut out = headers.to_vec();
        out.extend_from_slice(
            format!(
                "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; \
                 micalg=sha-256;\r\n boundary=\"{boundary}\"\r\n\r\n\
                 This is an S/MIME signed message.\r\n\r\n--{boundary}\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(entity);
        out.extend_from_slice(
            format!(
                "\r\n--{boundary}\r\n\
                 Content-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n\
                 Content-Transfer-Encoding: base64\r\n\
                 Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n"
            )
            .as_bytes(),
        );
        let encoded = base64::engine::general_purpose::STANDARD.encode(signature);
        for line in encoded.as_bytes().chunks(76) {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        Ok(out)
    }
}

/// A boundary that does not occur in `entity`.
fn boundary_for(entity: &[u8]) -> String {
    let mut n = 0u32;
    loop {
        let candidate = format!("=_kvgate_signed_{n}");
        if !entity
            .windows(candidate.len())
            .any(|w| w == candidate.as_bytes())
        {
            return candidate;
        }
        n += 1;
    }
}
