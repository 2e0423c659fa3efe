//! The WAL archive: `wal-push` (PostgreSQL's `archive_command`) and
//! `wal-fetch` (its `restore_command`).
//!
//! Each archived file is one object, compressed and encrypted like every
//! artifact, written with a single PUT. Its key carries its digests, so the
//! archive needs no manifest per segment and a listing is self-describing:
//!
//! ```text
//! wal/<policy>/<source>/<file name>/<plaintext sha256>-<plaintext size>-<stored sha256>.<zst|gz>.age
//! ```
//!
//! A second push of the same name finds the first by listing
//! `wal/<policy>/<source>/<file name>/`: the same plaintext digest is a
//! success without an upload (PostgreSQL retries after a crash), a
//! different one is refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::WalFile;
use crate::keys::Identities;
use crate::pipeline::{self, Digest, EncodeSettings, Expected, PipelineError};
use crate::policy::Algorithm;
use crate::storage::{ObjectStore, StorageError};

/// The largest file `wal-push` accepts (the largest WAL segment size).
const MAX_FILE: u64 = 1 << 30;
/// Where `wal-fetch` keeps prefetched segments, inside `pg_wal`.
pub const SPOOL_DIR: &str = ".lifeboat-prefetch";

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{path}: not a WAL file name PostgreSQL archives (a 24-hex-digit segment, .partial, .backup or .history); archive_command must pass %p")]
    NotWalFile { path: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is {size} bytes, larger than any WAL segment; refusing to archive it")]
    TooLarge { path: String, size: u64 },
    #[error("{name} is already archived with different content (stored {existing}, sha256 {existing_sha}; this file has sha256 {new_sha}). Two servers may be archiving into the same policy and source: give each its own source name. Nothing was overwritten")]
    Conflict {
        name: String,
        existing: String,
        existing_sha: String,
        new_sha: String,
    },
    #[error("the archive holds {count} different versions of {name} ({keys}); remove the wrong one after checking which server wrote it")]
    Ambiguous {
        name: String,
        count: usize,
        keys: String,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

impl crate::outcome::Classify for WalError {
    fn outcome(&self) -> crate::outcome::Outcome {
        use crate::outcome::Outcome;
        match self {
            Self::NotWalFile { .. } => Outcome::Usage,
            Self::Conflict { .. } | Self::Ambiguous { .. } => Outcome::Integrity,
            Self::Pipeline(e) => e.outcome(),
            Self::Storage(e) => e.outcome(),
            Self::Read { .. } | Self::TooLarge { .. } | Self::Write { .. } => Outcome::Failure,
        }
    }
}

/// One archived file, as its key describes it.
#[derive(Debug, Clone)]
pub struct ArchivedFile {
    pub name: String,
    pub file: WalFile,
    pub key: String,
    pub plaintext: Digest,
    pub stored: Digest,
    pub compression: Algorithm,
    pub archived_at: Option<DateTime<Utc>>,
}

impl ArchivedFile {
    pub fn expected(&self) -> Expected {
        Expected {
            key: self.key.clone(),
            compression: self.compression,
            stored: self.stored.clone(),
            plaintext: self.plaintext.clone(),
            recipients: Vec::new(),
        }
    }
}

/// The archive's key prefix for one source.
pub fn prefix(policy: &str, source: &str) -> String {
    crate::layout::wal_prefix(policy, source)
}

fn object_key(
    policy: &str,
    source: &str,
    name: &str,
    enc: &pipeline::Encoded,
    alg: Algorithm,
) -> String {
    format!(
        "{}{name}/{}-{}-{}.{}.age",
        prefix(policy, source),
        enc.plaintext.sha256,
        enc.plaintext.size,
        enc.stored.sha256,
        alg.extension()
    )
}

/// Reads a listed key back; `None` for anything that is not an archived file.
fn parse_key(prefix: &str, meta: &crate::storage::ObjectMeta) -> Option<ArchivedFile> {
    let rest = meta.key.strip_prefix(prefix)?;
    let (name, object) = rest.split_once('/')?;
    let file = WalFile::parse(name)?;
    let object = object.strip_suffix(".age")?;
    let (digests, ext) = object.rsplit_once('.')?;
    let compression = match ext {
        "zst" => Algorithm::Zstd,
        "gz" => Algorithm::Gzip,
        _ => return None,
    };
    let mut parts = digests.split('-');
    let (plain_sha, plain_size, stored_sha) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || plain_sha.len() != 64 || stored_sha.len() != 64 {
        return None;
    }
    Some(ArchivedFile {
        name: name.to_string(),
        file,
        key: meta.key.clone(),
        plaintext: Digest {
            size: plain_size.parse().ok()?,
            sha256: plain_sha.to_string(),
        },
        stored: Digest {
            size: meta.size,
            sha256: stored_sha.to_string(),
        },
        compression,
        archived_at: meta.modified,
    })
}

/// Everything archived for a source, sorted by name.
#[derive(Debug, Default)]
pub struct Listing {
    pub files: Vec<ArchivedFile>,
    /// Keys under the prefix that are not archived files (left by hand?).
    pub unrecognized: Vec<String>,
}

pub async fn list(
    store: &dyn ObjectStore,
    policy: &str,
    source: &str,
) -> Result<Listing, StorageError> {
    let prefix = prefix(policy, source);
    let mut out = Listing::default();
    for meta in store.list(&prefix).await? {
        match parse_key(&prefix, &meta) {
            Some(f) => out.files.push(f),
            None => out.unrecognized.push(meta.key),
        }
    }
    out.files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The stored versions of one file name.
async fn find(
    store: &dyn ObjectStore,
    policy: &str,
    source: &str,
    name: &str,
) -> Result<Vec<ArchivedFile>, StorageError> {
    let prefix = prefix(policy, source);
    Ok(store
        .list(&format!("{prefix}{name}/"))
        .await?
        .iter()
        .filter_map(|m| parse_key(&prefix, m))
        .collect())
}

/// What `push` did.
#[derive(Debug)]
pub enum Pushed {
    Stored {
        key: String,
        encoded: pipeline::Encoded,
    },
    /// The same content was archived before (PostgreSQL retried).
    AlreadyArchived { key: String },
}

/// Archives one file from `pg_wal`. Returns only once the object is
/// durably stored (or was already).
pub async fn push(
    store: &dyn ObjectStore,
    policy: &str,
    source: &str,
    settings: &EncodeSettings,
    path: &Path,
) -> Result<Pushed, WalError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| WalFile::parse(n).is_some())
        .ok_or_else(|| WalError::NotWalFile {
            path: path.display().to_string(),
        })?
        .to_string();
    let read_err = |source| WalError::Read {
        path: path.display().to_string(),
        source,
    };
    let size = tokio::fs::metadata(path).await.map_err(read_err)?.len();
    if size > MAX_FILE {
        return Err(WalError::TooLarge {
            path: path.display().to_string(),
            size,
        });
    }
    // Reading and listing overlap; both are needed before deciding.
    let (data, existing) = tokio::join!(tokio::fs::read(path), find(store, policy, source, &name));
    let data = data.map_err(read_err)?;
    let existing = existing?;
    if let Some(first) = existing.first() {
        let sha = tokio::task::spawn_blocking(move || {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(&data))
        })
        .await
        .expect("hash thread panicked");
        return match existing.iter().find(|e| e.plaintext.sha256 == sha) {
            Some(same) => Ok(Pushed::AlreadyArchived {
                key: same.key.clone(),
            }),
            None => Err(WalError::Conflict {
                name,
                existing: first.key.clone(),
                existing_sha: first.plaintext.sha256.clone(),
                new_sha: sha,
            }),
        };
    }
    let settings = settings.clone();
    let alg = settings.compression.algorithm;
    let key_name = name.clone();
    let (stored, encoded) =
        tokio::task::spawn_blocking(move || pipeline::encode_bytes(&data, &settings, &key_name))
            .await
            .expect("encode thread panicked")?;
    let key = object_key(policy, source, &name, &encoded, alg);
    match store.put(&key, stored.into()).await {
        Ok(()) => Ok(Pushed::Stored { key, encoded }),
        // Same key means same digests: an identical earlier attempt landed.
        Err(StorageError::AlreadyExists { .. }) => Ok(Pushed::AlreadyArchived { key }),
        Err(e) => Err(e.into()),
    }
}

