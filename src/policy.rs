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
//! compression: { algorithm: zstd, level: 1 }
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

/// What `lifeboat backup --kind` takes, and a schedule's `backup:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    /// Logical dumps (pg_dump) of each database, with row-count inventories.
    #[default]
    Dump,
    /// A physical base backup of the whole cluster (pg_basebackup), for
    /// point-in-time recovery with the WAL archive.
    Base,
}

/// Repository settings: an S3 bucket (any S3-compatible server) or a local folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// `s3://bucket/prefix`, or a local folder (`/var/backups/lifeboat`,
    /// `./backups`, `file:///var/backups/lifeboat`).
    pub url: RepositoryUrl,
    /// S3 endpoint for non-AWS servers (Garage, MinIO, Ceph), e.g. `http://garage:3900`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3 region; non-AWS servers usually accept anything (Garage: `garage`).
    #[serde(default)]
    pub region: Option<String>,
    /// Address buckets as `endpoint/bucket` rather than `bucket.endpoint`.
    /// Most non-AWS servers need `true`.
    #[serde(default)]
    pub path_style: bool,
    /// S3 access key id. When both keys are absent, the standard AWS chain
    /// is used (environment, web identity / IRSA, instance profile).
    #[serde(default)]
    pub access_key_id: Option<SecretRef>,
    /// S3 secret access key.
    #[serde(default)]
    pub secret_access_key: Option<SecretRef>,
    /// Multipart part size, at least 8 MiB (default 8 MiB). An object can
    /// have at most 10,000 parts, so this bounds one artifact's size.
    #[serde(default = "default_part_size")]
    pub part_size: ByteSize,
    /// Parts uploaded concurrently (default 4). Memory use is about
    /// `part_size * (parts_in_flight + 1)` per artifact being written.
    #[serde(default = "default_parts_in_flight")]
    pub parts_in_flight: usize,
    /// How long one S3 request may go unanswered before it is abandoned
    /// and retried (default 30s; 5 attempts): what turns a half-dead load
    /// balancer or a network partition into an error instead of a hang.
    /// Requests that move data get more time: this plus the data at
    /// `min_throughput`.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: HumanDuration,
    /// The slowest transfer accepted for one request's data (default
    /// 1MiB, per second): an 8 MiB part may take `request_timeout` + 8 s
    /// per attempt.
    #[serde(default = "default_min_throughput")]
    pub min_throughput: ByteSize,
    /// How long a backup or prune's lock on a source lives without renewal
    /// (default 60s; renewed every third of it). A holder that died on
    /// another host blocks the source for at most this long; one on this
    /// host whose process is gone is taken over at once.
    #[serde(default = "default_lock_lease")]
    pub lock_lease: HumanDuration,
    /// How long a backup may go without moving a byte (read from the
    /// source or written to the repository) before it is stopped and its
    /// lock let go (default 15m): a stuck run never blocks the next one.
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout: HumanDuration,
}

fn default_lock_lease() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

fn default_stall_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(15 * 60))
}

fn default_request_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

fn default_min_throughput() -> ByteSize {
    ByteSize(1024 * 1024)
}

fn default_part_size() -> ByteSize {
    ByteSize(8 * 1024 * 1024)
}

fn default_parts_in_flight() -> usize {
    4
}

/// Where a repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepositoryUrl {
    S3 { bucket: String, prefix: String },
    Local { path: PathBuf },
}

impl<'de> Deserialize<'de> for RepositoryUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for RepositoryUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let bucket_ok = (3..=63).contains(&bucket.len())
                && bucket
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if !bucket_ok {
                return Err(format!(
                    "'{s}': '{bucket}' is not a valid S3 bucket name (3-63 lowercase letters, digits, '-', '.')"
                ));
            }
            Ok(RepositoryUrl::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            })
        } else if let Some(path) = s.strip_prefix("file://") {
            Ok(RepositoryUrl::Local { path: path.into() })
        } else if s.contains("://") {
            Err(format!(
                "'{s}': unsupported repository URL; use s3://bucket/prefix or a local folder path"
            ))
        } else if s.is_empty() {
            Err("repository url is empty; use s3://bucket/prefix or a local folder path".into())
        } else {
            Ok(RepositoryUrl::Local { path: s.into() })
        }
    }
}

impl fmt::Display for RepositoryUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepositoryUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            RepositoryUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            RepositoryUrl::Local { path } => write!(f, "{}", path.display()),
        }
    }
}

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

/// Compression applied before encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionConfig {
    /// `zstd` (default) or `gzip`.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// zstd: 1-19 (default 1: on pg_dump output it is about 2.5x faster
    /// than level 3 at a similar ratio, see docs/BENCHMARKS.md); gzip: 1-9
    /// (default 6).
    #[serde(default)]
    pub level: Option<i32>,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            algorithm: Algorithm::Zstd,
            level: None,
        }
    }
}

impl CompressionConfig {
    /// The level to use, the algorithm's default when unset.
    pub fn effective_level(&self) -> i32 {
        self.level.unwrap_or(match self.algorithm {
            Algorithm::Zstd => 1,
            Algorithm::Gzip => 6,
        })
    }
}

/// A compression algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    #[default]
    Zstd,
    Gzip,
}

impl Algorithm {
    /// The file extension used in object keys.
    pub fn extension(self) -> &'static str {
        match self {
            Algorithm::Zstd => "zst",
            Algorithm::Gzip => "gz",
        }
    }
}

