//! SDK errors mapped to [`StorageError`]s that name the endpoint, the
//! bucket and what to do.

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use super::ATTEMPTS;
use crate::storage::StorageError;

pub(super) fn classify<E>(
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
            let write = is_write(operation);
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

/// Whether `operation` writes to the bucket (a 403 AccessDenied on it is
/// a write denial, not bad credentials).
fn is_write(operation: &str) -> bool {
    matches!(
        operation,
        "PutObject"
            | "UploadPart"
            | "CreateMultipartUpload"
            | "CompleteMultipartUpload"
            | "AbortMultipartUpload"
            | "DeleteObject"
    )
}