/// Writes one archived file, decoded and checked against its recorded
/// hashes, to `dest`.
pub async fn fetch_to(
    store: &dyn ObjectStore,
    file: &ArchivedFile,
    identities: &Arc<Identities>,
    dest: &Path,
) -> Result<(), WalError> {
    let data = fetch_one(store, file, identities).await?;
    write_atomic(dest, &data).await
}

/// Downloads, decrypts and checks one archived file.
async fn fetch_one(
    store: &dyn ObjectStore,
    file: &ArchivedFile,
    identities: &Arc<Identities>,
) -> Result<Vec<u8>, WalError> {
    let stored = store.get_bytes(&file.key).await?;
    let expected = file.expected();
    let ids = Arc::clone(identities);
    let plain =
        tokio::task::spawn_blocking(move || pipeline::decode_bytes(&stored, &expected, &ids))
            .await
            .expect("decode thread panicked")?;
    Ok(plain)
}

/// Writes a file so that it appears whole or not at all.
async fn write_atomic(path: &Path, data: &[u8]) -> Result<(), WalError> {
    let write_err = |source| WalError::Write {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("lifeboat-tmp");
    tokio::fs::write(&tmp, data).await.map_err(write_err)?;
    tokio::fs::rename(&tmp, path).await.map_err(write_err)
}

/// The one stored version of `name`, if any.
fn single(name: &str, versions: Vec<ArchivedFile>) -> Result<Option<ArchivedFile>, WalError> {
    let first = match versions.first() {
        None => return Ok(None),
        Some(f) => f.clone(),
    };
    if versions
        .iter()
        .any(|v| v.plaintext.sha256 != first.plaintext.sha256)
    {
        return Err(WalError::Ambiguous {
            name: name.to_string(),
            count: versions.len(),
            keys: versions
                .iter()
                .map(|v| v.key.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(Some(first))
}

/// Fetches `name` to `dest` for PostgreSQL's recovery and prefetches the
/// next `prefetch` segments of the same timeline into a spool folder beside
/// `dest`, where the next calls find them. Returns `false` when the archive
/// does not hold `name` (the normal end of recovery).
pub async fn fetch(
    store: &dyn ObjectStore,
    policy: &str,
    source: &str,
    identities: Arc<Identities>,
    name: &str,
    dest: &Path,
    prefetch: u32,
) -> Result<bool, WalError> {
    let spool = spool_dir(dest);
    let file = WalFile::parse(name);
    let spooled = spool.join(name);
    if tokio::fs::metadata(&spooled).await.is_ok() {
        tokio::fs::rename(&spooled, dest)
            .await
            .map_err(|source| WalError::Write {
                path: dest.display().to_string(),
                source,
            })?;
        tracing::debug!(name, "served from the prefetch spool");
        let left = clean_spool(&spool, name).await;
        // Refill in parallel batches once half the window is used, so most
        // calls return at once instead of waiting for one download each.
        if left < (prefetch as usize).div_ceil(2) {
            prefetch_after(store, policy, source, &identities, file, &spool, prefetch).await;
        }
        return Ok(true);
    }
    let wanted = async {
        let Some(found) = single(name, find(store, policy, source, name).await?)? else {
            return Ok(false);
        };
        let data = fetch_one(store, &found, &identities).await?;
        write_atomic(dest, &data).await?;
        Ok::<_, WalError>(true)
    };
    let ahead = prefetch_after(store, policy, source, &identities, file, &spool, prefetch);
    let (found, ()) = tokio::join!(wanted, ahead);
    if found? {
        let _ = clean_spool(&spool, name).await;
        Ok(true)
    } else {
        Ok(false)
    }
}

fn spool_dir(dest: &Path) -> PathBuf {
    dest.parent()
        .unwrap_or_else(|| Path::new("."))
        .join(SPOOL_DIR)
}

/// Fills the spool with the segments after `file` that are not there yet.
/// Failures only cost speed: the real fetch reports them.
async fn prefetch_after(
    store: &dyn ObjectStore,
    policy: &str,
    source: &str,
    identities: &Arc<Identities>,
    file: Option<WalFile>,
    spool: &Path,
    prefetch: u32,
) {
    let Some(WalFile::Segment { timeline, .. }) = file else {
        return;
    };
    if prefetch == 0 {
        return;
    }
    // The name encodes the segment number for any segment size: bump the
    // low 32 bits of the (log, seg) pair as PostgreSQL would with 16 MiB;
    // other sizes are found by trying the 16 MiB successor only.
    let segno = file
        .and_then(|f| f.segno(super::DEFAULT_SEGMENT_SIZE))
        .expect("segments have numbers");
    if tokio::fs::create_dir_all(spool).await.is_err() {
        return;
    }
    let names: Vec<String> = (1..=prefetch as u64)
        .map(|i| super::segment_name(timeline, segno + i, super::DEFAULT_SEGMENT_SIZE))
        .collect();
    let jobs = names.into_iter().map(|n| async move {
        let path = spool.join(&n);
        if tokio::fs::metadata(&path).await.is_ok() {
            return;
        }
        let result = async {
            if let Some(found) = single(&n, find(store, policy, source, &n).await?)? {
                let data = fetch_one(store, &found, identities).await?;
                write_atomic(&path, &data).await?;
            }
            Ok::<_, WalError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::debug!(name = %n, error = %e, "prefetch failed; the segment will be fetched when asked for");
        }
    });
    futures::future::join_all(jobs).await;
}

/// Removes spooled segments at or before `name`: recovery has passed them.
/// Returns how many are left.
async fn clean_spool(spool: &Path, name: &str) -> usize {
    let Ok(mut entries) = tokio::fs::read_dir(spool).await else {
        return 0;
    };
    let mut left = 0;
    while let Ok(Some(e)) = entries.next_entry().await {
        let n = e.file_name();
        let n = n.to_string_lossy();
        if (n.as_ref() <= name && n.len() == name.len()) || n.ends_with(".lifeboat-tmp") {
            let _ = tokio::fs::remove_file(e.path()).await;
        } else {
            left += 1;
        }
    }
    left
}
