//! S3 and S3-compatible servers (AWS, Garage, MinIO, Ceph RGW).
//!
//! - Custom endpoint and path-style addressing for non-AWS servers.
//! - Checksums are calculated and validated only "when required", because
//!   many third-party servers reject or mangle the newer flexible checksums.
//! - Throttling, 5xx and connection errors are retried with exponential
//!   backoff by the SDK's standard retry mode.
//! - Large objects go up as multipart uploads with a fixed number of parts
//!   in flight; a failed or abandoned upload is aborted so no orphan parts
//!   are billed or left behind.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{ObjectMeta, ObjectReader, ObjectStore, ObjectWriter, StorageError};
use crate::policy::Secret;

/// Aborts started from `Drop` (a cancelled backup): awaited by
/// [`finish_background_aborts`] before the process exits.
static BACKGROUND_ABORTS: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>> =
    std::sync::Mutex::new(Vec::new());

/// Waits (up to `limit`) for the multipart aborts that dropped writers
/// started, so an interrupted run leaves no pending upload behind.
pub async fn finish_background_aborts(limit: Duration) {
    let handles = std::mem::take(&mut *BACKGROUND_ABORTS.lock().expect("poisoned"));
    if !handles.is_empty() {
        let _ = tokio::time::timeout(limit, futures::future::join_all(handles)).await;
    }
}

/// S3 allows at most this many parts in one multipart upload.
const MAX_PARTS: i32 = 10_000;

/// How to reach a bucket.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/`.
    pub prefix: String,
    /// Custom endpoint (`http://garage:3900`); `None` for AWS.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
    /// Access key id and secret; `None` uses the standard AWS chain.
    pub credentials: Option<(String, Secret)>,
    pub part_size: u64,
    pub parts_in_flight: usize,
    /// How long one request may go unanswered before it is abandoned and
    /// retried (a black-holed connection); requests that move a body get
    /// more time for it, at `min_throughput`.
    pub request_timeout: Duration,
    /// The slowest transfer accepted, in bytes per second.
    pub min_throughput: u64,
}

/// Attempts per request (the first and retries).
const ATTEMPTS: u32 = 5;
/// What a CompleteMultipartUpload attempt may take beyond a small call's.
const COMPLETE_EXTRA: Duration = Duration::from_secs(120);

/// A repository in an S3 bucket.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    endpoint: String,
    part_size: usize,
    parts_in_flight: usize,
    request_timeout: Duration,
    min_throughput: u64,
}

/// An unfinished multipart upload, as listed by the server.
#[derive(Debug, Clone)]
pub struct PendingUpload {
    pub key: String,
    pub upload_id: String,
    pub initiated: Option<chrono::DateTime<chrono::Utc>>,
}

/// Per attempt: `request` plus `transfer` (the time a body may take); over
/// all attempts: each attempt's, plus the retries' backoff.
fn deadlines(request: Duration, transfer: Duration) -> TimeoutConfig {
    let attempt = request + transfer;
    TimeoutConfig::builder()
        .connect_timeout(request.min(Duration::from_secs(5)))
        .operation_attempt_timeout(attempt)
        .operation_timeout(attempt * ATTEMPTS + Duration::from_secs(30))
        .build()
}

impl S3Store {
    /// A configuration override for a request that moves `bytes`: its
    /// attempts may take `request_timeout` plus the bytes at
    /// `min_throughput`.
    fn sized(&self, bytes: u64) -> aws_sdk_s3::config::Builder {
        self.longer(Duration::from_secs_f64(
            bytes as f64 / self.min_throughput as f64,
        ))
    }

    /// A configuration override giving each attempt `extra` time.
    fn longer(&self, extra: Duration) -> aws_sdk_s3::config::Builder {
        aws_sdk_s3::config::Builder::default()
            .timeout_config(deadlines(self.request_timeout, extra))
    }

