//! The composition root: the one place where Argus's parts are wired together. `argus serve`, the CLI commands
//! that need a local server (`argus import customvision` into a data directory) and the benchmarks
//! (`argus-bench`) all start a [`Node`] from one [`Settings`](config::Settings).
//!
//! - [`config`]: flags > environment > TOML > defaults, and the data directory's keys.
//! - [`models`]: fetching and checking the pretrained weights (`argus models`).
//! - [`build_state`]: opens the metadata database (SQLite or PostgreSQL) and the blob store (a directory or an
//!   S3 bucket) and builds the server state.
//! - [`Node`]: that state served on a listener, with the job pools and sweeps a node runs.
//! - [`Worker`]: the job pools alone, no listener (`argus worker`), over the same data directory as a node.

pub mod config;
pub mod models;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use argus_core::jobs::{JobHandler, JobQueue};
use argus_core::service::{ExportJobs, ModelHub, SegmentJobs, TrainingJobs, EXPORT_JOB, SEGMENT_JOB, TRAIN_JOB};
use argus_core::store::MetadataStore;
use argus_core::{Argus, ServiceConfig};
use argus_engine::VisionEngine;
use argus_server::{AppState, GuardedFetcher, Keys};
use argus_store::{ObjectBlobStore, PostgresStore, S3Config, SqliteStore};

use crate::config::{load_or_create_secrets, BlobsUrl, DatabaseUrl, Settings};

/// Logs to stderr in `format` (text or json), filtered by `ARGUS_LOG`, else by `default_filter`.
pub fn init_logging(format: &str, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ARGUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The secrets kept in the configured metadata store (generated when it is new), for `argus keys`.
pub async fn stored_secrets(settings: &Settings) -> Result<crate::config::Secrets> {
    let (store, _) = open_metadata(settings).await?;
    Ok(load_or_create_secrets(store.as_ref(), &settings.data_dir).await?.0)
}

/// Opens the metadata database of `settings` (creating an SQLite file's directory; migrating either backend):
/// the repository and the job queue over the same connection pool.
pub async fn open_metadata(settings: &Settings) -> Result<(Arc<dyn MetadataStore>, Arc<dyn JobQueue>)> {
    match &settings.database {
        DatabaseUrl::Sqlite(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            let store = Arc::new(
                SqliteStore::open(path)
                    .await
                    .with_context(|| format!("opening the metadata store {}", settings.database.redacted()))?,
            );
            Ok((store.clone(), store))
        }
        DatabaseUrl::Postgres(url) => {
            // A first start creates the database when the role may; otherwise connecting says what is wrong.
            if let Err(e) = PostgresStore::create_database_if_missing(url).await {
                tracing::debug!(error = %e, "could not check for or create the database; connecting anyway");
            }
            let store =
                Arc::new(PostgresStore::connect(url).await.with_context(|| {
                    format!("connecting to the metadata database {}", settings.database.redacted())
                })?);
            Ok((store.clone(), store))
        }
    }
}

/// Opens the blob store of `settings`.
pub fn open_blobs(settings: &Settings) -> Result<ObjectBlobStore> {
    match &settings.blobs {
        BlobsUrl::File(dir) => {
            ObjectBlobStore::local(dir).with_context(|| format!("opening the blob directory {}", dir.display()))
        }
        BlobsUrl::S3 { bucket, prefix, options } => ObjectBlobStore::s3(&S3Config {
            bucket: bucket.clone(),
            prefix: prefix.clone(),
            endpoint: options.endpoint.clone(),
            region: options.region.clone(),
            path_style: options.path_style.unwrap_or(options.endpoint.is_some()),
            credentials: None,
        })
        .with_context(|| format!("configuring the S3 bucket {bucket}")),
    }
}

/// Opens the stores of `settings` and builds the shared state.
pub async fn build_state(settings: &Settings) -> Result<(AppState, bool)> {
    let (store, jobs) = open_metadata(settings).await?;
    let (mut secrets, fresh) = load_or_create_secrets(store.as_ref(), &settings.data_dir).await?;
    if let Some(k) = &settings.training_key {
        secrets.training_key = k.clone();
    }
    if let Some(k) = &settings.prediction_key {
        secrets.prediction_key = k.clone();
    }
    if let Some(k) = &settings.signing_key {
        secrets.signing_key = k.clone();
    }
    let blobs = open_blobs(settings)?;
    if let (DatabaseUrl::Postgres(_), BlobsUrl::File(dir)) = (&settings.database, &settings.blobs) {
        tracing::warn!(
            blobs = %dir.display(),
            "a shared PostgreSQL database with blobs in a local directory: processes on other machines will not \
             find these blobs; give every process the same --blobs s3://bucket/prefix"
        );
    }
    let argus = Argus {
        store,
        jobs,
        models: Arc::new(ModelHub::new(Arc::new(
            VisionEngine::new(&settings.models_dir).with_sam_weights(settings.sam_weights.clone()),
        ))),
        blobs: Arc::new(blobs),
        fetcher: Arc::new(GuardedFetcher::new(settings.allow_private_urls)),
        signer: argus_core::signing::UrlSigner::new(secrets.signing_key.as_bytes()),
        config: ServiceConfig {
            url_ttl_secs: settings.signed_url_ttl_secs,
            max_projects: settings.max_projects,
            prediction_retention_days: settings.prediction_retention_days,
            vision_retention_hours: settings.vision_retention_hours,
            max_running_vision_jobs: settings.max_running_vision_jobs,
            min_detection_images_per_tag: settings.min_detection_images_per_tag,
            max_images_per_project: settings.max_images_per_project,
            ..Default::default()
        },
    };
    let state = AppState {
        argus,
        keys: Arc::new(Keys {
            training: secrets.training_key.clone(),
            prediction: secrets.prediction_key.clone(),
            // The vision API's bearer key: its own when given, else the training key.
            vision: settings.vision_key.clone().unwrap_or_else(|| secrets.training_key.clone()),
        }),
        public_url: settings.public_url.clone(),
    };
    Ok((state, fresh))
}

/// What a [`Node`] runs besides its HTTP listener.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Where to listen (port 0: any free port).
    pub bind: SocketAddr,
    /// Concurrent training jobs (0: this node trains nothing).
    pub training_workers: usize,
    /// Concurrent segmentation jobs (0: none); they get their own pool that polls often, so a prompt never waits
    /// behind a training run.
    pub segment_workers: usize,
    /// How often an idle training worker looks for work.
    pub training_poll: Duration,
    /// How long a job's lease lasts: a worker silent this long is presumed dead and its job is handed to
    /// another (heartbeats come ten times per lease).
    pub job_lease: Duration,
    /// Run the start-up orphan sweep and the hourly retention sweeps.
    pub sweeps: bool,
}

