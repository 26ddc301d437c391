//! The SQLite metadata repository.
//!
//! One file in WAL mode with `synchronous = FULL` (a committed transaction survives power loss), foreign
//! keys on, migrations applied at open. Writes go through a single-connection pool so that transactions
//! never deadlock on lock upgrades; reads use a small pool of their own.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use crate::rows::{
    backend, file_from, image_row, iteration_body, iteration_from, job_from, map_sqlx, ms, now_ms, prediction_from,
    project_from, tag_from, time, uuid, vision_job_from, PREDICTION_COLUMNS, TAG_SELECT,
};
use argus_core::filter::MetadataFilter;
use argus_core::jobs::{Claimed, Job, JobQueue, JobStatus, NewJob};
use argus_core::model::{ImageRegion, ImageTag, Iteration, IterationStatus, Metadata, Project, Tag, Time};
use argus_core::store::{
    DeletedImages, FileRecord, FileRepo, ImageQuery, ImageRecord, ImageRepo, InsertOutcome, IterationRepo, NewImage,
    NewRegion, Order, PredictionOrder, PredictionQuery, PredictionRecord, PredictionRepo, ProjectRepo, StoreError,
    StoreResult, Suggestion, SystemRepo, TagRecord, TagRepo, TaggingStatus, VisionJobRecord, VisionJobRepo,
};
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use uuid::Uuid;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The embedded SQLite repository.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
}

impl SqliteStore {
    /// The read pool (the shared repositories' reads).
    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    /// The single-writer pool.
    fn writer(&self) -> &SqlitePool {
        &self.writer
    }
}

/// A no-op on SQLite: its single writer already serialises every transaction that must see another's commit
/// (on PostgreSQL this locks the project's row).
async fn lock_project(_tx: &mut sqlx::SqliteConnection, _project: Uuid) -> StoreResult<()> {
    Ok(())
}

/// Shared SQL as SQLite takes it: `?` placeholders unchanged.
fn sql(q: &str) -> std::borrow::Cow<'_, str> {
    std::borrow::Cow::Borrowed(q)
}

