//! Reading objects: a download that resumes with ranged GETs when its
//! connection breaks.

use std::time::Duration;

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::S3Store;
use crate::storage::StorageError;

/// Resumptions of one download in a row that may fail before the read
/// fails (each after the SDK's own retries of the ranged GET).
const RESUME_ATTEMPTS: u32 = 5;

/// A download that survives a broken or stalled connection: when the body
/// fails (or ends early), it continues with a ranged GET from the last byte
/// it delivered, pinned to the same object version by its ETag. The reader
/// above hashes every byte it gets, so the hashes still cover the whole
/// object exactly once.
pub(super) struct Download {
    pub(super) store: S3Store,
    pub(super) key: String,
    /// The object's size, from the first response.
    pub(super) size: Option<u64>,
    pub(super) etag: Option<String>,
    pub(super) body: ByteStream,
    /// Bytes delivered so far.
    pub(super) offset: u64,
    /// Resumptions in a row without a byte delivered.
    pub(super) failures: u32,
}

impl Download {
    pub(super) fn into_stream(self) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send {
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
