-- Restore drills: one row per drill, with its report as stored in the
-- repository (drills/<policy>/<source>/<id>.json, the source of truth).

CREATE TABLE drills (
    policy        TEXT    NOT NULL,
    source        TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    backup_id     TEXT    NOT NULL,
    started_at    TEXT    NOT NULL,
    finished_at   TEXT    NOT NULL,
    passed        INTEGER NOT NULL,
    rto_seconds   REAL,
    rpo_seconds   REAL,
    checks_failed INTEGER NOT NULL,
    first_failure TEXT,
    report        TEXT    NOT NULL,
    PRIMARY KEY (policy, source, id)
);
