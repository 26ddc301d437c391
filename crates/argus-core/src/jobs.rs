//! The durable job queue contract and the job-handler contract.
//!
//! Jobs live in the metadata store. A worker claims a job with a lease and renews it with heartbeats while it
//! runs; a job whose worker dies (crash, kill, restart) becomes claimable again once its lease expires, and
//! after `max_attempts` it is handed to its handler's [`JobHandler::abandoned`] so that what it was doing
//! (an iteration in `Training`, say) is marked failed with a reason instead of staying stuck. The SQLite store
//! implements the queue for the processes of one machine (`argus serve` and `argus worker` on one data
//! directory); PostgreSQL (`FOR UPDATE SKIP LOCKED`) is to serve workers on many machines through the same trait.
//! A job's input is typed ([`JobSpec`]); the queue stores it as JSON beside the job's kind.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::Time;
use crate::store::StoreResult;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum JobStatus {
    /// Waiting for a worker.
    Queued,
    /// A worker holds its lease.
    Running,
    /// Done.
    Completed,
    /// Failed for good.
    Failed,
}

impl JobStatus {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "Queued",
            Self::Running => "Running",
            Self::Completed => "Completed",
            Self::Failed => "Failed",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Self {
        match s {
            "Running" => Self::Running,
            "Completed" => Self::Completed,
            "Failed" => Self::Failed,
            _ => Self::Queued,
        }
    }
}

/// Queue kind of training jobs.
pub const TRAIN_JOB: &str = "train";
/// Queue kind of model exports.
pub const EXPORT_JOB: &str = "export";
/// Queue kind of segmentation jobs.
pub const SEGMENT_JOB: &str = "segment";
/// Every queue kind Argus runs.
pub const JOB_KINDS: [&str; 3] = [TRAIN_JOB, EXPORT_JOB, SEGMENT_JOB];

/// Trains one iteration (its snapshot is stored with it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainJob {
    /// The project.
    pub project: Uuid,
    /// The iteration in `Training`.
    pub iteration: Uuid,
}

/// Exports one iteration to one platform and flavor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportJob {
    /// The project.
    pub project: Uuid,
    /// The trained iteration.
    pub iteration: Uuid,
    /// `ONNX` or `OpenVino`.
    pub platform: String,
    /// `ONNX10`, `ONNX12`, `OnnxFloat16` or none.
    pub flavor: Option<String>,
    /// The exporter that made (or will make) the package.
    pub exporter_version: u32,
}

/// Runs one segmentation job of the vision API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentJob {
    /// The vision job's id.
    pub vision_job: i64,
}

/// A job's typed input: the queue stores its kind beside its payload as JSON (each variant's fields, as written
/// since these jobs existed), and a handler reads it back with [`JobSpec::of`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobSpec {
    /// A training.
    Train(TrainJob),
    /// An export.
    Export(ExportJob),
    /// A segmentation.
    Segment(SegmentJob),
}

impl JobSpec {
    /// The queue kind.
    pub fn kind(&self) -> &'static str {
        match self {
            JobSpec::Train(_) => TRAIN_JOB,
            JobSpec::Export(_) => EXPORT_JOB,
            JobSpec::Segment(_) => SEGMENT_JOB,
        }
    }

    /// The row to enqueue for this job in `scope`.
    pub fn to_new_job(&self, scope: impl Into<String>, max_attempts: u32) -> NewJob {
        let payload = match self {
            JobSpec::Train(j) => serde_json::to_value(j),
            JobSpec::Export(j) => serde_json::to_value(j),
            JobSpec::Segment(j) => serde_json::to_value(j),
        };
        // Plain structs of ids, strings and numbers always serialise.
        NewJob { kind: self.kind().into(), scope: scope.into(), payload: payload.unwrap_or_default(), max_attempts }
    }

    /// The typed input of a stored job; an unknown kind or a payload of the wrong shape is an error naming it.
    pub fn of(job: &Job) -> Result<Self, String> {
        let bad = |e: serde_json::Error| format!("job {} ({}) has a malformed payload: {e}", job.id, job.kind);
        let p = job.payload.clone();
        match job.kind.as_str() {
            TRAIN_JOB => serde_json::from_value(p).map(JobSpec::Train).map_err(bad),
            EXPORT_JOB => serde_json::from_value(p).map(JobSpec::Export).map_err(bad),
            SEGMENT_JOB => serde_json::from_value(p).map(JobSpec::Segment).map_err(bad),
            other => Err(format!("job {} has an unknown kind '{other}'", job.id)),
        }
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Handler kind, e.g. `train`.
    pub kind: String,
    /// What the job belongs to (a project id), for caps and lookups.
    pub scope: String,
    /// Handler input.
    pub payload: serde_json::Value,
    /// Attempts before the job is abandoned.
    pub max_attempts: u32,
}

/// A job as stored.
#[derive(Debug, Clone)]
pub struct Job {
    /// Id.
    pub id: Uuid,
    /// Handler kind.
    pub kind: String,
    /// Scope.
    pub scope: String,
    /// Handler input.
    pub payload: serde_json::Value,
    /// Status.
    pub status: JobStatus,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Progress in [0, 1].
    pub progress: f64,
    /// Last progress message or failure reason.
    pub message: Option<String>,
    /// Handler output once completed.
    pub result: Option<serde_json::Value>,
    /// Enqueue time.
    pub created: Time,
    /// Last change.
    pub updated: Time,
}

