//! Source kinds: everything one kind of source knows lives in its folder,
//! behind the [`Kind`] trait; [`registry`] lists the kinds (one line each)
//! and makes the policy's `Source`, `SourceKind` and `ManifestKind` from
//! that list.

pub mod command;
pub mod kubernetes;
pub mod mysql;
pub mod postgres;
pub mod registry;

pub use registry::*;
