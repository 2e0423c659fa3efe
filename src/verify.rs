//! Verifying stored backups: without a key, every object's stored size and
//! sha256; with an identity, a full decode that also checks the plaintext.

use std::sync::Arc;

use serde::Serialize;

use crate::keys::Identities;
use crate::pipeline::{self, PipelineError};
use crate::repository::{Manifest, Repository};
use crate::storage::StorageError;

/// The outcome for one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Missing,
    Corrupt,
    WrongKey,
    Error,
}

/// One object's check.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectReport {
    pub backup: String,
    pub source: String,
    pub artifact: String,
    pub key: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Checks every artifact of `manifests`. With `identities`, decrypts and
/// decompresses each one and checks plaintext hashes as well.
pub async fn verify(
    repo: &Repository,
    manifests: &[Manifest],
    identities: Option<Arc<Identities>>,
) -> Vec<ObjectReport> {
    let store = repo.store().as_ref();
    let mut out = Vec::new();
    for m in manifests {
        for a in &m.artifacts {
            let expected = a.expected();
            let result = match &identities {
                Some(ids) => {
                    pipeline::decode(
                        store,
                        &expected,
                        ids.clone(),
                        tokio::io::sink(),
                        "nowhere (verify)",
                        None,
                    )
                    .await
                }
                None => pipeline::check_stored(store, &expected).await,
            };
            let (status, detail) = match result {
                Ok(()) => (Status::Ok, None),
                Err(e) => {
                    let status = match &e {
                        PipelineError::Storage(StorageError::NotFound { .. }) => Status::Missing,
                        PipelineError::Corrupt { .. } => Status::Corrupt,
                        PipelineError::WrongKey { .. } => Status::WrongKey,
                        _ => Status::Error,
                    };
                    (status, Some(e.to_string()))
                }
            };
            tracing::debug!(key = %a.key, ?status, "verified");
            out.push(ObjectReport {
                backup: m.id.clone(),
                source: m.source.clone(),
                artifact: a.name.clone(),
                key: a.key.clone(),
                status,
                detail,
            });
        }
    }
    out
}
