//! Drilling a command source: the backup restored by its restore command
//! into a scratch folder, the source's `check` command run there, the
//! folder removed.

use super::CommandSource;
use crate::drill::{interruptible, skip_user_checks, Checks, Drill, DrillError, Restored};
use crate::process;

pub(super) async fn drill(
    source: &CommandSource,
    drill: &Drill<'_>,
    checks: &mut Checks,
) -> Result<Restored, DrillError> {
    // The policy's `drill.checks` are SQL or Kubernetes counts; a command
    // source is checked by its own `check:` command.
    skip_user_checks(
        drill.user_checks,
        checks,
        "a command source is checked by its `check:` command",
    );
    // Made here, exclusively and private (0700), under a name the sweep of
    // other drills' leftovers does not touch; removed only if made here.
    let dir = drill
        .opts
        .scratch_dir
        .join(format!("lifeboat-command-drill-{}", drill.id));
    let target = format!("scratch folder {}", dir.display());
    if let Err(e) = make_private(&dir) {
        checks.add(
            "scratch target",
            false,
            format!("cannot create {}: {e}", dir.display()),
        );
        checks.skip("restore", "no scratch folder");
        checks.skip("check command", "no scratch folder");
        return Ok(Restored::nothing(target));
    }
    let restored = crate::kinds::command::restore_into(
        drill.repo,
        drill.manifest,
        drill.opts.identities.clone(),
        source,
        &dir,
        &drill.opts.cancel,
    )
    .await;
    let mut out = Restored::nothing(target);
    match restored {
        Ok(r) => {
            checks.add(
                "restore",
                true,
                format!(
                    "{} read by `{}`, which exited 0",
                    crate::progress::human_bytes(r.bytes),
                    source.restore.join(" ")
                ),
            );
            out.usable(drill.clock, drill.manifest.started_at);
            let result = match &source.check {
                Some(check) => {
                    interruptible(&drill.opts.cancel, run_check(source, drill, check, &dir))
                        .await
                        .map(Some)
                }
                None => Ok(None),
            };
            match result {
                Ok(Some((passed, detail))) => checks.add("check command", passed, detail),
                Ok(None) => checks.skip(
                    "check command",
                    "the source has no `check:` command; only the restore and the hashes were checked",
                ),
                Err(e) => {
                    remove(&dir);
                    return Err(e);
                }
            }
        }
        Err(crate::kinds::command::restore::RestoreFailed::Interrupted) => {
            remove(&dir);
            return Err(DrillError::Interrupted);
        }
        Err(e) => {
            checks.add("restore", false, e.to_string());
            checks.skip("check command", "the restore failed");
        }
    }
    remove(&dir);
    Ok(out)
}

/// Runs the check command in the restored folder: its exit status decides,
/// the tail of its output is the detail.
async fn run_check(
    source: &CommandSource,
    drill: &Drill<'_>,
    check: &[String],
    dir: &std::path::Path,
) -> (bool, String) {
    let program = CommandSource::program(check);
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&check[1..])
        .current_dir(dir)
        .envs(&source.env)
        .env("LIFEBOAT_SOURCE", &drill.manifest.source)
        .env("LIFEBOAT_BACKUP_ID", &drill.manifest.id)
        .env("LIFEBOAT_RESTORE_DIR", dir);
    let shown = check.join(" ");
    let child = match process::spawn(cmd, &program, false, true) {
        Ok((child, _, stdout)) => (child, stdout),
        Err(e) => return (false, format!("`{shown}` could not start: {e}")),
    };
    let (child, stdout) = child;
    // The output is only shown: its last 4 KiB are kept, the rest read
    // and dropped so the command never blocks on a full pipe.
    let mut kept: Vec<u8> = Vec::new();
    if let Some(mut stdout) = stdout {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 8192];
        while let Ok(n) = stdout.read(&mut buf).await {
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > 4096 {
                kept.drain(..kept.len() - 4096);
            }
        }
    }
    let output = String::from_utf8_lossy(&kept);
    let tail: String = {
        let chars: Vec<char> = output.trim().chars().collect();
        chars[chars.len().saturating_sub(300)..].iter().collect()
    };
    match child.wait().await {
        Ok(_) if tail.is_empty() => (true, format!("`{shown}` exited 0")),
        Ok(_) => (true, format!("`{shown}` exited 0: {tail}")),
        Err(e) => (false, format!("`{shown}`: {e}")),
    }
}

/// Creates `dir` (not its parent) new, readable by this user only.
fn make_private(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::DirBuilder::new().mode(0o700).create(dir)
}

/// Removes the scratch folder; a failure is logged (the folder is named
/// after the drill, so it is easy to find).
fn remove(dir: &std::path::Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove the drill's scratch folder; remove it by hand");
        }
    }
}
