//! The PostgreSQL metadata repository, for clusters: many API nodes and workers over one database.
//!
//! The same tables and columns as the SQLite schema (its own migrations, `migrations/postgres`), the same
//! conformance suite. The job queue claims with `FOR UPDATE SKIP LOCKED`, so concurrent workers never take
//! the same job and never wait on each other; leases and heartbeats are stamped with the database's clock
//! (`clock_timestamp()`), so nodes whose clocks drift still agree on when a lease lapsed. Every enqueue
//! sends `NOTIFY argus_jobs` in its transaction, and idle workers wait on `LISTEN` (with their poll as
//! the fallback), so a job starts as soon as it is committed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use argus_core::filter::MetadataFilter;
use argus_core::jobs::{Claimed, Job, JobQueue, JobStatus, NewJob};
use argus_core::model::{ImageRegion, ImageTag, Iteration, IterationStatus, Metadata, Project, Tag, Time};
use argus_core::store::{
    DeletedImages, FileRecord, FileRepo, ImageQuery, ImageRecord, ImageRepo, InsertOutcome, IterationRepo, NewImage,
    NewRegion, Order, PredictionOrder, PredictionQuery, PredictionRecord, PredictionRepo, ProjectRepo, StoreError,
    StoreResult, Suggestion, SystemRepo, TagRecord, TagRepo, TaggingStatus, VisionJobRecord, VisionJobRepo,
};
use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::rows::{
    backend, file_from, image_row, iteration_body, iteration_from, job_from, map_sqlx, ms, prediction_from,
    project_from, tag_from, time, uuid, vision_job_from, PREDICTION_COLUMNS, TAG_SELECT,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The database clock in epoch milliseconds: what leases and job times are stamped with.
const DB_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// The channel enqueues notify and idle workers listen on.
const JOBS_CHANNEL: &str = "argus_jobs";

/// The PostgreSQL repository: a connection pool, and a listener that wakes idle workers.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    job_added: Arc<Notify>,
}

impl PostgresStore {
    /// The pool (the shared repositories' reads).
    fn reader(&self) -> &PgPool {
        &self.pool
    }

    /// The pool (the shared repositories' writes).
    fn writer(&self) -> &PgPool {
        &self.pool
    }
}

/// Shared SQL as PostgreSQL takes it: `?` placeholders numbered `$1, $2, …`.
fn sql(q: &str) -> std::borrow::Cow<'_, str> {
    std::borrow::Cow::Owned(crate::shared::numbered(q))
}