fn json_path(key: &str) -> String {
    format!("$.\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""))
}

fn push_filter(qb: &mut QueryBuilder<'_, Sqlite>, f: &MetadataFilter) {
    match f {
        MetadataFilter::Eq(k, v) => {
            qb.push("(json_extract(i.metadata, ").push_bind(json_path(k)).push(") = ").push_bind(v.clone()).push(")");
        }
        MetadataFilter::Ne(k, v) => {
            qb.push("(json_extract(i.metadata, ")
                .push_bind(json_path(k))
                .push(") IS NULL OR json_extract(i.metadata, ");
            qb.push_bind(json_path(k)).push(") <> ").push_bind(v.clone()).push(")");
        }
        MetadataFilter::And(a, b) | MetadataFilter::Or(a, b) => {
            let op = if matches!(f, MetadataFilter::And(..)) { " AND " } else { " OR " };
            qb.push("(");
            push_filter(qb, a);
            qb.push(op);
            push_filter(qb, b);
            qb.push(")");
        }
    }
}

/// Binds `values` as a comma-separated list; the caller writes the parentheses around it.
fn push_list<T: ToString>(qb: &mut QueryBuilder<'_, Sqlite>, values: impl IntoIterator<Item = T>) {
    let mut sep = qb.separated(", ");
    for v in values {
        sep.push_bind(v.to_string());
    }
}

/// The ids in `table` (`images` or `retired_images`) of `project`: those of `ids`, or all when `None`.
async fn select_image_ids(
    tx: &mut sqlx::SqliteConnection,
    table: &'static str,
    project: Uuid,
    ids: Option<&[Uuid]>,
) -> StoreResult<Vec<Uuid>> {
    let mut qb = QueryBuilder::<Sqlite>::new(format!("SELECT id FROM {table} WHERE project_id = "));
    qb.push_bind(project.to_string());
    if let Some(ids) = ids {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        qb.push(" AND id IN (");
        push_list(&mut qb, ids);
        qb.push(")");
    }
    let found: Vec<String> = qb.build_query_scalar().fetch_all(&mut *tx).await.map_err(backend)?;
    found.iter().map(|s| uuid(s)).collect()
}

/// Deletes these rows of `table` (`images` or `retired_images`) of `project`, in chunks.
async fn delete_image_rows(
    tx: &mut sqlx::SqliteConnection,
    table: &'static str,
    project: Uuid,
    ids: &[Uuid],
) -> StoreResult<()> {
    for chunk in ids.chunks(500) {
        let mut qb = QueryBuilder::<Sqlite>::new(format!("DELETE FROM {table} WHERE project_id = "));
        qb.push_bind(project.to_string()).push(" AND id IN (");
        push_list(&mut qb, chunk);
        qb.push(")");
        qb.build().execute(&mut *tx).await.map_err(backend)?;
    }
    Ok(())
}

fn push_where(qb: &mut QueryBuilder<'_, Sqlite>, project: Uuid, q: &ImageQuery) {
    qb.push(" WHERE i.project_id = ").push_bind(project.to_string());
    const LABELLED: &str = "(EXISTS (SELECT 1 FROM image_tags x WHERE x.image_id = i.id) \
                            OR EXISTS (SELECT 1 FROM regions x WHERE x.image_id = i.id))";
    match q.tagging {
        TaggingStatus::All => {}
        TaggingStatus::Tagged => {
            qb.push(" AND ").push(LABELLED);
        }
        TaggingStatus::Untagged => {
            qb.push(" AND NOT ").push(LABELLED);
        }
    }
    if !q.tag_ids.is_empty() {
        for (table, first) in [("image_tags", true), ("regions", false)] {
            qb.push(if first { " AND (EXISTS (SELECT 1 FROM " } else { " OR EXISTS (SELECT 1 FROM " });
            qb.push(table).push(" x WHERE x.image_id = i.id AND x.tag_id IN (");
            push_list(qb, &q.tag_ids);
            qb.push("))");
        }
        qb.push(")");
    }
    if let Some(f) = &q.filter {
        qb.push(" AND ");
        push_filter(qb, f);
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(backend)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer =
            SqlitePoolOptions::new().max_connections(1).connect_with(options.clone()).await.map_err(backend)?;
        MIGRATOR.run(&writer).await.map_err(backend)?;
        let reader =
            SqlitePoolOptions::new().max_connections(4).connect_with(options.read_only(true)).await.map_err(backend)?;
        Ok(Self { reader, writer })
    }

    async fn load_labels(
        &self,
        ids: &[String],
    ) -> StoreResult<(HashMap<String, Vec<ImageTag>>, HashMap<String, Vec<ImageRegion>>)> {
        let mut tags: HashMap<String, Vec<ImageTag>> = HashMap::new();
        let mut regions: HashMap<String, Vec<ImageRegion>> = HashMap::new();
        if ids.is_empty() {
            return Ok((tags, regions));
        }
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT l.image_id, l.tag_id, t.name, MIN(l.created) AS created FROM (\
             SELECT image_id, tag_id, created FROM image_tags UNION ALL SELECT image_id, tag_id, created FROM regions) l \
             JOIN tags t ON t.id = l.tag_id WHERE l.image_id IN (",
        );
        push_list(&mut qb, ids);
        qb.push(") GROUP BY l.image_id, l.tag_id ORDER BY created, t.seq");
        for row in qb.build().fetch_all(&self.reader).await.map_err(backend)? {
            tags.entry(row.get("image_id")).or_default().push(ImageTag {
                tag_id: uuid(row.get("tag_id"))?,
                tag_name: row.get("name"),
                created: time(row.get("created")),
            });
        }
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT r.id, r.image_id, r.tag_id, t.name, r.x, r.y, r.w, r.h, r.created, r.polygon FROM regions r \
             JOIN tags t ON t.id = r.tag_id WHERE r.image_id IN (",
        );
        push_list(&mut qb, ids);
        qb.push(") ORDER BY r.seq");
        for row in qb.build().fetch_all(&self.reader).await.map_err(backend)? {
            regions.entry(row.get("image_id")).or_default().push(ImageRegion {
                region_id: uuid(row.get("id"))?,
                tag_name: row.get("name"),
                created: time(row.get("created")),
                tag_id: uuid(row.get("tag_id"))?,
                left: row.get("x"),
                top: row.get("y"),
                width: row.get("w"),
                height: row.get("h"),
                polygon: crate::rows::polygon_from(row.get("polygon")),
            });
        }
        Ok((tags, regions))
    }

    async fn images_from_rows(&self, rows: Vec<SqliteRow>) -> StoreResult<Vec<ImageRecord>> {
        let ids: Vec<String> = rows.iter().map(|r| r.get::<String, _>("id")).collect();
        let (mut tags, mut regions) = self.load_labels(&ids).await?;
        rows.iter()
            .map(|row| {
                let id: String = row.get("id");
                let mut r = image_row(row)?;
                r.tags = tags.remove(&id).unwrap_or_default();
                r.regions = regions.remove(&id).unwrap_or_default();
                Ok(r)
            })
            .collect()
    }
}

async fn insert_region(tx: &mut sqlx::SqliteConnection, image: Uuid, r: &NewRegion) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO regions (id, image_id, tag_id, x, y, w, h, created, polygon) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(r.id.to_string())
    .bind(image.to_string())
    .bind(r.tag_id.to_string())
    .bind(r.bbox.left)
    .bind(r.bbox.top)
    .bind(r.bbox.width)
    .bind(r.bbox.height)
    .bind(ms(&r.created))
    .bind(crate::rows::polygon_json(&r.polygon))
    .execute(tx)
    .await
    .map(|_| ())
}

