//! The worker pool: `concurrency` loops that claim jobs from a [`JobQueue`], run them on their
//! [`JobHandler`], renew the lease and persist progress with a heartbeat while they run, and record the
//! outcome. A job whose worker dies is reclaimed once its lease lapses; one that keeps dying is abandoned
//! and its handler told, so nothing stays half-done forever. The same loop runs inside `argus serve` or in
//! separate worker processes sharing one store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use argus_core::jobs::{Claimed, JobHandler, JobQueue, Progress};
use tokio::sync::watch;

/// Timing of the pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Jobs run at once.
    pub concurrency: usize,
    /// Lease length; a worker silent this long is presumed dead.
    pub lease: Duration,
    /// Heartbeat period (well under the lease).
    pub heartbeat: Duration,
    /// Sleep when the queue is empty.
    pub idle_poll: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            concurrency: 1,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(3),
            idle_poll: Duration::from_millis(250),
        }
    }
}

/// A running pool; dropping the [`watch::Sender`] given to [`start`] or sending `true` stops it.
pub struct WorkerPool {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl WorkerPool {
    /// Kills every loop at once, mid-job, as a crash would (leases are left to lapse).
    pub fn abort(self) {
        for t in self.tasks {
            t.abort();
        }
    }

    /// Waits for every loop to finish (after a stop signal).
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Starts the pool.
pub fn start(
    queue: Arc<dyn JobQueue>,
    handlers: Vec<Arc<dyn JobHandler>>,
    config: PoolConfig,
    stop: watch::Receiver<bool>,
) -> WorkerPool {
    let handlers: Arc<HashMap<String, Arc<dyn JobHandler>>> =
        Arc::new(handlers.into_iter().map(|h| (h.kind().to_string(), h)).collect());
    let kinds: Arc<Vec<String>> = Arc::new(handlers.keys().cloned().collect());
    let tasks = (0..config.concurrency.max(1))
        .map(|n| {
            let worker = format!("{}-{n}", uuid::Uuid::new_v4().simple());
            let (queue, handlers, kinds, stop) =
                (Arc::clone(&queue), Arc::clone(&handlers), Arc::clone(&kinds), stop.clone());
            tokio::spawn(worker_loop(worker, queue, handlers, kinds, config, stop))
        })
        .collect();
    WorkerPool { tasks }
}

async fn worker_loop(
    worker: String,
    queue: Arc<dyn JobQueue>,
    handlers: Arc<HashMap<String, Arc<dyn JobHandler>>>,
    kinds: Arc<Vec<String>>,
    config: PoolConfig,
    mut stop: watch::Receiver<bool>,
) {
    let lease_ms = config.lease.as_millis() as i64;
    loop {
        if *stop.borrow() {
            return;
        }
        let claimed = match queue.claim(&kinds, &worker, lease_ms).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "claiming a job failed");
                None
            }
        };
        let Some(claimed) = claimed else {
            tokio::select! {
                _ = queue.wait_for_work(config.idle_poll) => {}
                _ = stop.changed() => {}
            }
            continue;
        };
        match claimed {
            Claimed::Abandoned(job) => {
                metrics::counter!("argus_jobs_total", "kind" => job.kind.clone(), "outcome" => "abandoned")
                    .increment(1);
                if let Some(h) = handlers.get(&job.kind) {
                    h.abandoned(&job, job.message.as_deref().unwrap_or("abandoned")).await;
                }
            }
            Claimed::Run(job) => {
                let Some(handler) = handlers.get(&job.kind).cloned() else { continue };
                tracing::info!(job = %job.id, kind = %job.kind, attempt = job.attempts, "job started");
                let progress = Progress::default();
                let started = std::time::Instant::now();
                let run = handler.run(&job, progress.clone());
                tokio::pin!(run);
                let mut beat = tokio::time::interval(config.heartbeat);
                beat.tick().await;
                let outcome = loop {
                    tokio::select! {
                        r = &mut run => break Some(r),
                        _ = beat.tick() => {
                            let (p, msg) = progress.get();
                            match queue.heartbeat(job.id, &worker, p, msg.as_deref(), lease_ms).await {
                                Ok(true) => {}
                                Ok(false) => {
                                    tracing::warn!(job = %job.id, "lost the job's lease; dropping this attempt");
                                    break None;
                                }
                                Err(e) => tracing::error!(error = %e, "heartbeat failed"),
                            }
                        }
                    }
                };
                let label = match &outcome {
                    Some(Ok(_)) => "completed",
                    Some(Err(_)) => "failed",
                    None => "lease_lost",
                };
                metrics::counter!("argus_jobs_total", "kind" => job.kind.clone(), "outcome" => label).increment(1);
                metrics::histogram!("argus_job_duration_seconds", "kind" => job.kind.clone(), "outcome" => label)
                    .record(started.elapsed().as_secs_f64());
                match outcome {
                    Some(Ok(result)) => {
                        if let Err(e) = queue.complete(job.id, &worker, &result).await {
                            tracing::error!(error = %e, "recording a completed job failed");
                        }
                        tracing::info!(job = %job.id, "job completed");
                    }
                    Some(Err((message, retry))) => {
                        let final_failure = !retry || job.attempts >= job.max_attempts;
                        if let Err(e) = queue.fail(job.id, &worker, &message, retry).await {
                            tracing::error!(error = %e, "recording a failed job failed");
                        }
                        if final_failure {
                            handler.abandoned(&job, &message).await;
                        }
                        tracing::warn!(job = %job.id, %message, retry, "job failed");
                    }
                    None => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argus_core::jobs::{Job, JobStatus, NewJob};
    use std::sync::Mutex;

    struct Flaky {
        abandoned: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl JobHandler for Flaky {
        fn kind(&self) -> &'static str {
            "flaky"
        }
        async fn run(&self, job: &Job, progress: Progress) -> Result<serde_json::Value, (String, bool)> {
            progress.set(0.5, "half way");
            tokio::time::sleep(Duration::from_millis(30)).await;
            if job.payload["ok"].as_bool() == Some(true) {
                Ok(serde_json::json!({"done": job.attempts}))
            } else {
                Err(("boom".into(), true))
            }
        }
        async fn abandoned(&self, _job: &Job, reason: &str) {
            self.abandoned.lock().expect("lock").push(reason.to_string());
        }
    }

    #[tokio::test]
    async fn pool_runs_retries_and_abandons() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Arc::new(argus_store::SqliteStore::open(&dir.path().join("db")).await.expect("open"));
        let queue: Arc<dyn JobQueue> = store;
        let ok = queue
            .enqueue(NewJob {
                kind: "flaky".into(),
                scope: "s".into(),
                payload: serde_json::json!({"ok": true}),
                max_attempts: 2,
            })
            .await
            .expect("enqueue");
        let bad = queue
            .enqueue(NewJob {
                kind: "flaky".into(),
                scope: "s".into(),
                payload: serde_json::json!({"ok": false}),
                max_attempts: 2,
            })
            .await
            .expect("enqueue");
        let handler = Arc::new(Flaky { abandoned: Mutex::new(Vec::new()) });
        let (tx, rx) = watch::channel(false);
        let cfg = PoolConfig { concurrency: 2, idle_poll: Duration::from_millis(10), ..Default::default() };
        let pool = start(Arc::clone(&queue), vec![handler.clone()], cfg, rx);
        for _ in 0..200 {
            if queue.active_jobs("flaky", "s").await.expect("active") == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = tx.send(true);
        pool.join().await;
        assert_eq!(queue.get_job(ok.id).await.expect("get").map(|j| j.status), Some(JobStatus::Completed));
        let failed = queue.get_job(bad.id).await.expect("get").expect("job");
        assert_eq!((failed.status, failed.attempts), (JobStatus::Failed, 2));
        assert_eq!(handler.abandoned.lock().expect("lock").as_slice(), ["boom"]);
    }
}
