//! The repository: object key layout, manifests, and listing backups.
//!
//! Layout (see docs/FORMAT.md, format version 1):
//!
//! ```text
//! lifeboat.json                                   repository marker: {"format": 1}
//! data/<policy>/<source>/<backup-id>/<artifact>   artifacts: standard format → zstd|gzip → age
//! manifests/<policy>/<source>/<backup-id>.json    one per complete backup, written last
//! wal/<policy>/<source>/<wal file>/<digests>...   the WAL archive (`crate::kinds::postgres::wal::archive`)
//! ```
//!
//! The manifest is the commit point: artifacts are written first, the
//! manifest last, so a listed backup is complete and a crashed run leaves
//! only unlisted data (deleted by the failed run itself where it can). Objects are never
//! overwritten.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::pipeline::{Digest, Expected};
use crate::policy::Algorithm;
use crate::storage::{ObjectStore, StorageError};

/// The repository format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The marker object at the repository root.
pub const MARKER_KEY: &str = crate::layout::MARKER;

/// Errors about the repository's contents.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("repository {store} has format {found}, newer than this lifeboat understands ({FORMAT_VERSION}); upgrade lifeboat")]
    TooNew { store: String, found: u32 },
    #[error("{store} holds objects but no {MARKER_KEY}; it does not look like a lifeboat repository (check repository.url)")]
    NotARepository { store: String },
    #[error("repository marker {store}/{MARKER_KEY} cannot be parsed ({detail}); it should be JSON like {{\"format\": 1}}")]
    BadMarker { store: String, detail: String },
    #[error("manifest {key} has format {found}, newer than this lifeboat understands ({FORMAT_VERSION}); upgrade lifeboat to read it")]
    ManifestTooNew { key: String, found: u32 },
    #[error("the newest backup's manifest {key} cannot be read ({detail}); pass --backup ID to use an older backup (`lifeboat list` shows them)")]
    NewestUnreadable { key: String, detail: String },
    #[error("manifest {key} cannot be parsed ({detail}); the backup is unusable, check the object or restore an older backup")]
    BadManifest { key: String, detail: String },
    #[error("no backup of source '{source_name}' in policy '{policy}' in {store}; run `lifeboat backup` first, or check --source")]
    NoBackups {
        store: String,
        policy: String,
        source_name: String,
    },
    #[error("no backup with id '{id}' for source '{source_name}' in {store}; `lifeboat list` shows the ids")]
    NoSuchBackup {
        store: String,
        source_name: String,
        id: String,
    },
}

impl crate::outcome::Classify for RepositoryError {
    fn outcome(&self) -> crate::outcome::Outcome {
        use crate::outcome::Outcome;
        match self {
            Self::Storage(e) => e.outcome(),
            Self::NoBackups { .. } | Self::NoSuchBackup { .. } => Outcome::NotFound,
            Self::BadManifest { .. } | Self::NewestUnreadable { .. } | Self::BadMarker { .. } => {
                Outcome::Integrity
            }
            Self::TooNew { .. } | Self::NotARepository { .. } | Self::ManifestTooNew { .. } => {
                Outcome::Failure
            }
        }
    }
}

/// The repository marker.
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    format: u32,
    created_at: DateTime<Utc>,
    created_by: String,
}

/// What kind of backup a manifest records: made from the list of kinds in
/// `kinds::registry`, stored as the strings the repository format has
/// always used.
pub use crate::kinds::ManifestKind;

