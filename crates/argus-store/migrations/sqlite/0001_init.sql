-- Argus metadata schema, version 1. Times are epoch milliseconds (UTC).
CREATE TABLE projects (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT    NOT NULL UNIQUE,
    name          TEXT    NOT NULL,
    description   TEXT    NOT NULL,
    settings      TEXT    NOT NULL,
    created       INTEGER NOT NULL,
    last_modified INTEGER NOT NULL,
    status        TEXT    NOT NULL
);

CREATE TABLE tags (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL UNIQUE,
    project_id  TEXT    NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    description TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    created     INTEGER NOT NULL
);
CREATE UNIQUE INDEX tags_project_name ON tags(project_id, name COLLATE NOCASE);

CREATE TABLE images (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT    NOT NULL UNIQUE,
    project_id   TEXT    NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    created      INTEGER NOT NULL,
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    mime         TEXT    NOT NULL,
    byte_size    INTEGER NOT NULL,
    content_hash TEXT    NOT NULL,
    metadata     TEXT    NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX images_project_hash ON images(project_id, content_hash);
CREATE INDEX images_project_order ON images(project_id, created, seq);

CREATE TABLE image_tags (
    image_id TEXT    NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    tag_id   TEXT    NOT NULL REFERENCES tags(id) ON DELETE CASCADE,
    created  INTEGER NOT NULL,
    PRIMARY KEY (image_id, tag_id)
);
CREATE INDEX image_tags_tag ON image_tags(tag_id);

CREATE TABLE regions (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    id       TEXT    NOT NULL UNIQUE,
    image_id TEXT    NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    tag_id   TEXT    NOT NULL REFERENCES tags(id) ON DELETE CASCADE,
    x        REAL    NOT NULL,
    y        REAL    NOT NULL,
    w        REAL    NOT NULL,
    h        REAL    NOT NULL,
    created  INTEGER NOT NULL
);
CREATE INDEX regions_image ON regions(image_id);
CREATE INDEX regions_tag ON regions(tag_id);

CREATE TABLE iterations (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT    NOT NULL UNIQUE,
    project_id    TEXT    NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name          TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    created       INTEGER NOT NULL,
    last_modified INTEGER NOT NULL
);
CREATE INDEX iterations_project ON iterations(project_id);
