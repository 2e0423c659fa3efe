//! Object storage: the small [`ObjectStore`] trait and its backends.
//!
//! Keys are relative to the repository root (the S3 prefix or the local
//! folder); backends add their root themselves. Objects are written once and
//! never overwritten: a write to an existing key fails with
//! [`StorageError::AlreadyExists`].

pub mod local;
pub mod s3;

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncRead;

pub use local::LocalStore;
pub use s3::S3Store;

/// A stream of an object's bytes.
pub type ObjectReader = Pin<Box<dyn AsyncRead + Send>>;

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// When the object was stored, where the backend says.
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// A write that was started and never finished.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Unfinished {
    /// The object key it was writing (a local temp file's own path
    /// relative to the root).
    pub key: String,
    /// The S3 upload id, or the temp file's name.
    pub id: String,
    pub started: Option<chrono::DateTime<chrono::Utc>>,
}

/// Errors from a storage backend. Each names the object or bucket involved.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object {key} not found in {store}")]
    NotFound { store: String, key: String },
    #[error("object {key} already exists in {store}; objects are never overwritten")]
    AlreadyExists { store: String, key: String },
    #[error("cannot reach S3 endpoint {endpoint}: {detail}; check the endpoint in the policy and that the server is up")]
    Unreachable { endpoint: String, detail: String },
    #[error("bucket {bucket} at {endpoint} is full: {operation} was refused by its quota ({detail}). Nothing half-written is listed; free space (lifeboat prune, a shorter retention) or raise the bucket's quota, then run again")]
    QuotaExceeded {
        endpoint: String,
        bucket: String,
        operation: &'static str,
        detail: String,
    },
    #[error("S3 endpoint {endpoint} denied {operation} on {object} in bucket {bucket} ({detail}): the key is not allowed to write there (reads may still work). Grant it s3:PutObject, s3:DeleteObject and s3:AbortMultipartUpload on the bucket (Garage: `garage bucket allow --read --write`)")]
    WriteDenied {
        endpoint: String,
        bucket: String,
        operation: &'static str,
        object: String,
        detail: String,
    },
    #[error("S3 endpoint {endpoint} did not answer {operation} on {target} in time, over {attempts} attempts ({detail}); the endpoint or the network to it is stuck (a half-dead load balancer, a full conntrack table, a partition). Check it; on a slow link raise repository.request_timeout or lower repository.min_throughput")]
    TimedOut {
        endpoint: String,
        operation: &'static str,
        /// `object KEY` or `bucket NAME`.
        target: String,
        attempts: u32,
        detail: String,
    },
    #[error("S3 endpoint {endpoint} refused the credentials for bucket {bucket} ({detail}); check access_key_id and secret_access_key and the key's permissions on the bucket")]
    Credentials {
        endpoint: String,
        bucket: String,
        detail: String,
    },
    #[error("bucket {bucket} does not exist at {endpoint}; create it or fix repository.url")]
    NoSuchBucket { endpoint: String, bucket: String },
    #[error("S3 {operation} of {key} failed at {endpoint}: {detail}")]
    S3 {
        operation: &'static str,
        endpoint: String,
        key: String,
        detail: String,
    },
    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("repository folder {path} does not exist; check repository.url (a backup creates it)")]
    NoFolder { path: std::path::PathBuf },
    #[error(
        "object {key} would exceed {parts} parts of {part_size} bytes; raise repository.part_size"
    )]
    TooLarge {
        key: String,
        parts: u32,
        part_size: u64,
    },
}

impl crate::outcome::Classify for StorageError {
    fn outcome(&self) -> crate::outcome::Outcome {
        use crate::outcome::Outcome;
        match self {
            Self::NotFound { .. } => Outcome::NotFound,
            Self::AlreadyExists { .. }
            | Self::Unreachable { .. }
            | Self::QuotaExceeded { .. }
            | Self::WriteDenied { .. }
            | Self::TimedOut { .. }
            | Self::Credentials { .. }
            | Self::NoSuchBucket { .. }
            | Self::S3 { .. }
            | Self::Io { .. }
            | Self::NoFolder { .. }
            | Self::TooLarge { .. } => Outcome::Failure,
        }
    }
}

impl StorageError {
    /// True when the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }
}

