//! Policy files: one YAML file per protected system, turned into a typed,
//! validated [`Policy`].
//!
//! Unknown keys and wrong types are errors that name the file, line and
//! column. Values with their own syntax (repository URL, age recipients,
//! schedules, durations, sizes) are parsed while the YAML is read, so their
//! errors carry a position too. Checks that span several fields name the
//! source or field instead.
//!
//! ```yaml
//! name: app
//! repository:
//!   url: s3://lifeboat-backups/app
//!   endpoint: http://garage.storage:3900
//!   region: garage
//!   path_style: true
//!   access_key_id: { env: LIFEBOAT_S3_ACCESS_KEY_ID }
//!   secret_access_key: { file: /var/run/secrets/lifeboat/s3-secret }
//! encryption:
//!   recipients: [age1...]
//! compression: { algorithm: zstd, level: 1 }   # threads: the cores the backup leaves free
//! schedule: "15 2 * * *"
//! retention: { keep_last: 7, keep_daily: 14 }
//! sources:
//!   - name: main-db
//!     postgres:
//!       host: 10.0.0.5
//!       user: backup
//!       password: { env: PGPASSWORD }
//!       databases: all
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Errors from reading or validating a policy file.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: no source named '{name}' (sources in this policy: {known})")]
    UnknownSource {
        path: PathBuf,
        name: String,
        known: String,
    },
    #[error("secret from environment variable {var} is not set; export it or point the policy at a file")]
    SecretEnvMissing { var: String },
    #[error("cannot read secret file {path}: {source}")]
    SecretFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read recipients file {path}: {source}")]
    RecipientsFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    RecipientsFileEntry {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(
        "{path} holds no recipient; add the recipient (age1...) that `lifeboat keygen` printed"
    )]
    NoRecipients { path: PathBuf },
}

impl crate::outcome::Classify for PolicyError {
    fn outcome(&self) -> crate::outcome::Outcome {
        use crate::outcome::Outcome;
        match self {
            // The policy is fine; the environment lacks a mounted secret.
            Self::SecretEnvMissing { .. } | Self::SecretFile { .. } => Outcome::Failure,
            Self::Read { .. }
            | Self::Syntax { .. }
            | Self::Invalid { .. }
            | Self::UnknownSource { .. }
            | Self::RecipientsFile { .. }
            | Self::RecipientsFileEntry { .. }
            | Self::NoRecipients { .. } => Outcome::Usage,
        }
    }
}

/// A validated policy. Paths inside it are absolute (relative paths in the
/// file are resolved against the policy file's folder).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The policy's name. It is part of every object key, so renaming a
    /// policy starts a new backup history.
    pub name: Name,
    /// Where backups are stored.
    pub repository: RepositoryConfig,
    /// Who can read the backups. Only public keys live here.
    pub encryption: EncryptionConfig,
    /// How artifacts are compressed before encryption.
    #[serde(default)]
    pub compression: CompressionConfig,
    /// When `lifeboat run` starts a backup (Kubernetes CronJob syntax).
    #[serde(default)]
    pub schedule: Option<Schedule>,
    /// The time zone the schedule is read in (an IANA name such as
    /// `Europe/Berlin`, like a CronJob's `spec.timeZone`). Default: UTC.
    #[serde(default)]
    pub timezone: Option<TimeZone>,
    /// Which backups `lifeboat prune` keeps.
    #[serde(default)]
    pub retention: Option<Retention>,
    /// The systems this policy protects.
    pub sources: Vec<Source>,
    /// Restore drills (`lifeboat drill`): scratch targets and checks.
    #[serde(default)]
    pub drill: DrillConfig,
    /// The file this policy was read from (set by [`Policy::load`]).
    #[serde(skip)]
    pub path: PathBuf,
}

/// A name usable inside object keys: lowercase letters, digits, `-`, `_`, `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && s.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
            });
        if ok {
            Ok(Name(s))
        } else {
            Err(format!(
                "invalid name '{s}': use 1-63 lowercase letters, digits, '-', '_' or '.', starting with a letter or digit"
            ))
        }
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Policy {
    /// When the policy's schedule fires next after `after`, read in the
    /// policy's time zone. `None` without a schedule.
    pub fn next_run(
        &self,
        after: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        self.next_of(self.schedule.as_ref()?, after)
    }

    /// When the drill schedule fires next after `after` (policy time zone).
    pub fn next_drill(
        &self,
        after: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        self.next_of(self.drill.schedule.as_ref()?, after)
    }

    fn next_of(
        &self,
        schedule: &Schedule,
        after: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        let tz = self.timezone.map(|t| t.0).unwrap_or(chrono_tz::UTC);
        schedule
            .next_after(&after.with_timezone(&tz))
            .map(|t| t.with_timezone(&chrono::Utc))
    }
}

