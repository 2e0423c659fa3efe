//! PostgreSQL: everything lifeboat knows about PostgreSQL sources.
//!
//! - [`config`]: the `postgres:` block of a source in a policy file;
//! - [`source`]: connections, tool discovery, snapshots, inventories;
//! - [`backup`]: the dump backup, pg_dump of each database with its
//!   row-count inventory;
//! - [`base`]: the base backup, pg_basebackup of the whole cluster for
//!   point-in-time recovery;
//! - [`restore`]: a dump restored into a database with pg_restore;
//! - [`pitr`]: point-in-time recovery, a base backup and the archived WAL
//!   into a data directory;
//! - [`wal`]: WAL file names and LSNs, the WAL archive (`wal-push`,
//!   `wal-fetch`), what it can recover to;
//! - [`drill`]: PostgreSQL drills, dumps and base backups restored and checked;
//! - [`scratch`]: the throwaway PostgreSQL cluster of drills.

pub(crate) mod backup;
pub(crate) mod base;
pub mod config;
pub(crate) mod drill;
pub mod pitr;
pub mod restore;
pub mod scratch;
pub mod source;
pub mod wal;