/// What [`JobQueue::claim`] hands a worker.
#[derive(Debug, Clone)]
pub enum Claimed {
    /// Run it (the worker holds the lease).
    Run(Job),
    /// Its last worker died and no attempts are left: it is now `Failed`; tell the handler.
    Abandoned(Job),
}

/// The durable queue.
#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Adds a job in `Queued`.
    async fn enqueue(&self, job: NewJob) -> StoreResult<Job>;
    /// Claims the oldest runnable job of one of `kinds` for `worker`, leased for `lease_ms`.
    async fn claim(&self, kinds: &[String], worker: &str, lease_ms: i64) -> StoreResult<Option<Claimed>>;
    /// Renews the lease and records progress; false when the worker no longer holds the job.
    async fn heartbeat(
        &self,
        id: Uuid,
        worker: &str,
        progress: f64,
        message: Option<&str>,
        lease_ms: i64,
    ) -> StoreResult<bool>;
    /// Marks the job completed; false when the worker no longer holds it.
    async fn complete(&self, id: Uuid, worker: &str, result: &serde_json::Value) -> StoreResult<bool>;
    /// Marks the job failed (`retry`: back to `Queued` while attempts remain); false when not held.
    async fn fail(&self, id: Uuid, worker: &str, message: &str, retry: bool) -> StoreResult<bool>;
    /// One job.
    async fn get_job(&self, id: Uuid) -> StoreResult<Option<Job>>;
    /// Jobs of `kind` in `scope` that are queued or running.
    async fn active_jobs(&self, kind: &str, scope: &str) -> StoreResult<u64>;
    /// Every job of `kind` in `scope`, oldest first.
    async fn list_jobs(&self, kind: &str, scope: &str) -> StoreResult<Vec<Job>>;
    /// How many jobs wait and run, per kind, across every scope (the queue depth a scrape reports): `(kind,
    /// queued, running)`, kinds with neither left out, sorted by kind.
    async fn queue_depth(&self) -> StoreResult<Vec<(String, u64, u64)>>;
    /// Waits until a job may have been added (or `timeout` passes): what an idle worker does between claims.
    /// Backends that can push (PostgreSQL's `LISTEN`) return as soon as one is committed; the default sleeps.
    async fn wait_for_work(&self, timeout: std::time::Duration) {
        tokio::time::sleep(timeout).await;
    }
}

/// Progress a running handler reports; the worker's heartbeat persists it.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<Mutex<(f64, Option<String>)>>);

impl Progress {
    /// Records progress in [0, 1] and a short message.
    pub fn set(&self, fraction: f64, message: impl Into<String>) {
        if let Ok(mut g) = self.0.lock() {
            *g = (fraction.clamp(0.0, 1.0), Some(message.into()));
        }
    }

    /// The last reported progress.
    pub fn get(&self) -> (f64, Option<String>) {
        self.0.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

/// Runs jobs of one kind.
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    /// The kind this handler runs.
    fn kind(&self) -> &'static str;
    /// Runs one attempt. `Err(message, retry)` fails it, retrying while attempts remain when `retry`.
    async fn run(&self, job: &Job, progress: Progress) -> Result<serde_json::Value, (String, bool)>;
    /// Called once when a job is given up for good, by failure or because its workers kept dying.
    async fn abandoned(&self, job: &Job, reason: &str);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(kind: &str, payload: serde_json::Value) -> Job {
        Job {
            id: Uuid::nil(),
            kind: kind.into(),
            scope: "p".into(),
            payload,
            status: JobStatus::Queued,
            attempts: 0,
            max_attempts: 2,
            progress: 0.0,
            message: None,
            result: None,
            created: chrono::Utc::now(),
            updated: chrono::Utc::now(),
        }
    }

    #[test]
    fn specs_keep_the_payload_shapes_already_in_stores() {
        let (p, i) = (Uuid::new_v4(), Uuid::new_v4());
        // The shapes written before jobs were typed read back as their variants.
        let train = stored(TRAIN_JOB, serde_json::json!({"project": p, "iteration": i}));
        assert_eq!(JobSpec::of(&train), Ok(JobSpec::Train(TrainJob { project: p, iteration: i })));
        let segment = stored(SEGMENT_JOB, serde_json::json!({"visionJob": 7}));
        assert_eq!(JobSpec::of(&segment), Ok(JobSpec::Segment(SegmentJob { vision_job: 7 })));
        let export = JobSpec::Export(ExportJob {
            project: p,
            iteration: i,
            platform: "ONNX".into(),
            flavor: Some("ONNX12".into()),
            exporter_version: 3,
        });
        let row = export.to_new_job("s", 3);
        assert_eq!((row.kind.as_str(), row.max_attempts), (EXPORT_JOB, 3));
        assert_eq!(row.payload["exporterVersion"], 3);
        assert_eq!(JobSpec::of(&stored(&row.kind, row.payload)), Ok(export));
        // A payload of the wrong shape or an unknown kind is an error that names the job.
        assert!(JobSpec::of(&stored(TRAIN_JOB, serde_json::json!({"visionJob": 7}))).is_err());
        assert!(JobSpec::of(&stored("mystery", serde_json::json!({}))).unwrap_err().contains("mystery"));
    }
}