    /// Builds a client. Makes no request: call `healthcheck` to test the bucket.
    pub async fn connect(cfg: &S3Config) -> S3Store {
        let region = match &cfg.region {
            Some(r) => Region::new(r.clone()),
            None => aws_config::meta::region::RegionProviderChain::default_provider()
                .or_else(Region::new("us-east-1"))
                .region()
                .await
                .unwrap_or_else(|| Region::new("us-east-1")),
        };
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(ATTEMPTS)
                    .with_initial_backoff(Duration::from_millis(200))
                    .with_max_backoff(Duration::from_secs(10)),
            )
            // Every request has a deadline (small calls: `request_timeout`
            // per attempt); those that move a body get theirs per call
            // (`S3Store::sized`). A streamed download's body is watched by
            // the SDK's stalled-stream protection (on by default).
            .timeout_config(deadlines(cfg.request_timeout, Duration::ZERO));
        if let Some((id, secret)) = &cfg.credentials {
            loader = loader.credentials_provider(Credentials::new(
                id.clone(),
                secret.expose().to_string(),
                None,
                None,
                "lifeboat-policy",
            ));
        }
        let sdk = loader.load().await;
        let mut b = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(cfg.path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(ep) = &cfg.endpoint {
            b = b.endpoint_url(ep.clone());
        }
        S3Store {
            client: Client::from_conf(b.build()),
            bucket: cfg.bucket.clone(),
            prefix: cfg.prefix.clone(),
            endpoint: cfg.endpoint.clone().unwrap_or_else(|| "AWS S3".to_string()),
            part_size: cfg.part_size as usize,
            parts_in_flight: cfg.parts_in_flight.max(1),
            request_timeout: cfg.request_timeout,
            min_throughput: cfg.min_throughput.max(1),
        }
    }

    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{}", self.prefix, key)
        }
    }

    fn rel_key<'a>(&self, full: &'a str) -> &'a str {
        if self.prefix.is_empty() {
            full
        } else {
            full.strip_prefix(&self.prefix)
                .map(|k| k.trim_start_matches('/'))
                .unwrap_or(full)
        }
    }

    fn error<E>(
        &self,
        operation: &'static str,
        key: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        classify(&self.endpoint, &self.bucket, operation, key, err)
    }

    /// Multipart uploads started under this repository and never completed
    /// or aborted.
    pub async fn list_pending_uploads(&self) -> Result<Vec<PendingUpload>, StorageError> {
        self.pending_uploads("").await
    }

    /// Pending multipart uploads whose key starts with `prefix`.
    pub async fn pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>, StorageError> {
        let mut out = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            let resp = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(self.full_key(prefix))
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
                .map_err(|e| self.error("ListMultipartUploads", "", e))?;
            for u in resp.uploads() {
                if let (Some(k), Some(id)) = (u.key(), u.upload_id()) {
                    out.push(PendingUpload {
                        key: self.rel_key(k).to_string(),
                        upload_id: id.to_string(),
                        initiated: u.initiated().and_then(|t| {
                            chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())
                        }),
                    });
                }
            }
            if resp.is_truncated() == Some(true) {
                key_marker = resp.next_key_marker().map(str::to_string);
                id_marker = resp.next_upload_id_marker().map(str::to_string);
            } else {
                return Ok(out);
            }
        }
    }

    /// Aborts one pending multipart upload.
    pub async fn abort_upload(&self, upload: &PendingUpload) -> Result<(), StorageError> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full_key(&upload.key))
            .upload_id(&upload.upload_id)
            .send()
            .await
            .map_err(|e| self.error("AbortMultipartUpload", &upload.key, e))?;
        Ok(())
    }
}

/// Resumptions of one download in a row that may fail before the read
/// fails (each after the SDK's own retries of the ranged GET).
const RESUME_ATTEMPTS: u32 = 5;

/// A download that survives a broken or stalled connection: when the body
/// fails (or ends early), it continues with a ranged GET from the last byte
/// it delivered, pinned to the same object version by its ETag. The reader
/// above hashes every byte it gets, so the hashes still cover the whole
/// object exactly once.
struct Download {
    store: S3Store,
    key: String,
    /// The object's size, from the first response.
    size: Option<u64>,
    etag: Option<String>,
    body: ByteStream,
    /// Bytes delivered so far.
    offset: u64,
    /// Resumptions in a row without a byte delivered.
    failures: u32,
}

