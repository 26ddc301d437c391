-- Argus metadata schema on PostgreSQL: the same tables and columns as the SQLite schema after its
-- migrations 0001-0008, in one step. Times are epoch milliseconds (UTC); ids are text UUIDs; JSON documents
-- are text, so that both backends store byte-identical values.
CREATE TABLE projects (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id            TEXT   NOT NULL UNIQUE,
    name          TEXT   NOT NULL,
    description   TEXT   NOT NULL,
    settings      TEXT   NOT NULL,
    created       BIGINT NOT NULL,
    last_modified BIGINT NOT NULL,
    status        TEXT   NOT NULL
);

CREATE TABLE tags (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          TEXT   NOT NULL UNIQUE,
    project_id  TEXT   NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name        TEXT   NOT NULL,
    description TEXT   NOT NULL,
    kind        TEXT   NOT NULL,
    created     BIGINT NOT NULL
);
-- Tag names are unique per project regardless of case, as SQLite's NOCASE index makes them.
CREATE UNIQUE INDEX tags_project_name ON tags(project_id, lower(name));

CREATE TABLE images (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           TEXT   NOT NULL UNIQUE,
    project_id   TEXT   NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    created      BIGINT NOT NULL,
    width        BIGINT NOT NULL,
    height       BIGINT NOT NULL,
    mime         TEXT   NOT NULL,
    byte_size    BIGINT NOT NULL,
    content_hash TEXT   NOT NULL,
    metadata     TEXT   NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX images_project_hash ON images(project_id, content_hash);
CREATE INDEX images_project_order ON images(project_id, created, seq);

CREATE TABLE image_tags (
    image_id TEXT   NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    tag_id   TEXT   NOT NULL REFERENCES tags(id) ON DELETE CASCADE,
    created  BIGINT NOT NULL,
    PRIMARY KEY (image_id, tag_id)
);
CREATE INDEX image_tags_tag ON image_tags(tag_id);

CREATE TABLE regions (
    seq      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id       TEXT   NOT NULL UNIQUE,
    image_id TEXT   NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    tag_id   TEXT   NOT NULL REFERENCES tags(id) ON DELETE CASCADE,
    x        DOUBLE PRECISION NOT NULL,
    y        DOUBLE PRECISION NOT NULL,
    w        DOUBLE PRECISION NOT NULL,
    h        DOUBLE PRECISION NOT NULL,
    created  BIGINT NOT NULL
);
CREATE INDEX regions_image ON regions(image_id);
CREATE INDEX regions_tag ON regions(tag_id);

CREATE TABLE jobs (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id            TEXT   NOT NULL UNIQUE,
    kind          TEXT   NOT NULL,
    scope         TEXT   NOT NULL,
    payload       TEXT   NOT NULL,
    status        TEXT   NOT NULL,
    attempts      BIGINT NOT NULL DEFAULT 0,
    max_attempts  BIGINT NOT NULL,
    progress      DOUBLE PRECISION NOT NULL DEFAULT 0,
    message       TEXT,
    result        TEXT,
    lease_owner   TEXT,
    lease_expires BIGINT,
    created       BIGINT NOT NULL,
    updated       BIGINT NOT NULL
);
CREATE INDEX jobs_claim ON jobs(status, kind, seq);
CREATE INDEX jobs_scope ON jobs(scope, status);

CREATE TABLE iterations (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id             TEXT   NOT NULL UNIQUE,
    project_id     TEXT   NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name           TEXT   NOT NULL,
    status         TEXT   NOT NULL,
    created        BIGINT NOT NULL,
    last_modified  BIGINT NOT NULL,
    trained_at     BIGINT,
    body           TEXT   NOT NULL,
    snapshot       TEXT   NOT NULL,
    evaluation     TEXT
);
CREATE INDEX iterations_project ON iterations(project_id, seq);

CREATE TABLE suggestions (
    iteration_id TEXT   NOT NULL REFERENCES iterations(id) ON DELETE CASCADE,
    image_id     TEXT   NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    project_id   TEXT   NOT NULL,
    created      BIGINT NOT NULL,
    uncertainty  DOUBLE PRECISION NOT NULL,
    predictions  TEXT   NOT NULL,
    PRIMARY KEY (iteration_id, image_id)
);

CREATE TABLE predictions (
    id           TEXT   PRIMARY KEY,
    project_id   TEXT   NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    iteration_id TEXT   NOT NULL,
    domain_id    TEXT   NOT NULL,
    application  TEXT   NOT NULL,
    created      BIGINT NOT NULL,
    uncertainty  DOUBLE PRECISION NOT NULL,
    width        BIGINT NOT NULL,
    height       BIGINT NOT NULL,
    predictions  TEXT   NOT NULL
);
CREATE INDEX predictions_by_time ON predictions (project_id, created, id);
CREATE INDEX predictions_by_uncertainty ON predictions (project_id, uncertainty, created, id);
CREATE INDEX predictions_expiry ON predictions (created);

CREATE TABLE prediction_scores (
    prediction_id TEXT NOT NULL REFERENCES predictions(id) ON DELETE CASCADE,
    tag_id        TEXT NOT NULL,
    probability   DOUBLE PRECISION NOT NULL
);
CREATE INDEX prediction_scores_by_prediction ON prediction_scores (prediction_id, tag_id, probability);

CREATE TABLE files (
    id                   BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    project              TEXT   NOT NULL,
    external_id          TEXT,
    name                 TEXT   NOT NULL,
    mime_type            TEXT,
    blob_key             TEXT   NOT NULL,
    uploaded             BIGINT NOT NULL DEFAULT 0,
    size                 BIGINT,
    created              BIGINT NOT NULL,
    updated              BIGINT NOT NULL,
    uploaded_time        BIGINT,
    instance_space       TEXT,
    instance_external_id TEXT
);
CREATE UNIQUE INDEX files_external_id ON files (project, external_id) WHERE external_id IS NOT NULL;
CREATE UNIQUE INDEX files_instance_id ON files (project, instance_space, instance_external_id)
    WHERE instance_space IS NOT NULL;

CREATE TABLE vision_jobs (
    id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    project     TEXT   NOT NULL,
    queue_job   TEXT,
    request     TEXT   NOT NULL,
    status      TEXT   NOT NULL,
    created     BIGINT NOT NULL,
    start_time  BIGINT NOT NULL,
    status_time BIGINT NOT NULL,
    result      TEXT,
    error       TEXT
);
CREATE INDEX vision_jobs_by_time ON vision_jobs (status, status_time);

CREATE TABLE retired_images (
    id           TEXT   PRIMARY KEY,
    project_id   TEXT   NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    retired      BIGINT NOT NULL,
    created      BIGINT NOT NULL,
    width        BIGINT NOT NULL,
    height       BIGINT NOT NULL,
    mime         TEXT   NOT NULL,
    byte_size    BIGINT NOT NULL,
    content_hash TEXT   NOT NULL,
    metadata     TEXT   NOT NULL DEFAULT '{}'
);
CREATE INDEX retired_images_project ON retired_images(project_id);

CREATE TABLE secrets (
    name  TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
