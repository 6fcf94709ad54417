//! The cases: each checks one promise of the deployment and names the clause it comes
//! from.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use kvgate_certs::devpki;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::wire::Wire;

/// What a case found.
pub enum Outcome {
    /// The deployment kept the promise.
    Pass,
    /// It did not; why.
    Fail(String),
    /// The case could not run here; why.
    Skip(String),
}

impl From<Result<(), String>> for Outcome {
    fn from(r: Result<(), String>) -> Self {
        match r {
            Ok(()) => Outcome::Pass,
            Err(e) => Outcome::Fail(e),
        }
    }
}

/// The deployment under test and the credentials to test it with.
pub struct Target {
    smtp: SocketAddr,
    smtps: Option<SocketAddr>,
    domain: String,
    from: String,
    trusted: Arc<ClientConfig>,
    anonymous: Arc<ClientConfig>,
    untrusted: Arc<ClientConfig>,
}

type CaseFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + 'a>>;

/// One case.
pub struct Case {
    /// Stable ID.
    pub id: &'static str,
    /// Section of the suite.
    pub section: &'static str,
    /// The clause it checks.
    pub clause: &'static str,
    /// Runs it.
    pub run: for<'a> fn(&'a Target) -> CaseFuture<'a>,
}

/// Every case, in running order.
pub const ALL: &[Case] = &[
    Case {
        id: "TLS-CLIENT-CERT-REQUIRED",
        section: "TLS",
        clause: "DESIGN.md step 1; RFC 8446 §4.3.2",
        run: |t| Box::pin(client_cert_required(t)),
    },
    Case {
        id: "TLS-UNTRUSTED-CLIENT-CERT",
        section: "TLS",
        clause: "DESIGN.md step 1; RFC 5280 §6",
        run: |t| Box::pin(untrusted_client_cert(t)),
    },
    Case {
        id: "SMTP-EHLO-EXTENSIONS",
        section: "SMTP",
        clause: "RFC 1870, RFC 2920, RFC 6152, RFC 2034",
        run: |t| Box::pin(ehlo_extensions(t)),
    },
    Case {
        id: "SMTP-STARTTLS-REQUIRED",
        section: "SMTP",
        clause: "RFC 3207 §4",
        run: |t| Box::pin(starttls_required(t)),
    },
    Case {
        id: "SMTP-STARTTLS-RESETS-STATE",
        section: "SMTP",
        clause: "RFC 3207 §4.2",
        run: |t| Box::pin(starttls_resets_state(t)),
    },
    Case {
        id: "SMTP-VRFY-NO-DISCLOSURE",
        section: "SMTP",
        clause: "RFC 5321 §3.5.3",
        run: |t| Box::pin(vrfy_no_disclosure(t)),
    },
    Case {
        id: "SMTP-RCPT-INVALID-KVNR",
        section: "SMTP",
        clause: "DESIGN.md step 2 (553 5.1.3)",
        run: |t| Box::pin(invalid_kvnr(t)),
    },
];

impl Target {
    /// Reads the test credentials from `pki` and makes an untrusted identity.
    pub fn load(
        smtp: SocketAddr,
        smtps: Option<SocketAddr>,
        pki: &Path,
        domain: &str,
        from: &str,
    ) -> Result<Self, String> {
        let read = |name: &str| {
            std::fs::read(pki.join(name))
                .map_err(|e| format!("reading {}: {e}", pki.join(name).display()))
        };
        let ca = read("ca.pem")?;
        let trusted = client_config(
            &ca,
            Some((&read("demo-practice.pem")?, &read("demo-practice.key")?)),
        )?;
        let anonymous = client_config(&ca, None)?;
        let stranger =
            devpki::generate(domain, "stranger@untrusted.test").map_err(|e| e.to_string())?;
        let untrusted = client_config(
            &ca,
            Some((
                stranger.practice.cert_pem.as_bytes(),
                stranger.practice.key_pem.as_bytes(),
            )),
        )?;
        Ok(Target {
            smtp,
            smtps,
            domain: domain.to_owned(),
            from: from.to_owned(),
            trusted,
            anonymous,
            untrusted,
        })
    }

    /// An EHLO'd session over TLS as the trusted practice: implicit TLS where
    /// configured, else STARTTLS.
    async fn session(&self) -> Result<Wire, String> {
        let mut wire = match self.smtps {
            Some(addr) => {
                let mut w = Wire::tls(addr, self.trusted.clone()).await?;
                expect(w.reply().await?.code, 220, "greeting")?;
                w
            }
            None => self.starttls(self.trusted.clone()).await?,
        };
        expect(
            wire.command("EHLO conformance.test").await?.code,
            250,
            "EHLO",
        )?;
        Ok(wire)
    }

