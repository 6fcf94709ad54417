//! What other local users could read: the gateway's private keys, the admin token,
//! and the data directory with the store. `serve` warns of each at start, with the
//! command that closes it (a key the operator copied in with a permissive umask is the
//! usual case).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::config::Config;

/// A sentence for every secret file or data directory of `config` that users other
/// than its owner may read or write.
pub fn warnings(config: &Config) -> Vec<String> {
    let mut secrets: Vec<(&str, PathBuf)> = vec![("TLS key", config.resolve(&config.tls.key))];
    for pair in &config.smime.decryption_keys {
        secrets.push(("S/MIME key", config.resolve(&pair.key)));
    }
    if let Some(admin) = &config.admin {
        secrets.push(("admin token file", config.resolve(&admin.token_file)));
    }
    if let Some(client) = config
        .relay
        .as_ref()
        .and_then(|relay| relay.client.as_ref())
    {
        secrets.push(("relay client key", config.resolve(&client.key)));
    }
    secrets.push(("store", config.database_path()));
    let mut out = Vec::new();
    for (what, path) in secrets
        .iter()
        .chain([&("data directory", config.data_dir())])
    {
        let Ok(metadata) = std::fs::metadata(path) else {
            continue;
        };
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            let wanted = if metadata.is_dir() { "700" } else { "600" };
            out.push(format!(
                "the {what} {} can be used by other users (mode {mode:o}): chmod {wanted} it",
                path.display()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::fs::Permissions;

    use super::*;

    #[test]
    fn keys_and_the_data_directory_open_to_others_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let mut config = Config::development("kvgate.test");
        config.data_dir = data.clone();
        let key = data.join("pki/gateway.key");
        std::fs::create_dir(data.join("pki")).unwrap();
        std::fs::write(&key, "KEY").unwrap();
        let chmod = |path: &PathBuf, mode| {
            std::fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
        };
        config.tls.key = key.clone();
        chmod(&key, 0o600);
        chmod(&data, 0o700);
        assert_eq!(warnings(&config), Vec::<String>::new());

        chmod(&key, 0o640);
        chmod(&data, 0o755);
        assert_eq!(
            warnings(&config),
            [
                format!(
                    "the TLS key {} can be used by other users (mode 640): chmod 600 it",
                    key.display()
                ),
                format!(
                    "the data directory {} can be used by other users (mode 755): chmod 700 it",
                    data.display()
                ),
            ]
        );
    }
}
