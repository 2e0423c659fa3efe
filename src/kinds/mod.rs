//! Source kinds: everything one kind of source knows lives in its folder.

pub mod kubernetes;
pub mod mysql;
pub mod postgres;
