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
//!
//! Layout: `download.rs` reads objects (resuming broken downloads),
//! `upload.rs` writes them (multipart uploads and their aborts),
//! `errors.rs` maps SDK errors to [`StorageError`].

mod download;
mod errors;
mod upload;
pub use upload::PendingUpload;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::Client;
use bytes::BytesMut;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{Background, ObjectMeta, ObjectReader, ObjectStore, ObjectWriter, StorageError};
use crate::policy::Secret;
use download::Download;
use errors::classify;
use upload::S3Writer;

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
    /// Aborts started when a writer is dropped mid-upload.
    pub(super) background: Background,
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
            background: Background::default(),
        }
    }

    /// Records the aborts of writers dropped mid-upload in `background`
    /// (shared with the caller, who awaits them before exiting).
    pub fn in_background(mut self, background: &Background) -> S3Store {
        self.background = background.clone();
        self
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