    /// A session on the STARTTLS port after the upgrade (no EHLO yet).
    async fn starttls(&self, config: Arc<ClientConfig>) -> Result<Wire, String> {
        let mut w = Wire::plain(self.smtp).await?;
        expect(w.reply().await?.code, 220, "greeting")?;
        expect(w.command("EHLO conformance.test").await?.code, 250, "EHLO")?;
        expect(w.command("STARTTLS").await?.code, 220, "STARTTLS")?;
        w.starttls(config).await
    }
}

fn client_config(
    ca_pem: &[u8],
    identity: Option<(&[u8], &[u8])>,
) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| e.to_string())?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| e.to_string())?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

fn expect(got: u16, want: u16, what: &str) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: expected {want}, got {got}"))
    }
}

/// A session that presented `config`'s identity must not get to a usable prompt.
async fn refused(target: &Target, config: Arc<ClientConfig>) -> Outcome {
    let Some(addr) = target.smtps else {
        return Outcome::Skip("needs --smtps".to_owned());
    };
    let attempt = async {
        let mut w = Wire::tls(addr, config).await?;
        let greeting = w.reply().await?;
        if greeting.code != 220 {
            return Ok(greeting);
        }
        w.command("EHLO conformance.test").await
    };
    match attempt.await {
        Err(_) => Outcome::Pass,
        Ok(reply) if reply.code >= 500 => Outcome::Pass,
        Ok(reply) => Outcome::Fail(format!("the session was accepted: {reply}")),
    }
}

async fn client_cert_required(t: &Target) -> Outcome {
    refused(t, t.anonymous.clone()).await
}

async fn untrusted_client_cert(t: &Target) -> Outcome {
    refused(t, t.untrusted.clone()).await
}

async fn ehlo_extensions(t: &Target) -> Outcome {
    let run = async {
        let mut w = t.session().await?;
        let ehlo = w.command("EHLO conformance.test").await?;
        for ext in ["SIZE", "PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"] {
            if !ehlo
                .lines
                .iter()
                .any(|l| l.split_whitespace().next() == Some(ext))
            {
                return Err(format!("EHLO does not advertise {ext}: {:?}", ehlo.lines));
            }
        }
        if ehlo
            .lines
            .iter()
            .any(|l| l.eq_ignore_ascii_case("STARTTLS"))
        {
            return Err("STARTTLS is advertised inside TLS".to_owned());
        }
        Ok(())
    };
    run.await.into()
}

async fn starttls_required(t: &Target) -> Outcome {
    let run = async {
        let mut w = Wire::plain(t.smtp).await?;
        expect(w.reply().await?.code, 220, "greeting")?;
        let ehlo = w.command("EHLO conformance.test").await?;
        if !ehlo
            .lines
            .iter()
            .any(|l| l.eq_ignore_ascii_case("STARTTLS"))
        {
            return Err("STARTTLS is not advertised on the plain port".to_owned());
        }
        let mail = w.command(&format!("MAIL FROM:<{}>", t.from)).await?;
        if mail.code != 530 {
            return Err(format!("MAIL before STARTTLS: expected 530, got {mail}"));
        }
        Ok(())
    };
    run.await.into()
}

async fn starttls_resets_state(t: &Target) -> Outcome {
    let run = async {
        let mut w = t.starttls(t.trusted.clone()).await?;
        let mail = w.command(&format!("MAIL FROM:<{}>", t.from)).await?;
        if mail.code != 503 {
            return Err(format!(
                "MAIL right after STARTTLS without EHLO: expected 503, got {mail}"
            ));
        }
        Ok(())
    };
    run.await.into()
}

async fn vrfy_no_disclosure(t: &Target) -> Outcome {
    let run = async {
        let mut w = t.session().await?;
        let reply = w
            .command(&format!("VRFY A123456780@smarthealth.{}", t.domain))
            .await?;
        if reply.code != 252 && reply.code != 502 {
            return Err(format!("VRFY: expected 252 or 502, got {reply}"));
        }
        Ok(())
    };
    run.await.into()
}

async fn invalid_kvnr(t: &Target) -> Outcome {
    let run = async {
        let mut w = t.session().await?;
        expect(
            w.command(&format!("MAIL FROM:<{}>", t.from)).await?.code,
            250,
            "MAIL",
        )?;
        let reply = w
            .command(&format!("RCPT TO:<A123456781@smarthealth.{}>", t.domain))
            .await?;
        if reply.code != 553 || !reply.lines.last().is_some_and(|l| l.starts_with("5.1.3 ")) {
            return Err(format!(
                "RCPT with a wrong check digit: expected 553 5.1.3, got {reply}"
            ));
        }
        Ok(())
    };
    run.await.into()
}
