//! What the SQL backends share: the mapping between Argus's records and the columns both schemas use
//! (text UUIDs, epoch-millisecond times, JSON as text), written once against [`Cols`], a column reader that
//! SQLite and PostgreSQL rows both implement.

use argus_core::jobs::{Job, JobStatus};
use argus_core::model::{Iteration, Metadata, Project, ProjectSettings, Tag, TagType, Time};
use argus_core::store::{FileRecord, ImageRecord, PredictionRecord, StoreError, StoreResult, VisionJobRecord};
use chrono::DateTime;
use sqlx::Row;
use uuid::Uuid;

/// Reads a named column of a result row; a missing column or a type mismatch is a schema bug and panics,
/// as `sqlx::Row::get` does.
pub(crate) trait Cols {
    /// A text column.
    fn text(&self, column: &str) -> &str;
    /// A nullable text column.
    fn opt_text(&self, column: &str) -> Option<&str>;
    /// An integer column.
    fn int(&self, column: &str) -> i64;
    /// A nullable integer column.
    fn opt_int(&self, column: &str) -> Option<i64>;
    /// A floating-point column.
    fn float(&self, column: &str) -> f64;
}

macro_rules! impl_cols {
    ($row:ty) => {
        impl Cols for $row {
            fn text(&self, column: &str) -> &str {
                self.get(column)
            }
            fn opt_text(&self, column: &str) -> Option<&str> {
                self.get(column)
            }
            fn int(&self, column: &str) -> i64 {
                self.get(column)
            }
            fn opt_int(&self, column: &str) -> Option<i64> {
                self.get(column)
            }
            fn float(&self, column: &str) -> f64 {
                self.get(column)
            }
        }
    };
}
impl_cols!(sqlx::sqlite::SqliteRow);
impl_cols!(sqlx::postgres::PgRow);

/// A backend failure as a store error.
pub(crate) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// A driver error: unique violations become conflicts, the rest backend failures.
pub(crate) fn map_sqlx(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() {
            return StoreError::Conflict(db.message().to_string());
        }
    }
    backend(e)
}

/// A time as stored: epoch milliseconds.
pub(crate) fn ms(t: &Time) -> i64 {
    t.timestamp_millis()
}

/// A stored time.
pub(crate) fn time(v: i64) -> Time {
    DateTime::from_timestamp_millis(v).unwrap_or_default()
}

/// The current time as stored (this node's clock).
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A stored id.
pub(crate) fn uuid(s: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(s).map_err(backend)
}

/// The tag columns with each tag's image count (images tagged with it or with a region of it).
pub(crate) const TAG_SELECT: &str = "SELECT t.id, t.name, t.description, t.kind, \
     (SELECT COUNT(*) FROM (SELECT image_id FROM image_tags WHERE tag_id = t.id \
                            UNION SELECT image_id FROM regions WHERE tag_id = t.id) AS labelled) AS image_count \
     FROM tags t";

/// The columns of `predictions p` that [`prediction_from`] reads.
pub(crate) const PREDICTION_COLUMNS: &str =
    "p.id, p.project_id, p.iteration_id, p.domain_id, p.application, p.created, p.uncertainty, p.width, p.height, p.predictions";

/// A project from a row of `projects`.
pub(crate) fn project_from(row: &impl Cols) -> StoreResult<Project> {
    let settings: ProjectSettings = serde_json::from_str(row.text("settings")).map_err(backend)?;
    Ok(Project {
        id: uuid(row.text("id"))?,
        name: row.text("name").to_string(),
        description: row.text("description").to_string(),
        settings,
        created: time(row.int("created")),
        last_modified: time(row.int("last_modified")),
        thumbnail_uri: String::new(),
        dr_mode_enabled: false,
        status: row.text("status").to_string(),
    })
}

/// A tag from a row of [`TAG_SELECT`].
pub(crate) fn tag_from(row: &impl Cols) -> StoreResult<Tag> {
    Ok(Tag {
        id: uuid(row.text("id"))?,
        name: row.text("name").to_string(),
        description: row.text("description").to_string(),
        kind: TagType::parse(row.text("kind")).unwrap_or(TagType::Regular),
        image_count: row.int("image_count"),
    })
}

