//! A repository in a local folder (a disk, an NFS mount, a PVC).
//!
//! Writes go to `.tmp/` under the root, are fsynced, then hard-linked to
//! their final name: the link fails if the name exists, so an object is
//! never overwritten, and a crash leaves only a temp file, never a partial
//! object under a real key.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use super::{ObjectMeta, ObjectReader, ObjectStore, ObjectWriter, StorageError};

/// A folder holding a repository.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

const TMP_DIR: &str = ".tmp";

fn io_err(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StorageError {
    let path = path.to_path_buf();
    move |source| StorageError::Io {
        operation,
        path,
        source,
    }
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStore { root: root.into() }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    async fn healthcheck(&self, write: bool) -> Result<(), StorageError> {
        if !write {
            return match tokio::fs::metadata(&self.root).await {
                Ok(m) if m.is_dir() => Ok(()),
                Ok(_) => Err(io_err("open repository folder", &self.root)(
                    std::io::Error::other("not a folder"),
                )),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StorageError::NoFolder {
                    path: self.root.clone(),
                }),
                Err(e) => Err(io_err("open repository folder", &self.root)(e)),
            };
        }
        let tmp = self.root.join(TMP_DIR);
        tokio::fs::create_dir_all(&tmp)
            .await
            .map_err(io_err("create repository folder", &tmp))?;
        let probe = tmp.join(format!("healthcheck-{}", rand::random::<u64>()));
        tokio::fs::write(&probe, b"ok")
            .await
            .map_err(io_err("write to repository folder", &probe))?;
        tokio::fs::remove_file(&probe)
            .await
            .map_err(io_err("remove", &probe))?;
        Ok(())
    }

    async fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        let final_path = self.path(key);
        if tokio::fs::try_exists(&final_path).await.unwrap_or(false) {
            return Err(StorageError::AlreadyExists {
                store: self.describe(),
                key: key.to_string(),
            });
        }
        let tmp_dir = self.root.join(TMP_DIR);
        tokio::fs::create_dir_all(&tmp_dir)
            .await
            .map_err(io_err("create folder", &tmp_dir))?;
        let tmp_path = tmp_dir.join(format!("{:016x}", rand::random::<u64>()));
        let file = tokio::fs::File::create(&tmp_path)
            .await
            .map_err(io_err("create", &tmp_path))?;
        Ok(Box::new(LocalWriter {
            store: self.describe(),
            key: key.to_string(),
            file: Some(file),
            tmp_path,
            final_path,
            size: 0,
        }))
    }

    async fn get(&self, key: &str) -> Result<ObjectReader, StorageError> {
        let path = self.path(key);
        match tokio::fs::File::open(&path).await {
            Ok(f) => Ok(Box::pin(tokio::io::BufReader::with_capacity(256 * 1024, f))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StorageError::NotFound {
                store: self.describe(),
                key: key.to_string(),
            }),
            Err(e) => Err(io_err("open", &path)(e)),
        }
    }

    async fn head(&self, key: &str) -> Result<Option<u64>, StorageError> {
        let path = self.path(key);
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("stat", &path)(e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || list_blocking(&root, &prefix))
            .await
            .expect("listing task panicked")
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &path)(e)),
        }
    }

    /// Temp files of writes that never finished (shared by every prefix:
    /// they carry no key).
    async fn unfinished(&self, _prefix: &str) -> Result<Vec<super::Unfinished>, StorageError> {
        let dir = self.root.join(TMP_DIR);
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("list", &dir)(e)),
        };
        let mut out = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(io_err("list", &dir))? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let started = entry
                .metadata()
                .await
                .ok()
                .and_then(|m| m.modified().ok())
                .map(chrono::DateTime::<chrono::Utc>::from);
            out.push(super::Unfinished {
                key: format!("{TMP_DIR}/{name}"),
                id: name,
                started,
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn discard(&self, write: &super::Unfinished) -> Result<(), StorageError> {
        let path = self.root.join(TMP_DIR).join(&write.id);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &path)(e)),
        }
    }
}

fn list_blocking(root: &Path, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
    // Walk only the folder the prefix points into.
    let start_rel = match prefix.rfind('/') {
        Some(i) => &prefix[..i],
        None => "",
    };
    let mut out = Vec::new();
    let mut stack = vec![root.join(start_rel)];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("list", &dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err("list", &dir))?;
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .expect("walk stays under the root")
                .to_string_lossy()
                .into_owned();
            if rel == TMP_DIR {
                continue;
            }
            let meta = entry.metadata().map_err(io_err("stat", &path))?;
            if meta.is_dir() {
                stack.push(path);
            } else if rel.starts_with(prefix) {
                out.push(ObjectMeta {
                    key: rel,
                    size: meta.len(),
                    modified: meta
                        .modified()
                        .ok()
                        .map(chrono::DateTime::<chrono::Utc>::from),
                });
            }
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

struct LocalWriter {
    store: String,
    key: String,
    file: Option<tokio::fs::File>,
    tmp_path: PathBuf,
    final_path: PathBuf,
    size: u64,
}

#[async_trait]
impl ObjectWriter for LocalWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        let file = self.file.as_mut().expect("write after finish");
        file.write_all(&chunk)
            .await
            .map_err(io_err("write", &self.tmp_path))?;
        self.size += chunk.len() as u64;
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64, StorageError> {
        let mut file = self.file.take().expect("finish twice");
        let result = async {
            file.flush()
                .await
                .map_err(io_err("write", &self.tmp_path))?;
            // The data must be on disk before the name points at it.
            file.sync_all()
                .await
                .map_err(io_err("fsync", &self.tmp_path))?;
            drop(file);
            let parent = self.final_path.parent().expect("keys have a parent");
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(io_err("create folder", parent))?;
            match tokio::fs::hard_link(&self.tmp_path, &self.final_path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(StorageError::AlreadyExists {
                        store: self.store.clone(),
                        key: self.key.clone(),
                    })
                }
                Err(e) => return Err(io_err("link", &self.final_path)(e)),
            }
            // Make the new name itself durable.
            let dir = tokio::fs::File::open(parent)
                .await
                .map_err(io_err("open", parent))?;
            dir.sync_all().await.map_err(io_err("fsync", parent))?;
            Ok(self.size)
        }
        .await;
        let _ = tokio::fs::remove_file(&self.tmp_path).await;
        result
    }

    async fn abort(mut self: Box<Self>) {
        self.file.take();
        let _ = tokio::fs::remove_file(&self.tmp_path).await;
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        // Dropped without finish or abort (a cancelled task): leave no temp file.
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}
