//! The deployment under test and the credentials to test it with, read from the PKI
//! directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kvgate_certs::{devpki, openpgp};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::OnceCell;

use crate::endpoint::Endpoint;
use crate::https::Api;
use crate::letter::SignerPem;
use crate::manifest::{self, Identity, Manifest};
use crate::wire::Wire;

/// Everything a case may use.
pub struct Target {
    /// SMTP with STARTTLS.
    pub smtp: Endpoint,
    /// SMTP with implicit TLS, if the operator named it.
    pub smtps: Option<Endpoint>,
    /// The member API.
    pub api: Api,
    /// The mail domain.
    pub domain: String,
    /// The registered test practice.
    pub practice: Sender,
    /// A second registered practice.
    pub second_practice: Sender,
    /// A practice with an expired certificate, registered but not valid.
    pub expired_practice: Sender,
    /// A practice from a CA the deployment does not trust.
    pub stranger: Sender,
    /// TLS with no client certificate.
    pub anonymous: Arc<ClientConfig>,
    /// The CA of the gateway's TLS certificate, PEM.
    pub server_ca: Vec<u8>,
    /// The gateway's S/MIME certificate, PEM.
    pub gateway_smime: Vec<u8>,
    /// The gateway's S/MIME certificate with an ECC key, PEM, if it has one.
    pub gateway_smime_ecc: Option<Vec<u8>>,
    /// A signing certificate of the test practice with an ECDSA P-256 key.
    pub p256_signer: Option<KeyPair>,
    /// A signing certificate of the test practice with a brainpoolP256r1 key.
    pub brainpool_signer: Option<KeyPair>,
    /// A signing certificate of the test practice that its CA revoked.
    pub revoked_signer: Option<KeyPair>,
    /// The test member.
    pub member: TestMember,
    /// The second test member.
    pub second_member: TestMember,
    /// A member whose smarthealth is not activated.
    pub smarthealth_off_kvnr: String,
    /// A member with no OpenPGP key.
    pub keyless_kvnr: String,
    /// The suite's SMTP receiver, where the gateway's receipts arrive.
    pub relay: Option<crate::relay::Relay>,
    /// The letter every delivery case looks at, sent once.
    pub delivered: OnceCell<Result<crate::delivery::Delivered, String>>,
}

/// A certificate and its private key, both PEM.
pub struct KeyPair {
    /// Certificate, PEM.
    pub cert: Vec<u8>,
    /// Private key, PEM.
    pub key: Vec<u8>,
}

impl KeyPair {
    fn load(pki: &Path, id: &Identity) -> Result<Self, TargetError> {
        Ok(KeyPair {
            cert: manifest::read(pki, &id.cert)?,
            key: manifest::read(pki, &id.key)?,
        })
    }

    /// The pair as an S/MIME signer.
    pub fn signer(&self) -> SignerPem<'_> {
        SignerPem {
            cert: &self.cert,
            key: &self.key,
        }
    }
}

/// A sending identity: certificate, key, address and its TLS client configuration.
pub struct Sender {
    /// Certificate and key: TLS client certificate and S/MIME signer.
    pub pair: KeyPair,
    /// The address it may use in MAIL FROM and From.
    pub from: String,
    /// TLS with this certificate as the client certificate.
    pub tls: Arc<ClientConfig>,
}

impl Sender {
    /// The identity as an S/MIME signer.
    pub fn signer(&self) -> SignerPem<'_> {
        self.pair.signer()
    }
}

/// A test member and its device token, enrolled on first use.
pub struct TestMember {
    /// The KVNR.
    pub kvnr: String,
    /// The member's OpenPGP secret key, armored.
    pub secret_key: String,
    enrollment: PathBuf,
    next_device: Option<PathBuf>,
    token_file: PathBuf,
    token: OnceCell<Result<String, String>>,
}

/// Where the deployment listens, as given on the command line.
pub struct Listeners<'a> {
    /// `--smtp`.
    pub smtp: &'a str,
    /// `--smtps`.
    pub smtps: Option<&'a str>,
    /// `--api`.
    pub api: &'a str,
    /// `--tls-name`.
    pub tls_name: Option<&'a str>,
    /// `--relay-listen`.
    pub relay_listen: Option<std::net::SocketAddr>,
}

/// The target could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The PKI directory.
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    /// An address.
    #[error(transparent)]
    Endpoint(#[from] crate::endpoint::EndpointError),
    /// Certificates or keys.
    #[error("{0}")]
    Material(String),
    /// The receiver for `--relay-listen`.
    #[error("cannot listen on {0} for receipts: {1}")]
    Relay(std::net::SocketAddr, std::io::Error),
}