/// One backup's manifest: the record that the backup exists and is complete.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Repository format version.
    pub format: u32,
    /// Backup id, sortable by time: `20261123T141502Z-3f9a`.
    pub id: String,
    pub policy: String,
    pub source: String,
    /// What kind of backup: `postgres-dump`, `postgres-base`, `mysql-dump`,
    /// `kubernetes-export`.
    pub kind: ManifestKind,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// The server's version string (`PostgreSQL 15.19 ...`).
    pub server_version: String,
    /// lifeboat's version, and the dump tool's.
    pub tool_version: String,
    pub dump_tool_version: String,
    pub artifacts: Vec<Artifact>,
    /// For physical base backups: where in the WAL it starts and ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical: Option<Physical>,
    /// For MySQL/MariaDB dumps: the binlog position the dump is consistent
    /// at (point-in-time recovery replays binlogs from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog: Option<crate::kinds::mysql::source::BinlogPoint>,
    /// For Kubernetes exports: the server, the namespaces, and object
    /// counts per namespace and kind (no contents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<crate::kinds::kubernetes::export::KubeExport>,
}

/// What a physical base backup needs from the WAL archive to be restored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Physical {
    /// The timeline the backup was taken on.
    pub timeline: u32,
    /// Replay starts here (the backup's checkpoint redo point)...
    pub start_lsn: crate::kinds::postgres::wal::Lsn,
    /// ...and the copy is consistent once replay passes this point.
    pub stop_lsn: crate::kinds::postgres::wal::Lsn,
    /// `pg_control_system().system_identifier`: WAL of another cluster
    /// does not fit.
    pub system_identifier: String,
    pub wal_segment_size: u64,
    /// The first and the last WAL segment the backup needs.
    pub start_segment: String,
    pub stop_segment: String,
    /// The server's `backup_label`, verbatim.
    pub backup_label: String,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// Name within the backup: `globals`, `db/app`, `inventory/app`.
    pub name: String,
    /// Format of the plaintext: `pg-dump-custom`, `pg-globals-sql`, `inventory-json`.
    pub kind: String,
    /// The database it belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Object key, relative to the repository root.
    pub key: String,
    /// Size and sha256 of the bytes in storage.
    pub stored: Digest,
    /// Size and sha256 of the plaintext (before compression and encryption).
    pub plaintext: Digest,
    pub compression: Algorithm,
    pub compression_level: i32,
    /// Always `age-x25519`.
    pub encryption: String,
    /// The age recipients (public keys) it was encrypted to.
    pub recipients: Vec<String>,
}

impl Artifact {
    /// What decode and verify must find.
    pub fn expected(&self) -> Expected {
        Expected {
            key: self.key.clone(),
            compression: self.compression,
            stored: self.stored.clone(),
            plaintext: self.plaintext.clone(),
            recipients: self.recipients.clone(),
        }
    }
}

impl Manifest {
    /// Total stored bytes.
    pub fn stored_size(&self) -> u64 {
        self.artifacts.iter().map(|a| a.stored.size).sum()
    }
    /// Total plaintext bytes.
    pub fn plaintext_size(&self) -> u64 {
        self.artifacts.iter().map(|a| a.plaintext.size).sum()
    }
    pub fn artifact(&self, name: &str) -> Option<&Artifact> {
        self.artifacts.iter().find(|a| a.name == name)
    }
}

/// The result of listing backups.
#[derive(Debug, Default)]
pub struct Listing {
    /// Readable backups, oldest first.
    pub backups: Vec<Manifest>,
    /// Manifests that exist but cannot be read.
    pub unreadable: Vec<Unreadable>,
}

/// A manifest that could not be read, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Unreadable {
    pub key: String,
    pub error: String,
}

/// Which backup to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupSelector {
    Latest,
    Id(String),
}

impl std::str::FromStr for BackupSelector {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if s == "latest" {
            BackupSelector::Latest
        } else {
            BackupSelector::Id(s.to_string())
        })
    }
}

/// A new backup id: UTC time to the second, then 4 random hex digits so two
/// backups started in the same second do not collide.
pub fn new_backup_id(at: DateTime<Utc>) -> String {
    format!(
        "{}-{:04x}",
        at.format("%Y%m%dT%H%M%SZ"),
        rand::random::<u16>()
    )
}