/// A schedule in Kubernetes CronJob syntax: five fields (minute hour
/// day-of-month month day-of-week, Sunday = 0) or `@hourly`, `@daily`,
/// `@weekly`, `@monthly`, `@yearly`.
///
/// Like Kubernetes (robfig/cron), when both day-of-month and day-of-week
/// are restricted (neither starts with `*`), a day matches if *either*
/// does: `0 0 1 * 1` fires on the 1st and on every Monday. The `cron`
/// crate requires both, so such a schedule is kept as two: one per field.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub expression: String,
    /// One schedule, or two whose union is the expression.
    parsed: Vec<cron::Schedule>,
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Schedule::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Schedule {
    /// Parses CronJob syntax. The `cron` crate wants a seconds field and
    /// numbers Sunday 1, so the expression is translated: seconds `0` are
    /// prepended and day-of-week numbers become names.
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let e = expr.trim();
        let translated = match e {
            "@yearly" | "@annually" => "0 0 0 1 1 *".to_string(),
            "@monthly" => "0 0 0 1 * *".to_string(),
            "@weekly" => "0 0 0 * * SUN".to_string(),
            "@daily" | "@midnight" => "0 0 0 * * *".to_string(),
            "@hourly" => "0 0 * * * *".to_string(),
            _ => {
                let fields: Vec<&str> = e.split_whitespace().collect();
                if fields.len() != 5 {
                    return Err(format!(
                        "schedule '{expr}' has {} fields; use the 5 CronJob fields 'minute hour day-of-month month day-of-week' (e.g. \"15 2 * * *\") or @daily",
                        fields.len()
                    ));
                }
                let dow = translate_day_of_week(fields[4])
                    .map_err(|m| format!("schedule '{expr}', day-of-week field: {m}"))?;
                let restricted = |f: &str| !(f.starts_with('*') || f.starts_with('?'));
                if restricted(fields[2]) && restricted(fields[4]) {
                    // Either day field matches: the union of two schedules.
                    let by_dom = format!(
                        "0 {} {} {} {} *",
                        fields[0], fields[1], fields[2], fields[3]
                    );
                    let by_dow = format!("0 {} {} * {} {dow}", fields[0], fields[1], fields[3]);
                    format!("{by_dom}|{by_dow}")
                } else {
                    format!(
                        "0 {} {} {} {} {}",
                        fields[0], fields[1], fields[2], fields[3], dow
                    )
                }
            }
        };
        let parsed = translated
            .split('|')
            .map(|t| {
                cron::Schedule::from_str(t).map_err(|err| {
                    format!("schedule '{expr}' is not valid CronJob syntax ({err}); e.g. \"15 2 * * *\" runs daily at 02:15")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Schedule {
            expression: e.to_string(),
            parsed,
        })
    }

    /// The first time the schedule fires strictly after `after`.
    pub fn next_after<Z: chrono::TimeZone>(
        &self,
        after: &chrono::DateTime<Z>,
    ) -> Option<chrono::DateTime<Z>> {
        self.parsed
            .iter()
            .filter_map(|s| s.after(after).next())
            .min()
    }
}

/// Turns CronJob day-of-week numbers (0-7, Sunday 0 or 7) into names.
fn translate_day_of_week(field: &str) -> Result<String, String> {
    const NAMES: [&str; 8] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];
    let mut out = Vec::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        let name = |t: &str| -> Result<String, String> {
            match t.parse::<usize>() {
                Ok(n) if n < NAMES.len() => Ok(NAMES[n].to_string()),
                Ok(n) => Err(format!("{n} is out of range 0-7")),
                Err(_) => Ok(t.to_string()),
            }
        };
        let mut r = match range.split_once('-') {
            Some((a, b)) => format!("{}-{}", name(a)?, name(b)?),
            None => name(range)?,
        };
        if let Some(s) = step {
            r = format!("{r}/{s}");
        }
        out.push(r);
    }
    Ok(out.join(","))
}

/// An IANA time zone name (`Europe/Berlin`, `America/New_York`, `UTC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(pub chrono_tz::Tz);

impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<chrono_tz::Tz>().map(TimeZone).map_err(|_| {
            serde::de::Error::custom(format!(
                "timezone '{s}' is not an IANA time zone name; write e.g. `timezone: Europe/Berlin` or `timezone: UTC`"
            ))
        })
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

/// Which backups to keep. At least one rule must keep something.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(default)]
    pub keep_last: Option<u32>,
    #[serde(default)]
    pub keep_hourly: Option<u32>,
    #[serde(default)]
    pub keep_daily: Option<u32>,
    #[serde(default)]
    pub keep_weekly: Option<u32>,
    #[serde(default)]
    pub keep_monthly: Option<u32>,
    #[serde(default)]
    pub keep_yearly: Option<u32>,
    /// Keep every backup younger than this (e.g. `14d`, `36h`).
    #[serde(default)]
    pub keep_within: Option<HumanDuration>,
}

impl Retention {
    fn keeps_something(&self) -> bool {
        [
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        ]
        .iter()
        .any(|k| k.unwrap_or(0) > 0)
            || self.keep_within.is_some_and(|d| !d.0.is_zero())
    }
}

/// Restore drills: where the scratch targets run and what is checked
/// beyond every object's hashes and the inventory.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillConfig {
    /// When `lifeboat run` drills the policy's PostgreSQL sources
    /// (Kubernetes CronJob syntax, read in the policy's `timezone`), e.g.
    /// `"0 5 1 * *"` for 05:00 on the 1st of each month. Needs `identity`.
    #[serde(default)]
    pub schedule: Option<Schedule>,
    /// The age identity file the daemon's scheduled drills decrypt with
    /// (relative paths are relative to the policy file). Keep it readable
    /// by the daemon only; `lifeboat drill` takes `--identity` instead.
    #[serde(default)]
    pub identity: Option<PathBuf>,
    /// Folder for scratch servers' data directories (default: the system
    /// temp folder). It needs room for the largest restored database.
    #[serde(default)]
    pub scratch_dir: Option<PathBuf>,
    /// The throwaway PostgreSQL cluster drills restore into.
    #[serde(default)]
    pub postgres: ScratchPostgresConfig,
    /// The throwaway MariaDB server MySQL/MariaDB drills restore into.
    #[serde(default)]
    pub mariadb: ScratchMariaDbConfig,
    /// The scratch namespaces Kubernetes drills restore into.
    #[serde(default)]
    pub kubernetes: ScratchKubernetesConfig,
    /// A drill fails when the restored data is older than this (the
    /// recovery point objective, e.g. `26h` for nightly backups).
    #[serde(default)]
    pub max_rpo: Option<HumanDuration>,
    /// Queries run on the restored data.
    #[serde(default)]
    pub checks: Vec<DrillCheck>,
}