#[async_trait]
impl SystemRepo for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await.map(|_| ()).map_err(backend)
    }

    async fn secret_or_insert(&self, name: &str, candidate: &str) -> StoreResult<(String, bool)> {
        let inserted = sqlx::query("INSERT OR IGNORE INTO secrets (name, value) VALUES (?, ?)")
            .bind(name)
            .bind(candidate)
            .execute(&self.writer)
            .await
            .map_err(backend)?
            .rows_affected()
            > 0;
        // Read through the writer: a reader could still see the snapshot from before the insert.
        let value: String = sqlx::query_scalar("SELECT value FROM secrets WHERE name = ?")
            .bind(name)
            .fetch_one(&self.writer)
            .await
            .map_err(backend)?;
        Ok((value, inserted))
    }

    async fn try_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> StoreResult<bool> {
        let t = now_ms();
        let r = sqlx::query(
            "INSERT INTO leases (name, holder, expires) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET \
             holder = excluded.holder, expires = excluded.expires \
             WHERE leases.expires < ? OR leases.holder = excluded.holder",
        )
        .bind(name)
        .bind(holder)
        .bind(t + ttl_ms)
        .bind(t)
        .execute(&self.writer)
        .await
        .map_err(backend)?;
        Ok(r.rows_affected() > 0)
    }
}

/// Inserts a queued job (on the pool, or inside a caller's transaction).
async fn insert_job<'e, E>(exec: E, id: Uuid, job: &NewJob) -> StoreResult<()>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    let t = now_ms();
    sqlx::query(
        "INSERT INTO jobs (id, kind, scope, payload, status, max_attempts, created, updated) \
         VALUES (?, ?, ?, ?, 'Queued', ?, ?, ?)",
    )
    .bind(id.to_string())
    .bind(&job.kind)
    .bind(&job.scope)
    .bind(serde_json::to_string(&job.payload).map_err(backend)?)
    .bind(job.max_attempts.max(1) as i64)
    .bind(t)
    .bind(t)
    .execute(exec)
    .await
    .map(|_| ())
    .map_err(backend)
}

/// Jobs of `kind` in `scope` that are queued or running (on the pool, or inside a caller's transaction).
async fn count_active_jobs<'e, E>(exec: E, kind: &str, scope: &str) -> StoreResult<u64>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs WHERE kind = ? AND scope = ? AND status IN ('Queued', 'Running')",
    )
    .bind(kind)
    .bind(scope)
    .fetch_one(exec)
    .await
    .map_err(backend)?;
    Ok(n as u64)
}

#[async_trait]
impl JobQueue for SqliteStore {
    async fn enqueue(&self, job: NewJob) -> StoreResult<Job> {
        let id = Uuid::new_v4();
        insert_job(&self.writer, id, &job).await?;
        self.get_job(id).await?.ok_or_else(|| backend("job vanished after insert"))
    }