impl Download {
    fn into_stream(self) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send {
        futures::stream::try_unfold(self, |mut d| async move {
            loop {
                let cause = match d.body.try_next().await {
                    Ok(Some(chunk)) if chunk.is_empty() => continue,
                    Ok(Some(chunk)) => {
                        d.offset += chunk.len() as u64;
                        d.failures = 0;
                        return Ok(Some((chunk, d)));
                    }
                    Ok(None) => match d.size {
                        Some(size) if d.offset < size => {
                            "the connection closed before the end of the object".to_string()
                        }
                        _ => return Ok(None),
                    },
                    // Every byte arrived; what broke was the rest of the
                    // exchange.
                    Err(_) if d.size == Some(d.offset) => return Ok(None),
                    Err(e) => DisplayErrorContext(&e).to_string(),
                };
                d.resume(cause).await?;
            }
        })
    }

    /// Replaces the broken body with a ranged GET from `offset`, after a
    /// backoff; fails once `RESUME_ATTEMPTS` resumptions in a row brought
    /// nothing, naming the object, the offset and the cause.
    async fn resume(&mut self, cause: String) -> std::io::Result<()> {
        let of = self.size.map(|s| format!(" of {s}")).unwrap_or_default();
        if self.size.is_none() {
            // Without the object's size, an early end cannot be told from
            // the end: never resume (or end) blind.
            return Err(std::io::Error::other(format!(
                "download of {} from {} broke at byte {} ({cause}); the server did not say \
                 the object's size, so it is not resumed. Run the command again",
                self.key, self.store.endpoint, self.offset
            )));
        }
        self.failures += 1;
        if self.failures > RESUME_ATTEMPTS {
            return Err(std::io::Error::other(format!(
                "download of {} from {} broke at byte {}{of} and {RESUME_ATTEMPTS} resumptions \
                 from there (ranged GETs) failed too; last cause: {cause}. The network to the \
                 endpoint or the endpoint is failing; run the command again when it is healthy",
                self.key, self.store.endpoint, self.offset
            )));
        }
        tracing::warn!(
            object = %self.key,
            offset = self.offset,
            attempt = self.failures,
            "download broke ({cause}); resuming from byte {}{of}",
            self.offset
        );
        let backoff = Duration::from_millis(200) * 2u32.pow(self.failures - 1);
        tokio::time::sleep(backoff.min(Duration::from_secs(10))).await;
        let mut get = self
            .store
            .client
            .get_object()
            .bucket(&self.store.bucket)
            .key(self.store.full_key(&self.key))
            .range(format!("bytes={}-", self.offset));
        if let Some(etag) = &self.etag {
            get = get.if_match(etag);
        }
        match get.send().await {
            Ok(out) => {
                let expected = self.size.map(|s| s - self.offset);
                let got = out.content_length().map(|n| n.max(0) as u64);
                // A 206 for exactly the rest, never a whole object again
                // (a server that ignores Range answers 200 from byte 0).
                let range_ok = out
                    .content_range()
                    .is_some_and(|r| r.starts_with(&format!("bytes {}-", self.offset)));
                if !range_ok || expected != got {
                    return Err(std::io::Error::other(format!(
                        "resuming the download of {} from {} at byte {}{of}: the server sent \
                         {} bytes where {} remain; refusing to splice a different object",
                        self.key,
                        self.store.endpoint,
                        self.offset,
                        got.unwrap_or(0),
                        expected.unwrap_or(0)
                    )));
                }
                self.body = out.body;
            }
            Err(e) => {
                let e = self.store.error("GetObject", &self.key, e);
                if matches!(
                    e,
                    StorageError::NotFound { .. } | StorageError::Credentials { .. }
                ) || e.to_string().contains("PreconditionFailed")
                {
                    return Err(std::io::Error::other(format!(
                        "resuming the download of {} at byte {}{of}: {e}",
                        self.key, self.offset
                    )));
                }
                // The next round counts this as another failure.
                tracing::warn!(object = %self.key, "ranged GET failed: {e}");
                self.body = ByteStream::default();
            }
        }
        Ok(())
    }
}

