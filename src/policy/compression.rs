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
    /// zstd worker threads for backups (default: one per core, at most
    /// [`MAX_AUTO_THREADS`]). WAL segments and binlogs always use one.
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
    /// Compression threads for a backup: `threads:`, else one per core
    /// this process may use (at most [`MAX_AUTO_THREADS`]).
    pub fn backup_threads(&self) -> u32 {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1)
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