impl Target {
    /// Reads the PKI directory and resolves the listeners.
    pub async fn load(
        listeners: Listeners<'_>,
        pki: &Path,
        domain: Option<&str>,
    ) -> Result<Self, TargetError> {
        let m = Manifest::load(pki)?;
        let ca = manifest::read(pki, &m.server_ca)?;
        let material = |e: String| TargetError::Material(e);
        let sender = |id: &Identity| -> Result<Sender, TargetError> {
            let pair = KeyPair::load(pki, id)?;
            let tls = client_config(&ca, Some((&pair.cert, &pair.key))).map_err(material)?;
            Ok(Sender {
                pair,
                from: id.from.clone(),
                tls,
            })
        };
        let signing =
            |id: &Option<Identity>| id.as_ref().map(|id| KeyPair::load(pki, id)).transpose();
        let domain = domain.unwrap_or(&m.domain).to_owned();
        let stranger_pki = devpki::generate(&domain, "stranger@untrusted.test")
            .map_err(|e| material(e.to_string()))?;
        let stranger_cert = stranger_pki.practice.cert_pem.into_bytes();
        let stranger_key = stranger_pki.practice.key_pem.as_bytes().to_vec();
        let stranger = Sender {
            tls: client_config(&ca, Some((&stranger_cert, &stranger_key))).map_err(material)?,
            pair: KeyPair {
                cert: stranger_cert,
                key: stranger_key,
            },
            from: "stranger@untrusted.test".to_owned(),
        };
        let api_tls = client_config(&ca, None).map_err(material)?;
        let api = Api::new(listeners.api, listeners.tls_name, api_tls).await?;
        let smtps = match listeners.smtps {
            Some(s) => Some(Endpoint::resolve(s, listeners.tls_name).await?),
            None => None,
        };
        let relay = match listeners.relay_listen {
            Some(addr) => Some(
                crate::relay::Relay::start(addr)
                    .await
                    .map_err(|e| TargetError::Relay(addr, e))?,
            ),
            None => None,
        };
        Ok(Target {
            relay,
            smtp: Endpoint::resolve(listeners.smtp, listeners.tls_name).await?,
            smtps,
            api,
            practice: sender(&m.practice)?,
            second_practice: sender(&m.second_practice)?,
            expired_practice: sender(&m.expired_practice)?,
            stranger,
            anonymous: client_config(&ca, None).map_err(material)?,
            server_ca: ca.clone(),
            gateway_smime: manifest::read(pki, &m.gateway_smime)?,
            gateway_smime_ecc: m
                .gateway_smime_ecc
                .as_ref()
                .map(|file| manifest::read(pki, file))
                .transpose()?,
            p256_signer: signing(&m.p256_signer)?,
            brainpool_signer: signing(&m.brainpool_signer)?,
            revoked_signer: signing(&m.revoked_signer)?,
            member: TestMember::load(pki, &m.member)?,
            second_member: TestMember::load(pki, &m.second_member)?,
            smarthealth_off_kvnr: m.smarthealth_off_kvnr,
            keyless_kvnr: m.keyless_kvnr,
            domain,
            delivered: OnceCell::new(),
        })
    }

    /// `<kvnr>@smarthealth.<domain>`.
    pub fn smarthealth(&self, kvnr: &str) -> String {
        format!("{kvnr}@smarthealth.{}", self.domain)
    }

    /// An EHLO'd session over TLS as the test practice.
    pub async fn session(&self) -> Result<Wire, String> {
        self.session_as(&self.practice).await
    }

    /// An EHLO'd session over TLS as `sender`: implicit TLS where configured, else
    /// STARTTLS.
    pub async fn session_as(&self, sender: &Sender) -> Result<Wire, String> {
        let mut wire = match &self.smtps {
            Some(endpoint) => {
                let mut w = Wire::tls(endpoint, sender.tls.clone()).await?;
                w.reply().await?.expect_code(220, "greeting")?;
                w
            }
            None => self.starttls(sender.tls.clone()).await?,
        };
        wire.command("EHLO conformance.test")
            .await?
            .expect_code(250, "EHLO")?;
        Ok(wire)
    }

    /// A session with `MAIL FROM` of the test practice accepted.
    pub async fn transaction(&self) -> Result<Wire, String> {
        let mut w = self.session().await?;
        w.command(&format!("MAIL FROM:<{}>", self.practice.from))
            .await?
            .expect_code(250, "MAIL FROM of the registered practice")?;
        Ok(w)
    }