/// The throwaway PostgreSQL cluster of a drill (initdb and pg_ctl).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScratchPostgresConfig {
    /// Folder holding initdb, pg_ctl and postgres (default: Debian's
    /// `/usr/lib/postgresql/N/bin` for the backup's major version or newer).
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// Port on 127.0.0.1 (default: a free one).
    #[serde(default)]
    pub port: Option<u16>,
    /// The system user the cluster runs as when lifeboat runs as root
    /// (PostgreSQL refuses root). Default: `postgres`.
    #[serde(default)]
    pub run_as: Option<String>,
    /// Instead of a throwaway cluster: scratch databases
    /// `lifeboat_drill_<id>_<database>` on this server, dropped afterwards
    /// (dumps only; base backups always get a throwaway cluster).
    #[serde(default)]
    pub server: Option<ScratchServer>,
}

/// A PostgreSQL server drills may create and drop databases on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScratchServer {
    pub host: String,
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// A role with CREATEDB (it owns what the drill restores: roles of the
    /// backup are not restored onto a shared server).
    pub user: String,
    #[serde(default)]
    pub password: Option<SecretRef>,
}

/// Where MySQL/MariaDB drills' throwaway server comes from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScratchMariaDbConfig {
    /// Folder holding mariadb-install-db, mariadbd and mariadb (default:
    /// PATH, then /usr/sbin).
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// Port on 127.0.0.1 (default: a free one).
    #[serde(default)]
    pub port: Option<u16>,
    /// The system user mariadbd runs as when lifeboat runs as root.
    /// Default: `mysql`.
    #[serde(default)]
    pub run_as: Option<String>,
}

/// How Kubernetes drills get the right to restore into their scratch
/// namespaces.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScratchKubernetesConfig {
    /// The account the drill runs as (`namespace/name`, e.g.
    /// `lifeboat/lifeboat-drill`): each scratch namespace gets a
    /// RoleBinding of `cluster_role` to it before anything is restored.
    /// Leave it out when the drill's credentials may already write there.
    #[serde(default)]
    pub service_account: Option<String>,
    /// The ClusterRole bound in each scratch namespace (default
    /// `lifeboat-drill-scratch`, from deploy/drill/).
    #[serde(default)]
    pub cluster_role: Option<String>,
}

impl ScratchKubernetesConfig {
    /// `(namespace, name)` of the account to bind, if any.
    pub fn account(&self) -> Option<(&str, &str)> {
        self.service_account
            .as_deref()
            .and_then(|s| s.split_once('/'))
    }

    pub fn cluster_role(&self) -> &str {
        self.cluster_role
            .as_deref()
            .unwrap_or("lifeboat-drill-scratch")
    }
}

/// A query run on a drill's restored data, and what its result must be.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillCheck {
    /// Shown in the report (`orders in the last day`).
    pub name: String,
    /// The source whose restored backup is queried.
    pub source: Name,
    /// The database queried (default: the backup's only database).
    #[serde(default)]
    pub database: Option<String>,
    /// One query; the first column of the first row is compared. For
    /// database sources.
    #[serde(default)]
    pub sql: String,
    /// For Kubernetes sources: a kind (`Deployment`, or its plural); the
    /// number of objects of that kind restored into the scratch namespaces
    /// is compared.
    #[serde(default)]
    pub kind: Option<String>,
    /// `> 0`, `>= 1000`, `== 42`, `!= 0`, `< 5`, `<= 5`, or `== text`.
    pub expect: Expectation,
}

/// A comparison a check's result must satisfy.
#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    pub op: CompareOp,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CompareOp {
    pub fn symbol(self) -> &'static str {
        match self {
            CompareOp::Eq => "==",
            CompareOp::Ne => "!=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
        }
    }
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op.symbol(), self.value)
    }
}

impl FromStr for Expectation {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let t = text.trim();
        // Two-character operators first.
        let ops = [
            (">=", CompareOp::Ge),
            ("<=", CompareOp::Le),
            ("==", CompareOp::Eq),
            ("!=", CompareOp::Ne),
            (">", CompareOp::Gt),
            ("<", CompareOp::Lt),
            ("=", CompareOp::Eq),
        ];
        let (op, rest) = ops
            .iter()
            .find_map(|(sym, op)| t.strip_prefix(sym).map(|rest| (*op, rest.trim())))
            .ok_or_else(|| {
                format!("expect '{text}' has no comparison; write e.g. '> 0', '>= 1000', '== 42' or '== text'")
            })?;
        if rest.is_empty() {
            return Err(format!(
                "expect '{text}' has nothing to compare with; write e.g. '{} 0'",
                op.symbol()
            ));
        }
        if !matches!(op, CompareOp::Eq | CompareOp::Ne) && rest.parse::<f64>().is_err() {
            return Err(format!(
                "expect '{text}': {} needs a number, '{rest}' is not one",
                op.symbol()
            ));
        }
        Ok(Expectation {
            op,
            value: rest.to_string(),
        })
    }
}