fn classify<E>(
    endpoint: &str,
    bucket: &str,
    operation: &'static str,
    key: &str,
    err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = DisplayErrorContext(&err).to_string();
    match &err {
        SdkError::TimeoutError(_) => StorageError::TimedOut {
            endpoint: endpoint.to_string(),
            operation,
            target: if key.is_empty() {
                format!("bucket {bucket}")
            } else {
                format!("object {key}")
            },
            attempts: ATTEMPTS,
            detail,
        },
        SdkError::DispatchFailure(_) => StorageError::Unreachable {
            endpoint: endpoint.to_string(),
            detail,
        },
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().map(str::to_string);
            let message = se.err().message().unwrap_or_default().to_string();
            // A full bucket: Ceph's QuotaExceeded, MinIO's
            // XMinioAdminBucketQuotaExceeded/XMinioStorageFull, Garage's 403
            // "... quota is reached".
            let quota = code
                .as_deref()
                .is_some_and(|c| c.contains("Quota") || c.contains("StorageFull"))
                || message.to_ascii_lowercase().contains("quota");
            let write = matches!(
                operation,
                "PutObject"
                    | "UploadPart"
                    | "CreateMultipartUpload"
                    | "CompleteMultipartUpload"
                    | "AbortMultipartUpload"
                    | "DeleteObject"
            );
            let object = if key.is_empty() {
                format!("bucket {bucket}")
            } else {
                format!("object {key}")
            };
            match (status, code.as_deref()) {
                _ if quota => StorageError::QuotaExceeded {
                    endpoint: endpoint.to_string(),
                    bucket: bucket.to_string(),
                    operation,
                    detail: format!("{}: {message}", code.as_deref().unwrap_or("quota")),
                },
                (403, Some("AccessDenied")) if write => StorageError::WriteDenied {
                    endpoint: endpoint.to_string(),
                    bucket: bucket.to_string(),
                    operation,
                    object,
                    detail: message,
                },
                (_, Some("NoSuchBucket")) => StorageError::NoSuchBucket {
                    endpoint: endpoint.to_string(),
                    bucket: bucket.to_string(),
                },
                (404, _) if operation == "HeadBucket" => StorageError::NoSuchBucket {
                    endpoint: endpoint.to_string(),
                    bucket: bucket.to_string(),
                },
                (_, Some("NoSuchKey")) | (404, _) => StorageError::NotFound {
                    store: format!("s3://{bucket}"),
                    key: key.to_string(),
                },
                (401 | 403, _)
                | (_, Some("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied")) => {
                    StorageError::Credentials {
                        endpoint: endpoint.to_string(),
                        bucket: bucket.to_string(),
                        detail: code.unwrap_or_else(|| format!("HTTP {status}")),
                    }
                }
                _ => StorageError::S3 {
                    operation,
                    endpoint: endpoint.to_string(),
                    key: key.to_string(),
                    detail,
                },
            }
        }
        _ => StorageError::S3 {
            operation,
            endpoint: endpoint.to_string(),
            key: key.to_string(),
            detail,
        },
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        let url = if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        };
        format!("{url} at {}", self.endpoint)
    }

    async fn healthcheck(&self, _write: bool) -> Result<(), StorageError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| self.error("HeadBucket", "", e))?;
        Ok(())
    }

    async fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        if self.head(key).await?.is_some() {
            return Err(StorageError::AlreadyExists {
                store: self.describe(),
                key: key.to_string(),
            });
        }
        Ok(Box::new(S3Writer {
            store: self.clone(),
            key: key.to_string(),
            full_key: self.full_key(key),
            buf: BytesMut::with_capacity(self.part_size),
            upload_id: None,
            in_flight: JoinSet::new(),
            slots: Arc::new(Semaphore::new(self.parts_in_flight)),
            next_part: 1,
            done: Vec::new(),
            size: 0,
        }))
    }

    async fn get(&self, key: &str) -> Result<ObjectReader, StorageError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.error("GetObject", key, e))?;
        let download = Download {
            store: self.clone(),
            key: key.to_string(),
            size: out.content_length().map(|n| n.max(0) as u64),
            etag: out.e_tag().map(str::to_string),
            body: out.body,
            offset: 0,
            failures: 0,
        };
        Ok(Box::pin(tokio_util::io::StreamReader::new(
            download.into_stream(),
        )))
    }

    async fn head(&self, key: &str) -> Result<Option<u64>, StorageError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(o) => Ok(Some(o.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) => match self.error("HeadObject", key, e) {
                StorageError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full_key(prefix))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error("ListObjectsV2", prefix, e))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    out.push(ObjectMeta {
                        key: self.rel_key(k).to_string(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                        modified: o.last_modified().and_then(|t| {
                            chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())
                        }),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.error("DeleteObject", key, e))?;
        Ok(())
    }

    async fn unfinished(&self, prefix: &str) -> Result<Vec<super::Unfinished>, StorageError> {
        Ok(self
            .pending_uploads(prefix)
            .await?
            .into_iter()
            .map(|u| super::Unfinished {
                key: u.key,
                id: u.upload_id,
                started: u.initiated,
            })
            .collect())
    }

    async fn discard(&self, write: &super::Unfinished) -> Result<(), StorageError> {
        self.abort_upload(&PendingUpload {
            key: write.key.clone(),
            upload_id: write.id.clone(),
            initiated: write.started,
        })
        .await
    }
}

