//! What a restore did to each object, and the report built from it.

use std::collections::BTreeMap;

use serde::Serialize;

use super::SkipReason;

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Created,
    Updated,
    Unchanged,
    Skipped,
    Failed,
    /// Dry run: would be created / replaced.
    WouldCreate,
    WouldUpdate,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "FAILED",
            Outcome::WouldCreate => "would create",
            Outcome::WouldUpdate => "would update",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ObjectResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub outcome: Outcome,
    /// Why it was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<SkipReason>,
    /// Why it was skipped, the server's message when it failed, or what
    /// the restore changed.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub backup: String,
    pub server: String,
    pub dry_run: bool,
    pub objects: Vec<ObjectResult>,
    pub not_selected: usize,
    pub seconds: f64,
}

impl Report {
    pub fn count(&self, outcome: Outcome) -> usize {
        self.objects.iter().filter(|o| o.outcome == outcome).count()
    }
    pub fn failed(&self) -> bool {
        self.count(Outcome::Failed) > 0
    }
    /// Skipped objects, counted per reason.
    pub fn skipped_by_reason(&self) -> BTreeMap<SkipReason, usize> {
        let mut out = BTreeMap::new();
        for r in self.objects.iter().filter_map(|o| o.reason) {
            *out.entry(r).or_default() += 1;
        }
        out
    }
}

/// "2 harmless-copy rules, 1 exists and differs" (empty: "none").
pub fn describe_skips(counts: &BTreeMap<SkipReason, usize>) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(r, n)| format!("{n} {}", r.label()))
        .collect::<Vec<_>>()
        .join(", ")
}
