//! The `encryption:` section: the age recipients backups are encrypted to.

use super::*;

/// Encryption settings. Backups need only recipients (public keys); the
/// identity (private key) is given to `restore` and `verify --read-data` only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// age X25519 recipients (`age1...`). Every artifact can be decrypted by
    /// any one of their identities.
    #[serde(default)]
    pub recipients: Vec<Recipient>,
    /// A file of recipients, one per line (`#` comments allowed), as written
    /// by `lifeboat keygen` or `age-keygen -y`.
    #[serde(default)]
    pub recipients_file: Option<PathBuf>,
}

/// The message for a value that is not a recipient. A private key pasted
/// by mistake is never echoed: the message would carry it into logs.
fn not_a_recipient(value: &str) -> String {
    if value
        .trim()
        .to_ascii_uppercase()
        .starts_with("AGE-SECRET-KEY-")
    {
        "an age identity (private key, AGE-SECRET-KEY-...) is given where a recipient (public key, age1...) belongs; put only the recipient here (`age-keygen -y KEYFILE` prints it) and keep the identity out of the policy".into()
    } else {
        format!("'{value}' is not an age X25519 recipient (expected age1...; `lifeboat keygen` prints one)")
    }
}

/// An age X25519 recipient (public key).
#[derive(Clone, PartialEq, Eq)]
pub struct Recipient(pub age::x25519::Recipient);

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for Recipient {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.trim()
            .parse()
            .map(Recipient)
            .map_err(|_| serde::de::Error::custom(not_a_recipient(&s)))
    }
}

impl EncryptionConfig {
    /// All recipients: inline ones plus those from `recipients_file`.
    pub fn all_recipients(&self) -> Result<Vec<age::x25519::Recipient>, PolicyError> {
        let mut out: Vec<_> = self.recipients.iter().map(|r| r.0.clone()).collect();
        if let Some(path) = &self.recipients_file {
            let text =
                std::fs::read_to_string(path).map_err(|source| PolicyError::RecipientsFile {
                    path: path.clone(),
                    source,
                })?;
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let r = line.parse().map_err(|_| PolicyError::RecipientsFileEntry {
                    path: path.clone(),
                    line: i + 1,
                    message: not_a_recipient(&line.chars().take(80).collect::<String>()),
                })?;
                out.push(r);
            }
            if out.is_empty() {
                return Err(PolicyError::NoRecipients { path: path.clone() });
            }
        }
        Ok(out)
    }
}