    async fn claim(&self, kinds: &[String], worker: &str, lease_ms: i64) -> StoreResult<Option<Claimed>> {
        if kinds.is_empty() {
            return Ok(None);
        }
        let t = now_ms();
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT * FROM jobs WHERE kind IN (");
        push_list(&mut qb, kinds);
        qb.push(") AND (status = 'Queued' OR (status = 'Running' AND lease_expires < ")
            .push_bind(t)
            .push(")) ORDER BY seq LIMIT 1");
        let Some(row) = qb.build().fetch_optional(&mut *tx).await.map_err(backend)? else {
            return Ok(None);
        };
        let job = job_from(&row)?;
        let claimed = if job.status == JobStatus::Running && job.attempts >= job.max_attempts {
            let reason = format!(
                "the worker running this job stopped (attempt {} of {}); giving up",
                job.attempts, job.max_attempts
            );
            sqlx::query("UPDATE jobs SET status = 'Failed', message = ?, lease_owner = NULL, updated = ? WHERE id = ?")
                .bind(&reason)
                .bind(t)
                .bind(job.id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            Claimed::Abandoned(Job { status: JobStatus::Failed, message: Some(reason), ..job })
        } else {
            sqlx::query(
                "UPDATE jobs SET status = 'Running', attempts = attempts + 1, lease_owner = ?, lease_expires = ?, \
                 updated = ? WHERE id = ?",
            )
            .bind(worker)
            .bind(t + lease_ms)
            .bind(t)
            .bind(job.id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            Claimed::Run(Job { status: JobStatus::Running, attempts: job.attempts + 1, ..job })
        };
        tx.commit().await.map_err(backend)?;
        Ok(Some(claimed))
    }

    async fn heartbeat(
        &self,
        id: Uuid,
        worker: &str,
        progress: f64,
        message: Option<&str>,
        lease_ms: i64,
    ) -> StoreResult<bool> {
        let t = now_ms();
        let r = sqlx::query(
            "UPDATE jobs SET progress = ?, message = COALESCE(?, message), lease_expires = ?, updated = ? \
             WHERE id = ? AND lease_owner = ? AND status = 'Running'",
        )
        .bind(progress)
        .bind(message)
        .bind(t + lease_ms)
        .bind(t)
        .bind(id.to_string())
        .bind(worker)
        .execute(&self.writer)
        .await
        .map_err(backend)?;
        Ok(r.rows_affected() > 0)
    }

    async fn complete(&self, id: Uuid, worker: &str, result: &serde_json::Value) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE jobs SET status = 'Completed', progress = 1, result = ?, lease_owner = NULL, updated = ? \
             WHERE id = ? AND lease_owner = ? AND status = 'Running'",
        )
        .bind(serde_json::to_string(result).map_err(backend)?)
        .bind(now_ms())
        .bind(id.to_string())
        .bind(worker)
        .execute(&self.writer)
        .await
        .map_err(backend)?;
        Ok(r.rows_affected() > 0)
    }

    async fn fail(&self, id: Uuid, worker: &str, message: &str, retry: bool) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE jobs SET status = CASE WHEN ? AND attempts < max_attempts THEN 'Queued' ELSE 'Failed' END, \
             message = ?, lease_owner = NULL, updated = ? WHERE id = ? AND lease_owner = ? AND status = 'Running'",
        )
        .bind(retry)
        .bind(message)
        .bind(now_ms())
        .bind(id.to_string())
        .bind(worker)
        .execute(&self.writer)
        .await
        .map_err(backend)?;
        Ok(r.rows_affected() > 0)
    }

    async fn get_job(&self, id: Uuid) -> StoreResult<Option<Job>> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        row.as_ref().map(job_from).transpose()
    }

    async fn active_jobs(&self, kind: &str, scope: &str) -> StoreResult<u64> {
        count_active_jobs(&self.reader, kind, scope).await
    }

    async fn queue_depth(&self) -> StoreResult<Vec<(String, u64, u64)>> {
        let rows = sqlx::query(
            "SELECT kind, SUM(status = 'Queued') AS queued, SUM(status = 'Running') AS running FROM jobs \
             WHERE status IN ('Queued', 'Running') GROUP BY kind ORDER BY kind",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        Ok(rows
            .iter()
            .map(|r| {
                let n = |k: &str| r.get::<i64, _>(k).max(0) as u64;
                (r.get::<String, _>("kind"), n("queued"), n("running"))
            })
            .collect())
    }

    async fn list_jobs(&self, kind: &str, scope: &str) -> StoreResult<Vec<Job>> {
        let rows = sqlx::query("SELECT * FROM jobs WHERE kind = ? AND scope = ? ORDER BY seq")
            .bind(kind)
            .bind(scope)
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?;
        rows.iter().map(job_from).collect()
    }
}

crate::shared::shared_repos!(SqliteStore, Sqlite);