    /// A session on the STARTTLS port after the upgrade (no EHLO yet).
    pub async fn starttls(&self, config: Arc<ClientConfig>) -> Result<Wire, String> {
        let mut w = self.plain().await?;
        w.command("STARTTLS").await?.expect_code(220, "STARTTLS")?;
        w.starttls(config).await
    }

    /// A plain session on the STARTTLS port after greeting and EHLO.
    pub async fn plain(&self) -> Result<Wire, String> {
        let mut w = Wire::plain(&self.smtp).await?;
        w.reply().await?.expect_code(220, "greeting")?;
        w.command("EHLO conformance.test")
            .await?
            .expect_code(250, "EHLO")?;
        Ok(w)
    }
}

impl TestMember {
    fn load(pki: &Path, m: &manifest::Member) -> Result<Self, TargetError> {
        let secret = manifest::read(pki, &m.secret_key)?;
        Ok(TestMember {
            kvnr: m.kvnr.clone(),
            secret_key: String::from_utf8_lossy(&secret).into_owned(),
            enrollment: pki.join(&m.enrollment),
            next_device: m.next_device.as_ref().map(|file| pki.join(file)),
            token_file: pki.join(&m.token),
            token: OnceCell::new(),
        })
    }

    /// The device token: the one saved by an earlier run if the API still takes it,
    /// else a new enrolment with the code from `kvgate member add` (saved for the
    /// next run, since a code works once).
    pub async fn token(&self, api: &Api) -> Result<&str, String> {
        self.token
            .get_or_init(|| self.enroll(api))
            .await
            .as_deref()
            .map_err(Clone::clone)
    }

    /// The enrolment code from the saved output of `kvgate member add`.
    pub fn enrollment_code(&self) -> Result<String, String> {
        self.code_in(&self.enrollment)
    }

    /// The code for a second device from the saved output of `kvgate member code`,
    /// and that file, if the PKI directory has one.
    pub fn next_device_code(&self) -> Option<(Result<String, String>, &Path)> {
        let file = self.next_device.as_deref()?;
        Some((self.code_in(file), file))
    }

    /// The code on the line `enrollment-code: …` of `file`.
    fn code_in(&self, file: &Path) -> Result<String, String> {
        let output = std::fs::read_to_string(file).map_err(|e| {
            format!(
                "no enrolment code for {}: {}: {e}",
                self.kvnr,
                file.display()
            )
        })?;
        output
            .lines()
            .find_map(|l| l.strip_prefix("enrollment-code:"))
            .map(|code| code.trim().to_owned())
            .ok_or_else(|| format!("{} holds no line `enrollment-code: …`", file.display()))
    }

    async fn enroll(&self, api: &Api) -> Result<String, String> {
        if let Ok(saved) = std::fs::read_to_string(&self.token_file) {
            let saved = saved.trim().to_owned();
            let probe = api
                .request("GET", "/v1/messages", Some(&saved), None)
                .await?;
            if probe.status == 200 {
                return Ok(saved);
            }
        }
        let code = self.enrollment_code()?;
        let (_, device_key) = openpgp::generate_member_key(&format!(
            "Conformance device <{}@conformance.test>",
            self.kvnr
        ))
        .map_err(|e| format!("generating a device key: {e}"))?;
        let body = serde_json::json!({
            "kvnr": self.kvnr,
            "code": code,
            "device_name": "kvgate-conformance",
            "public_key": device_key.armored,
        });
        let response = api.request("POST", "/v1/enroll", None, Some(&body)).await?;
        response.expect_status(201, "enrolment of the test member's device")?;
        let token = response.json()?["token"]
            .as_str()
            .ok_or("the enrolment response has no token")?
            .to_owned();
        manifest::write_file(&self.token_file, token.as_bytes(), 0o600, true).map_err(|e| {
            format!(
                "saving the device token to {}: {e}",
                self.token_file.display()
            )
        })?;
        Ok(token)
    }
}

/// A TLS client configuration trusting `ca_pem`, with `identity` as client certificate.
pub fn client_config(
    ca_pem: &[u8],
    identity: Option<(&[u8], &[u8])>,
) -> Result<Arc<ClientConfig>, String> {
    client_config_with(ClientConfig::builder(), ca_pem, identity)
}

/// Like [`client_config`], for a builder with chosen protocol versions.
pub fn client_config_with(
    builder: rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>,
    ca_pem: &[u8],
    identity: Option<(&[u8], &[u8])>,
) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(cert.map_err(|e| format!("reading the server CA: {e}"))?)
            .map_err(|e| format!("using the server CA: {e}"))?;
    }
    let builder = builder.with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("reading a client certificate: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| format!("reading a client key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("using a client certificate: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