impl NodeOptions {
    /// Everything `argus serve` runs, on `bind`.
    pub fn full(settings: &Settings) -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Self {
            bind: settings.bind,
            training_workers: if settings.run_jobs { settings.training_workers } else { 0 },
            segment_workers: if settings.run_jobs { cores } else { 0 },
            training_poll: argus_jobs::PoolConfig::default().idle_poll,
            job_lease: argus_jobs::PoolConfig::default().lease,
            sweeps: true,
        }
    }

    /// HTTP only, on a free loopback port (a server a command talks to through the API).
    pub fn loopback() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            training_workers: 0,
            segment_workers: 0,
            training_poll: argus_jobs::PoolConfig::default().idle_poll,
            job_lease: argus_jobs::PoolConfig::default().lease,
            sweeps: false,
        }
    }
}

/// A running Argus: the HTTP listener, its job pools and sweeps.
pub struct Node {
    /// The shared state (service, keys).
    pub state: AppState,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Whether the data directory was new (its keys were just generated).
    pub fresh: bool,
    stop_jobs: tokio::sync::watch::Sender<bool>,
    pools: Vec<argus_jobs::WorkerPool>,
    stop_http: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    sweeper: Option<tokio::task::JoinHandle<()>>,
}

impl Node {
    /// Opens the data directory of `settings` and starts serving it.
    pub async fn start(settings: &Settings, options: NodeOptions) -> Result<Self> {
        let (state, fresh) = build_state(settings).await?;
        let sweeper = if options.sweeps {
            // On an embedded database nothing is in flight before this process listens, so every orphan can
            // go now; a shared database may have uploads in flight on other nodes, so those get the hour.
            let grace = match settings.database {
                DatabaseUrl::Sqlite(_) => chrono::Duration::zero(),
                DatabaseUrl::Postgres(_) => chrono::Duration::hours(1),
            };
            // An embedded database has one serving process, which may restart at any time: it keeps the lease
            // under one fixed name. Cluster nodes each hold it under their own.
            let holder = match settings.database {
                DatabaseUrl::Sqlite(_) => "embedded".to_string(),
                DatabaseUrl::Postgres(_) => format!("node-{}", uuid::Uuid::new_v4().simple()),
            };
            if sweep_lease(&state.argus, &holder).await {
                match state.argus.sweep_orphans(grace).await {
                    Ok(r) => tracing::info!(examined = r.examined, deleted = r.deleted, "start-up orphan sweep"),
                    Err(e) => tracing::warn!(error = %e.message, "start-up orphan sweep failed"),
                }
            }
            Some(tokio::spawn(sweep_forever(state.argus.clone(), holder)))
        } else {
            None
        };
        let (stop_jobs, stop_rx) = tokio::sync::watch::channel(false);
        let pools = start_pools(&state, settings, &JobKind::ALL, &options, stop_rx);
        let listener =
            tokio::net::TcpListener::bind(options.bind).await.with_context(|| format!("binding {}", options.bind))?;
        let addr = listener.local_addr()?;
        let (stop_http, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(argus_server::serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        Ok(Self { state, addr, fresh, stop_jobs, pools, stop_http, server, sweeper })
    }

    /// Stops it as a crash would: the job pools die mid-job (their leases are left to lapse, so a node
    /// started later on the same store resumes the jobs) and the listener closes. For the crash tests.
    pub async fn kill(self) {
        for pool in self.pools {
            pool.abort();
        }
        if let Some(s) = self.sweeper {
            s.abort();
        }
        let _ = self.stop_http.send(());
        let _ = self.server.await;
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The Training key of its data directory (or `ARGUS_TRAINING_KEY`).
    pub fn training_key(&self) -> String {
        self.state.keys.training.clone()
    }

    /// Stops the listener (in-flight requests finish), then the job pools. With `wait_for_jobs`, running jobs
    /// finish first; otherwise they keep their lease until it lapses and a restarted node resumes them.
    pub async fn stop(self, wait_for_jobs: bool) -> Result<()> {
        let _ = self.stop_http.send(());
        let served = self.server.await;
        let _ = self.stop_jobs.send(true);
        if let Some(s) = self.sweeper {
            s.abort();
        }
        if wait_for_jobs {
            for pool in self.pools {
                pool.join().await;
            }
        }
        served.context("the server task")?.context("serving")
    }
}

/// A kind of job a node or worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JobKind {
    /// Training iterations.
    Train,
    /// Model exports.
    Export,
    /// Interactive segmentation.
    Segment,
}

impl JobKind {
    /// Every kind.
    pub const ALL: [JobKind; 3] = [JobKind::Train, JobKind::Export, JobKind::Segment];

    /// The queue's name of the kind.
    pub fn queue_kind(self) -> &'static str {
        match self {
            JobKind::Train => TRAIN_JOB,
            JobKind::Export => EXPORT_JOB,
            JobKind::Segment => SEGMENT_JOB,
        }
    }
}

/// Starts the job pools for `kinds`: training and export share one pool of `training_workers` slots (they are
/// long and CPU-bound), segmentation has its own of `segment_workers` that polls often, so a prompt never waits
/// behind a training run. A pool with no slots or no kinds is not started.
fn start_pools(
    state: &AppState,
    settings: &Settings,
    kinds: &[JobKind],
    options: &NodeOptions,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<argus_jobs::WorkerPool> {
    let (training_workers, segment_workers) = (options.training_workers, options.segment_workers);
    let lease = options.job_lease;
    let heartbeat = lease / 10;
    let argus = &state.argus;
    let mut long: Vec<Arc<dyn JobHandler>> = Vec::new();
    if kinds.contains(&JobKind::Train) {
        long.push(Arc::new(TrainingJobs(argus.clone())));
    }
    if kinds.contains(&JobKind::Export) {
        long.push(Arc::new(ExportJobs(argus.clone())));
    }
    let mut pools = Vec::new();
    if training_workers > 0 && !long.is_empty() {
        if let Err(e) = models::ensure(&settings.models_dir) {
            tracing::warn!(error = %format!("{e:#}"), "pretrained weights unavailable; training will fail until `argus models pull` succeeds");
        }
        let config = argus_jobs::PoolConfig {
            concurrency: training_workers,
            idle_poll: options.training_poll,
            lease,
            heartbeat,
        };
        pools.push(argus_jobs::start(argus.jobs.clone(), long, config, stop.clone()));
    }
    if segment_workers > 0 && kinds.contains(&JobKind::Segment) {
        let config = argus_jobs::PoolConfig {
            concurrency: segment_workers,
            idle_poll: Duration::from_millis(20),
            lease,
            heartbeat,
        };
        pools.push(argus_jobs::start(argus.jobs.clone(), vec![Arc::new(SegmentJobs(argus.clone()))], config, stop));
    }
    pools
}

/// Job pools with no listener (`argus worker`): it claims jobs from the data directory's queue beside the
/// nodes serving it (other processes on this machine: SQLite arbitrates the writers, leases hand the job of a
/// worker that died to another). It runs no sweeps: the serving node does.
pub struct Worker {
    /// The shared state.
    pub state: AppState,
    /// Where its `/metrics`, `/healthz` and `/readyz` listen, when asked for.
    pub metrics_addr: Option<SocketAddr>,
    stop_jobs: tokio::sync::watch::Sender<bool>,
    pools: Vec<argus_jobs::WorkerPool>,
    ops: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Worker {
    /// Opens the data directory of `settings` and starts claiming jobs of `kinds` (training and export jobs run
    /// `settings.training_workers` at a time, segmentation one per core); with `metrics_bind`, serves
    /// `/metrics`, `/healthz` and `/readyz` there.
    pub async fn start(settings: &Settings, kinds: &[JobKind], metrics_bind: Option<SocketAddr>) -> Result<Self> {
        if kinds.is_empty() {
            anyhow::bail!("a worker needs at least one job kind (train, export, segment)");
        }
        let (state, _) = build_state(settings).await?;
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let (stop_jobs, stop_rx) = tokio::sync::watch::channel(false);
        let options = NodeOptions {
            training_workers: settings.training_workers,
            segment_workers: cores,
            sweeps: false,
            ..NodeOptions::loopback()
        };
        let pools = start_pools(&state, settings, kinds, &options, stop_rx);
        let (metrics_addr, ops) = match metrics_bind {
            Some(bind) => {
                let listener = tokio::net::TcpListener::bind(bind).await.with_context(|| format!("binding {bind}"))?;
                let addr = listener.local_addr()?;
                (Some(addr), Some(tokio::spawn(argus_server::serve_ops(listener, state.argus.clone()))))
            }
            None => (None, None),
        };
        Ok(Self { state, metrics_addr, stop_jobs, pools, ops })
    }

    /// Stops claiming; with `wait_for_jobs`, running jobs finish first, otherwise their leases lapse and
    /// another worker resumes them.
    pub async fn stop(self, wait_for_jobs: bool) {
        let _ = self.stop_jobs.send(true);
        if let Some(ops) = self.ops {
            ops.abort();
        }
        if wait_for_jobs {
            for pool in self.pools {
                pool.join().await;
            }
        }
    }
}

/// Serves one exported model folder (`argus serve-model`) on `bind` until `shutdown` resolves: no store, no
/// jobs, the container's and the Prediction API's routes. Prints where it listens once the model is loaded.
pub async fn serve_model(
    dir: &std::path::Path,
    bind: SocketAddr,
    allow_private_urls: bool,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let owned = dir.to_path_buf();
    let model = tokio::task::spawn_blocking(move || {
        argus_core::service::ServedModel::load(&owned, |weights| Arc::new(VisionEngine::new(weights)))
    })
    .await
    .context("loading the model")?
    .map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(bind).await.with_context(|| format!("binding {bind}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(addr = %addr, model = %dir.display(), project = %model.project(), iteration = %model.iteration(), detector = model.is_detector(), "serving the model");
    println!("Argus serving the model in {} on http://{addr}", dir.display());
    let state =
        argus_server::ModelState { model: Arc::new(model), fetcher: Arc::new(GuardedFetcher::new(allow_private_urls)) };
    argus_server::serve_model(listener, state, shutdown).await.context("serving")
}

/// How often the sweeps run, and how long the node that ran them keeps the right to (renewed each time).
const SWEEP_PERIOD: Duration = Duration::from_secs(3600);

/// Whether this node (`holder`) runs the sweeps now: the one holding the store's `sweeps` lease, so that of
/// all the nodes sharing a database exactly one sweeps; another takes over once the holder stops renewing.
async fn sweep_lease(argus: &Argus, holder: &str) -> bool {
    let ttl = SWEEP_PERIOD.as_millis() as i64 * 3 / 2;
    match argus.store.try_lease("sweeps", holder, ttl).await {
        Ok(held) => held,
        Err(e) => {
            tracing::warn!(error = %e, "taking the sweep lease failed; not sweeping this time");
            false
        }
    }
}

/// The hourly sweeps, on the node holding the sweep lease: orphaned blobs, finished segmentation jobs,
/// expired stored predictions.
async fn sweep_forever(argus: Argus, holder: String) {
    let mut tick = tokio::time::interval(SWEEP_PERIOD);
    tick.tick().await;
    loop {
        tick.tick().await;
        if !sweep_lease(&argus, &holder).await {
            tracing::debug!("another node holds the sweep lease");
            continue;
        }
        if let Err(e) = argus.sweep_orphans(chrono::Duration::hours(1)).await {
            tracing::warn!(error = %e.message, "orphan sweep failed");
        }
        let vision = chrono::Duration::hours(argus.config.vision_retention_hours);
        if let Err(e) = argus.sweep_vision_jobs(vision).await {
            tracing::warn!(error = %e.message, "vision job retention sweep failed");
        }
        let retention = chrono::Duration::days(argus.config.prediction_retention_days);
        if let Err(e) = argus.sweep_expired_predictions(retention).await {
            tracing::warn!(error = %e.message, "prediction retention sweep failed");
        }
    }
}
