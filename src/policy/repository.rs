//! The `repository:` section: where backups go (S3 or a folder) and how requests to it are bounded.

use super::*;

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
