//! The recovery settings written into the restored data directory:
//! `restore_command` (by default `lifeboat wal-fetch`), the recovery
//! target, and `recovery.signal`.

use std::path::Path;

use chrono::Utc;

use super::{io_err, PitrError, PitrOptions, PitrPlan, Target};

/// A string value in postgresql.conf: backslashes start escapes there.
fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// A path as one word of a `restore_command`: quoted for the shell, and
/// `%` doubled (the server replaces `%f`, `%p`, `%r` and refuses any other
/// `%` sequence).
pub(crate) fn command_arg(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''")).replace('%', "%%")
}

/// Appends the recovery settings to `postgresql.auto.conf` and writes
/// `recovery.signal`.
pub(super) fn write_recovery_settings(
    plan: &PitrPlan,
    opts: &PitrOptions,
) -> Result<(), PitrError> {
    let datadir = &plan.datadir;
    let fetch = opts.restore_command.clone().unwrap_or_else(|| {
        format!(
            "{} wal-fetch --policy {} --source {} --identity {} %f %p",
            command_arg(&opts.exe),
            command_arg(&opts.policy_file),
            command_arg(Path::new(&plan.source)),
            command_arg(&opts.identity_file),
        )
    });
    let mut conf = format!(
        "\n# Added by lifeboat restore {} of backup {}: point-in-time recovery to {}.\n\
         # Remove these lines once the server has promoted if WAL should no longer come from the archive.\n\
         restore_command = {}\nrecovery_target_timeline = 'latest'\n",
        Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
        plan.backup,
        plan.recovery,
        conf_quote(&fetch)
    );
    match &plan.recovery {
        // Without a target recovery ends at the last whole record it can
        // fetch: the hole, or the end of the archive.
        Target::Latest | Target::LatestReachable => {}
        Target::Time(t) => conf.push_str(&format!(
            "recovery_target_time = {}\n",
            conf_quote(&t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
        )),
        Target::Lsn(l) => conf.push_str(&format!("recovery_target_lsn = '{l}'\n")),
        Target::Xid(x) => conf.push_str(&format!("recovery_target_xid = '{x}'\n")),
        Target::Name(n) => conf.push_str(&format!("recovery_target_name = {}\n", conf_quote(n))),
    }
    if !matches!(plan.recovery, Target::Latest | Target::LatestReachable) {
        conf.push_str("recovery_target_action = 'promote'\n");
    }
    if let Some(p) = opts.port {
        conf.push_str(&format!("port = {p}\n"));
    }
    if opts.no_archive {
        conf.push_str("archive_mode = 'off'\n");
    }
    let auto = datadir.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
    text.push_str(&conf);
    std::fs::write(&auto, text).map_err(io_err("cannot write", &auto))?;
    let signal = datadir.join("recovery.signal");
    std::fs::write(&signal, b"").map_err(io_err("cannot write", &signal))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::postgres::pitr::server_major;

    #[test]
    fn recovery_settings_quote_for_the_conf_file_and_the_shell() {
        assert_eq!(conf_quote("it's"), "'it''s'");
        assert_eq!(conf_quote(r"C:\wal"), r"'C:\\wal'");
        assert_eq!(
            command_arg(Path::new("/srv/it's 100%/wal")),
            r"'/srv/it'\''s 100%%/wal'"
        );
        assert_eq!(command_arg(Path::new("/a b/it's")), "'/a b/it'\\''s'");
        assert_eq!(
            server_major("PostgreSQL 15.20 (Debian 15.20-0+deb12u1) on x86_64"),
            15
        );
    }
}
