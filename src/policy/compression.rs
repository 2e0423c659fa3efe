//! The `compression:` section.

use super::*;

/// Compression applied before encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionConfig {
    /// `zstd` (default) or `gzip`.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// zstd: 1-19 (default 1: on pg_dump output it is about 2.5x faster
    /// than level 3 at a similar ratio, see docs/BENCHMARKS.md); gzip: 1-9
    /// (default 6).
    #[serde(default)]
    pub level: Option<i32>,
    /// zstd worker threads for backups (default: the cores the backup's
    /// producer leaves free, at most [`MAX_AUTO_THREADS`]). WAL segments
    /// and binlogs always use one.
    /// Memory grows by about 4x the window per thread (8 MiB at level 3).
    #[serde(default)]
    pub threads: Option<u32>,
}

/// The most compression threads chosen without `threads:`.
pub const MAX_AUTO_THREADS: u32 = 8;

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            algorithm: Algorithm::Zstd,
            level: None,
            threads: None,
        }
    }
}

impl CompressionConfig {
    /// Compression threads for a backup whose producer keeps `busy` cores
    /// of this machine busy (pg_dump, mariadb-dump or the Kubernetes
    /// export: 1; pg_basebackup, which only streams files: 0): `threads:`,
    /// else the cores left, at least one and at most [`MAX_AUTO_THREADS`].
    pub fn backup_threads(&self, busy: u32) -> u32 {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1)
                .saturating_sub(busy)
                .clamp(1, MAX_AUTO_THREADS)
        })
    }

    /// The level to use, the algorithm's default when unset.
    pub fn effective_level(&self) -> i32 {
        self.level.unwrap_or(match self.algorithm {
            Algorithm::Zstd => 1,
            Algorithm::Gzip => 6,
        })
    }
}

/// A compression algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    #[default]
    Zstd,
    Gzip,
}

impl Algorithm {
    /// The file extension used in object keys.
    pub fn extension(self) -> &'static str {
        match self {
            Algorithm::Zstd => "zst",
            Algorithm::Gzip => "gz",
        }
    }
}