/// An image record from a row of `images` or `retired_images`, without its labels.
pub(crate) fn image_row(row: &impl Cols) -> StoreResult<ImageRecord> {
    let metadata: Metadata = serde_json::from_str(row.text("metadata")).map_err(backend)?;
    Ok(ImageRecord {
        id: uuid(row.text("id"))?,
        project_id: uuid(row.text("project_id"))?,
        created: time(row.int("created")),
        width: row.int("width") as u32,
        height: row.int("height") as u32,
        mime: row.text("mime").to_string(),
        byte_size: row.int("byte_size") as u64,
        content_hash: row.text("content_hash").to_string(),
        metadata,
        tags: Vec::new(),
        regions: Vec::new(),
    })
}

/// A file record from a row of `files`.
pub(crate) fn file_from(r: &impl Cols) -> FileRecord {
    FileRecord {
        id: r.int("id"),
        project: r.text("project").to_string(),
        external_id: r.opt_text("external_id").map(str::to_string),
        instance_id: match (r.opt_text("instance_space"), r.opt_text("instance_external_id")) {
            (Some(space), Some(external)) => Some((space.to_string(), external.to_string())),
            _ => None,
        },
        name: r.text("name").to_string(),
        mime_type: r.opt_text("mime_type").map(str::to_string),
        blob_key: r.text("blob_key").to_string(),
        uploaded: r.int("uploaded") != 0,
        size: r.opt_int("size"),
        created: time(r.int("created")),
        updated: time(r.int("updated")),
        uploaded_time: r.opt_int("uploaded_time").map(time),
    }
}

/// A vision job from a row of `vision_jobs`.
pub(crate) fn vision_job_from(r: &impl Cols) -> StoreResult<VisionJobRecord> {
    Ok(VisionJobRecord {
        id: r.int("id"),
        project: r.text("project").to_string(),
        queue_job: r.opt_text("queue_job").map(uuid).transpose()?,
        request: serde_json::from_str(r.text("request")).map_err(backend)?,
        status: JobStatus::parse(r.text("status")),
        created: time(r.int("created")),
        start_time: time(r.int("start_time")),
        status_time: time(r.int("status_time")),
        result: r.opt_text("result").map(serde_json::from_str).transpose().map_err(backend)?,
        error: r.opt_text("error").map(str::to_string),
    })
}

/// A stored prediction from a row of [`PREDICTION_COLUMNS`].
pub(crate) fn prediction_from(r: &impl Cols) -> StoreResult<PredictionRecord> {
    Ok(PredictionRecord {
        id: uuid(r.text("id"))?,
        project: uuid(r.text("project_id"))?,
        iteration: uuid(r.text("iteration_id"))?,
        domain: uuid(r.text("domain_id"))?,
        application: r.text("application").to_string(),
        created: time(r.int("created")),
        uncertainty: r.float("uncertainty"),
        width: r.int("width") as u32,
        height: r.int("height") as u32,
        predictions: serde_json::from_str(r.text("predictions")).map_err(backend)?,
    })
}

/// An iteration's stored body: its API fields.
pub(crate) fn iteration_body(it: &Iteration) -> StoreResult<String> {
    serde_json::to_string(it).map_err(backend)
}

/// An iteration from its stored body (bodies written before training jobs took their iteration's id also
/// carry a `jobId`, which is not read).
pub(crate) fn iteration_from(body: &str) -> StoreResult<Iteration> {
    serde_json::from_str(body).map_err(backend)
}

/// A job from a row of `jobs`.
pub(crate) fn job_from(row: &impl Cols) -> StoreResult<Job> {
    Ok(Job {
        id: uuid(row.text("id"))?,
        kind: row.text("kind").to_string(),
        scope: row.text("scope").to_string(),
        payload: serde_json::from_str(row.text("payload")).map_err(backend)?,
        status: JobStatus::parse(row.text("status")),
        attempts: row.int("attempts") as u32,
        max_attempts: row.int("max_attempts") as u32,
        progress: row.float("progress"),
        message: row.opt_text("message").map(str::to_string),
        result: row.opt_text("result").and_then(|r| serde_json::from_str(r).ok()),
        created: time(row.int("created")),
        updated: time(row.int("updated")),
    })
}

/// A region's outline as stored (JSON), or NULL.
pub(crate) fn polygon_json(p: &Option<argus_core::model::RegionPolygon>) -> Option<String> {
    p.as_ref().and_then(|p| serde_json::to_string(p).ok())
}

/// A stored outline back; an unreadable one is dropped with a warning rather than failing the image.
pub(crate) fn polygon_from(s: Option<String>) -> Option<argus_core::model::RegionPolygon> {
    let s = s?;
    match serde_json::from_str(&s) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(target: "argus::store", error = %e, "a stored region outline is unreadable; ignored");
            None
        }
    }
}
