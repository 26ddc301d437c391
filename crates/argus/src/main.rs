//! `argus`: the Argus command-line entry point.
//!
//! - `argus serve` runs the HTTP server (Custom Vision Training API, signed blob links, health checks).
//! - `argus keys` prints the keys of a data directory.
//! - `argus models pull` fetches and converts the pretrained backbone weights.
//! - `argus import customvision` copies projects from Azure Custom Vision (or any compatible endpoint).
//! - `argus dataset export|import` converts a project to and from COCO, YOLO and Pascal VOC.
//! - `argus bench` measures the data plane, training, detection, prediction, segmentation, the backbone and region
//!   proposals.

mod bench;
mod bench_backbone;
mod bench_detection;
mod bench_predict;
mod bench_proposals;
mod bench_quality;
mod bench_segment;
mod bench_training;
mod config;
mod dataset;
mod import;
mod models;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use argus_core::service::{ModelHub, SegmentJobs, TrainingJobs};
use argus_core::{Argus, ServiceConfig};
use argus_server::{AppState, GuardedFetcher, Keys};
use argus_store::{ObjectBlobStore, SqliteStore};
use clap::{Parser, Subcommand};

use crate::config::{load_or_create_secrets, ServeArgs, Settings};

/// Argus: a self-hosted computer-vision platform that speaks the Custom Vision REST API.
#[derive(Debug, Parser)]
#[command(name = "argus", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// 64-image batch uploads (images/s) and 256-image listings (median latency).
    Data(bench::BenchArgs),
    /// Training wall time, held-out accuracy and peak memory.
    Training(bench_training::TrainBenchArgs),
    /// Object detection: training time and mAP@0.5 on composited photographs.
    Detection(bench_detection::DetectionBenchArgs),
    /// Prediction API load: requests/s and latency at concurrency 1, 4, 16 beside the bare model.
    Predict(bench_predict::PredictBenchArgs),
    /// Segmentation: IoU from a box and a click, NoC@85/90, job latency on a 1024 px image.
    Segment(bench_segment::SegmentBenchArgs),
    /// Backbone forward time beside ONNX Runtime on the same network.
    Backbone(bench_backbone::BackboneBenchArgs),
    /// Region proposals: recall of the objects of unseen scenes beside a fixed set of boxes.
    Proposals(bench_proposals::ProposalBenchArgs),
    /// Model quality on real photographs beside a linear-probe reference computed in the same run.
    Quality(bench_quality::QualityBenchArgs),
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server.
    Serve(ServeArgs),
    /// Print the API keys of a data directory (generating them if it is new).
    Keys {
        /// Data directory. [default: ./argus-data]
        #[arg(long, env = "ARGUS_DATA_DIR", default_value = "argus-data")]
        data_dir: std::path::PathBuf,
    },
    /// Benchmarks against an in-process server.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Manage pretrained model weights.
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Move projects into Argus (from Azure Custom Vision or any compatible endpoint).
    #[command(subcommand)]
    Import(import::ImportCommand),
    /// Export a project as COCO, YOLO or Pascal VOC, or import one of those into a project.
    #[command(subcommand)]
    Dataset(dataset::DatasetCommand),
}