/// Buffers one part at a time and uploads full parts concurrently, at most
/// `parts_in_flight` at once: memory stays near `part_size * (in_flight + 1)`
/// whatever the object's size.
struct S3Writer {
    store: S3Store,
    key: String,
    full_key: String,
    buf: BytesMut,
    upload_id: Option<String>,
    in_flight: JoinSet<Result<CompletedPart, StorageError>>,
    slots: Arc<Semaphore>,
    next_part: i32,
    done: Vec<CompletedPart>,
    size: u64,
}

impl S3Writer {
    async fn start_upload(&mut self) -> Result<String, StorageError> {
        if let Some(id) = &self.upload_id {
            return Ok(id.clone());
        }
        let out = self
            .store
            .client
            .create_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&self.full_key)
            .send()
            .await
            .map_err(|e| self.store.error("CreateMultipartUpload", &self.key, e))?;
        let id = out.upload_id().unwrap_or_default().to_string();
        self.upload_id = Some(id.clone());
        Ok(id)
    }

    fn collect_finished(&mut self) -> Result<(), StorageError> {
        while let Some(res) = self.in_flight.try_join_next() {
            self.done.push(res.expect("part upload task panicked")?);
        }
        Ok(())
    }

    async fn send_part(&mut self, part: Bytes) -> Result<(), StorageError> {
        if self.next_part > MAX_PARTS {
            return Err(StorageError::TooLarge {
                key: self.key.clone(),
                parts: MAX_PARTS as u32,
                part_size: self.store.part_size as u64,
            });
        }
        let upload_id = self.start_upload().await?;
        self.collect_finished()?;
        // Backpressure: wait for a free slot before taking more input.
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore is never closed");
        let number = self.next_part;
        self.next_part += 1;
        let store = self.store.clone();
        let full_key = self.full_key.clone();
        let key = self.key.clone();
        self.in_flight.spawn(async move {
            let _permit = permit;
            let len = part.len() as i64;
            let out = store
                .client
                .upload_part()
                .bucket(&store.bucket)
                .key(&full_key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(len)
                .body(ByteStream::from(part))
                .customize()
                .config_override(store.sized(len as u64))
                .send()
                .await
                .map_err(|e| store.error("UploadPart", &key, e))?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_string))
                .build())
        });
        Ok(())
    }

    async fn complete(&mut self) -> Result<u64, StorageError> {
        if self.upload_id.is_none() {
            let body = std::mem::take(&mut self.buf).freeze();
            let len = body.len() as u64;
            self.store
                .client
                .put_object()
                .bucket(&self.store.bucket)
                .key(&self.full_key)
                .content_length(body.len() as i64)
                .body(ByteStream::from(body))
                .customize()
                .config_override(self.store.sized(len))
                .send()
                .await
                .map_err(|e| self.store.error("PutObject", &self.key, e))?;
            return Ok(self.size);
        }
        if !self.buf.is_empty() {
            let last = std::mem::take(&mut self.buf).freeze();
            self.send_part(last).await?;
        }
        while let Some(res) = self.in_flight.join_next().await {
            self.done.push(res.expect("part upload task panicked")?);
        }
        let mut parts = std::mem::take(&mut self.done);
        parts.sort_by_key(|p| p.part_number());
        let done = self
            .store
            .client
            .complete_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&self.full_key)
            .upload_id(self.upload_id.clone().unwrap_or_default())
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            // The server assembles the parts before it answers: S3 says
            // this can take minutes for large objects.
            .customize()
            .config_override(self.store.longer(COMPLETE_EXTRA))
            .send()
            .await;
        if let Err(e) = done {
            let e = self.store.error("CompleteMultipartUpload", &self.key, e);
            // An attempt completed the upload but its answer was lost (a
            // reset, a timeout), so the retry found no upload any more
            // (NoSuchUpload) or timed out: the object is there, whole,
            // under a key that did not exist when this write began (create
            // checks) and that only this content is written to.
            let lost_answer = matches!(
                e,
                StorageError::NotFound { .. } | StorageError::TimedOut { .. }
            );
            match self.store.head(&self.key).await {
                Ok(Some(size)) if lost_answer && size == self.size => {
                    tracing::warn!(object = %self.key, error = %e, "completing the upload reported an error, but the object is stored whole");
                }
                // The upload stays recorded, so abort() discards it.
                _ => return Err(e),
            }
        }
        self.upload_id = None;
        Ok(self.size)
    }

    async fn abort_upload(&mut self) {
        // Stop part uploads first, so none lands after the abort.
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        if let Some(id) = self.upload_id.take() {
            let pending = PendingUpload {
                initiated: None,
                key: self.key.clone(),
                upload_id: id,
            };
            if let Err(e) = self.store.abort_upload(&pending).await {
                tracing::warn!(key = %self.key, error = %e, "could not abort the multipart upload; it stays pending in the bucket until aborted (S3 lifecycle rule AbortIncompleteMultipartUpload, or by hand)");
            }
        }
    }
}