/// A repository's storage: a flat namespace of immutable objects.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Where this store is, for messages (`s3://bucket/prefix at http://...`).
    fn describe(&self) -> String;

    /// Checks at start that the store can be used, naming what is wrong:
    /// unreachable endpoint, bad credentials, missing bucket, missing or
    /// unwritable folder. `write` is false for commands that only read
    /// (list, verify, restore), so a read-only mount works for them.
    async fn healthcheck(&self, write: bool) -> Result<(), StorageError>;

    /// Starts writing a new object. Nothing is visible under `key` until
    /// [`ObjectWriter::finish`] returns.
    async fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError>;

    /// Streams an object's bytes.
    async fn get(&self, key: &str) -> Result<ObjectReader, StorageError>;

    /// The object's size, or `None` when it does not exist.
    async fn head(&self, key: &str) -> Result<Option<u64>, StorageError>;

    /// Every object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError>;

    /// Deletes an object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), StorageError>;

    /// Writes that were started under `prefix` and never finished nor
    /// aborted (a killed process): S3 multipart uploads, which the bucket
    /// keeps and bills until aborted; a local folder's temp files.
    async fn unfinished(&self, _prefix: &str) -> Result<Vec<Unfinished>, StorageError> {
        Ok(Vec::new())
    }

    /// Discards one unfinished write.
    async fn discard(&self, _write: &Unfinished) -> Result<(), StorageError> {
        Ok(())
    }

    /// Writes a small object in one call.
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let mut w = self.create(key).await?;
        if let Err(e) = w.write(data).await {
            w.abort().await;
            return Err(e);
        }
        w.finish().await.map(|_| ())
    }

    /// Reads a small object whole.
    async fn get_bytes(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        use tokio::io::AsyncReadExt;
        let mut r = self.get(key).await?;
        let mut out = Vec::new();
        r.read_to_end(&mut out)
            .await
            .map_err(|e| StorageError::S3 {
                operation: "read",
                endpoint: self.describe(),
                key: key.to_string(),
                detail: e.to_string(),
            })?;
        Ok(out)
    }
}

/// An object being written.
///
/// Durability point: the object exists, complete, once `finish` returns Ok,
/// and not before. `abort` (or an error from `finish`) leaves nothing behind:
/// no partial object and no pending multipart upload.
#[async_trait]
pub trait ObjectWriter: Send {
    /// Appends bytes. May wait while earlier parts are uploaded (backpressure).
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError>;
    /// Makes the object visible and durable; returns its size.
    async fn finish(self: Box<Self>) -> Result<u64, StorageError>;
    /// Discards everything written so far.
    async fn abort(self: Box<Self>);
}

/// Work a store started in the background that must end before the
/// process does: the abort of a multipart upload whose writer was dropped
/// (a cancelled backup), so that no pending upload is left. Whoever opens
/// the store owns it and calls [`Background::finish`] before exiting;
/// clones share the list.
#[derive(Clone, Default)]
pub struct Background(std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>);

impl Background {
    pub(crate) fn push(&self, task: tokio::task::JoinHandle<()>) {
        let mut tasks = self.0.lock().expect("background list");
        // A daemon runs for months: what has ended is not kept.
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Waits up to `limit` for the work started so far.
    pub async fn finish(&self, limit: std::time::Duration) {
        let tasks = std::mem::take(&mut *self.0.lock().expect("background list"));
        if !tasks.is_empty() {
            let _ = tokio::time::timeout(limit, futures::future::join_all(tasks)).await;
        }
    }
}

/// Opens the store a policy's repository section names. Reads the S3
/// credentials now; makes no request (call `healthcheck` for that).
/// Aborts of uploads dropped midway are recorded in `background`.
pub async fn open(
    cfg: &crate::policy::RepositoryConfig,
    background: &Background,
) -> Result<std::sync::Arc<dyn ObjectStore>, crate::policy::PolicyError> {
    use crate::policy::RepositoryUrl;
    Ok(match &cfg.url {
        RepositoryUrl::Local { path } => std::sync::Arc::new(LocalStore::new(path.clone())),
        RepositoryUrl::S3 { bucket, prefix } => {
            let credentials = match (&cfg.access_key_id, &cfg.secret_access_key) {
                (Some(id), Some(secret)) => {
                    Some((id.resolve()?.expose().to_string(), secret.resolve()?))
                }
                _ => None,
            };
            let s3 = s3::S3Config {
                bucket: bucket.clone(),
                prefix: prefix.clone(),
                endpoint: cfg.endpoint.clone(),
                region: cfg.region.clone(),
                path_style: cfg.path_style,
                credentials,
                part_size: cfg.part_size.0,
                parts_in_flight: cfg.parts_in_flight,
                request_timeout: cfg.request_timeout.0,
                min_throughput: cfg.min_throughput.0,
            };
            std::sync::Arc::new(S3Store::connect(&s3).await.in_background(background))
        }
    })
}
