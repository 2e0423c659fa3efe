//! lifeboat: backup and disaster recovery for PostgreSQL, MySQL/MariaDB and
//! Kubernetes configuration, streamed through compression
//! and age encryption into S3 or a local folder, restorable with one command
//! and verifiable without the key.
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | [`cli`] | argument parsing and output only; one file per subcommand |
//! | [`policy`] | policy files → typed, validated [`policy::Policy`]; errors carry file:line |
//! | [`storage`] | the [`storage::ObjectStore`] trait; `s3` and `local` backends |
//! | [`pipeline`] | encode: plaintext → sha256 → zstd/gzip → age → store; decode: the reverse, verifying hashes |
//! | [`repository`] | object key layout, manifests, listing backups |
//! | [`source`] | what the kinds share to produce plaintext streams (`tar`) |
//! | [`backup`] | one backup run: source → pipeline → repository, manifest last |
//! | [`restore`] | turning artifacts back into running state: dumps into a server, base backups + WAL into a data directory (`kinds::postgres::pitr`) |
//! | [`layout`] | the repository's key layout: every object key is made here |
//! | [`lock`] | per-source locks in the repository (claims, leases, takeover) |
//! | [`retention`] | pure planning: which backups to keep, and why |
//! | [`prune`] | applying retention to a source: backups, WAL and binlog archives, leftovers of crashed runs |
//! | [`catalog`] | the local SQLite index of backups and history of runs (rebuildable from the repository) |
//! | [`daemon`] | `lifeboat run`: schedules, supervised archivers, `/metrics`, reload and graceful stop |
//! | [`metrics`] | the Prometheus metrics the daemon exports |
//! | [`outcome`] | what kind of problem an error is (exit codes): each error type classifies itself |
//! | [`drill`] | restore drills: scratch servers, checks, RTO/RPO, reports in the repository |
//! | [`status`] | newest backup, last attempt and archive lag of each source |
//! | [`verify`] | checking stored objects, with or without the key |
//! | [`keys`] | age identities and recipients |
//! | [`kinds`] | everything one kind of source knows, in its folder: [`kinds::postgres`] (config, dumps, base backups, restores, PITR, the WAL archive, drills), [`kinds::mysql`] (config, dump, binlog archive, restore, drills), [`kinds::kubernetes`] (config, export, backup, restore, drills), [`kinds::command`]; [`kinds::registry`] lists them and holds the [`kinds::Kind`] trait |
//! | [`kube`] | the Kubernetes API client (kubeconfig, discovery, requests) used by backups, restores and drills |
//! | [`process`] | child processes (pg_dump, pg_restore) with secrets kept out of argv |
//! | [`progress`] | progress reports on long steps |
//! | [`clock`] | the wall clock behind a trait, so schedules and locks run under paused time in tests |
//!
//! Data flow of a backup: `policy` → `kinds::postgres::source` starts `pg_dump`
//! on an exported snapshot → `pipeline::encode` → `storage` writer →
//! `repository::Repository::write_manifest` (the commit point).

// One measured exception: `process::die_with_parent` (prctl between fork
// and exec, so children die with lifeboat). Everything else is safe code.
#![deny(unsafe_code)]

pub mod backup;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod daemon;
pub mod drill;
pub mod keys;
pub mod kinds;
pub mod kube;
pub mod layout;
pub mod lock;
pub mod metrics;
pub mod outcome;
pub mod pipeline;
pub mod policy;
pub mod process;
pub mod progress;
pub mod prune;
pub mod repository;
pub mod restore;
pub mod retention;
pub mod source;
pub mod status;
pub mod storage;
pub mod verify;