#[async_trait]
impl ObjectWriter for S3Writer {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        self.size += chunk.len() as u64;
        self.buf.extend_from_slice(&chunk);
        let part_size = self.store.part_size;
        while self.buf.len() >= part_size {
            let mut full = std::mem::replace(&mut self.buf, BytesMut::with_capacity(part_size));
            let rest = full.split_off(part_size);
            self.buf.extend_from_slice(&rest);
            self.send_part(full.freeze()).await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64, StorageError> {
        match self.complete().await {
            Ok(n) => Ok(n),
            Err(e) => {
                self.abort_upload().await;
                Err(e)
            }
        }
    }

    async fn abort(mut self: Box<Self>) {
        self.abort_upload().await;
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        // Dropped mid-upload (a cancelled task): abort in the background so
        // no orphan multipart upload is left.
        if let Some(id) = self.upload_id.take() {
            self.in_flight.abort_all();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let store = self.store.clone();
                let pending = PendingUpload {
                    initiated: None,
                    key: self.key.clone(),
                    upload_id: id,
                };
                let mut parts = std::mem::take(&mut self.in_flight);
                let task = handle.spawn(async move {
                    // No part may land after the abort.
                    while parts.join_next().await.is_some() {}
                    if let Err(e) = store.abort_upload(&pending).await {
                        tracing::warn!(key = %pending.key, error = %e, "could not abort a multipart upload");
                    }
                });
                BACKGROUND_ABORTS.lock().expect("poisoned").push(task);
            }
        }
    }
}
