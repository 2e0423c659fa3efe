//! Scratch databases on a named, shared PostgreSQL server (a drill that restores where the real restore would go), with owner comments so a killed drill's databases are dropped later.

use super::*;

/// Scratch databases on a server the policy names
/// (`drill.postgres.server`): `lifeboat_drill_<drill id>_<database>`, each
/// with the owner (host, pid, process start) as its comment, dropped at
/// the end, on errors and interruptions (drop), and by the next drill
/// when their drill is gone ([`ScratchDatabases::sweep`]).
pub struct ScratchDatabases {
    pub conn: PgConn,
    /// Database of the backup → scratch database.
    pub names: Vec<(String, String)>,
    removed: bool,
}

/// The database drills connect to for CREATE and DROP DATABASE.
pub(super) const MAINTENANCE_DB: &str = "postgres";

impl ScratchDatabases {
    /// Creates one empty scratch database per database of the backup.
    pub async fn create(
        server: &crate::policy::ScratchServer,
        id: &str,
        databases: &[String],
    ) -> Result<ScratchDatabases, ScratchError> {
        let conn = PgConn {
            host: server.host.clone(),
            port: server.port,
            user: server.user.clone(),
            password: server
                .password
                .as_ref()
                .map(|p| p.resolve())
                .transpose()
                .map_err(|e| ScratchError::Server {
                    server: format!("{}:{}", server.host, server.port),
                    detail: e.to_string(),
                })?,
        };
        let names = scratch_database_names(id, databases);
        let mut scratch = ScratchDatabases {
            conn,
            names: Vec::new(),
            removed: false,
        };
        let me = std::process::id();
        let owner = serde_json::json!({
            "host": crate::lock::hostname(),
            "pid": me,
            "process_start": process_start(me).unwrap_or(0),
            "drill": id,
            "created": Utc::now(),
        })
        .to_string();
        let client = scratch
            .conn
            .connect(MAINTENANCE_DB)
            .await
            .map_err(|e| scratch.error(e.to_string()))?;
        for (db, name) in names {
            let q = crate::kinds::postgres::source::quote_ident(&name);
            client
                .batch_execute(&format!("CREATE DATABASE {q}"))
                .await
                .map_err(|e| {
                    scratch.error(format!(
                        "CREATE DATABASE {q}: {} (the role needs CREATEDB)",
                        crate::kinds::postgres::source::error_detail(&e)
                    ))
                })?;
            // From here on, dropping `scratch` drops it.
            scratch.names.push((db, name));
            client
                .batch_execute(&format!(
                    "COMMENT ON DATABASE {q} IS {}",
                    crate::kinds::postgres::source::quote_literal(&owner)
                ))
                .await
                .map_err(|e| scratch.error(crate::kinds::postgres::source::error_detail(&e)))?;
        }
        tracing::info!(server = %scratch.describe(), databases = ?scratch.names, "scratch databases created");
        Ok(scratch)
    }

    /// `postgres://user@host:port`.
    pub fn describe(&self) -> String {
        format!(
            "postgres://{}@{}:{}",
            self.conn.user, self.conn.host, self.conn.port
        )
    }

    fn error(&self, detail: String) -> ScratchError {
        ScratchError::Server {
            server: self.describe(),
            detail,
        }
    }

    /// Drops the scratch databases (sessions in them are ended).
    pub async fn remove(mut self) -> Result<(), ScratchError> {
        self.removed = true;
        let names: Vec<String> = self.names.iter().map(|(_, n)| n.clone()).collect();
        drop_databases(&self.conn, &names)
            .await
            .map_err(|e| self.error(e))
    }

