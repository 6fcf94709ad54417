//! The gateway's configuration file (`kvgate.toml`).
//!
//! Relative paths in the file are relative to the directory that holds it, so a data
//! directory made by `kvgate init` can be moved as a whole.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Name of the configuration file inside a data directory.
pub const FILE_NAME: &str = "kvgate.toml";

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The mail domain: members are `<KVNR>@postfach.<domain>` and
    /// `<KVNR>@smarthealth.<domain>`.
    pub domain: String,
    /// The host name the SMTP server announces.
    pub hostname: String,
    /// Where the database and the spool live.
    pub data_dir: PathBuf,
    /// Listening addresses.
    pub listen: Listen,
    /// The TLS server certificate and key of all listeners.
    pub tls: KeyPair,
    /// S/MIME: the keys letters are encrypted to.
    pub smime: Smime,
    /// Trust anchors for sender certificates, beyond those added with `kvgate trust add`.
    #[serde(default)]
    pub trust: Trust,
    /// SMTP limits.
    #[serde(default)]
    pub limits: Limits,
    /// Where this configuration was read from (not part of the file).
    #[serde(skip)]
    pub base: PathBuf,
}

/// Listening addresses.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// SMTP with STARTTLS.
    pub smtp: SocketAddr,
    /// SMTP with implicit TLS.
    pub smtps: SocketAddr,
    /// The member HTTPS API.
    pub api: SocketAddr,
}

/// A certificate (chain) and its private key, both PEM files.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPair {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (mode 0600).
    pub key: PathBuf,
}

/// S/MIME settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Smime {
    /// Every key the gateway decrypts with: the current one and, during a rollover,
    /// the previous ones.
    pub decryption_keys: Vec<KeyPair>,
}

/// Trust anchors, intermediates and revocation checking of signer certificates.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trust {
    /// CA certificates (PEM) that sender certificates must chain to.
    #[serde(default)]
    pub anchors: Vec<PathBuf>,
    /// Intermediate CA certificates (PEM) for chains whose messages lack them.
    #[serde(default)]
    pub intermediates: Vec<PathBuf>,
    /// CRL files (PEM or DER); newer ones are fetched from distribution points.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// What happens when no CRL or OCSP source answers: `hard` refuses the
    /// letter (`revocation-unknown`), `soft` delivers it and records that.
    #[serde(default)]
    pub revocation: RevocationMode,
}

/// Hard-fail or soft-fail revocation checking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationMode {
    /// Refuse when the status cannot be established.
    #[default]
    Hard,
    /// Deliver, recording that the status was not checked.
    Soft,
}

/// SMTP limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest message accepted, in octets (advertised with SIZE).
    pub max_message_size: u64,
    /// Most recipients of one message.
    pub max_recipients: usize,
    /// Seconds a client may take for one command (RFC 5321 §4.5.3.2: 5 minutes).
    pub command_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 100,
            command_timeout_secs: 300,
        }
    }
}

impl Limits {
    /// The command timeout as a duration.
    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout_secs)
    }
}

/// The configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("{path} is not a valid kvgate configuration: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        config.base = path.parent().map(Path::to_owned).unwrap_or_default();
        let invalid = |message: &str| ConfigError::Invalid {
            path: path.to_owned(),
            message: message.to_owned(),
        };
        if config.domain.is_empty() || config.domain.contains(['@', ' ']) {
            return Err(invalid(
                "domain must be a mail domain such as kvgate.example",
            ));
        }
        if config.smime.decryption_keys.is_empty() {
            return Err(invalid("smime.decryption_keys needs at least one key"));
        }
        if config.limits.max_message_size == 0 || config.limits.max_recipients == 0 {
            return Err(invalid("limits must be positive"));
        }
        Ok(config)
    }

    /// A path from the file, resolved against the file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.base.join(path)
        }
    }

    /// The database file.
    pub fn database_path(&self) -> PathBuf {
        self.resolve(&self.data_dir).join("kvgate.redb")
    }

    /// The spool directory.
    pub fn spool_dir(&self) -> PathBuf {
        self.resolve(&self.data_dir).join("spool")
    }

    /// The development configuration `kvgate init` writes.
    pub fn development(domain: &str) -> Self {
        let pair = || KeyPair {
            cert: PathBuf::from("pki/gateway.pem"),
            key: PathBuf::from("pki/gateway.key"),
        };
        Config {
            domain: domain.to_owned(),
            hostname: "localhost".to_owned(),
            data_dir: PathBuf::from("."),
            listen: Listen {
                smtp: SocketAddr::from(([127, 0, 0, 1], 2525)),
                smtps: SocketAddr::from(([127, 0, 0, 1], 4650)),
                api: SocketAddr::from(([127, 0, 0, 1], 8443)),
            },
            tls: pair(),
            smime: Smime {
                decryption_keys: vec![pair()],
            },
            trust: Trust {
                anchors: vec![PathBuf::from("pki/ca.pem")],
                ..Trust::default()
            },
            limits: Limits::default(),
            base: PathBuf::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn development_config_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let text = toml::to_string(&Config::development("kvgate.test")).unwrap();
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.domain, "kvgate.test");
        assert_eq!(config.database_path(), dir.path().join("./kvgate.redb"));
        assert_eq!(config.limits.max_recipients, 100);
        assert_eq!(config.trust.revocation, RevocationMode::Hard);
    }

    #[test]
    fn trust_takes_intermediates_crls_and_soft_fail() {
        let trust: Trust = toml::from_str(
            "anchors = [\"ca.pem\"]\nintermediates = [\"sub.pem\"]\n\
             crls = [\"sub.crl\"]\nrevocation = \"soft\"\n",
        )
        .unwrap();
        assert_eq!(trust.intermediates, vec![PathBuf::from("sub.pem")]);
        assert_eq!(trust.crls, vec![PathBuf::from("sub.crl")]);
        assert_eq!(trust.revocation, RevocationMode::Soft);
        assert!(toml::from_str::<Trust>("revocation = \"lenient\"\n").is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut text = toml::to_string(&Config::development("kvgate.test")).unwrap();
        text.insert_str(0, "colour = \"blue\"\n");
        std::fs::write(&path, text).unwrap();
        assert!(matches!(
            Config::load(&path),
            Err(ConfigError::Parse { .. })
        ));
    }
}
