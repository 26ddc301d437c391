-- Smart-labeler suggestions: an iteration's predictions for images, kept for QuerySuggestedImages.
CREATE TABLE suggestions (
    iteration_id TEXT    NOT NULL REFERENCES iterations(id) ON DELETE CASCADE,
    image_id     TEXT    NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    project_id   TEXT    NOT NULL,
    created      INTEGER NOT NULL,
    uncertainty  REAL    NOT NULL,
    predictions  TEXT    NOT NULL,
    PRIMARY KEY (iteration_id, image_id)
);