    /// Drops scratch databases on the server whose drill is gone: made on
    /// this host by a process that no longer runs, or elsewhere more than
    /// a day ago (both from the owner comment; a database without one is
    /// left alone and named in a warning).
    pub async fn sweep(server: &crate::policy::ScratchServer) -> Vec<Leftover> {
        let conn = PgConn {
            host: server.host.clone(),
            port: server.port,
            user: server.user.clone(),
            password: match server.password.as_ref().map(|p| p.resolve()).transpose() {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot look for scratch databases of earlier drills");
                    return Vec::new();
                }
            },
        };
        let listed = async {
            let client = conn
                .connect(MAINTENANCE_DB)
                .await
                .map_err(|e| e.to_string())?;
            client
                .query(
                    "SELECT datname::text, coalesce(shobj_description(oid, 'pg_database'), ''), \
                     EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datid = d.oid) \
                     FROM pg_database d WHERE datname LIKE 'lifeboat\\_drill\\_%'",
                    &[],
                )
                .await
                .map_err(|e| crate::kinds::postgres::source::error_detail(&e))
        }
        .await;
        let rows = match listed {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for scratch databases of earlier drills");
                return Vec::new();
            }
        };
        let host = crate::lock::hostname();
        let mut out = Vec::new();
        for row in rows {
            let name: String = row.get(0);
            let comment: String = row.get(1);
            let busy: bool = row.get(2);
            let owner: serde_json::Value = serde_json::from_str(&comment).unwrap_or_default();
            if !database_owner_gone(&owner, &host, busy, Utc::now()) {
                if owner.is_null() || (owner["host"] != host.as_str() && owner["created"].is_null())
                {
                    tracing::warn!(database = %name, "a database named like a drill's scratch database has no owner comment with a creation time; it is left alone: drop it by hand if no drill is running");
                }
                continue;
            }
            let outcome = match drop_databases(&conn, std::slice::from_ref(&name)).await {
                Ok(()) => "removed".to_string(),
                Err(e) => format!("cannot remove: {e}"),
            };
            tracing::warn!(database = %name, %outcome, "scratch database left by an earlier drill");
            out.push(Leftover {
                path: format!("database/{name}").into(),
                drill: owner["drill"].as_str().map(str::to_string),
                outcome,
            });
        }
        out
    }
}

/// Whether the drill that made a scratch database (its comment, parsed)
/// is gone: on this host, its process no longer runs; elsewhere (another
/// pod), it was made more than [`STALE_HOURS`] ago and no session is in it
/// (`busy`: a long restore is still running). No owner: not known.
pub(super) fn database_owner_gone(
    owner: &serde_json::Value,
    host: &str,
    busy: bool,
    now: DateTime<Utc>,
) -> bool {
    if owner["host"].as_str() == Some(host) {
        return !alive(
            owner["pid"].as_u64().unwrap_or(0) as u32,
            owner["process_start"].as_u64().unwrap_or(0),
        );
    }
    !busy
        && owner["created"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|c| now - c.with_timezone(&Utc) > chrono::Duration::hours(STALE_HOURS))
}

/// A scratch target made on another host is judged abandoned after this
/// long (its process cannot be looked at from here).
pub(crate) const STALE_HOURS: i64 = 24;

impl Drop for ScratchDatabases {
    /// An error, a panic or a signal still drops the databases (on a
    /// thread of its own: there is no async here).
    fn drop(&mut self) {
        if self.removed || self.names.is_empty() {
            return;
        }
        let conn = self.conn.clone();
        let names: Vec<String> = self.names.iter().map(|(_, n)| n.clone()).collect();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(drop_databases(&conn, &names))
        })
        .join();
        match dropped {
            Ok(Ok(())) => tracing::info!(databases = ?self.names, "scratch databases dropped"),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot drop the scratch databases; the next drill drops them")
            }
            Err(_) => tracing::error!(
                "dropping the scratch databases panicked; the next drill drops them"
            ),
        }
    }
}

pub(super) async fn drop_databases(conn: &PgConn, names: &[String]) -> Result<(), String> {
    let client = conn
        .connect(MAINTENANCE_DB)
        .await
        .map_err(|e| e.to_string())?;
    let mut errors = Vec::new();
    for name in names {
        let q = crate::kinds::postgres::source::quote_ident(name);
        if let Err(e) = client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {q} WITH (FORCE)"))
            .await
        {
            errors.push(format!(
                "DROP DATABASE {q}: {}",
                crate::kinds::postgres::source::error_detail(&e)
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// `lifeboat_drill_<id>_<database>`, lower case, at most 63 bytes (a
/// PostgreSQL identifier), unique.
pub fn scratch_database_names(id: &str, databases: &[String]) -> Vec<(String, String)> {
    let base: String = format!("lifeboat_drill_{}", id.to_ascii_lowercase())
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let mut taken = std::collections::BTreeSet::new();
    databases
        .iter()
        .enumerate()
        .map(|(i, db)| {
            let clean: String = db
                .to_ascii_lowercase()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            let mut name: String = format!("{base}_{clean}").chars().take(63).collect();
            if !taken.insert(name.clone()) {
                let suffix = format!("_{}", i + 1);
                name.truncate(name.len().min(63 - suffix.len()));
                name.push_str(&suffix);
                taken.insert(name.clone());
            }
            (db.clone(), name)
        })
        .collect()
}
