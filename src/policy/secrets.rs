//! Secrets in a policy: references to environment variables or files, read when needed, never printed.

use super::*;

/// A secret value, never written inline in a policy: it comes from an
/// environment variable (`{ env: NAME }`) or a file (`{ file: /path }`, e.g.
/// a mounted Kubernetes Secret).
#[derive(Clone)]
pub enum SecretRef {
    /// Name of an environment variable holding the value.
    Env(String),
    /// Path of a file holding the value (trailing newline ignored).
    File(PathBuf),
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[serde(default)]
            env: Option<String>,
            #[serde(default)]
            file: Option<PathBuf>,
        }
        match Raw::deserialize(d)? {
            Raw { env: Some(v), file: None } => Ok(SecretRef::Env(v)),
            Raw { env: None, file: Some(p) } => Ok(SecretRef::File(p)),
            _ => Err(serde::de::Error::custom(
                "a secret needs exactly one of `env: VARIABLE` or `file: /path` (secrets are never written in the policy itself)",
            )),
        }
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(v) => write!(f, "env:{v}"),
            SecretRef::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

impl SecretRef {
    /// Reads the secret now. The value is never logged.
    pub fn resolve(&self) -> Result<Secret, PolicyError> {
        match self {
            SecretRef::Env(var) => std::env::var(var)
                .map(Secret)
                .map_err(|_| PolicyError::SecretEnvMissing { var: var.clone() }),
            SecretRef::File(path) => std::fs::read_to_string(path)
                .map(|s| Secret(s.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|source| PolicyError::SecretFile {
                    path: path.clone(),
                    source,
                }),
        }
    }
}

/// A secret in memory. Its `Debug` and `Display` never show the value.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }
    /// The value, for handing to a client library or a child's environment.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}
