//! Writing objects: one PUT for small ones, multipart uploads for large
//! ones, aborted when they fail or are dropped.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::S3Store;
use crate::storage::{ObjectStore, ObjectWriter, StorageError};

/// S3 allows at most this many parts in one multipart upload.
const MAX_PARTS: i32 = 10_000;

/// What a CompleteMultipartUpload attempt may take beyond a small call's.
const COMPLETE_EXTRA: Duration = Duration::from_secs(120);

/// An unfinished multipart upload, as listed by the server.
#[derive(Debug, Clone)]
pub struct PendingUpload {
    pub key: String,
    pub upload_id: String,
    pub initiated: Option<chrono::DateTime<chrono::Utc>>,
}

impl S3Store {
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

/// Buffers one part at a time and uploads full parts concurrently, at most
/// `parts_in_flight` at once: memory stays near `part_size * (in_flight + 1)`
/// whatever the object's size.
pub(super) struct S3Writer {
    pub(super) store: S3Store,
    pub(super) key: String,
    pub(super) full_key: String,
    pub(super) buf: BytesMut,
    pub(super) upload_id: Option<String>,
    pub(super) in_flight: JoinSet<Result<CompletedPart, StorageError>>,
    pub(super) slots: Arc<Semaphore>,
    pub(super) next_part: i32,
    pub(super) done: Vec<CompletedPart>,
    pub(super) size: u64,
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
                // Awaited by whoever opened the store before it exits.
                self.store.background.push(task);
            }
        }
    }
}
