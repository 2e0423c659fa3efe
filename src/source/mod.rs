//! Sources: producing plaintext streams of protected systems, and the
//! consistency points they were taken at.

pub mod tar;
