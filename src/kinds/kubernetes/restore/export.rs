//! Reading an export: the `objects` artifact decrypted and verified
//! whole, then its tar read into objects.

use std::sync::Arc;

use serde_json::Value;

use super::KubeRestoreError;
use crate::keys::Identities;
use crate::pipeline;
use crate::repository::{Manifest, Repository};

/// One object read from an export.
#[derive(Debug, Clone)]
pub struct Exported {
    pub path: String,
    pub obj: Value,
}

/// Decrypts and verifies the export, then reads its objects. Nothing is
/// returned unless every byte checked out.
pub async fn load(
    repo: &Repository,
    manifest: &Manifest,
    identities: Arc<Identities>,
) -> Result<Vec<Exported>, KubeRestoreError> {
    if manifest.kind != crate::repository::ManifestKind::KubernetesExport {
        return Err(KubeRestoreError::WrongKind {
            backup: manifest.id.clone(),
            kind: manifest.kind.to_string(),
        });
    }
    let artifact =
        manifest
            .artifact("objects")
            .ok_or_else(|| KubeRestoreError::MissingArtifact {
                backup: manifest.id.clone(),
            })?;
    let bytes =
        pipeline::decode_to_vec(repo.store().as_ref(), &artifact.expected(), identities).await?;
    let key = artifact.key.clone();
    tokio::task::spawn_blocking(move || read_tar(&bytes, &key))
        .await
        .map_err(|e| KubeRestoreError::BadExport {
            key: artifact.key.clone(),
            path: "-".into(),
            detail: e.to_string(),
        })?
}

fn read_tar(bytes: &[u8], key: &str) -> Result<Vec<Exported>, KubeRestoreError> {
    use std::io::Read;
    let bad = |path: &str, detail: String| KubeRestoreError::BadExport {
        key: key.to_string(),
        path: path.to_string(),
        detail,
    };
    let mut archive = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for entry in archive.entries().map_err(|e| bad("-", e.to_string()))? {
        let mut entry = entry.map_err(|e| bad("-", e.to_string()))?;
        let path = entry
            .path()
            .map_err(|e| bad("-", e.to_string()))?
            .to_string_lossy()
            .into_owned();
        if !path.ends_with(".yaml") {
            continue;
        }
        let mut text = String::new();
        entry
            .read_to_string(&mut text)
            .map_err(|e| bad(&path, e.to_string()))?;
        let obj: Value = yaml_serde::from_str(&text).map_err(|e| bad(&path, e.to_string()))?;
        out.push(Exported { path, obj });
    }
    Ok(out)
}
