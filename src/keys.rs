//! age keys: generating an identity, reading identity files.
//!
//! Backups need only recipients (public keys, in the policy). The identity
//! (private key) is read only by `restore` and `verify --read-data`, so a
//! stolen backup job cannot read old backups.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Errors from key files.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{path} already exists; refusing to overwrite a key (move it away or choose another --out)"
    )]
    Exists { path: PathBuf },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read identity file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no age X25519 identity (expected a line starting with AGE-SECRET-KEY-1, as written by `lifeboat keygen` or `age-keygen`)")]
    NoIdentity { path: PathBuf },
}

impl crate::outcome::Classify for KeyError {
    fn outcome(&self) -> crate::outcome::Outcome {
        use crate::outcome::Outcome;
        match self {
            Self::Exists { .. }
            | Self::Write { .. }
            | Self::Read { .. }
            | Self::NoIdentity { .. } => Outcome::Usage,
        }
    }
}

/// The identities of one identity file, with where they came from.
pub struct Identities {
    pub path: PathBuf,
    keys: Vec<age::x25519::Identity>,
}

impl Identities {
    /// Reads an identity file (`AGE-SECRET-KEY-1...` lines, `#` comments).
    pub fn load(path: &Path) -> Result<Identities, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let keys: Vec<age::x25519::Identity> = text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("AGE-SECRET-KEY-"))
            .filter_map(|l| l.parse().ok())
            .collect();
        if keys.is_empty() {
            return Err(KeyError::NoIdentity {
                path: path.to_path_buf(),
            });
        }
        Ok(Identities {
            path: path.to_path_buf(),
            keys,
        })
    }

    /// The identities as age wants them.
    pub fn iter(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.keys.iter().map(|k| k as &dyn age::Identity)
    }

    /// The public keys (recipients) matching these identities.
    pub fn recipients(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| k.to_public().to_string())
            .collect()
    }
}

/// Generates an identity, writes it to `path` (mode 0600, never
/// overwriting) in age's own format, and returns the recipient.
pub fn generate(path: &Path) -> Result<String, KeyError> {
    use age::secrecy::ExposeSecret;
    use std::os::unix::fs::OpenOptionsExt;

    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                KeyError::Write {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
    let body = format!(
        "# created: {}\n# public key: {}\n{}\n",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        recipient,
        identity.to_string().expose_secret()
    );
    file.write_all(body.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| KeyError::Write {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(recipient)
}
