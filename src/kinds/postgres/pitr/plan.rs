//! The plan of a point-in-time restore, made from manifests and the WAL
//! archive's listing before anything is written: which base backup, what
//! the archive lets recovery reach from it, and what recovery is told.

use std::path::Path;

use super::{decide, server_major, when, EndReader, PitrError, PitrPlan, Target};
use crate::kinds::postgres::source::{PgError, PgTools};
use crate::kinds::postgres::wal::archive;
use crate::kinds::postgres::wal::reach::{Reach, WalIndex};
use crate::repository::{Manifest, Physical, Repository, RepositoryError};

/// Builds the plan. `backup` picks a base backup by id instead of by target.
pub async fn plan(
    repo: &Repository,
    policy: &str,
    source: &str,
    target: Target,
    backup: Option<&str>,
    datadir: &Path,
    reader: Option<EndReader<'_>>,
) -> Result<PitrPlan, PitrError> {
    let listing = repo.list_backups(policy, Some(source)).await?;
    let mut warnings: Vec<String> = listing
        .unreadable
        .iter()
        .map(|u| format!("manifest {} cannot be read: {}", u.key, u.error))
        .collect();
    let manifest = choose_base(
        repo,
        source,
        &listing.backups,
        backup,
        &target,
        &mut warnings,
    )?;
    let physical = manifest.physical.clone().expect("chosen a base backup");
    let wal = archive::list(repo.store().as_ref(), policy, source).await?;
    for key in &wal.unrecognized {
        warnings.push(format!(
            "{key} in the WAL archive is not an archived file; it is ignored"
        ));
    }
    let index = WalIndex::new(&wal.files, physical.wal_segment_size);
    let reach = index.reach(physical.timeline, physical.start_lsn);
    check_consistent(manifest, &physical, &reach)?;
    let end = match reader {
        Some(r) => {
            let major = server_major(&manifest.server_version);
            match waldump_tools(r.bin_dir, major).await {
                Ok(tools) => Some(
                    crate::kinds::postgres::wal::end::find(
                        repo.store().as_ref(),
                        &wal.files,
                        &reach,
                        physical.start_lsn,
                        physical.wal_segment_size,
                        r.identities,
                        &tools,
                    )
                    .await?,
                ),
                // These targets are judged by segment names as before; the
                // others cannot be decided without the archive's end.
                Err(e) if matches!(target, Target::Latest | Target::Xid(_) | Target::Name(_)) => {
                    warnings.push(format!("{e}; the newest archived transaction is not shown"));
                    None
                }
                Err(e) => return Err(e),
            }
        }
        None => {
            warnings.push(
                "without --identity the plan reads segment names only; pass --identity to check the exact end of the archive (the newest archived transaction)".into(),
            );
            None
        }
    };
    let decided = decide::decide(&target, &reach, end.as_ref(), &manifest.id)?;
    warnings.extend(decided.warnings);
    Ok(PitrPlan {
        policy: policy.to_string(),
        source: source.to_string(),
        backup: manifest.id.clone(),
        backup_finished_at: manifest.finished_at,
        server_version: manifest.server_version.clone(),
        base_stored_size: manifest.stored_size(),
        base_plaintext_size: manifest.plaintext_size(),
        physical,
        target,
        recovery: decided.recovery,
        notice: decided.notice,
        reach,
        end,
        datadir: datadir.to_path_buf(),
        warnings,
        manifest: manifest.clone(),
    })
}

/// The base backup to recover from: `backup` when given (it must be a base
/// backup), else the newest that is consistent before the target. Where
/// the listing cannot place the target (a transaction or a restore point),
/// the newest, with a warning.
fn choose_base<'a>(
    repo: &Repository,
    source: &str,
    backups: &'a [Manifest],
    backup: Option<&str>,
    target: &Target,
    warnings: &mut Vec<String>,
) -> Result<&'a Manifest, PitrError> {
    let bases: Vec<&Manifest> = backups.iter().filter(|m| m.physical.is_some()).collect();
    Ok(match backup {
        Some(id) => {
            let m = backups.iter().find(|m| m.id == id).ok_or_else(|| {
                RepositoryError::NoSuchBackup {
                    store: repo.describe(),
                    source_name: source.to_string(),
                    id: id.to_string(),
                }
            })?;
            if m.physical.is_none() {
                return Err(PitrError::NotABaseBackup {
                    id: m.id.clone(),
                    kind: m.kind.to_string(),
                });
            }
            m
        }
        None => {
            let newest = bases.last().ok_or_else(|| PitrError::NoBaseBackups {
                source_name: source.to_string(),
                store: repo.describe(),
            })?;
            let first = bases[0];
            match target {
                Target::Time(t) => *bases
                    .iter()
                    .rev()
                    .find(|m| m.finished_at <= *t)
                    .ok_or_else(|| PitrError::BeforeFirstBase {
                        target: target.to_string(),
                        first: first.id.clone(),
                        at: when(Some(first.finished_at)),
                    })?,
                Target::Lsn(l) => *bases
                    .iter()
                    .rev()
                    .find(|m| m.physical.as_ref().is_some_and(|p| p.stop_lsn <= *l))
                    .ok_or_else(|| PitrError::BeforeFirstBase {
                        target: target.to_string(),
                        first: first.id.clone(),
                        at: format!(
                            "{} (LSN {})",
                            when(Some(first.finished_at)),
                            first.physical.as_ref().expect("base").stop_lsn
                        ),
                    })?,
                Target::Xid(_) | Target::Name(_) => {
                    warnings.push(format!(
                        "the archive's listing cannot tell where {target} lies; using the newest base backup {}: if the target is older, recovery stops with an error and nothing is promoted (pass --backup ID for an older one)",
                        newest.id
                    ));
                    newest
                }
                Target::Latest | Target::LatestReachable => newest,
            }
        }
    })
}

/// Refuses a base backup the archive cannot make consistent: recovery
/// must reach past its stop point.
fn check_consistent(
    manifest: &Manifest,
    physical: &Physical,
    reach: &Reach,
) -> Result<(), PitrError> {
    if reach.end_lsn <= physical.stop_lsn {
        let missing = reach.gap_at.clone().unwrap_or_else(|| {
            crate::kinds::postgres::wal::segment_name(
                physical.timeline,
                reach.end_lsn.segment(physical.wal_segment_size),
                physical.wal_segment_size,
            )
        });
        return Err(PitrError::BaseIncomplete {
            backup: manifest.id.clone(),
            missing,
            from: physical.start_segment.clone(),
            to: physical.stop_segment.clone(),
        });
    }
    Ok(())
}

/// The server's own `pg_waldump`, of the server's major version (WAL
/// formats differ between majors).
pub(crate) async fn waldump_tools(
    bin_dir: Option<&Path>,
    major: u32,
) -> Result<PgTools, PitrError> {
    let tools = PgTools::find(bin_dir, "pg_waldump", major)
        .await
        .map_err(|source| PitrError::NoWaldump { major, source })?;
    if tools.major != major {
        return Err(PitrError::NoWaldump {
            major,
            source: PgError::ToolTooOld {
                tool: tools.tool("pg_waldump").display().to_string(),
                found: tools.major,
                server: major,
            },
        });
    }
    Ok(tools)
}
