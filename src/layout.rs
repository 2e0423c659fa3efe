//! The repository's key layout, in one place (docs/FORMAT.md describes
//! it): every object key lifeboat writes or lists is made here.
//!
//! ```text
//! lifeboat.json                                   the marker (format version)
//! manifests/<policy>/<source>/<id>.json           one per backup: the commit point
//! data/<policy>/<source>/<id>/<file>              a backup's artifacts
//! wal/<policy>/<source>/<segment>/...             PostgreSQL WAL archive
//! binlog/<policy>/<source>/<file>/...             MySQL/MariaDB binlog archive
//! drills/<policy>/<source>/<id>.{json,md,html}    drill reports
//! locks/<policy>/<source>/<renewed>-<holder>.json lock claims (policy and source key-safe)
//! ```

/// The repository marker.
pub const MARKER: &str = "lifeboat.json";
/// Where manifests live: listing this finds every backup.
pub const MANIFESTS: &str = "manifests/";
/// Where artifacts live.
pub const DATA: &str = "data/";

/// Makes a name safe inside an object key: other bytes become `%XX`.
pub fn key_safe(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Key of a backup's artifact.
pub fn artifact(policy: &str, source: &str, id: &str, file: &str) -> String {
    format!("{}{id}/{file}", data_prefix(policy, source))
}

/// Prefix of all artifacts of a source's backups.
pub fn data_prefix(policy: &str, source: &str) -> String {
    format!("{DATA}{policy}/{source}/")
}

/// Key of a backup's manifest.
pub fn manifest(policy: &str, source: &str, id: &str) -> String {
    format!("{}{id}.json", manifests_prefix(policy, Some(source)))
}

/// Prefix of the manifests of a policy, or of one of its sources.
pub fn manifests_prefix(policy: &str, source: Option<&str>) -> String {
    match source {
        Some(s) => format!("{MANIFESTS}{policy}/{s}/"),
        None => format!("{MANIFESTS}{policy}/"),
    }
}

/// The backup id a manifest or artifact key belongs to.
pub fn backup_of(key: &str) -> Option<&str> {
    let mut parts = key.split('/');
    match parts.next()? {
        "manifests" => parts.nth(2)?.strip_suffix(".json"),
        "data" => parts.nth(2),
        _ => None,
    }
}

/// Prefix of a source's WAL archive.
pub fn wal_prefix(policy: &str, source: &str) -> String {
    format!("wal/{policy}/{source}/")
}

/// Prefix of a source's binlog archive.
pub fn binlog_prefix(policy: &str, source: &str) -> String {
    format!("binlog/{policy}/{source}/")
}

/// Prefix of the drill reports of a policy, or of one of its sources.
pub fn drills_prefix(policy: &str, source: Option<&str>) -> String {
    match source {
        Some(s) => format!("drills/{policy}/{s}/"),
        None => format!("drills/{policy}/"),
    }
}

/// Prefix of the lock claims on a source.
pub fn locks_prefix(policy: &str, source: &str) -> String {
    format!("locks/{}/{}/", key_safe(policy), key_safe(source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_what_docs_format_md_describes() {
        assert_eq!(
            artifact("app", "db", "20261123T141502Z-3f9a", "db-x.pgdump.zst.age"),
            "data/app/db/20261123T141502Z-3f9a/db-x.pgdump.zst.age"
        );
        assert_eq!(
            manifest("app", "db", "20261123T141502Z-3f9a"),
            "manifests/app/db/20261123T141502Z-3f9a.json"
        );
        assert_eq!(manifests_prefix("app", None), "manifests/app/");
        assert_eq!(wal_prefix("app", "db"), "wal/app/db/");
        assert_eq!(binlog_prefix("app", "db"), "binlog/app/db/");
        assert_eq!(drills_prefix("app", Some("db")), "drills/app/db/");
        assert_eq!(locks_prefix("a b", "db/1"), "locks/a%20b/db%2F1/");
        assert_eq!(
            backup_of(&manifest("app", "db", "X1")),
            Some("X1"),
            "manifest"
        );
        assert_eq!(backup_of(&artifact("app", "db", "X1", "f")), Some("X1"));
        assert_eq!(backup_of("wal/app/db/000000010000000000000001/x"), None);
    }
}
