-- Durable job queue and trained iterations. No API created iteration rows before this version, so the
-- placeholder table is replaced.
CREATE TABLE jobs (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT    NOT NULL UNIQUE,
    kind          TEXT    NOT NULL,
    scope         TEXT    NOT NULL,
    payload       TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    max_attempts  INTEGER NOT NULL,
    progress      REAL    NOT NULL DEFAULT 0,
    message       TEXT,
    result        TEXT,
    lease_owner   TEXT,
    lease_expires INTEGER,
    created       INTEGER NOT NULL,
    updated       INTEGER NOT NULL
);
CREATE INDEX jobs_claim ON jobs(status, kind, seq);
CREATE INDEX jobs_scope ON jobs(scope, status);

DROP TABLE iterations;
CREATE TABLE iterations (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT    NOT NULL UNIQUE,
    project_id     TEXT    NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name           TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    created        INTEGER NOT NULL,
    last_modified  INTEGER NOT NULL,
    trained_at     INTEGER,
    body           TEXT    NOT NULL,
    snapshot       TEXT    NOT NULL,
    evaluation     TEXT
);
CREATE INDEX iterations_project ON iterations(project_id, seq);
