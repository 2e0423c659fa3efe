//! Sources: producing plaintext streams of protected systems, and the
//! consistency points they were taken at.

pub mod kubernetes;
pub mod mysql;
pub mod tar;
