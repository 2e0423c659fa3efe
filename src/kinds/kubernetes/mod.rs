//! Kubernetes: everything lifeboat knows about `kubernetes` sources (the
//! API client they share with other commands is [`crate::kube`]).
//!
//! - [`config`]: the `kubernetes:` block of a source in a policy file;
//! - [`export`]: the export, every selected object as YAML into a tar;
//! - [`clean`]: what an export leaves out and strips (events, tokens,
//!   controller-owned objects, server-set fields);
//! - [`yaml`]: the YAML emitter of exported objects;
//! - [`backup`]: the backup, the export streamed through the pipeline;
//! - [`restore`]: an export applied into a cluster or written to a folder;
//! - [`drill`]: Kubernetes drills, an export applied into scratch namespaces
//!   and checked;
//! - [`scratch`]: the scratch namespaces of drills, made, swept and deleted.

pub(crate) mod backup;
pub mod clean;
pub mod config;
pub(crate) mod drill;
pub mod export;
pub mod restore;
pub mod scratch;
pub mod yaml;