/// yaml_serde places errors raised by a value's own parser (a bad
/// recipient, schedule or URL) at the start of the enclosing mapping. Those
/// messages quote the offending value, so the value is looked up in the
/// text from there on to point at its own line and column.
fn refine_location(text: &str, line: usize, column: usize, message: &str) -> (usize, usize) {
    let quoted = message
        .split_once('\'')
        .and_then(|(_, rest)| rest.split_once('\''))
        .map(|(v, _)| v)
        .filter(|v| !v.is_empty());
    let Some(value) = quoted else {
        return (line, column);
    };
    for (i, l) in text.lines().enumerate().skip(line.saturating_sub(1)) {
        if let Some(c) = l.find(value) {
            return (i + 1, c + 1);
        }
    }
    (line, column)
}

impl Policy {
    /// Reads and validates a policy file. Touches nothing else: no network,
    /// no secrets are read.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses policy text as if read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Policy, PolicyError> {
        let mut policy: Policy = yaml_serde::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            // yaml_serde appends " at line X column Y"; the prefix says it already.
            let mut message = e.to_string();
            if let Some(i) = message.find(" at line ") {
                message.truncate(i);
            }
            let (line, column) = refine_location(text, line, column, &message);
            PolicyError::Syntax {
                path: path.to_path_buf(),
                line,
                column,
                message,
            }
        })?;
        policy.path = path.to_path_buf();
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        policy.resolve_paths(&base);
        policy.validate()?;
        Ok(policy)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let RepositoryUrl::Local { path } = &mut self.repository.url {
            abs(path);
        }
        for s in [
            &mut self.repository.access_key_id,
            &mut self.repository.secret_access_key,
        ]
        .into_iter()
        .flatten()
        {
            if let SecretRef::File(p) = s {
                abs(p);
            }
        }
        if let Some(p) = &mut self.encryption.recipients_file {
            abs(p);
        }
        if let Some(SecretRef::File(p)) = self
            .drill
            .postgres
            .server
            .as_mut()
            .and_then(|s| s.password.as_mut())
        {
            abs(p);
        }
        for p in [
            self.drill.scratch_dir.as_mut(),
            self.drill.identity.as_mut(),
            self.drill.postgres.bin_dir.as_mut(),
            self.drill.mariadb.bin_dir.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            abs(p);
        }
        for src in &mut self.sources {
            if let Some(kind) = src.kind_mut() {
                kind.resolve_paths(&mut |p| abs(p));
            }
        }
    }

    /// Checks what the types cannot: each part in turn, the first problem
    /// named with the file.
    fn validate(&self) -> Result<(), PolicyError> {
        self.validate_repository()?;
        self.validate_encoding()?;
        self.validate_sources()?;
        self.validate_drill()
    }

    /// The repository's settings.
    fn validate_repository(&self) -> Result<(), PolicyError> {
        let invalid = |message: String| PolicyError::Invalid {
            path: self.path.clone(),
            message,
        };
        let repo = &self.repository;
        if matches!(repo.url, RepositoryUrl::Local { .. }) {
            let s3_only = [
                ("endpoint", repo.endpoint.is_some()),
                ("region", repo.region.is_some()),
                ("path_style", repo.path_style),
                ("access_key_id", repo.access_key_id.is_some()),
                ("secret_access_key", repo.secret_access_key.is_some()),
            ];
            if let Some((field, _)) = s3_only.iter().find(|(_, set)| *set) {
                return Err(invalid(format!(
                    "repository.{field} applies to s3:// repositories only, but repository.url is the local folder {}",
                    repo.url
                )));
            }
        }
        if repo.access_key_id.is_some() != repo.secret_access_key.is_some() {
            return Err(invalid(
                "repository: give both access_key_id and secret_access_key, or neither (to use the standard AWS credential chain)".into(),
            ));
        }
        if repo.request_timeout.0 < Duration::from_secs(1) {
            return Err(invalid(format!(
                "repository.request_timeout is {}; it must be at least 1s (e.g. 30s)",
                humantime::format_duration(repo.request_timeout.0)
            )));
        }
        if repo.lock_lease.0 < Duration::from_secs(3) {
            return Err(invalid(format!(
                "repository.lock_lease is {}; it must be at least 3s (e.g. 60s)",
                humantime::format_duration(repo.lock_lease.0)
            )));
        }
        if repo.stall_timeout.0 < Duration::from_secs(5) {
            return Err(invalid(format!(
                "repository.stall_timeout is {}; it must be at least 5s (e.g. 15m)",
                humantime::format_duration(repo.stall_timeout.0)
            )));
        }
        if repo.min_throughput.0 < 1024 {
            return Err(invalid(format!(
                "repository.min_throughput is {} bytes per second; it must be at least 1KiB (e.g. 1MiB)",
                repo.min_throughput.0
            )));
        }
        if repo.part_size.0 < 8 << 20 || repo.part_size.0 > 5 << 30 {
            return Err(invalid(format!(
                "repository.part_size is {} bytes; it must be between 8MiB and 5GiB",
                repo.part_size.0
            )));
        }
        if !(1..=64).contains(&repo.parts_in_flight) {
            return Err(invalid(format!(
                "repository.parts_in_flight is {}; it must be between 1 and 64",
                repo.parts_in_flight
            )));
        }
        Ok(())
    }

    /// Encryption, compression and retention.
    fn validate_encoding(&self) -> Result<(), PolicyError> {
        let invalid = |message: String| PolicyError::Invalid {
            path: self.path.clone(),
            message,
        };
        if self.encryption.recipients.is_empty() && self.encryption.recipients_file.is_none() {
            return Err(invalid(
                "encryption: no recipients; add `recipients: [age1...]` (run `lifeboat keygen --out lifeboat.key` to make one)".into(),
            ));
        }
        let c = &self.compression;
        let range = match c.algorithm {
            Algorithm::Zstd => 1..=19,
            Algorithm::Gzip => 1..=9,
        };
        if !range.contains(&c.effective_level()) {
            return Err(invalid(format!(
                "compression.level {} is out of range {}-{} for {:?}",
                c.effective_level(),
                range.start(),
                range.end(),
                c.algorithm
            )));
        }
        if let Some(t) = c.threads.filter(|t| !(1..=64).contains(t)) {
            return Err(invalid(format!(
                "compression.threads {t} is out of range 1-64; leave it out to use one thread per core (at most {MAX_AUTO_THREADS})"
            )));
        }
        if let Some(r) = &self.retention {
            if !r.keeps_something() {
                return Err(invalid(
                    "retention keeps nothing; set at least one keep_* rule above 0 (e.g. keep_last: 7), or remove the retention section".into(),
                ));
            }
        }
        Ok(())
    }

    /// The sources: names, exactly one kind block each, the kind's checks.
    fn validate_sources(&self) -> Result<(), PolicyError> {
        let invalid = |message: String| PolicyError::Invalid {
            path: self.path.clone(),
            message,
        };
        if self.sources.is_empty() {
            return Err(invalid(
                "sources is empty; add at least one source (see policies/ for examples)".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for s in &self.sources {
            if !seen.insert(s.name.as_str()) {
                return Err(invalid(format!("two sources are named '{}'", s.name)));
            }
            let kinds = s.blocks();
            match kinds.as_slice() {
                [] => {
                    return Err(invalid(format!(
                        "source '{}' has no kind; add one of these blocks: {}",
                        s.name,
                        crate::kinds::BLOCKS
                            .iter()
                            .map(|b| format!("`{b}:`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
                [_] => {}
                [a, b, ..] => {
                    return Err(invalid(format!(
                        "source '{}' has both a `{a}:` and a `{b}:` block; one source is one system, split it in two",
                        s.name
                    )))
                }
            }
            if let Err(message) = s.kind().imp().validate() {
                return Err(invalid(format!("source '{}': {message}", s.name)));
            }
        }
        Ok(())
    }

    /// The drill section and its checks.
    fn validate_drill(&self) -> Result<(), PolicyError> {
        let invalid = |message: String| PolicyError::Invalid {
            path: self.path.clone(),
            message,
        };
        if let Some(sa) = &self.drill.kubernetes.service_account {
            let ok = sa.split_once('/').is_some_and(|(ns, name)| {
                !ns.is_empty() && !name.is_empty() && !name.contains('/')
            });
            if !ok {
                return Err(invalid(format!(
                    "drill.kubernetes.service_account '{sa}' is not NAMESPACE/NAME (e.g. lifeboat/lifeboat-drill)"
                )));
            }
        }
        if self.drill.schedule.is_some() && self.drill.identity.is_none() {
            return Err(invalid(
                "drill.schedule is set but drill.identity is not: the daemon's drills decrypt the backups with it; name the age identity file (or remove the schedule and run `lifeboat drill --identity FILE`)".to_string(),
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, c) in self.drill.checks.iter().enumerate() {
            let at = format!("drill.checks[{i}] ('{}')", c.name);
            if c.name.trim().is_empty() {
                return Err(invalid(format!(
                    "drill.checks[{i}] has an empty name; name it for the report"
                )));
            }
            if !names.insert(c.name.as_str()) {
                return Err(invalid(format!(
                    "{at}: two checks have this name; names tell checks apart in reports"
                )));
            }
            let Some(source) = self.sources.iter().find(|s| s.name == c.source) else {
                return Err(invalid(format!(
                    "{at}: source '{}' is not in this policy (it has: {})",
                    c.source,
                    self.sources
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            if let Err(message) = source.kind().imp().validate_drill_check(c) {
                return Err(invalid(format!("{at}: {message}")));
            }
        }
        Ok(())
    }

    /// The source with this name.
    pub fn source(&self, name: &str) -> Result<&Source, PolicyError> {
        self.sources
            .iter()
            .find(|s| s.name.as_str() == name)
            .ok_or_else(|| PolicyError::UnknownSource {
                path: self.path.clone(),
                name: name.to_string(),
                known: self
                    .sources
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

mod compression;
mod drill;
mod encryption;
mod repository;
mod schedule;
mod secrets;
mod sources;
mod units;

pub use compression::*;
pub use drill::*;
pub use encryption::*;
pub use repository::*;
pub use schedule::*;
pub use secrets::*;
pub use sources::*;
pub use units::*;

#[cfg(test)]
mod tests;
