-- The CDF-style Files subset and vision (segmentation) jobs. CDF projects are free-text names.
CREATE TABLE files (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    project       TEXT    NOT NULL,
    external_id   TEXT,
    name          TEXT    NOT NULL,
    mime_type     TEXT,
    blob_key      TEXT    NOT NULL,
    uploaded      INTEGER NOT NULL DEFAULT 0,
    size          INTEGER,
    created       INTEGER NOT NULL,
    updated       INTEGER NOT NULL,
    uploaded_time INTEGER
);
CREATE UNIQUE INDEX files_external_id ON files (project, external_id) WHERE external_id IS NOT NULL;

CREATE TABLE vision_jobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    project     TEXT    NOT NULL,
    queue_job   TEXT,
    request     TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    created     INTEGER NOT NULL,
    start_time  INTEGER NOT NULL,
    status_time INTEGER NOT NULL,
    result      TEXT,
    error       TEXT
);
CREATE INDEX vision_jobs_by_time ON vision_jobs (status, status_time);
