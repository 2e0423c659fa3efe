-- The catalog: a local index of the repository's backups and the history
-- of runs. The repository stays the source of truth; `lifeboat catalog
-- rebuild` recreates `backups` from the manifests.

CREATE TABLE backups (
    policy          TEXT    NOT NULL,
    source          TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    started_at      TEXT    NOT NULL,
    finished_at     TEXT    NOT NULL,
    stored_bytes    INTEGER NOT NULL,
    plaintext_bytes INTEGER NOT NULL,
    artifacts       INTEGER NOT NULL,
    server_version  TEXT    NOT NULL,
    manifest_key    TEXT    NOT NULL,
    PRIMARY KEY (policy, source, id)
);

-- One row per backup or prune attempt: written when it starts (outcome
-- 'running'), completed when it ends.
CREATE TABLE runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    policy       TEXT    NOT NULL,
    source       TEXT    NOT NULL,
    operation    TEXT    NOT NULL,  -- backup | prune
    trigger      TEXT    NOT NULL,  -- cli | schedule | catch-up
    started_at   TEXT    NOT NULL,
    finished_at  TEXT,
    outcome      TEXT    NOT NULL,  -- running | success | failure | interrupted
    stored_bytes INTEGER,
    read_bytes   INTEGER,
    backup_id    TEXT,
    error        TEXT
);

CREATE INDEX runs_by_source ON runs (policy, source, operation, started_at);
