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
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            algorithm: Algorithm::Zstd,
            level: None,
        }
    }
}

impl CompressionConfig {
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
