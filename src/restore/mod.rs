//! Restores: turning artifacts back into running state.
//!
//! Every restore first builds a plan (which backup, which artifacts, which
//! target and what will happen to it), shows it, and with `--dry-run` stops
//! there. Then it checks what it can before touching the target (the
//! identity decrypts, the inventory is intact), restores, and compares the
//! result with the inventory taken at backup time.

use serde::Serialize;

/// One table whose restored row count differs from the inventory.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Mismatch {
    pub table: String,
    pub expected: i64,
    /// `None` when the table is missing after the restore.
    pub found: Option<i64>,
}

/// The comparison of a restored database with its inventory.
#[derive(Debug, Clone, Serialize)]
pub struct InventoryCheck {
    pub tables_checked: usize,
    pub rows_expected: i64,
    pub large_objects_expected: i64,
    pub large_objects_found: i64,
    pub mismatches: Vec<Mismatch>,
}

impl InventoryCheck {
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty() && self.large_objects_expected == self.large_objects_found
    }
}
