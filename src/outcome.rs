//! What kind of problem an error is: each error type classifies itself
//! ([`Classify`], with exhaustive matches, so a new variant must be given
//! its outcome), and the CLI's exit code is the outcome of the first cause
//! in an error's chain that classifies itself ([`of_chain`]).

/// Exit status of a user-visible outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok = 0,
    Failure = 1,
    Usage = 2,
    Integrity = 3,
    NotFound = 4,
    Refused = 5,
    WrongKey = 6,
    Partial = 7,
}

impl From<Outcome> for std::process::ExitCode {
    fn from(o: Outcome) -> std::process::ExitCode {
        std::process::ExitCode::from(o as u8)
    }
}

/// An error that knows what kind of problem it is.
pub trait Classify {
    fn outcome(&self) -> Outcome;
}

/// Lists the error types that classify themselves: `classify_one` tries
/// each, and `CLASSIFIED` names them for the test that every error type of
/// the crate is listed.
macro_rules! classified {
    ($($ty:path),* $(,)?) => {
        fn classify_one(err: &(dyn std::error::Error + 'static)) -> Option<Outcome> {
            $(
                if let Some(e) = err.downcast_ref::<$ty>() {
                    return Some(Classify::outcome(e));
                }
            )*
            None
        }

        /// The paths of the error types that classify themselves.
        pub const CLASSIFIED: &[&str] = &[$(stringify!($ty)),*];
    };
}

classified![
    crate::backup::BackupError,
    crate::kinds::mysql::binlog::BinlogError,
    crate::catalog::CatalogError,
    crate::cli::UsageError,
    crate::daemon::DaemonError,
    crate::kinds::kubernetes::scratch::KubeDrillError,
    crate::drill::DrillError,
    crate::kinds::postgres::drill::RecoveryError,
    crate::drill::scratch::ScratchError,
    crate::keys::KeyError,
    crate::kinds::Failure,
    crate::lock::LockError,
    crate::pipeline::PipelineError,
    crate::policy::PolicyError,
    crate::process::ProcessError,
    crate::prune::PruneError,
    crate::repository::RepositoryError,
    crate::kinds::kubernetes::restore::KubeRestoreError,
    crate::kinds::mysql::restore::MyRestoreError,
    crate::kinds::mysql::restore::ReplayError,
    crate::kinds::mysql::restore::BinlogGap,
    crate::kinds::postgres::pitr::PitrError,
    crate::kinds::postgres::pitr::GapError,
    crate::kinds::postgres::restore::RestoreError,
    crate::kube::KubeError,
    crate::kinds::mysql::source::MyError,
    crate::kinds::postgres::source::PgError,
    crate::storage::StorageError,
    crate::kinds::postgres::wal::archive::WalError,
    crate::kinds::postgres::wal::end::EndError,
];

/// The outcome of the first error in `chain` that classifies itself;
/// `Failure` when none does.
pub fn of_chain<'a>(
    chain: impl IntoIterator<Item = &'a (dyn std::error::Error + 'static)>,
) -> Outcome {
    chain
        .into_iter()
        .find_map(classify_one)
        .unwrap_or(Outcome::Failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Error types that deliberately do not classify themselves, and why.
    const UNCLASSIFIED: &[(&str, &str)] = &[(
        "Interrupted",
        "a signal: the exit code is 128 + the signal's number, not an outcome",
    )];

    /// Every `thiserror` type in the crate's sources.
    fn error_types() -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut todo = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        while let Some(dir) = todo.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    todo.push(path);
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let mut derive = false;
                for line in text.lines().map(str::trim) {
                    if line.starts_with("#[derive(") && line.contains("thiserror::Error") {
                        derive = true;
                    } else if derive && !line.starts_with("#[") && !line.starts_with("///") {
                        let name = line
                            .split_whitespace()
                            .skip_while(|w| *w != "enum" && *w != "struct")
                            .nth(1)
                            .map(|w| {
                                w.chars()
                                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                                    .collect::<String>()
                            });
                        if let Some(name) = name {
                            out.push((name, path.display().to_string()));
                        }
                        derive = false;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn every_error_type_of_the_crate_classifies_itself() {
        let types = error_types();
        assert!(types.len() >= 25, "the scan found {types:?}");
        let listed: Vec<&str> = CLASSIFIED
            .iter()
            .map(|p| p.rsplit("::").next().unwrap().trim())
            .collect();
        for (name, file) in &types {
            if UNCLASSIFIED.iter().any(|(n, _)| n == name) {
                continue;
            }
            // A kind's own errors reach the CLI inside `kinds::Failure`,
            // which classifies by them; they must implement Classify (the
            // compiler checks `Failure::new`'s bound where they are used).
            let text = std::fs::read_to_string(file).unwrap();
            if file.contains("/src/kinds/")
                && !listed.contains(&name.as_str())
                && (text.contains(&format!("impl Classify for {name} "))
                    || text.contains(&format!("impl crate::outcome::Classify for {name} ")))
            {
                continue;
            }
            assert!(
                listed.contains(&name.as_str()),
                "{name} ({file}) does not classify itself: implement outcome::Classify for it and list it in outcome::classified!"
            );
        }
    }

    #[test]
    fn the_first_cause_that_classifies_itself_decides() {
        use crate::storage::StorageError;
        let not_found = StorageError::NotFound {
            store: "s3://b".into(),
            key: "k".into(),
        };
        let io = std::io::Error::other("plain");
        assert_eq!(
            of_chain([&io as &(dyn std::error::Error + 'static)]),
            Outcome::Failure
        );
        assert_eq!(
            of_chain([
                &io as &(dyn std::error::Error + 'static),
                &not_found as &(dyn std::error::Error + 'static),
            ]),
            Outcome::NotFound
        );
        // A wrapper classifies by what it wraps.
        let wrapped = crate::pipeline::PipelineError::Storage(not_found);
        assert_eq!(
            of_chain([&wrapped as &(dyn std::error::Error + 'static)]),
            Outcome::NotFound
        );
        let lock = crate::lock::LockError::Storage {
            source_name: "db".into(),
            error: StorageError::NoFolder { path: "/x".into() },
        };
        assert_eq!(lock.outcome(), Outcome::Failure);
    }
}