/// True for ids as [`new_backup_id`] makes them: `20261123T141502Z-3f9a`.
pub fn is_backup_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 21
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
        && b[16] == b'-'
        && b[17..].iter().all(|c| c.is_ascii_hexdigit())
}

/// A repository on some object store.
#[derive(Clone)]
pub struct Repository {
    store: Arc<dyn ObjectStore>,
}

impl Repository {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Repository { store }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// Key of an artifact.
    pub fn artifact_key(policy: &str, source: &str, id: &str, file: &str) -> String {
        crate::layout::artifact(policy, source, id, file)
    }

    /// Key of a manifest.
    pub fn manifest_key(policy: &str, source: &str, id: &str) -> String {
        crate::layout::manifest(policy, source, id)
    }

    /// Checks the marker; writes it into an empty repository when `create`.
    pub async fn open(&self, create: bool) -> Result<(), RepositoryError> {
        match self.store.get_bytes(MARKER_KEY).await {
            Ok(bytes) => {
                let marker: Marker =
                    serde_json::from_slice(&bytes).map_err(|e| RepositoryError::BadMarker {
                        store: self.describe(),
                        detail: e.to_string(),
                    })?;
                if marker.format > FORMAT_VERSION {
                    return Err(RepositoryError::TooNew {
                        store: self.describe(),
                        found: marker.format,
                    });
                }
                Ok(())
            }
            Err(e) if e.is_not_found() => {
                let has_data = !self.store.list(crate::layout::MANIFESTS).await?.is_empty();
                if has_data {
                    return Err(RepositoryError::NotARepository {
                        store: self.describe(),
                    });
                }
                if create {
                    let marker = Marker {
                        format: FORMAT_VERSION,
                        created_at: Utc::now(),
                        created_by: format!("lifeboat {}", env!("CARGO_PKG_VERSION")),
                    };
                    let body = serde_json::to_vec_pretty(&marker).expect("marker serializes");
                    match self.store.put(MARKER_KEY, body.into()).await {
                        Ok(()) | Err(StorageError::AlreadyExists { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Writes a manifest: the commit point of a backup.
    pub async fn write_manifest(&self, m: &Manifest) -> Result<(), RepositoryError> {
        let key = Self::manifest_key(&m.policy, &m.source, &m.id);
        let body = serde_json::to_vec_pretty(m).expect("manifest serializes");
        self.store.put(&key, body.into()).await?;
        Ok(())
    }

    /// Reads one manifest.
    pub async fn load_manifest(&self, key: &str) -> Result<Manifest, RepositoryError> {
        let bytes = self.store.get_bytes(key).await?;
        // Look at the version first: a newer manifest may not parse as this one.
        #[derive(Deserialize)]
        struct Version {
            format: u32,
        }
        if let Ok(v) = serde_json::from_slice::<Version>(&bytes) {
            if v.format > FORMAT_VERSION {
                return Err(RepositoryError::ManifestTooNew {
                    key: key.to_string(),
                    found: v.format,
                });
            }
        }
        serde_json::from_slice(&bytes).map_err(|e| RepositoryError::BadManifest {
            key: key.to_string(),
            detail: e.to_string(),
        })
    }

    /// Every backup of a policy (one source, or all), oldest first, and
    /// the manifests that could not be read.
    pub async fn list_backups(
        &self,
        policy: &str,
        source: Option<&str>,
    ) -> Result<Listing, RepositoryError> {
        let prefix = crate::layout::manifests_prefix(policy, source);
        let mut out = Listing::default();
        for obj in self.store.list(&prefix).await? {
            if obj.key.ends_with(".json") {
                match self.load_manifest(&obj.key).await {
                    Ok(m) => out.backups.push(m),
                    // One damaged manifest must not hide every other backup,
                    // but it is reported, never skipped silently.
                    Err(
                        e @ (RepositoryError::BadManifest { .. }
                        | RepositoryError::ManifestTooNew { .. }),
                    ) => out.unreadable.push(Unreadable {
                        key: obj.key.clone(),
                        error: e.to_string(),
                    }),
                    Err(e) => return Err(e),
                }
            }
        }
        out.backups
            .sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        Ok(out)
    }

    /// The backup a selector names.
    pub async fn find_backup(
        &self,
        policy: &str,
        source: &str,
        selector: &BackupSelector,
    ) -> Result<Manifest, RepositoryError> {
        self.find_backup_of_kind(policy, source, selector, None)
            .await
    }

    /// Like [`Self::find_backup`]; `latest` means the newest of `kind`.
    pub async fn find_backup_of_kind(
        &self,
        policy: &str,
        source: &str,
        selector: &BackupSelector,
        kind: Option<ManifestKind>,
    ) -> Result<Manifest, RepositoryError> {
        match selector {
            BackupSelector::Latest => {
                let mut listing = self.list_backups(policy, Some(source)).await?;
                if let Some(kind) = kind {
                    listing.backups.retain(|m| m.kind == kind);
                }
                let latest = listing.backups.pop();
                // Ids start with their UTC second: a backup that cannot be
                // read and may be newer must not be passed over in silence
                // for an older one.
                let second = |id: &str| id.get(..16).unwrap_or(id).to_string();
                let latest_second = latest.as_ref().map(|m| second(&m.id));
                if let Some(bad) = listing
                    .unreadable
                    .iter()
                    .filter(|u| {
                        let file = u.key.rsplit('/').next().unwrap_or(&u.key);
                        let id = file.strip_suffix(".json").unwrap_or(file);
                        is_backup_id(id) && latest_second.as_ref().is_none_or(|s| &second(id) >= s)
                    })
                    .max_by(|a, b| a.key.cmp(&b.key))
                {
                    return Err(RepositoryError::NewestUnreadable {
                        key: bad.key.clone(),
                        detail: bad.error.clone(),
                    });
                }
                latest.ok_or_else(|| RepositoryError::NoBackups {
                    store: self.describe(),
                    policy: policy.to_string(),
                    source_name: source.to_string(),
                })
            }
            BackupSelector::Id(id) => {
                let key = Self::manifest_key(policy, source, id);
                match self.load_manifest(&key).await {
                    Err(RepositoryError::Storage(e)) if e.is_not_found() => {
                        Err(RepositoryError::NoSuchBackup {
                            store: self.describe(),
                            source_name: source.to_string(),
                            id: id.clone(),
                        })
                    }
                    other => other,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn manifest_kinds_are_stored_as_the_format_has_always_named_them() {
        use super::ManifestKind as M;
        for (kind, text) in [
            (M::PostgresDump, "postgres-dump"),
            (M::PostgresBase, "postgres-base"),
            (M::MysqlDump, "mysql-dump"),
            (M::KubernetesExport, "kubernetes-export"),
            (M::CommandOutput, "command"),
            (M::Unknown("etcd-snapshot".into()), "etcd-snapshot"),
        ] {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<M>(&json).unwrap(), kind);
            assert_eq!(kind.to_string(), text);
        }
        assert_eq!(M::PostgresBase.block(), Some("postgres"));
        assert_eq!(M::MysqlDump.block(), Some("mysql"));
        assert_eq!(M::Unknown("etcd-snapshot".into()).block(), None);
    }

    use super::*;

    #[test]
    fn backup_ids_sort_by_time_and_are_recognised() {
        let a = new_backup_id("2026-11-23T14:15:02Z".parse().unwrap());
        let b = new_backup_id("2026-11-23T14:15:03Z".parse().unwrap());
        assert!(a.starts_with("20261123T141502Z-") && a < b, "{a} {b}");
        assert!(is_backup_id(&a));
        for bad in [
            "notes",
            "20261123T141502Z",
            "20261123T141502Z-xyz1",
            "2026112XT141502Z-3f9a",
        ] {
            assert!(!is_backup_id(bad), "{bad}");
        }
    }
}