fn push_filter(qb: &mut QueryBuilder<'_, Postgres>, f: &MetadataFilter) {
    match f {
        MetadataFilter::Eq(k, v) => {
            qb.push("((i.metadata::jsonb ->> ").push_bind(k.clone()).push(") = ").push_bind(v.clone()).push(")");
        }
        MetadataFilter::Ne(k, v) => {
            qb.push("((i.metadata::jsonb ->> ").push_bind(k.clone()).push(") IS NULL OR (i.metadata::jsonb ->> ");
            qb.push_bind(k.clone()).push(") <> ").push_bind(v.clone()).push(")");
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
fn push_list<T: ToString>(qb: &mut QueryBuilder<'_, Postgres>, values: impl IntoIterator<Item = T>) {
    let mut sep = qb.separated(", ");
    for v in values {
        sep.push_bind(v.to_string());
    }
}

/// The ids in `table` (`images` or `retired_images`) of `project`: those of `ids`, or all when `None`.
async fn select_image_ids(
    tx: &mut sqlx::PgConnection,
    table: &'static str,
    project: Uuid,
    ids: Option<&[Uuid]>,
) -> StoreResult<Vec<Uuid>> {
    let mut qb = QueryBuilder::<Postgres>::new(format!("SELECT id FROM {table} WHERE project_id = "));
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
    tx: &mut sqlx::PgConnection,
    table: &'static str,
    project: Uuid,
    ids: &[Uuid],
) -> StoreResult<()> {
    for chunk in ids.chunks(500) {
        let mut qb = QueryBuilder::<Postgres>::new(format!("DELETE FROM {table} WHERE project_id = "));
        qb.push_bind(project.to_string()).push(" AND id IN (");
        push_list(&mut qb, chunk);
        qb.push(")");
        qb.build().execute(&mut *tx).await.map_err(backend)?;
    }
    Ok(())
}

fn push_where(qb: &mut QueryBuilder<'_, Postgres>, project: Uuid, q: &ImageQuery) {
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

impl PostgresStore {
    /// Opens (creating if needed) the database file and applies pending migrations.
    /// Creates the database `url` names when it does not exist yet (connecting to the server's `postgres`
    /// maintenance database to do it); a database that exists is left as it is.
    pub async fn create_database_if_missing(url: &str) -> StoreResult<()> {
        use sqlx::{ConnectOptions, Connection};
        let options: sqlx::postgres::PgConnectOptions = url.parse().map_err(backend)?;
        let Some(name) = options.get_database().map(str::to_string) else { return Ok(()) };
        let mut admin = options.database("postgres").connect().await.map_err(backend)?;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .map_err(backend)?;
        if !exists {
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            match sqlx::query(&format!("CREATE DATABASE {quoted}")).execute(&mut admin).await {
                Ok(_) => {}
                // Another process created it meanwhile.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
                Err(e) => return Err(backend(e)),
            }
        }
        admin.close().await.map_err(backend)
    }

    /// Connects to `url` (`postgres://user:password@host:port/database`), applies pending migrations and
    /// starts listening for new jobs. Concurrent first starts are safe: sqlx serialises migrations with an
    /// advisory lock.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(backend)?;
        MIGRATOR.run(&pool).await.map_err(backend)?;
        let job_added = Arc::new(Notify::new());
        let mut listener = PgListener::connect_with(&pool).await.map_err(backend)?;
        listener.listen(JOBS_CHANNEL).await.map_err(backend)?;
        let wake = Arc::clone(&job_added);
        tokio::spawn(async move {
            loop {
                // `recv` reconnects after a dropped connection; notifications sent meanwhile are lost, which
                // the workers' poll covers.
                match listener.recv().await {
                    Ok(_) => wake.notify_waiters(),
                    Err(e) => {
                        tracing::warn!(error = %e, "job notifications: listener failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Self { pool, job_added })
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
        let mut qb = QueryBuilder::<Postgres>::new(
            "SELECT l.image_id, l.tag_id, t.name, MIN(l.created) AS created FROM (\
             SELECT image_id, tag_id, created FROM image_tags UNION ALL SELECT image_id, tag_id, created FROM regions) l \
             JOIN tags t ON t.id = l.tag_id WHERE l.image_id IN (",
        );
        push_list(&mut qb, ids);
        qb.push(") GROUP BY l.image_id, l.tag_id, t.name, t.seq ORDER BY created, t.seq");
        for row in qb.build().fetch_all(&self.pool).await.map_err(backend)? {
            tags.entry(row.get("image_id")).or_default().push(ImageTag {
                tag_id: uuid(row.get("tag_id"))?,
                tag_name: row.get("name"),
                created: time(row.get("created")),
            });
        }
        let mut qb = QueryBuilder::<Postgres>::new(
            "SELECT r.id, r.image_id, r.tag_id, t.name, r.x, r.y, r.w, r.h, r.created, r.polygon FROM regions r \
             JOIN tags t ON t.id = r.tag_id WHERE r.image_id IN (",
        );
        push_list(&mut qb, ids);
        qb.push(") ORDER BY r.seq");
        for row in qb.build().fetch_all(&self.pool).await.map_err(backend)? {
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

    async fn images_from_rows(&self, rows: Vec<PgRow>) -> StoreResult<Vec<ImageRecord>> {
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

async fn insert_region(tx: &mut sqlx::PgConnection, image: Uuid, r: &NewRegion) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO regions (id, image_id, tag_id, x, y, w, h, created, polygon) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
impl SystemRepo for PostgresStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ()).map_err(backend)
    }

    async fn secret_or_insert(&self, name: &str, candidate: &str) -> StoreResult<(String, bool)> {
        let inserted = sqlx::query("INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(name)
            .bind(candidate)
            .execute(&self.pool)
            .await
            .map_err(backend)?
            .rows_affected()
            > 0;
        let value: String = sqlx::query_scalar("SELECT value FROM secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        Ok((value, inserted))
    }

    async fn try_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> StoreResult<bool> {
        let r = sqlx::query(&format!(
            "INSERT INTO leases (name, holder, expires) VALUES ($1, $2, {DB_NOW_MS} + $3) ON CONFLICT (name) \
             DO UPDATE SET holder = EXCLUDED.holder, expires = EXCLUDED.expires \
             WHERE leases.expires < {DB_NOW_MS} OR leases.holder = EXCLUDED.holder"
        ))
        .bind(name)
        .bind(holder)
        .bind(ttl_ms)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(r.rows_affected() > 0)
    }
}

/// An iteration's stored body: its API fields plus the id of the job that trains it.
/// Inserts a queued job inside a caller's transaction and notifies the listening workers (PostgreSQL delivers
/// the notification when that transaction commits, never before).
async fn insert_job(tx: &mut sqlx::PgConnection, id: Uuid, job: &NewJob) -> StoreResult<()> {
    sqlx::query(&format!(
        "INSERT INTO jobs (id, kind, scope, payload, status, max_attempts, created, updated) \
         VALUES ($1, $2, $3, $4, 'Queued', $5, {DB_NOW_MS}, {DB_NOW_MS})"
    ))
    .bind(id.to_string())
    .bind(&job.kind)
    .bind(&job.scope)
    .bind(serde_json::to_string(&job.payload).map_err(backend)?)
    .bind(job.max_attempts.max(1) as i64)
    .execute(&mut *tx)
    .await
    .map_err(backend)?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(JOBS_CHANNEL)
        .bind(&job.kind)
        .execute(&mut *tx)
        .await
        .map(|_| ())
        .map_err(backend)
}

/// Locks a project's row until the transaction ends: writers that must see each other's commits (quota,
/// duplicates, one training at a time) take turns on it.
async fn lock_project(tx: &mut sqlx::PgConnection, project: Uuid) -> StoreResult<()> {
    sqlx::query("SELECT 1 FROM projects WHERE id = $1 FOR UPDATE")
        .bind(project.to_string())
        .execute(tx)
        .await
        .map(|_| ())
        .map_err(backend)
}

/// Jobs of `kind` in `scope` that are queued or running (on the pool, or inside a caller's transaction).
async fn count_active_jobs<'e, E>(exec: E, kind: &str, scope: &str) -> StoreResult<u64>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs WHERE kind = $1 AND scope = $2 AND status IN ('Queued', 'Running')",
    )
    .bind(kind)
    .bind(scope)
    .fetch_one(exec)
    .await
    .map_err(backend)?;
    Ok(n as u64)
}

#[async_trait]
impl JobQueue for PostgresStore {
    async fn enqueue(&self, job: NewJob) -> StoreResult<Job> {
        let id = Uuid::new_v4();
        let mut tx = self.pool.begin().await.map_err(backend)?;
        insert_job(&mut tx, id, &job).await?;
        tx.commit().await.map_err(backend)?;
        self.get_job(id).await?.ok_or_else(|| backend("job vanished after insert"))
    }

    /// One statement: the subquery locks the oldest runnable job, skipping rows other workers hold locked, and
    /// the update either leases it or, when its dead worker used up the last attempt, fails it.
    async fn claim(&self, kinds: &[String], worker: &str, lease_ms: i64) -> StoreResult<Option<Claimed>> {
        if kinds.is_empty() {
            return Ok(None);
        }
        const GIVE_UP: &str = "status = 'Running' AND attempts >= max_attempts";
        let sql = format!(
            "UPDATE jobs SET \
               status = CASE WHEN {GIVE_UP} THEN 'Failed' ELSE 'Running' END, \
               message = CASE WHEN {GIVE_UP} THEN 'the worker running this job stopped (attempt ' || attempts \
                         || ' of ' || max_attempts || '); giving up' ELSE message END, \
               attempts = CASE WHEN {GIVE_UP} THEN attempts ELSE attempts + 1 END, \
               lease_owner = CASE WHEN {GIVE_UP} THEN NULL ELSE $1 END, \
               lease_expires = CASE WHEN {GIVE_UP} THEN lease_expires ELSE {DB_NOW_MS} + $2 END, \
               updated = {DB_NOW_MS} \
             WHERE id = (SELECT id FROM jobs WHERE kind = ANY($3) \
                         AND (status = 'Queued' OR (status = 'Running' AND lease_expires < {DB_NOW_MS})) \
                         ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING *"
        );
        let row = sqlx::query(&sql)
            .bind(worker)
            .bind(lease_ms)
            .bind(kinds)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        let Some(row) = row else { return Ok(None) };
        let job = job_from(&row)?;
        Ok(Some(if job.status == JobStatus::Failed { Claimed::Abandoned(job) } else { Claimed::Run(job) }))
    }

    async fn heartbeat(
        &self,
        id: Uuid,
        worker: &str,
        progress: f64,
        message: Option<&str>,
        lease_ms: i64,
    ) -> StoreResult<bool> {
        let r = sqlx::query(&format!(
            "UPDATE jobs SET progress = $1, message = COALESCE($2, message), lease_expires = {DB_NOW_MS} + $3, \
             updated = {DB_NOW_MS} WHERE id = $4 AND lease_owner = $5 AND status = 'Running'"
        ))
        .bind(progress)
        .bind(message)
        .bind(lease_ms)
        .bind(id.to_string())
        .bind(worker)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(r.rows_affected() > 0)
    }

    async fn complete(&self, id: Uuid, worker: &str, result: &serde_json::Value) -> StoreResult<bool> {
        let r = sqlx::query(&format!(
            "UPDATE jobs SET status = 'Completed', progress = 1, result = $1, lease_owner = NULL, \
             updated = {DB_NOW_MS} WHERE id = $2 AND lease_owner = $3 AND status = 'Running'"
        ))
        .bind(serde_json::to_string(result).map_err(backend)?)
        .bind(id.to_string())
        .bind(worker)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(r.rows_affected() > 0)
    }

    async fn fail(&self, id: Uuid, worker: &str, message: &str, retry: bool) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let requeued: Option<String> = sqlx::query_scalar(&format!(
            "UPDATE jobs SET status = CASE WHEN $1 AND attempts < max_attempts THEN 'Queued' ELSE 'Failed' END, \
             message = $2, lease_owner = NULL, updated = {DB_NOW_MS} \
             WHERE id = $3 AND lease_owner = $4 AND status = 'Running' RETURNING status"
        ))
        .bind(retry)
        .bind(message)
        .bind(id.to_string())
        .bind(worker)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        if requeued.as_deref() == Some("Queued") {
            sqlx::query("SELECT pg_notify($1, 'retry')").bind(JOBS_CHANNEL).execute(&mut *tx).await.map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(requeued.is_some())
    }

    async fn wait_for_work(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.job_added.notified()).await;
    }

    async fn get_job(&self, id: Uuid) -> StoreResult<Option<Job>> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(job_from).transpose()
    }

    async fn active_jobs(&self, kind: &str, scope: &str) -> StoreResult<u64> {
        count_active_jobs(&self.pool, kind, scope).await
    }

    async fn queue_depth(&self) -> StoreResult<Vec<(String, u64, u64)>> {
        let rows = sqlx::query(
            "SELECT kind, COUNT(*) FILTER (WHERE status = 'Queued') AS queued, \
             COUNT(*) FILTER (WHERE status = 'Running') AS running FROM jobs \
             WHERE status IN ('Queued', 'Running') GROUP BY kind ORDER BY kind",
        )
        .fetch_all(&self.pool)
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
        let rows = sqlx::query("SELECT * FROM jobs WHERE kind = $1 AND scope = $2 ORDER BY seq")
            .bind(kind)
            .bind(scope)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter().map(job_from).collect()
    }
}

crate::shared::shared_repos!(PostgresStore, Postgres);