/// Logs to stderr in `format` (text or json), filtered by `ARGUS_LOG`, else by `default_filter`.
fn init_logging(format: &str, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ARGUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Opens the stores of `settings` and builds the shared state.
pub async fn build_state(settings: &Settings) -> Result<(AppState, bool)> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data dir {}", settings.data_dir.display()))?;
    let (mut secrets, fresh) = load_or_create_secrets(&settings.data_dir)?;
    if let Ok(k) = std::env::var("ARGUS_TRAINING_KEY") {
        if !k.is_empty() {
            secrets.training_key = k;
        }
    }
    if let Ok(k) = std::env::var("ARGUS_PREDICTION_KEY") {
        if !k.is_empty() {
            secrets.prediction_key = k;
        }
    }
    let store =
        Arc::new(SqliteStore::open(&settings.data_dir.join("argus.db")).await.context("opening the metadata store")?);
    let blobs = ObjectBlobStore::local(settings.data_dir.join("blobs")).context("opening the blob store")?;
    let argus = Argus {
        store: store.clone(),
        jobs: store,
        models: Arc::new(ModelHub::new(&settings.models_dir).with_sam_weights(settings.sam_weights.clone())),
        blobs: Arc::new(blobs),
        fetcher: Arc::new(GuardedFetcher::new(settings.allow_private_urls)),
        signer: argus_core::signing::UrlSigner::new(secrets.signing_key.as_bytes()),
        config: ServiceConfig {
            url_ttl_secs: settings.signed_url_ttl_secs,
            max_projects: settings.max_projects,
            prediction_retention_days: settings.prediction_retention_days,
            vision_retention_hours: settings.vision_retention_hours,
            max_running_vision_jobs: settings.max_running_vision_jobs,
            ..Default::default()
        },
    };
    if let Some(path) = &settings.sam_weights {
        match argus_vision::sam::infer_spec(path) {
            Ok(spec) => tracing::info!(weights = %path.display(), encoder = %spec.name(), "Segment Anything enabled"),
            Err(e) => {
                tracing::error!(error = %e, "Segment Anything weights unusable; segmentation defaults to grabcut")
            }
        }
    }
    let state = AppState {
        argus,
        keys: Arc::new(Keys {
            training: secrets.training_key.clone(),
            prediction: secrets.prediction_key.clone(),
            // The vision API's bearer key: ARGUS_VISION_KEY, else the training key.
            vision: std::env::var("ARGUS_VISION_KEY")
                .ok()
                .filter(|k| !k.trim().is_empty())
                .unwrap_or_else(|| secrets.training_key.clone()),
        }),
        public_url: settings.public_url.clone(),
    };
    Ok((state, fresh))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

async fn serve(args: ServeArgs) -> Result<()> {
    let settings = Settings::resolve(&args)?;
    init_logging(&settings.log_format, "info,sqlx=warn,tower_http=info");
    let (state, fresh) = build_state(&settings).await?;
    if fresh {
        println!(
            "New data directory {}: generated API keys (also in secrets.json there).",
            settings.data_dir.display()
        );
        println!("  Training-Key:   {}", state.keys.training);
        println!("  Prediction-Key: {}", state.keys.prediction);
    }
    // Nothing is in flight before the listener opens, so every orphan can go now.
    match state.argus.sweep_orphans(chrono::Duration::zero()).await {
        Ok(r) => tracing::info!(examined = r.examined, deleted = r.deleted, "start-up orphan sweep"),
        Err(e) => tracing::warn!(error = %e.message, "start-up orphan sweep failed"),
    }
    let sweeper = state.argus.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = sweeper.sweep_orphans(chrono::Duration::hours(1)).await {
                tracing::warn!(error = %e.message, "orphan sweep failed");
            }
            let vision = chrono::Duration::hours(sweeper.config.vision_retention_hours);
            if let Err(e) = sweeper.sweep_vision_jobs(vision).await {
                tracing::warn!(error = %e.message, "vision job retention sweep failed");
            }
            let retention = chrono::Duration::days(sweeper.config.prediction_retention_days);
            if let Err(e) = sweeper.sweep_expired_predictions(retention).await {
                tracing::warn!(error = %e.message, "prediction retention sweep failed");
            }
        }
    });
    if let Err(e) = models::ensure(&settings.models_dir) {
        tracing::warn!(error = %format!("{e:#}"), "pretrained weights unavailable; training will fail until `argus models pull` succeeds");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let pool = argus_jobs::start(
        state.argus.jobs.clone(),
        vec![Arc::new(TrainingJobs(state.argus.clone()))],
        argus_jobs::PoolConfig { concurrency: settings.training_workers, ..Default::default() },
        stop_rx.clone(),
    );
    // Segmentation is interactive: its own pool (one worker per core) that polls often, so a prompt never
    // waits behind a training run.
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let segment_pool = argus_jobs::start(
        state.argus.jobs.clone(),
        vec![Arc::new(SegmentJobs(state.argus.clone()))],
        argus_jobs::PoolConfig { concurrency: cores, idle_poll: Duration::from_millis(20), ..Default::default() },
        stop_rx,
    );
    let listener =
        tokio::net::TcpListener::bind(settings.bind).await.with_context(|| format!("binding {}", settings.bind))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, data_dir = %settings.data_dir.display(), "argus listening");
    println!("Argus listening on http://{addr}");
    argus_server::serve(listener, state, shutdown_signal()).await.context("serving")?;
    // Running jobs keep their lease until it lapses; a restarted server resumes them.
    let _ = stop_tx.send(true);
    drop(pool);
    drop(segment_pool);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Keys { data_dir } => {
            std::fs::create_dir_all(&data_dir)?;
            let (s, _) = load_or_create_secrets(&data_dir)?;
            println!("Training-Key:   {}", s.training_key);
            println!("Prediction-Key: {}", s.prediction_key);
            Ok(())
        }
        Command::Bench(BenchCommand::Data(args)) => bench::run(args).await,
        Command::Bench(BenchCommand::Training(args)) => bench_training::run(args).await,
        Command::Bench(BenchCommand::Detection(args)) => bench_detection::run(args).await,
        Command::Bench(BenchCommand::Predict(args)) => bench_predict::run(args).await,
        Command::Bench(BenchCommand::Segment(args)) => bench_segment::run(args).await,
        Command::Bench(BenchCommand::Backbone(args)) => bench_backbone::run(args),
        Command::Bench(BenchCommand::Proposals(args)) => bench_proposals::run(args).await,
        Command::Bench(BenchCommand::Quality(args)) => bench_quality::run(args).await,
        Command::Models(models::ModelsCommand::Pull(args)) => models::pull(args),
        Command::Models(models::ModelsCommand::Status(args)) => models::status(args),
        Command::Import(import::ImportCommand::Customvision(args)) => {
            // The progress bars say what happens; the in-process server's request logs would drown them.
            init_logging("text", "warn");
            import::customvision(args).await
        }
        Command::Dataset(cmd) => {
            init_logging("text", "warn");
            dataset::run(cmd).await
        }
    }
}
