//! Repositories whose SQL is the same on SQLite and on PostgreSQL, written once: each backend invokes
//! [`shared_repos`] with its store type and its sqlx database type. Inside, SQL is written with `?` placeholders
//! and passed through the invoking module's `sql` (unchanged on SQLite, numbered `$1, $2, …` by [`numbered`] on
//! PostgreSQL), queries built with `QueryBuilder` bind their own placeholders, and reads go to the store's
//! `reader()` pool, writes to its `writer()` pool (one pool for both on PostgreSQL). Helpers the bodies call
//! (`backend`, `map_sqlx`, the row readers) resolve in the invoking module.

/// `sql` with each `?` placeholder replaced by PostgreSQL's `$1, $2, …`, in order. The shared SQL holds no `?`
/// other than placeholders (no string literal or jsonb operator uses one).
pub(crate) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// The project, tag, image, iteration, prediction, file and vision-job repositories of `$store` on sqlx
/// database `$db`.
macro_rules! shared_repos {
    ($store:ty, $db:ty) => {
        #[async_trait]
        impl ProjectRepo for $store {
            async fn insert_project(&self, p: &Project) -> StoreResult<()> {
                sqlx::query(&sql("INSERT INTO projects (id, name, description, settings, created, last_modified, \
                 status) VALUES (?, ?, ?, ?, ?, ?, ?)"))
                    .bind(p.id.to_string())
                    .bind(&p.name)
                    .bind(&p.description)
                    .bind(serde_json::to_string(&p.settings).map_err(backend)?)
                    .bind(ms(&p.created))
                    .bind(ms(&p.last_modified))
                    .bind(&p.status)
                    .execute(self.writer())
                    .await
                    .map(|_| ())
                    .map_err(map_sqlx)
            }

            async fn get_project(&self, id: Uuid) -> StoreResult<Option<Project>> {
                let row = sqlx::query(&sql("SELECT * FROM projects WHERE id = ?"))
                    .bind(id.to_string())
                    .fetch_optional(self.reader())
                    .await
                    .map_err(backend)?;
                row.as_ref().map(project_from).transpose()
            }

            async fn list_projects(&self) -> StoreResult<Vec<Project>> {
                let rows = sqlx::query(&sql("SELECT * FROM projects ORDER BY \
                 seq")).fetch_all(self.reader()).await.map_err(backend)?;
                rows.iter().map(project_from).collect()
            }

            async fn count_projects(&self) -> StoreResult<u64> {
                let n: i64 =
                    sqlx::query_scalar(&sql("SELECT COUNT(*) FROM \
                     projects")).fetch_one(self.reader()).await.map_err(backend)?;
                Ok(n as u64)
            }

            async fn update_project(&self, p: &Project) -> StoreResult<()> {
                sqlx::query(
                    &sql("UPDATE projects SET name = ?, description = ?, settings = ?, last_modified = ?, status = ? \
                     WHERE id = ?"),
                )
                .bind(&p.name)
                .bind(&p.description)
                .bind(serde_json::to_string(&p.settings).map_err(backend)?)
                .bind(ms(&p.last_modified))
                .bind(&p.status)
                .bind(p.id.to_string())
                .execute(self.writer())
                .await
                .map(|_| ())
                .map_err(map_sqlx)
            }

            async fn delete_project(&self, id: Uuid) -> StoreResult<bool> {
                let r = sqlx::query(&sql("DELETE FROM projects WHERE id = ?"))
                    .bind(id.to_string())
                    .execute(self.writer())
                    .await
                    .map_err(backend)?;
                Ok(r.rows_affected() > 0)
            }

            async fn project_ids(&self) -> StoreResult<HashSet<Uuid>> {
                let ids: Vec<String> =
                    sqlx::query_scalar(&sql("SELECT id FROM \
                     projects")).fetch_all(self.reader()).await.map_err(backend)?;
                ids.iter().map(|s| uuid(s)).collect()
            }
        }

        #[async_trait]
        impl PredictionRepo for $store {
            async fn insert_prediction(&self, p: &PredictionRecord) -> StoreResult<()> {
                let mut tx = self.writer().begin().await.map_err(backend)?;
                sqlx::query(
                    &sql("INSERT INTO predictions (id, project_id, iteration_id, domain_id, application, created, \
                     uncertainty, width, height, predictions) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                )
                .bind(p.id.to_string())
                .bind(p.project.to_string())
                .bind(p.iteration.to_string())
                .bind(p.domain.to_string())
                .bind(&p.application)
                .bind(ms(&p.created))
                .bind(p.uncertainty)
                .bind(p.width as i64)
                .bind(p.height as i64)
                .bind(serde_json::to_string(&p.predictions).map_err(backend)?)
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx)?;
                if !p.predictions.is_empty() {
                    let mut qb =
                        QueryBuilder::<$db>::new("INSERT INTO prediction_scores (prediction_id, tag_id, probability) ");
                    qb.push_values(&p.predictions, |mut b, pr| {
                        b.push_bind(p.id.to_string()).push_bind(pr.tag_id.to_string()).push_bind(pr.probability);
                    });
                    qb.build().execute(&mut *tx).await.map_err(map_sqlx)?;
                }
                tx.commit().await.map_err(backend)
            }

            async fn query_predictions(
                &self,
                project: Uuid,
                q: &PredictionQuery,
            ) -> StoreResult<Vec<PredictionRecord>> {
                let mut qb = QueryBuilder::<$db>::new(format!(
                    "SELECT {PREDICTION_COLUMNS} FROM predictions p WHERE p.project_id = "
                ));
                qb.push_bind(project.to_string());
                for (tag, min, max) in &q.tags {
                    qb.push(" AND EXISTS (SELECT 1 FROM prediction_scores s WHERE s.prediction_id = p.id ")
                        .push("AND s.tag_id = ")
                        .push_bind(tag.to_string())
                        .push(" AND s.probability >= ")
                        .push_bind(*min)
                        .push(" AND s.probability <= ")
                        .push_bind(*max)
                        .push(")");
                }
                if let Some(it) = q.iteration {
                    qb.push(" AND p.iteration_id = ").push_bind(it.to_string());
                }
                if let Some(app) = &q.application {
                    qb.push(" AND p.application = ").push_bind(app.clone());
                }
                if let Some(t) = &q.start {
                    qb.push(" AND p.created >= ").push_bind(ms(t));
                }
                if let Some(t) = &q.end {
                    qb.push(" AND p.created <= ").push_bind(ms(t));
                }
                if let Some(c) = &q.after {
                    match q.order {
                        PredictionOrder::Newest => {
                            qb.push(" AND (p.created, p.id) < (").push_bind(c.created_ms).push(", ");
                            qb.push_bind(c.id.to_string()).push(")");
                        }
                        PredictionOrder::Oldest => {
                            qb.push(" AND (p.created, p.id) > (").push_bind(c.created_ms).push(", ");
                            qb.push_bind(c.id.to_string()).push(")");
                        }
                        PredictionOrder::Suggested => {
                            qb.push(" AND (p.uncertainty, p.created, p.id) < (").push_bind(c.uncertainty).push(", ");
                            qb.push_bind(c.created_ms).push(", ").push_bind(c.id.to_string()).push(")");
                        }
                    }
                }
                qb.push(match q.order {
                    PredictionOrder::Newest => " ORDER BY p.created DESC, p.id DESC",
                    PredictionOrder::Oldest => " ORDER BY p.created ASC, p.id ASC",
                    PredictionOrder::Suggested => " ORDER BY p.uncertainty DESC, p.created DESC, p.id DESC",
                });
                qb.push(" LIMIT ").push_bind(q.limit as i64);
                let rows = qb.build().fetch_all(self.reader()).await.map_err(backend)?;
                rows.iter().map(prediction_from).collect()
            }

            async fn get_predictions(&self, project: Uuid, ids: &[Uuid]) -> StoreResult<Vec<PredictionRecord>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut qb = QueryBuilder::<$db>::new(format!(
                    "SELECT {PREDICTION_COLUMNS} FROM predictions p WHERE p.project_id = "
                ));
                qb.push_bind(project.to_string()).push(" AND p.id IN (");
                push_list(&mut qb, ids);
                qb.push(")");
                let rows = qb.build().fetch_all(self.reader()).await.map_err(backend)?;
                rows.iter().map(prediction_from).collect()
            }

            async fn delete_predictions(&self, project: Uuid, ids: &[Uuid]) -> StoreResult<Vec<Uuid>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut qb = QueryBuilder::<$db>::new("DELETE FROM predictions WHERE project_id = ");
                qb.push_bind(project.to_string()).push(" AND id IN (");
                push_list(&mut qb, ids);
                qb.push(") RETURNING id");
                let gone: Vec<String> = qb.build_query_scalar().fetch_all(self.writer()).await.map_err(backend)?;
                gone.iter().map(|s| uuid(s)).collect()
            }

            async fn existing_prediction_ids(&self, project: Uuid, candidates: &[Uuid]) -> StoreResult<HashSet<Uuid>> {
                if candidates.is_empty() {
                    return Ok(HashSet::new());
                }
                let mut qb = QueryBuilder::<$db>::new("SELECT id FROM predictions WHERE project_id = ");
                qb.push_bind(project.to_string()).push(" AND id IN (");
                push_list(&mut qb, candidates);
                qb.push(")");
                let ids: Vec<String> = qb.build_query_scalar().fetch_all(self.reader()).await.map_err(backend)?;
                ids.iter().map(|s| uuid(s)).collect()
            }

            async fn expired_predictions(&self, before: Time, limit: u32) -> StoreResult<Vec<(Uuid, Uuid)>> {
                let rows = sqlx::query(&sql("SELECT project_id, id FROM predictions WHERE created < ? ORDER BY \
                 created LIMIT ?"))
                    .bind(ms(&before))
                    .bind(limit as i64)
                    .fetch_all(self.reader())
                    .await
                    .map_err(backend)?;
                rows.iter().map(|r| Ok((uuid(r.get("project_id"))?, uuid(r.get("id"))?))).collect()
            }
        }

        #[async_trait]
        impl FileRepo for $store {
            async fn insert_file(&self, f: &FileRecord) -> StoreResult<FileRecord> {
                let id: i64 = sqlx::query_scalar(
                    &sql("INSERT INTO files (project, external_id, instance_space, instance_external_id, name, \
                     mime_type, blob_key, uploaded, size, created, updated, uploaded_time) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"),
                )
                .bind(&f.project)
                .bind(&f.external_id)
                .bind(f.instance_id.as_ref().map(|i| &i.0))
                .bind(f.instance_id.as_ref().map(|i| &i.1))
                .bind(&f.name)
                .bind(&f.mime_type)
                .bind(&f.blob_key)
                .bind(f.uploaded as i64)
                .bind(f.size)
                .bind(ms(&f.created))
                .bind(ms(&f.updated))
                .bind(f.uploaded_time.as_ref().map(ms))
                .fetch_one(self.writer())
                .await
                .map_err(map_sqlx)?;
                Ok(FileRecord { id, ..f.clone() })
            }

            async fn files_by_ids(&self, project: &str, ids: &[i64]) -> StoreResult<Vec<FileRecord>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut qb = QueryBuilder::<$db>::new("SELECT * FROM files WHERE project = ");
                qb.push_bind(project.to_string()).push(" AND id IN (");
                let mut sep = qb.separated(", ");
                for id in ids {
                    sep.push_bind(*id);
                }
                qb.push(")");
                let rows = qb.build().fetch_all(self.reader()).await.map_err(backend)?;
                Ok(rows.iter().map(file_from).collect())
            }

            async fn files_by_external_ids(&self, project: &str, ids: &[String]) -> StoreResult<Vec<FileRecord>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut qb = QueryBuilder::<$db>::new("SELECT * FROM files WHERE project = ");
                qb.push_bind(project.to_string()).push(" AND external_id IN (");
                push_list(&mut qb, ids);
                qb.push(")");
                let rows = qb.build().fetch_all(self.reader()).await.map_err(backend)?;
                Ok(rows.iter().map(file_from).collect())
            }

            async fn files_by_instance_ids(
                &self,
                project: &str,
                ids: &[(String, String)],
            ) -> StoreResult<Vec<FileRecord>> {
                let mut out = Vec::with_capacity(ids.len());
                for (space, external) in ids {
                    let row = sqlx::query(
                        &sql("SELECT * FROM files WHERE project = ? AND instance_space = ? AND instance_external_id = \
                         ?"),
                    )
                    .bind(project)
                    .bind(space)
                    .bind(external)
                    .fetch_optional(self.reader())
                    .await
                    .map_err(backend)?;
                    out.extend(row.as_ref().map(file_from));
                }
                Ok(out)
            }

            async fn list_files(&self, project: &str, after: i64, limit: u32) -> StoreResult<Vec<FileRecord>> {
                let rows = sqlx::query(&sql("SELECT * FROM files WHERE project = ? AND id > ? ORDER BY id LIMIT ?"))
                    .bind(project)
                    .bind(after)
                    .bind(limit as i64)
                    .fetch_all(self.reader())
                    .await
                    .map_err(backend)?;
                Ok(rows.iter().map(file_from).collect())
            }

            async fn mark_file_uploaded(&self, project: &str, id: i64, size: i64, at: Time) -> StoreResult<()> {
                sqlx::query(
                    &sql("UPDATE files SET uploaded = 1, size = ?, uploaded_time = ?, updated = ? WHERE project = ? \
                     AND id = ?"),
                )
                .bind(size)
                .bind(ms(&at))
                .bind(ms(&at))
                .bind(project)
                .bind(id)
                .execute(self.writer())
                .await
                .map_err(backend)?;
                Ok(())
            }

            async fn delete_files(&self, project: &str, ids: &[i64]) -> StoreResult<Vec<FileRecord>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut qb = QueryBuilder::<$db>::new("DELETE FROM files WHERE project = ");
                qb.push_bind(project.to_string()).push(" AND id IN (");
                let mut sep = qb.separated(", ");
                for id in ids {
                    sep.push_bind(*id);
                }
                qb.push(") RETURNING *");
                let rows = qb.build().fetch_all(self.writer()).await.map_err(backend)?;
                Ok(rows.iter().map(file_from).collect())
            }
        }

        #[async_trait]
        impl VisionJobRepo for $store {
            async fn insert_vision_job(
                &self,
                project: &str,
                request: &serde_json::Value,
                at: Time,
            ) -> StoreResult<i64> {
                sqlx::query_scalar(
                    &sql("INSERT INTO vision_jobs (project, request, status, created, start_time, status_time) \
                     VALUES (?, ?, 'Queued', ?, ?, ?) RETURNING id"),
                )
                .bind(project)
                .bind(serde_json::to_string(request).map_err(backend)?)
                .bind(ms(&at))
                .bind(ms(&at))
                .bind(ms(&at))
                .fetch_one(self.writer())
                .await
                .map_err(map_sqlx)
            }

            async fn set_vision_queue_job(&self, id: i64, queue_job: Uuid) -> StoreResult<()> {
                sqlx::query(&sql("UPDATE vision_jobs SET queue_job = ? WHERE id = ?"))
                    .bind(queue_job.to_string())
                    .bind(id)
                    .execute(self.writer())
                    .await
                    .map_err(backend)?;
                Ok(())
            }

            async fn get_vision_job(&self, project: &str, id: i64) -> StoreResult<Option<VisionJobRecord>> {
                let row = sqlx::query(&sql("SELECT * FROM vision_jobs WHERE project = ? AND id = ?"))
                    .bind(project)
                    .bind(id)
                    .fetch_optional(self.reader())
                    .await
                    .map_err(backend)?;
                row.as_ref().map(vision_job_from).transpose()
            }

            async fn vision_job(&self, id: i64) -> StoreResult<Option<VisionJobRecord>> {
                let row = sqlx::query(&sql("SELECT * FROM vision_jobs WHERE id = ?"))
                    .bind(id)
                    .fetch_optional(self.reader())
                    .await
                    .map_err(backend)?;
                row.as_ref().map(vision_job_from).transpose()
            }

            async fn update_vision_job(
                &self,
                id: i64,
                status: argus_core::jobs::JobStatus,
                at: Time,
                result: Option<&serde_json::Value>,
                error: Option<&str>,
            ) -> StoreResult<()> {
                let result = result.map(serde_json::to_string).transpose().map_err(backend)?;
                sqlx::query(
                    &sql("UPDATE vision_jobs SET status = ?, status_time = ?, result = COALESCE(?, result), \
                     error = COALESCE(?, error), start_time = CASE WHEN ? = 'Running' THEN ? ELSE start_time END \
                     WHERE id = ?"),
                )
                .bind(status.as_str())
                .bind(ms(&at))
                .bind(result)
                .bind(error)
                .bind(status.as_str())
                .bind(ms(&at))
                .bind(id)
                .execute(self.writer())
                .await
                .map_err(backend)?;
                Ok(())
            }

            async fn delete_finished_vision_jobs(&self, before: Time) -> StoreResult<u64> {
                let r = sqlx::query(&sql("DELETE FROM vision_jobs WHERE status IN ('Completed', 'Failed') AND \
                 status_time < ?"))
                    .bind(ms(&before))
                    .execute(self.writer())
                    .await
                    .map_err(backend)?;
                Ok(r.rows_affected())
            }
        }

        #[async_trait]
        impl TagRepo for $store {
            async fn insert_tag(&self, project: Uuid, t: &TagRecord) -> StoreResult<()> {
                sqlx::query(&sql(
                    "INSERT INTO tags (id, project_id, name, description, kind, created) VALUES (?, ?, ?, ?, ?, ?)",
                ))
                    .bind(t.id.to_string())
                    .bind(project.to_string())
                    .bind(&t.name)
                    .bind(&t.description)
                    .bind(t.kind.as_str())
                    .bind(ms(&t.created))
                    .execute(self.writer())
                    .await
                    .map(|_| ())
                    .map_err(map_sqlx)
            }

            async fn list_tags(&self, project: Uuid) -> StoreResult<Vec<Tag>> {
                let q = sql(&format!("{TAG_SELECT} WHERE t.project_id = ? ORDER BY t.seq")).into_owned();
                let rows = sqlx::query(&q).bind(project.to_string()).fetch_all(self.reader()).await.map_err(backend)?;
                rows.iter().map(tag_from).collect()
            }

            async fn get_tag(&self, project: Uuid, tag: Uuid) -> StoreResult<Option<Tag>> {
                let q = sql(&format!("{TAG_SELECT} WHERE t.project_id = ? AND t.id = ?")).into_owned();
                let row = sqlx::query(&q)
                    .bind(project.to_string())
                    .bind(tag.to_string())
                    .fetch_optional(self.reader())
                    .await
                    .map_err(backend)?;
                row.as_ref().map(tag_from).transpose()
            }

            async fn update_tag(&self, project: Uuid, t: &Tag) -> StoreResult<()> {
                sqlx::query(&sql("UPDATE tags SET name = ?, description = ?, kind = ? WHERE project_id = ? AND id = ?"))
                    .bind(&t.name)
                    .bind(&t.description)
                    .bind(t.kind.as_str())
                    .bind(project.to_string())
                    .bind(t.id.to_string())
                    .execute(self.writer())
                    .await
                    .map(|_| ())
                    .map_err(map_sqlx)
            }

            async fn delete_tag(&self, project: Uuid, tag: Uuid) -> StoreResult<bool> {
                let r = sqlx::query(&sql("DELETE FROM tags WHERE project_id = ? AND id = ?"))
                    .bind(project.to_string())
                    .bind(tag.to_string())
                    .execute(self.writer())
                    .await
                    .map_err(backend)?;
                Ok(r.rows_affected() > 0)
            }
        }

        #[async_trait]
        impl IterationRepo for $store {
            async fn iteration_exists(&self, project: Uuid, iteration: Uuid) -> StoreResult<bool> {
                let n: i64 = sqlx::query_scalar(&sql("SELECT COUNT(*) FROM iterations WHERE project_id = ? AND id = ?"))
                    .bind(project.to_string())
                    .bind(iteration.to_string())
                    .fetch_one(self.reader())
                    .await
                    .map_err(backend)?;
                Ok(n > 0)
            }

            async fn count_iterations(&self, project: Uuid) -> StoreResult<u64> {
                let n: i64 = sqlx::query_scalar(&sql("SELECT COUNT(*) FROM iterations WHERE project_id = ?"))
                    .bind(project.to_string())
                    .fetch_one(self.reader())
                    .await
                    .map_err(backend)?;
                Ok(n as u64)
            }

            async fn insert_iteration_with_job(
                &self,
                it: &Iteration,
                snapshot: &serde_json::Value,
                job: &NewJob,
            ) -> StoreResult<()> {
                let mut tx = self.writer().begin().await.map_err(backend)?;
                // Nodes starting a training of one project take turns on its row; the check then sees every commit.
                lock_project(&mut tx, it.project_id).await?;
                if count_active_jobs(&mut *tx, &job.kind, &job.scope).await? > 0 {
                    return Err(StoreError::Conflict(format!(
                        "a {} job of {} is already queued or running",
                        job.kind, job.scope
                    )));
                }
                insert_iteration_row(&mut *tx, it, snapshot, None).await?;
                insert_job(&mut *tx, it.id, job).await?;
                crate::fault::point("train-before-commit");
                tx.commit().await.map_err(backend)
            }

            async fn insert_trained_iteration(
                &self,
                it: &Iteration,
                snapshot: &serde_json::Value,
                evaluation: Option<&serde_json::Value>,
            ) -> StoreResult<()> {
                if it.status == IterationStatus::Training {
                    let why = format!("iteration {} is still training; no job would finish it", it.id);
                    return Err(StoreError::Conflict(why));
                }
                insert_iteration_row(self.writer(), it, snapshot, evaluation).await
            }

            async fn get_iteration(
                &self,
                project: Uuid,
                id: Uuid,
            ) -> StoreResult<Option<(Iteration, serde_json::Value)>> {
                let row = sqlx::query(&sql("SELECT body, snapshot FROM iterations WHERE project_id = ? AND id = ?"))
                    .bind(project.to_string())
                    .bind(id.to_string())
                    .fetch_optional(self.reader())
                    .await
                    .map_err(backend)?;
                row.map(|r| {
                    let it = iteration_from(r.get::<&str, _>("body"))?;
                    let snap: serde_json::Value = serde_json::from_str(r.get::<&str, _>("snapshot")).map_err(backend)?;
                    Ok((it, snap))
                })
                .transpose()
            }

            async fn list_iterations(&self, project: Uuid) -> StoreResult<Vec<Iteration>> {
                let rows: Vec<String> =
                    sqlx::query_scalar(&sql("SELECT body FROM iterations WHERE project_id = ? ORDER BY seq"))
                        .bind(project.to_string())
                        .fetch_all(self.reader())
                        .await
                        .map_err(backend)?;
                rows.iter().map(|b| iteration_from(b)).collect()
            }

            async fn update_iteration(&self, it: &Iteration) -> StoreResult<()> {
                sqlx::query(
                    &sql("UPDATE iterations SET name = ?, status = ?, last_modified = ?, trained_at = ?, body = ? \
                     WHERE project_id = ? AND id = ?"),
                )
                .bind(&it.name)
                .bind(it.status.as_str())
                .bind(ms(&it.last_modified))
                .bind(it.trained_at.as_ref().map(ms))
                .bind(iteration_body(it)?)
                .bind(it.project_id.to_string())
                .bind(it.id.to_string())
                .execute(self.writer())
                .await
                .map(|_| ())
                .map_err(map_sqlx)
            }

            async fn set_evaluation(&self, project: Uuid, id: Uuid, evaluation: &serde_json::Value) -> StoreResult<()> {
                sqlx::query(&sql("UPDATE iterations SET evaluation = ? WHERE project_id = ? AND id = ?"))
                    .bind(serde_json::to_string(evaluation).map_err(backend)?)
                    .bind(project.to_string())
                    .bind(id.to_string())
                    .execute(self.writer())
                    .await
                    .map(|_| ())
                    .map_err(backend)
            }

            async fn get_evaluation(&self, project: Uuid, id: Uuid) -> StoreResult<Option<serde_json::Value>> {
                let v: Option<Option<String>> =
                    sqlx::query_scalar(&sql("SELECT evaluation FROM iterations WHERE project_id = ? AND id = ?"))
                        .bind(project.to_string())
                        .bind(id.to_string())
                        .fetch_optional(self.reader())
                        .await
                        .map_err(backend)?;
                v.flatten().map(|s| serde_json::from_str(&s).map_err(backend)).transpose()
            }

            async fn delete_iteration(&self, project: Uuid, id: Uuid) -> StoreResult<bool> {
                let r = sqlx::query(&sql("DELETE FROM iterations WHERE project_id = ? AND id = ?"))
                    .bind(project.to_string())
                    .bind(id.to_string())
                    .execute(self.writer())
                    .await
                    .map_err(backend)?;
                Ok(r.rows_affected() > 0)
            }

            async fn put_suggestions(&self, project: Uuid, iteration: Uuid, rows: &[Suggestion]) -> StoreResult<()> {
                let mut tx = self.writer().begin().await.map_err(backend)?;
                for r in rows {
                    sqlx::query(
                        &sql("INSERT INTO suggestions (iteration_id, image_id, project_id, created, uncertainty, \
                         predictions) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (iteration_id, image_id) DO UPDATE SET \
                         project_id = EXCLUDED.project_id, created = EXCLUDED.created, \
                         uncertainty = EXCLUDED.uncertainty, predictions = EXCLUDED.predictions"),
                    )
                    .bind(iteration.to_string())
                    .bind(r.image_id.to_string())
                    .bind(project.to_string())
                    .bind(ms(&r.created))
                    .bind(r.uncertainty)
                    .bind(serde_json::to_string(&r.predictions).map_err(backend)?)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_sqlx)?;
                }
                tx.commit().await.map_err(backend)
            }

            async fn untagged_suggestions(&self, project: Uuid, iteration: Uuid) -> StoreResult<Vec<Suggestion>> {
                let rows = sqlx::query(
                    &sql("SELECT s.image_id, s.created, s.uncertainty, s.predictions FROM suggestions s \
                     WHERE s.project_id = ? AND s.iteration_id = ? \
                     AND NOT EXISTS (SELECT 1 FROM image_tags x WHERE x.image_id = s.image_id) \
                     AND NOT EXISTS (SELECT 1 FROM regions x WHERE x.image_id = s.image_id) \
                     ORDER BY s.created, s.image_id"),
                )
                .bind(project.to_string())
                .bind(iteration.to_string())
                .fetch_all(self.reader())
                .await
                .map_err(backend)?;
                rows.iter()
                    .map(|r| {
                        Ok(Suggestion {
                            image_id: uuid(r.get("image_id"))?,
                            created: time(r.get("created")),
                            uncertainty: r.get("uncertainty"),
                            predictions: serde_json::from_str(r.get::<&str, _>("predictions")).map_err(backend)?,
                        })
                    })
                    .collect()
            }
        }

        #[async_trait]
        impl ImageRepo for $store {
            async fn insert_images(
                &self,
                project: Uuid,
                images: &[NewImage],
                max_images: u64,
            ) -> StoreResult<Vec<InsertOutcome>> {
                let mut tx = self.writer().begin().await.map_err(backend)?;
                let pid = project.to_string();
                // Batches into one project take turns (nodes upload concurrently): the quota count and the duplicate
                // check then see every committed image, as under SQLite's single writer.
                lock_project(&mut tx, project).await?;
                let mut count: i64 = sqlx::query_scalar(&sql("SELECT COUNT(*) FROM images WHERE project_id = ?"))
                    .bind(&pid)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(backend)?;
                let mut out = Vec::with_capacity(images.len());
                for img in images {
                    let existing: Option<String> =
                        sqlx::query_scalar(&sql("SELECT id FROM images WHERE project_id = ? AND content_hash = ?"))
                            .bind(&pid)
                            .bind(&img.content_hash)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(backend)?;
                    if let Some(e) = existing {
                        out.push(InsertOutcome::Duplicate(uuid(&e)?));
                        continue;
                    }
                    if count as u64 >= max_images {
                        out.push(InsertOutcome::QuotaExceeded);
                        continue;
                    }
                    let id = img.id.to_string();
                    sqlx::query(
                        &sql("INSERT INTO images (id, project_id, created, width, height, mime, byte_size, \
                         content_hash, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                    )
                    .bind(&id)
                    .bind(&pid)
                    .bind(ms(&img.created))
                    .bind(img.width as i64)
                    .bind(img.height as i64)
                    .bind(&img.mime)
                    .bind(img.byte_size as i64)
                    .bind(&img.content_hash)
                    .bind(serde_json::to_string(&img.metadata).map_err(backend)?)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_sqlx)?;
                    for t in &img.tag_ids {
                        sqlx::query(&sql("INSERT INTO image_tags (image_id, tag_id, created) VALUES (?, ?, ?) \
                             ON CONFLICT DO NOTHING"))
                            .bind(&id)
                            .bind(t.to_string())
                            .bind(ms(&img.created))
                            .execute(&mut *tx)
                            .await
                            .map_err(map_sqlx)?;
                    }
                    for r in &img.regions {
                        insert_region(&mut tx, img.id, r).await.map_err(map_sqlx)?;
                    }
                    count += 1;
                    out.push(InsertOutcome::Inserted);
                }
                tx.commit().await.map_err(backend)?;
                Ok(out)
            }

            async fn find_image_by_hash(&self, project: Uuid, hash: &str) -> StoreResult<Option<Uuid>> {
                let q = sql("SELECT id FROM images WHERE project_id = ? AND content_hash = ?");
                let id: Option<String> = sqlx::query_scalar(&q)
                    .bind(project.to_string())
                    .bind(hash)
                    .fetch_optional(self.reader())
                    .await
                    .map_err(backend)?;
                id.as_deref().map(uuid).transpose()
            }

            async fn get_images(&self, project: Uuid, ids: &[Uuid]) -> StoreResult<Vec<ImageRecord>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut qb = QueryBuilder::<$db>::new("SELECT * FROM images WHERE project_id = ");
                qb.push_bind(project.to_string()).push(" AND id IN (");
                push_list(&mut qb, ids);
                qb.push(")");
                let rows = qb.build().fetch_all(self.reader()).await.map_err(backend)?;
                let mut found: HashMap<Uuid, ImageRecord> =
                    self.images_from_rows(rows).await?.into_iter().map(|r| (r.id, r)).collect();
                Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
            }

            async fn query_images(&self, project: Uuid, q: &ImageQuery) -> StoreResult<Vec<ImageRecord>> {
                let mut qb = QueryBuilder::<$db>::new("SELECT i.* FROM images i");
                push_where(&mut qb, project, q);
                qb.push(match q.order {
                    Order::Newest => " ORDER BY i.created DESC, i.seq DESC",
                    Order::Oldest => " ORDER BY i.created ASC, i.seq ASC",
                });
                qb.push(" LIMIT ").push_bind(q.take as i64).push(" OFFSET ").push_bind(q.skip as i64);
                let rows = qb.build().fetch_all(self.reader()).await.map_err(backend)?;
                self.images_from_rows(rows).await
            }

            async fn count_images(&self, project: Uuid, q: &ImageQuery) -> StoreResult<u64> {
                let mut qb = QueryBuilder::<$db>::new("SELECT COUNT(*) FROM images i");
                push_where(&mut qb, project, q);
                let n: i64 = qb.build_query_scalar().fetch_one(self.reader()).await.map_err(backend)?;
                Ok(n as u64)
            }

            async fn delete_images(
                &self,
                project: Uuid,
                ids: Option<&[Uuid]>,
                retain: &HashSet<Uuid>,
            ) -> StoreResult<DeletedImages> {
                let mut tx = self.writer().begin().await.map_err(backend)?;
                let found = select_image_ids(&mut tx, "images", project, ids).await?;
                let (retired, deleted): (Vec<Uuid>, Vec<Uuid>) = found.into_iter().partition(|id| retain.contains(id));
                let retired_at = ms(&chrono::Utc::now());
                for chunk in retired.chunks(500) {
                    let mut qb = QueryBuilder::<$db>::new(
                        "INSERT INTO retired_images (id, project_id, retired, created, width, height, mime, \
                         byte_size, content_hash, metadata) SELECT id, project_id, ",
                    );
                    qb.push_bind(retired_at);
                    qb.push(
                        ", created, width, height, mime, byte_size, content_hash, metadata FROM images \
                         WHERE project_id = ",
                    );
                    qb.push_bind(project.to_string()).push(" AND id IN (");
                    push_list(&mut qb, chunk);
                    qb.push(
                        ") ON CONFLICT (id) DO UPDATE SET retired = EXCLUDED.retired, created = EXCLUDED.created, \
                         width = EXCLUDED.width, height = EXCLUDED.height, mime = EXCLUDED.mime, \
                         byte_size = EXCLUDED.byte_size, content_hash = EXCLUDED.content_hash, \
                         metadata = EXCLUDED.metadata",
                    );
                    qb.build().execute(&mut *tx).await.map_err(backend)?;
                }
                delete_image_rows(&mut tx, "images", project, &retired).await?;
                delete_image_rows(&mut tx, "images", project, &deleted).await?;
                tx.commit().await.map_err(backend)?;
                Ok(DeletedImages { deleted, retired })
            }

            async fn get_retired_images(&self, project: Uuid, ids: &[Uuid]) -> StoreResult<Vec<ImageRecord>> {
                let mut found: HashMap<Uuid, ImageRecord> = HashMap::new();
                for chunk in ids.chunks(500) {
                    let mut qb = QueryBuilder::<$db>::new("SELECT * FROM retired_images WHERE project_id = ");
                    qb.push_bind(project.to_string()).push(" AND id IN (");
                    push_list(&mut qb, chunk);
                    qb.push(")");
                    for row in qb.build().fetch_all(self.reader()).await.map_err(backend)? {
                        let r = image_row(&row)?;
                        found.insert(r.id, r);
                    }
                }
                Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
            }

            async fn purge_retired_images(
                &self,
                project: Uuid,
                ids: Option<&[Uuid]>,
                retain: &HashSet<Uuid>,
            ) -> StoreResult<Vec<Uuid>> {
                let mut tx = self.writer().begin().await.map_err(backend)?;
                let found = select_image_ids(&mut tx, "retired_images", project, ids).await?;
                let gone: Vec<Uuid> = found.into_iter().filter(|id| !retain.contains(id)).collect();
                delete_image_rows(&mut tx, "retired_images", project, &gone).await?;
                tx.commit().await.map_err(backend)?;
                Ok(gone)
            }

            async fn existing_image_ids(&self, project: Uuid, candidates: &[Uuid]) -> StoreResult<HashSet<Uuid>> {
                let mut existing = HashSet::new();
                for chunk in candidates.chunks(500) {
                    let mut qb = QueryBuilder::<$db>::new("SELECT id FROM images WHERE project_id = ");
                    qb.push_bind(project.to_string()).push(" AND id IN (");
                    push_list(&mut qb, chunk);
                    qb.push(") UNION SELECT id FROM retired_images WHERE project_id = ");
                    qb.push_bind(project.to_string()).push(" AND id IN (");
                    push_list(&mut qb, chunk);
                    qb.push(")");
                    let ids: Vec<String> = qb.build_query_scalar().fetch_all(self.reader()).await.map_err(backend)?;
                    for id in ids {
                        existing.insert(uuid(&id)?);
                    }
                }
                Ok(existing)
            }

            async fn set_metadata(&self, project: Uuid, updates: &[(Uuid, Metadata)]) -> StoreResult<()> {
                let mut tx = self.writer().begin().await.map_err(backend)?;
                for (id, m) in updates {
                    sqlx::query(&sql("UPDATE images SET metadata = ? WHERE project_id = ? AND id = ?"))
                        .bind(serde_json::to_string(m).map_err(backend)?)
                        .bind(project.to_string())
                        .bind(id.to_string())
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?;
                }
                tx.commit().await.map_err(backend)
            }

            async fn add_image_tags(&self, project: Uuid, links: &[(Uuid, Uuid, Time)]) -> StoreResult<()> {
                let mut tx = self.writer().begin().await.map_err(backend)?;
                for (image, tag, t) in links {
                    sqlx::query(
                        &sql("INSERT INTO image_tags (image_id, tag_id, created) SELECT ?, ?, ? WHERE EXISTS \
                         (SELECT 1 FROM images WHERE id = ? AND project_id = ?) ON CONFLICT DO NOTHING"),
                    )
                    .bind(image.to_string())
                    .bind(tag.to_string())
                    .bind(ms(t))
                    .bind(image.to_string())
                    .bind(project.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(map_sqlx)?;
                }
                tx.commit().await.map_err(backend)
            }

            async fn delete_image_tags(&self, project: Uuid, images: &[Uuid], tags: &[Uuid]) -> StoreResult<()> {
                let mut qb = QueryBuilder::<$db>::new("DELETE FROM image_tags WHERE image_id IN (");
                push_list(&mut qb, images);
                qb.push(") AND tag_id IN (");
                push_list(&mut qb, tags);
                qb.push(") AND image_id IN (SELECT id FROM images WHERE project_id = ")
                    .push_bind(project.to_string())
                    .push(")");
                qb.build().execute(self.writer()).await.map(|_| ()).map_err(backend)
            }

            async fn add_regions(&self, _project: Uuid, regions: &[(Uuid, NewRegion)]) -> StoreResult<()> {
                let mut tx = self.writer().begin().await.map_err(backend)?;
                for (image, r) in regions {
                    insert_region(&mut tx, *image, r).await.map_err(map_sqlx)?;
                }
                tx.commit().await.map_err(backend)
            }

            async fn delete_regions(&self, project: Uuid, ids: &[Uuid]) -> StoreResult<()> {
                let mut qb = QueryBuilder::<$db>::new("DELETE FROM regions WHERE id IN (");
                push_list(&mut qb, ids);
                qb.push(") AND image_id IN (SELECT id FROM images WHERE project_id = ")
                    .push_bind(project.to_string())
                    .push(")");
                qb.build().execute(self.writer()).await.map(|_| ()).map_err(backend)
            }
        }

        /// Inserts an iteration's row: its fields, snapshot and (for an imported one) evaluation.
        async fn insert_iteration_row<'e>(
            ex: impl sqlx::Executor<'e, Database = $db>,
            it: &Iteration,
            snapshot: &serde_json::Value,
            evaluation: Option<&serde_json::Value>,
        ) -> StoreResult<()> {
            let evaluation = evaluation.map(serde_json::to_string).transpose().map_err(backend)?;
            sqlx::query(&sql(
                "INSERT INTO iterations (id, project_id, name, status, created, last_modified, trained_at, body, \
                 snapshot, evaluation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ))
            .bind(it.id.to_string())
            .bind(it.project_id.to_string())
            .bind(&it.name)
            .bind(it.status.as_str())
            .bind(ms(&it.created))
            .bind(ms(&it.last_modified))
            .bind(it.trained_at.as_ref().map(ms))
            .bind(iteration_body(it)?)
            .bind(serde_json::to_string(snapshot).map_err(backend)?)
            .bind(evaluation)
            .execute(ex)
            .await
            .map(|_| ())
            .map_err(map_sqlx)
        }
    };
}
pub(crate) use shared_repos;

#[cfg(test)]
mod tests {
    use super::numbered;

    #[test]
    fn placeholders_are_numbered_in_order() {
        assert_eq!(
            numbered("SELECT a FROM t WHERE x = ? AND y IN (?, ?)"),
            "SELECT a FROM t WHERE x = $1 AND y IN ($2, $3)"
        );
        assert_eq!(numbered("DELETE FROM t"), "DELETE FROM t");
    }
}