impl<'de> Deserialize<'de> for Expectation {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // `expect: 5` arrives as a number.
        let v = serde_yaml::Value::deserialize(d)?;
        let text = match v {
            serde_yaml::Value::String(s) => s,
            serde_yaml::Value::Number(n) => format!("== {n}"),
            serde_yaml::Value::Bool(b) => format!("== {b}"),
            _ => {
                return Err(serde::de::Error::custom(
                    "expect must be a comparison such as '> 0' or '== 42'",
                ))
            }
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Expectation {
    /// Whether `actual` (the query's result as text; `None` for SQL NULL
    /// or no row) satisfies it. Numbers compare as numbers; text only with
    /// `==` and `!=`.
    pub fn holds(&self, actual: Option<&str>) -> Result<bool, String> {
        let Some(actual) = actual else {
            return Ok(self.op == CompareOp::Ne);
        };
        let actual = actual.trim();
        if let (Ok(a), Ok(b)) = (actual.parse::<f64>(), self.value.parse::<f64>()) {
            return Ok(match self.op {
                CompareOp::Eq => a == b,
                CompareOp::Ne => a != b,
                CompareOp::Gt => a > b,
                CompareOp::Ge => a >= b,
                CompareOp::Lt => a < b,
                CompareOp::Le => a <= b,
            });
        }
        match self.op {
            CompareOp::Eq => Ok(actual == self.value),
            CompareOp::Ne => Ok(actual != self.value),
            op => Err(format!(
                "the result '{actual}' is not a number, so it cannot be compared with {} {}",
                op.symbol(),
                self.value
            )),
        }
    }
}

/// A duration written like `14d`, `36h`, `90m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "'{s}' is not a duration ({e}); write e.g. 14d, 36h or 90m"
                ))
            })
    }
}

/// A size written like `8MiB`, `16 MiB`, `1GiB` or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("'{s}' is not a size; write e.g. 8MiB or 16MiB"))?;
        let mult = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "K" => 1 << 10,
            "MiB" | "M" => 1 << 20,
            "GiB" | "G" => 1 << 30,
            "KB" => 1000,
            "MB" => 1000 * 1000,
            "GB" => 1000 * 1000 * 1000,
            other => {
                return Err(format!(
                    "'{s}': unknown unit '{other}'; use KiB, MiB or GiB"
                ))
            }
        };
        Ok(ByteSize(n * mult))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 8MiB, or a number of bytes")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ByteSize, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// One protected system. Exactly one kind block (`postgres`, `mysql`) is given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The source's name, used on the command line (`--source`) and in keys.
    pub name: Name,
    /// A PostgreSQL server whose databases are dumped with pg_dump.
    #[serde(default)]
    pub postgres: Option<PostgresSource>,
    /// A MySQL or MariaDB server whose databases are dumped with
    /// mariadb-dump or mysqldump.
    #[serde(default)]
    pub mysql: Option<MysqlSource>,
    /// A Kubernetes cluster whose configuration (the objects of some
    /// namespaces) is exported.
    #[serde(default)]
    pub kubernetes: Option<KubernetesSource>,
}

impl Source {
    /// What a backup of this source takes unless told otherwise.
    pub fn default_backup_kind(&self) -> BackupKind {
        match self.kind() {
            SourceKind::Postgres(pg) => pg.backup,
            _ => BackupKind::Dump,
        }
    }

    /// The source's kind.
    pub fn kind(&self) -> SourceKind<'_> {
        match (&self.postgres, &self.mysql, &self.kubernetes) {
            (Some(pg), _, _) => SourceKind::Postgres(pg),
            (None, Some(my), _) => SourceKind::Mysql(my),
            (None, None, Some(k)) => SourceKind::Kubernetes(k),
            (None, None, None) => unreachable!("validated at load: every source has a kind"),
        }
    }
}

/// A source, by kind.
#[derive(Debug, Clone, Copy)]
pub enum SourceKind<'a> {
    Postgres(&'a PostgresSource),
    Mysql(&'a MysqlSource),
    Kubernetes(&'a KubernetesSource),
}

/// A Kubernetes cluster: which namespaces (and cluster-scoped kinds) to
/// export. Every resource type the server offers is included, custom
/// resources too, except those that are never configuration (events,
/// endpoints, leases...) and those named in `exclude_resources`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSource {
    /// kubeconfig file. Default: KUBECONFIG or ~/.kube/config, then the
    /// Pod's service account when running in the cluster.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context. Default: the current context.
    #[serde(default)]
    pub context: Option<String>,
    /// `all`, or a list of namespace names.
    #[serde(default)]
    pub namespaces: Option<Namespaces>,
    /// Namespaces by label selector instead (`team=payments,env!=dev`).
    #[serde(default)]
    pub namespace_selector: Option<String>,
    /// With `all` or a selector: namespaces left out. Default:
    /// kube-system, kube-public, kube-node-lease.
    #[serde(default)]
    pub exclude_namespaces: Option<Vec<String>>,
    /// Cluster-scoped kinds to export too, by kind or plural name
    /// (`CustomResourceDefinition`, `clusterroles`, `storageclasses`).
    #[serde(default)]
    pub cluster_resources: Vec<String>,
    /// Resource types left out, by kind, plural or short name, optionally
    /// with the group (`secrets`, `certificates.cert-manager.io`), or a
    /// whole API group (`*.metrics.example.io`).
    #[serde(default)]
    pub exclude_resources: Vec<String>,
}

impl KubernetesSource {
    /// The namespaces left out of `all` or a selector.
    pub fn excluded_namespaces(&self) -> Vec<String> {
        self.exclude_namespaces.clone().unwrap_or_else(|| {
            ["kube-system", "kube-public", "kube-node-lease"]
                .map(String::from)
                .to_vec()
        })
    }
}

/// Which namespaces a Kubernetes source exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespaces {
    All,
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for Namespaces {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Databases::deserialize_named(d, "namespaces", "namespace")? {
            Databases::All => Ok(Namespaces::All),
            Databases::List(l) => Ok(Namespaces::List(l)),
        }
    }
}

