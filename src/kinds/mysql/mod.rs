//! MySQL and MariaDB sources: everything lifeboat knows about them.

pub mod backup;
pub mod binlog;
pub mod config;
pub mod drill;
pub mod restore;
pub mod scratch;
pub mod source;
