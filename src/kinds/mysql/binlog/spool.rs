//! The archiver's spool: where `mariadb-binlog` writes the binlog files it
//! streams, in plaintext, before lifeboat encrypts and stores them.
//!
//! A private folder (0700, its files made 0600 as they are seen) named
//! after its owner (`lifeboat-binlog-<pid>-<start time>-<random>` in
//! `$TMPDIR`), holding the client's option file (the password) too, so that
//! one folder holds everything secret. Removed on every exit path that
//! runs code; after a SIGKILL the next archiver on this host finds the
//! folders whose owner is gone, kills the `mariadb-binlog` still writing
//! into them, and removes them.

use std::path::{Path, PathBuf};

use crate::lock::process_start;

const PREFIX: &str = "lifeboat-binlog-";
/// How the client's option file in the spool is named (not a binlog).
pub const CLIENT_FILE_PREFIX: &str = crate::kinds::mysql::source::DEFAULTS_FILE_PREFIX;

/// Creates this process's spool folder in `parent`.
pub fn create(parent: &Path) -> std::io::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let me = std::process::id();
    tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{me}-{}-", process_start(me).unwrap_or(0)))
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(parent)
}

/// Makes the files in `spool` readable by their owner only.
pub fn restrict(spool: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(spool).into_iter().flatten().flatten() {
        let private = std::fs::Permissions::from_mode(0o600);
        if let Err(e) = std::fs::set_permissions(entry.path(), private) {
            tracing::debug!(file = %entry.path().display(), error = %e, "cannot restrict a spool file");
        }
    }
}

/// The owner (pid, start time) a spool folder's name records.
fn owner(name: &str) -> Option<(u32, u64)> {
    let mut parts = name.strip_prefix(PREFIX)?.splitn(3, '-');
    let pid = parts.next()?.parse().ok()?;
    let start = parts.next()?.parse().ok()?;
    parts.next()?;
    Some((pid, start))
}

/// Spool folders in `parent` whose owner no longer runs: the processes
/// still writing into each are killed and the folder removed. Returns the
/// folders removed.
pub fn sweep(parent: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((pid, start)) = owner(&name) else {
            continue;
        };
        if process_start(pid) == Some(start) {
            continue;
        }
        let path = entry.path();
        let writers = kill_writers(&path);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::warn!(spool = %path.display(), owner_pid = pid, writers_killed = writers, "removed the binlog spool of an archiver that was killed");
                removed.push(path);
            }
            Err(e) => {
                tracing::warn!(spool = %path.display(), error = %e, "cannot remove the binlog spool of a killed archiver; remove it by hand");
            }
        }
    }
    removed
}

/// Kills the processes whose command line writes into `spool` (the
/// `--result-file=SPOOL/` of an orphaned `mariadb-binlog`). Returns how
/// many.
fn kill_writers(spool: &Path) -> usize {
    let marker = format!("--result-file={}/", spool.display());
    let mut killed = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == marker.as_bytes())
        {
            let status = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            if status.is_ok_and(|s| s.success()) {
                killed += 1;
            }
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_spool_is_private_and_a_dead_owners_spool_is_swept_with_its_writer() {
        let parent = tempfile::tempdir().unwrap();
        let mine = create(parent.path()).unwrap();
        let mode = std::fs::metadata(mine.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::write(mine.path().join("binlog.000001"), b"x").unwrap();
        restrict(mine.path());
        let mode = std::fs::metadata(mine.path().join("binlog.000001"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        // A killed archiver's spool: its pid runs no more (an exited
        // child's), and a process still writes into it.
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let dead = gone.id();
        gone.wait().unwrap();
        let stale = parent.path().join(format!("{PREFIX}{dead}-12345-abc"));
        std::fs::create_dir(&stale).unwrap();
        let mut writer = std::process::Command::new("sh")
            // A loop, not `sleep 60`: the shell would exec its last
            // command and the marker would leave the command line.
            .args(["-c", "while :; do sleep 0.1; done", "sh"])
            .arg(format!("--result-file={}/", stale.display()))
            .spawn()
            .unwrap();
        // Until the child has exec'd, its command line is still ours.
        let marker = format!("--result-file={}/", stale.display());
        let cmdline = format!("/proc/{}/cmdline", writer.id());
        for _ in 0..500 {
            let args = std::fs::read(&cmdline).unwrap_or_default();
            if args.split(|b| *b == 0).any(|a| a == marker.as_bytes()) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(sweep(parent.path()), vec![stale.clone()]);
        assert!(!stale.exists());
        let status = writer.wait().unwrap();
        assert!(!status.success(), "the writer was killed");
        // This process's own spool stays.
        assert!(mine.path().exists());
    }
}