/// A MySQL or MariaDB server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlSource {
    /// Host name or IP address (default `127.0.0.1`).
    #[serde(default = "default_my_host")]
    pub host: String,
    /// Port (default 3306).
    #[serde(default = "default_my_port")]
    pub port: u16,
    /// User to connect as (default `root`). It needs SELECT, SHOW VIEW,
    /// TRIGGER, EVENT, LOCK TABLES, RELOAD (for the consistency point) and
    /// REPLICATION CLIENT (binlog coordinates); REPLICATION SLAVE to archive
    /// binlogs.
    #[serde(default = "default_my_user")]
    pub user: String,
    /// Password, from an environment variable or a file. Handed to the dump
    /// tool in a temporary defaults file, never on a command line.
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// `all` (every database except the system schemas) or a list.
    #[serde(default)]
    pub databases: Databases,
    /// Ask the server to start a new binlog file (`FLUSH BINARY LOGS`)
    /// before each dump, so the dump and the binlog after it line up
    /// (default true).
    #[serde(default = "default_true")]
    pub flush_binlogs: bool,
    /// Folder holding mariadb-dump/mysqldump and the client. Default: `PATH`.
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// `lifeboat run` archives this server's binlogs continuously (as
    /// `lifeboat binlog-archive` does), restarting the archiver when it
    /// stops (default false).
    #[serde(default)]
    pub archive_binlogs: bool,
    /// How often the binlog file in progress is stored by the daemon's
    /// archiver: the most recent changes a lost server can take with it
    /// (default 60s).
    #[serde(default = "default_binlog_interval")]
    pub binlog_interval: HumanDuration,
}

fn default_binlog_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

fn default_my_host() -> String {
    "127.0.0.1".into()
}
fn default_my_port() -> u16 {
    3306
}
fn default_my_user() -> String {
    "root".into()
}

/// A PostgreSQL server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSource {
    /// Host name or IP address (default `localhost`), or a Unix socket folder.
    #[serde(default = "default_pg_host")]
    pub host: String,
    /// Port (default 5432).
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// Role to connect as (default `postgres`). It needs to read every
    /// table; `pg_dumpall --globals-only` also needs a superuser to include
    /// role passwords.
    #[serde(default = "default_pg_user")]
    pub user: String,
    /// Password, from an environment variable or a file. Handed to pg_dump
    /// through `PGPASSWORD`, never on a command line.
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// `all` (every database that accepts connections, templates excluded)
    /// or a list of names.
    #[serde(default)]
    pub databases: Databases,
    /// Also dump roles and tablespaces with `pg_dumpall --globals-only`
    /// (default true).
    #[serde(default = "default_true")]
    pub globals: bool,
    /// Folder holding pg_dump, pg_dumpall, pg_restore and psql. By default
    /// lifeboat picks the Debian folder `/usr/lib/postgresql/N/bin` matching
    /// the server, then `PATH`.
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// What scheduled backups (`lifeboat run`) and `lifeboat backup`
    /// without `--kind` take: `dump` (pg_dump per database, default) or
    /// `base` (pg_basebackup, for point-in-time recovery with the WAL
    /// archive).
    #[serde(default)]
    pub backup: BackupKind,
}

fn default_pg_host() -> String {
    "localhost".into()
}
fn default_pg_port() -> u16 {
    5432
}
fn default_pg_user() -> String {
    "postgres".into()
}
fn default_true() -> bool {
    true
}

/// Which databases a PostgreSQL source dumps.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Databases {
    #[default]
    All,
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for Databases {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Databases::deserialize_named(d, "databases", "database")
    }
}

impl Databases {
    /// `all` or a non-empty list of names; `field` and `what` name them in
    /// messages.
    fn deserialize_named<'de, D: serde::Deserializer<'de>>(
        d: D,
        field: &'static str,
        what: &'static str,
    ) -> Result<Self, D::Error> {
        struct V {
            field: &'static str,
            what: &'static str,
        }
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Databases;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "`all` or a list of {} names", self.what)
            }
            fn visit_str<E: serde::de::Error>(self, w: &str) -> Result<Databases, E> {
                if w == "all" {
                    Ok(Databases::All)
                } else {
                    Err(E::custom(format!(
                        "{f}: '{w}' is neither 'all' nor a list; write `{f}: all` or `{f}: [{w}]`",
                        f = self.field
                    )))
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Databases, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    out.push(name);
                }
                if out.is_empty() {
                    return Err(serde::de::Error::custom(format!(
                        "{f}: the list is empty; name at least one {w} or write `{f}: all`",
                        f = self.field,
                        w = self.what
                    )));
                }
                Ok(Databases::List(out))
            }
        }
        d.deserialize_any(V { field, what })
    }
}

