-- Images deleted from the workspace without `allIterations` that an earlier iteration trained on: the hosted
-- service keeps showing them in that iteration's views (GetImages/GetImagesByIds with iterationId, performance
-- images), so the row moves here (tags and regions live in the iteration's snapshot) and the blobs stay. A row
-- goes, with its blobs, when no iteration refers to it any more or when it is deleted with `allIterations`.
CREATE TABLE retired_images (
    id           TEXT    PRIMARY KEY,
    project_id   TEXT    NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    retired      INTEGER NOT NULL,
    created      INTEGER NOT NULL,
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    mime         TEXT    NOT NULL,
    byte_size    INTEGER NOT NULL,
    content_hash TEXT    NOT NULL,
    metadata     TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX retired_images_project ON retired_images(project_id);
