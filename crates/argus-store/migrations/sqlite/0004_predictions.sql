-- Stored predictions (Prediction API calls without /nostore, and QuickTest) for QueryPredictions.
CREATE TABLE predictions (
    id           TEXT    PRIMARY KEY,
    project_id   TEXT    NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    iteration_id TEXT    NOT NULL,
    domain_id    TEXT    NOT NULL,
    application  TEXT    NOT NULL,
    created      INTEGER NOT NULL,
    uncertainty  REAL    NOT NULL,
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    predictions  TEXT    NOT NULL
);
CREATE INDEX predictions_by_time ON predictions (project_id, created, id);
CREATE INDEX predictions_by_uncertainty ON predictions (project_id, uncertainty, created, id);
CREATE INDEX predictions_expiry ON predictions (created);

-- One row per (prediction, tag, probability) for the tag/threshold filters of QueryPredictions.
CREATE TABLE prediction_scores (
    prediction_id TEXT NOT NULL REFERENCES predictions(id) ON DELETE CASCADE,
    tag_id        TEXT NOT NULL,
    probability   REAL NOT NULL
);
CREATE INDEX prediction_scores_by_prediction ON prediction_scores (prediction_id, tag_id, probability);