/// serde_yaml places errors raised by a value's own parser (a bad
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
        let mut policy: Policy = serde_yaml::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            // serde_yaml appends " at line X column Y"; the prefix says it already.
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
            if let Some(pg) = &mut src.postgres {
                if let Some(SecretRef::File(p)) = &mut pg.password {
                    abs(p);
                }
                if let Some(p) = &mut pg.bin_dir {
                    abs(p);
                }
            }
            if let Some(p) = src.kubernetes.as_mut().and_then(|k| k.kubeconfig.as_mut()) {
                abs(p);
            }
            if let Some(my) = &mut src.mysql {
                if let Some(SecretRef::File(p)) = &mut my.password {
                    abs(p);
                }
                if let Some(p) = &mut my.bin_dir {
                    abs(p);
                }
            }
        }
    }

    fn validate(&self) -> Result<(), PolicyError> {
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
        if let Some(r) = &self.retention {
            if !r.keeps_something() {
                return Err(invalid(
                    "retention keeps nothing; set at least one keep_* rule above 0 (e.g. keep_last: 7), or remove the retention section".into(),
                ));
            }
        }
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
            let kinds: Vec<&str> = [
                ("postgres", s.postgres.is_some()),
                ("mysql", s.mysql.is_some()),
                ("kubernetes", s.kubernetes.is_some()),
            ]
            .iter()
            .filter(|(_, set)| *set)
            .map(|(k, _)| *k)
            .collect();
            match kinds.as_slice() {
                [] => {
                    return Err(invalid(format!(
                        "source '{}' has no kind; add a `postgres:`, `mysql:` or `kubernetes:` block",
                        s.name
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
            if let Some(k) = &s.kubernetes {
                match (&k.namespaces, &k.namespace_selector) {
                    (None, None) => {
                        return Err(invalid(format!(
                            "source '{}': say which namespaces to export: `namespaces: [prod]`, `namespaces: all` or `namespace_selector: team=payments`",
                            s.name
                        )))
                    }
                    (Some(_), Some(_)) => {
                        return Err(invalid(format!(
                            "source '{}': give either `namespaces:` or `namespace_selector:`, not both",
                            s.name
                        )))
                    }
                    (Some(Namespaces::List(_)), None) if k.exclude_namespaces.is_some() => {
                        return Err(invalid(format!(
                            "source '{}': `exclude_namespaces:` applies to `namespaces: all` and `namespace_selector:`; with a list, just leave the namespace out",
                            s.name
                        )))
                    }
                    (None, Some(sel)) if sel.trim().is_empty() => {
                        return Err(invalid(format!(
                            "source '{}': namespace_selector is empty; write a label selector like `team=payments`",
                            s.name
                        )))
                    }
                    _ => {}
                }
            }
        }
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
            if source.kubernetes.is_some() {
                if c.kind.as_deref().is_none_or(|k| k.trim().is_empty()) || !c.sql.is_empty() {
                    return Err(invalid(format!(
                        "{at}: source '{}' is a Kubernetes source: its checks count objects of a kind (`kind: Deployment`, `expect: \">= 1\"`), without `sql:`",
                        c.source
                    )));
                }
            } else {
                if c.kind.is_some() {
                    return Err(invalid(format!(
                        "{at}: `kind:` is for checks of Kubernetes sources; source '{}' is a database: give `sql:`",
                        c.source
                    )));
                }
                if c.sql.trim().is_empty() {
                    return Err(invalid(format!("{at}: sql is empty")));
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    const R: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(text, Path::new("/etc/lifeboat/app.yaml"))
    }

    fn minimal() -> String {
        format!(
            "name: app\nrepository:\n  url: ./backups\nencryption:\n  recipients: [{R}]\nsources:\n  - name: main-db\n    postgres:\n      host: db\n"
        )
    }

    fn with_kube(block: &str) -> String {
        format!(
            "name: app\nrepository:\n  url: ./backups\nencryption:\n  recipients: [{R}]\nsources:\n  - name: cluster\n    kubernetes:\n{block}"
        )
    }

    #[test]
    fn kubernetes_sources_say_which_namespaces() {
        let p = parse(&with_kube(
            "      kubeconfig: kube/config\n      namespaces: [prod]\n      cluster_resources: [ClusterRole]\n",
        ))
        .unwrap();
        let k = p.sources[0].kubernetes.as_ref().unwrap();
        assert_eq!(k.namespaces, Some(Namespaces::List(vec!["prod".into()])));
        assert_eq!(
            k.kubeconfig.as_deref(),
            Some(Path::new("/etc/lifeboat/kube/config"))
        );
        let p = parse(&with_kube(
            "      namespaces: all\n      exclude_namespaces: [ops]\n",
        ))
        .unwrap();
        let k = p.sources[0].kubernetes.as_ref().unwrap();
        assert_eq!(k.excluded_namespaces(), vec!["ops".to_string()]);
        let p = parse(&with_kube("      namespace_selector: team=payments\n")).unwrap();
        assert_eq!(
            p.sources[0]
                .kubernetes
                .as_ref()
                .unwrap()
                .excluded_namespaces(),
            ["kube-system", "kube-public", "kube-node-lease"]
        );
        for (block, message) in [
            ("      context: prod\n", "say which namespaces"),
            (
                "      namespaces: [a]\n      namespace_selector: x=y\n",
                "not both",
            ),
            (
                "      namespaces: [a]\n      exclude_namespaces: [b]\n",
                "applies to `namespaces: all`",
            ),
            (
                "      namespace_selector: ' '\n",
                "namespace_selector is empty",
            ),
            ("      namespaces: some\n", "namespaces: 'some' is neither"),
            ("      namespaces: []\n", "name at least one namespace"),
            (
                "      namespaces: all\n      labels: x\n",
                "unknown field `labels`",
            ),
        ] {
            let e = parse(&with_kube(block)).unwrap_err().to_string();
            assert!(e.contains(message), "{block:?}: {e}");
        }
        let both = with_kube("      namespaces: all\n").replace(
            "    kubernetes:",
            "    postgres:\n      host: db\n    kubernetes:",
        );
        let e = parse(&both).unwrap_err().to_string();
        assert!(
            e.contains("both a `postgres:` and a `kubernetes:` block"),
            "{e}"
        );
    }

    #[test]
    fn minimal_policy_gets_defaults_and_absolute_paths() {
        let p = parse(&minimal()).unwrap();
        assert_eq!(p.name.as_str(), "app");
        assert_eq!(
            p.repository.url,
            RepositoryUrl::Local {
                path: "/etc/lifeboat/./backups".into()
            }
        );
        assert_eq!(p.compression.algorithm, Algorithm::Zstd);
        assert_eq!(p.compression.effective_level(), 1);
        assert_eq!(p.repository.part_size.0, 8 << 20);
        let pg = p.sources[0].postgres.as_ref().unwrap();
        assert_eq!((pg.port, pg.user.as_str()), (5432, "postgres"));
        assert_eq!(pg.databases, Databases::All);
    }

    /// Each broken policy and the (line, message fragment) its error must carry.
    #[test]
    fn syntax_errors_name_line_and_column() {
        let cases: &[(&str, &str, usize, &str)] = &[
            (
                "unknown key",
                "  colour: blue\n",
                4,
                "unknown field `colour`",
            ),
            ("wrong type", "  part_size: [1]\n", 4, "part_size"),
            ("bad size", "  part_size: 8 parsecs\n", 4, "unknown unit"),
            ("bad url", "  endpoint: x\n", 0, ""),
        ];
        for (what, extra, line, fragment) in cases {
            if *line == 0 {
                continue;
            }
            let text = minimal().replacen(
                "  url: ./backups\n",
                &format!("  url: ./backups\n{extra}"),
                1,
            );
            match parse(&text) {
                Err(PolicyError::Syntax {
                    line: l, message, ..
                }) => {
                    assert_eq!(l, *line, "{what}: {message}");
                    assert!(message.contains(fragment), "{what}: {message}");
                }
                other => panic!("{what}: expected a syntax error, got {other:?}"),
            }
        }
    }

    #[test]
    fn value_errors_carry_positions() {
        let text = minimal().replace(R, "age1notakey");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("/etc/lifeboat/app.yaml:5:"), "{err}");
        assert!(err.contains("not an age X25519 recipient"), "{err}");

        let text = minimal() + "schedule: \"61 * * * *\"\n";
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains(":10:"), "{err}");
        assert!(err.contains("schedule '61 * * * *'"), "{err}");

        let text = minimal().replace("./backups", "ftp://x/y");
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.contains(":3:") && err.contains("unsupported repository URL"),
            "{err}"
        );
    }

    #[test]
    fn cross_field_errors_name_the_field() {
        let cases = [
            (
                minimal().replace(
                    "  url: ./backups\n",
                    "  url: ./backups\n  endpoint: http://x\n",
                ),
                "repository.endpoint applies to s3://",
            ),
            (
                minimal() + "retention:\n  keep_last: 0\n",
                "retention keeps nothing",
            ),
            (
                minimal().replace(&format!("  recipients: [{R}]\n"), "  recipients: []\n"),
                "no recipients",
            ),
            (
                minimal().replace("    postgres:\n      host: db\n", ""),
                "source 'main-db' has no kind",
            ),
            (
                minimal() + "compression: { algorithm: gzip, level: 12 }\n",
                "out of range 1-9",
            ),
            (
                minimal().replace(
                    "url: ./backups",
                    "url: s3://bucket/p\n  access_key_id: {env: A}",
                ),
                "give both",
            ),
        ];
        for (text, fragment) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(fragment), "expected '{fragment}' in: {err}");
        }
    }

    #[test]
    fn schedules_use_cronjob_syntax() {
        for ok in [
            "15 2 * * *",
            "*/5 * * * *",
            "0 3 * * 0",
            "0 3 * * 1-5",
            "0 0 1 * *",
            "@daily",
            "@hourly",
            "0 3 * * 7",
        ] {
            Schedule::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "* * * *",
            "0 0 0 * * *",
            "0 25 * * *",
            "0 0 * * 8",
            "nonsense",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad} should be refused");
        }
        // Sunday is 0 in CronJob syntax: 2026-11-22 is a Sunday.
        let s = Schedule::parse("0 3 * * 0").unwrap();
        let after = chrono::DateTime::parse_from_rfc3339("2026-11-20T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let next = s.next_after(&after).unwrap();
        assert_eq!(next.to_rfc3339(), "2026-11-22T03:00:00+00:00");
    }

    /// In a time zone with daylight saving time, slots stay at the same
    /// wall-clock time: a slot inside the spring-forward gap (02:30 on
    /// 2026-03-29 in Berlin) does not exist that day, and one in the
    /// repeated autumn hour (02:30 on 2026-10-25) fires once.
    #[test]
    fn schedules_follow_the_policy_time_zone_across_dst() {
        let text = |tz: &str| {
            format!(
                "name: app\nrepository:\n  url: ./b\nencryption:\n  recipients: [{R}]\nschedule: \"30 2 * * *\"\n{tz}sources:\n  - name: db\n    postgres:\n      host: db\n"
            )
        };
        let p = parse(&text("timezone: Europe/Berlin\n")).unwrap();
        let fire = |from: &str, n: usize| -> Vec<String> {
            let mut t = chrono::DateTime::parse_from_rfc3339(from)
                .unwrap()
                .with_timezone(&chrono::Utc);
            (0..n)
                .map(|_| {
                    t = p.next_run(t).unwrap();
                    t.format("%Y-%m-%dT%H:%MZ").to_string()
                })
                .collect()
        };
        // Spring: 02:30 CET is 01:30Z; on the 29th 02:30 does not exist;
        // afterwards 02:30 CEST is 00:30Z.
        assert_eq!(
            fire("2026-03-27T12:00:00Z", 3),
            [
                "2026-03-28T01:30Z",
                "2026-03-30T00:30Z",
                "2026-03-31T00:30Z"
            ]
        );
        // Autumn: 02:30 happens twice on the 25th (CEST then CET); one run.
        assert_eq!(
            fire("2026-10-23T12:00:00Z", 3),
            [
                "2026-10-24T00:30Z",
                "2026-10-25T00:30Z",
                "2026-10-26T01:30Z"
            ]
        );
        // Without a time zone: UTC.
        let utc = parse(&text("")).unwrap();
        let after = chrono::DateTime::parse_from_rfc3339("2026-03-27T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            utc.next_run(after).unwrap().to_rfc3339(),
            "2026-03-28T02:30:00+00:00"
        );
        let e = parse(&text("timezone: Mars/Olympus\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'Mars/Olympus' is not an IANA time zone") && e.contains(":7:"),
            "{e}"
        );
    }

    /// A drill schedule is read in the policy's zone and needs an identity
    /// (resolved beside the policy file); checks fit their source's kind.
    #[test]
    fn drill_schedules_need_an_identity_and_checks_fit_their_source() {
        let text = |drill: &str, source: &str| {
            format!(
                "name: app\nrepository:\n  url: ./b\nencryption:\n  recipients: [{R}]\ntimezone: Europe/Berlin\nsources:\n  - name: db\n{source}drill:\n{drill}"
            )
        };
        let pg = "    postgres:\n      host: db\n";
        let p = Policy::parse(
            &text(
                "  schedule: \"0 5 1 * *\"\n  identity: keys/drill.key\n",
                pg,
            ),
            Path::new("/etc/lifeboat/app.yaml"),
        )
        .unwrap();
        assert_eq!(
            p.drill.identity.as_deref(),
            Some(Path::new("/etc/lifeboat/keys/drill.key"))
        );
        let after = chrono::DateTime::parse_from_rfc3339("2026-11-20T10:07:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        // 05:00 CET on December 1st is 04:00Z.
        assert_eq!(
            p.next_drill(after).unwrap().to_rfc3339(),
            "2026-12-01T04:00:00+00:00"
        );
        assert_eq!(p.next_run(after), None, "no backup schedule");

        let e = parse(&text("  schedule: \"0 5 1 * *\"\n", pg))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("drill.schedule is set but drill.identity is not"),
            "{e}"
        );
        let kube = "    kubernetes:\n      namespaces: [a]\n";
        parse(&text(
            "  schedule: \"0 5 1 * *\"\n  identity: k.key\n  checks:\n    - name: web\n      source: db\n      kind: Deployment\n      expect: \">= 1\"\n",
            kube,
        ))
        .unwrap();
        let e = parse(&text(
            "  checks:\n    - name: web\n      source: db\n      sql: SELECT 1\n      expect: 1\n",
            kube,
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("is a Kubernetes source: its checks count objects"),
            "{e}"
        );
        let e = parse(&text(
            "  checks:\n    - name: web\n      source: db\n      kind: Deployment\n      sql: SELECT 1\n      expect: 1\n",
            pg,
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`kind:` is for checks of Kubernetes sources"),
            "{e}"
        );
        let e = parse(&text("  schedule: \"0 5 32 * *\"\n  identity: k.key\n", pg))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(":12:") && e.contains("schedule '0 5 32 * *'"),
            "the schedule's line: {e}"
        );
    }

    /// Expressions and their next fire times after Friday 2026-11-20
    /// 10:07 UTC, as Kubernetes (robfig/cron) computes them.
    #[test]
    fn schedule_fire_times() {
        let after = chrono::DateTime::parse_from_rfc3339("2026-11-20T10:07:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let table: &[(&str, &[&str])] = &[
            ("15 2 * * *", &["2026-11-21T02:15", "2026-11-22T02:15"]),
            ("*/15 * * * *", &["2026-11-20T10:15", "2026-11-20T10:30"]),
            (
                "0 */6 * * *",
                &["2026-11-20T12:00", "2026-11-20T18:00", "2026-11-21T00:00"],
            ),
            // Sunday is 0 and 7.
            ("0 3 * * 0", &["2026-11-22T03:00", "2026-11-29T03:00"]),
            ("0 3 * * 7", &["2026-11-22T03:00", "2026-11-29T03:00"]),
            // Weekdays; Saturday is 6.
            ("30 9 * * 1-5", &["2026-11-23T09:30", "2026-11-24T09:30"]),
            ("0 0 * * 6", &["2026-11-21T00:00", "2026-11-28T00:00"]),
            (
                "0 0 * * */2",
                &["2026-11-21T00:00", "2026-11-22T00:00", "2026-11-24T00:00"],
            ),
            ("0 0 * * MON,FRI", &["2026-11-23T00:00", "2026-11-27T00:00"]),
            // Day of month and day of week both restricted: either matches.
            (
                "0 0 1 * 1",
                &[
                    "2026-11-23T00:00",
                    "2026-11-30T00:00",
                    "2026-12-01T00:00",
                    "2026-12-07T00:00",
                ],
            ),
            // One of them a star (even with a step): both must match.
            ("0 0 */2 * 1", &["2026-11-23T00:00", "2026-12-07T00:00"]),
            (
                "0 0 31 * *",
                &["2026-12-31T00:00", "2027-01-31T00:00", "2027-03-31T00:00"],
            ),
            ("0 12 29 2 *", &["2028-02-29T12:00"]),
            ("@hourly", &["2026-11-20T11:00", "2026-11-20T12:00"]),
            ("@daily", &["2026-11-21T00:00"]),
            ("@weekly", &["2026-11-22T00:00", "2026-11-29T00:00"]),
            ("@monthly", &["2026-12-01T00:00", "2027-01-01T00:00"]),
            ("@yearly", &["2027-01-01T00:00"]),
        ];
        for (expr, expected) in table {
            let s = Schedule::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
            let mut t = after;
            for want in *expected {
                t = s
                    .next_after(&t)
                    .unwrap_or_else(|| panic!("{expr}: no next time"));
                assert_eq!(t.format("%Y-%m-%dT%H:%M").to_string(), *want, "{expr}");
            }
        }
    }

    #[test]
    fn repository_urls() {
        assert_eq!(
            "s3://bucket-1/a/b/".parse::<RepositoryUrl>().unwrap(),
            RepositoryUrl::S3 {
                bucket: "bucket-1".into(),
                prefix: "a/b".into()
            }
        );
        assert!("s3://B/x".parse::<RepositoryUrl>().is_err());
        assert_eq!(
            "file:///var/b".parse::<RepositoryUrl>().unwrap(),
            RepositoryUrl::Local {
                path: "/var/b".into()
            }
        );
    }

    #[test]
    fn a_private_key_given_as_recipient_is_never_echoed() {
        let key = "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ";
        let err = parse(&minimal().replace(R, key)).unwrap_err().to_string();
        assert!(
            err.contains("private key") && !err.contains("QQQQ"),
            "{err}"
        );
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s:?}"), "[redacted]");
    }

    #[test]
    fn unknown_source_lists_known_ones() {
        let p = parse(&minimal()).unwrap();
        let err = p.source("nope").unwrap_err().to_string();
        assert!(
            err.contains("no source named 'nope'") && err.contains("main-db"),
            "{err}"
        );
    }
}
