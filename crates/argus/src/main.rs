//! `argus`: the Argus command-line entry point (the benchmarks are a binary of their own, `argus-bench`).
//!
//! - `argus serve` runs the HTTP server (Custom Vision Training API, signed blob links, health checks).
//! - `argus worker` runs jobs (training, export, segmentation) beside `argus serve --workers 0`.
//! - `argus serve-model` serves one exported model (a DockerFile package) with no store.
//! - `argus keys` prints the keys of a data directory.
//! - `argus models pull` fetches and converts the pretrained backbone weights.
//! - `argus import customvision` copies projects from Azure Custom Vision (or any compatible endpoint).
//! - `argus dataset export|import` converts a project to and from COCO, YOLO and Pascal VOC.

mod dataset;
mod import;

use anyhow::Result;
use argus_app::config::{ServeArgs, Settings};
use argus_app::{init_logging, models, JobKind, Node, NodeOptions, Worker};
use clap::{Parser, Subcommand};

/// Argus: a self-hosted computer-vision platform that speaks the Custom Vision REST API.
#[derive(Debug, Parser)]
#[command(name = "argus", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server.
    Serve(ServeArgs),
    /// Run jobs with no listener, beside servers on the same data directory (`argus serve --workers 0`).
    Worker(WorkerArgs),
    /// Serve one exported model with no store: the `model/` folder of a DockerFile export.
    ServeModel(ServeModelArgs),
    /// Print the API keys of a data directory or database (generating them if it is new).
    Keys(ServeArgs),
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

/// Flags of `argus worker`: the server's settings (data directory, models, training slots, …) and the job
/// kinds to claim.
#[derive(Debug, clap::Args)]
struct WorkerArgs {
    /// Job kinds this worker claims.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = JobKind::ALL)]
    kinds: Vec<JobKind>,
    /// Serve `/metrics` (Prometheus), `/healthz` and `/readyz` on this address. [default: no listener]
    #[arg(long, env = "ARGUS_METRICS_BIND")]
    metrics_bind: Option<std::net::SocketAddr>,
    #[command(flatten)]
    settings: ServeArgs,
}

/// Flags of `argus serve-model`.
#[derive(Debug, clap::Args)]
struct ServeModelArgs {
    /// The model folder (`model/` of a DockerFile export: model.json, the head, the backbone weights).
    #[arg(long)]
    model: std::path::PathBuf,
    /// Address to listen on.
    #[arg(long, env = "ARGUS_BIND", default_value = "127.0.0.1:8080")]
    bind: std::net::SocketAddr,
    /// Let `/url` predictions reach loopback and private networks (off by default: SSRF protection).
    #[arg(long, env = "ARGUS_ALLOW_PRIVATE_URLS", default_value_t = false, action = clap::ArgAction::Set)]
    allow_private_urls: bool,
    /// Log format: text or json.
    #[arg(long, env = "ARGUS_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

async fn work(args: WorkerArgs) -> Result<()> {
    let settings = Settings::resolve(&args.settings)?;
    init_logging(&settings.log_format, "info,sqlx=warn");
    let worker = Worker::start(&settings, &args.kinds, args.metrics_bind).await?;
    let kinds: Vec<&str> = args.kinds.iter().map(|k| k.queue_kind()).collect();
    let metrics = worker.metrics_addr.map(|a| format!("http://{a}/metrics"));
    tracing::info!(database = %settings.database.redacted(), kinds = ?kinds, training_slots = settings.training_workers, metrics = ?metrics, "argus worker claiming jobs");
    shutdown_signal().await;
    // As for the server: running jobs keep their lease until it lapses, and another worker resumes them.
    worker.stop(false).await;
    Ok(())
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
    let node = Node::start(&settings, NodeOptions::full(&settings)).await?;
    if node.fresh {
        println!(
            "New store {}: generated API keys (kept in its database; `argus keys` prints them).",
            settings.database.redacted()
        );
        println!("  Training-Key:   {}", node.state.keys.training);
        println!("  Prediction-Key: {}", node.state.keys.prediction);
    }
    tracing::info!(addr = %node.addr, database = %settings.database.redacted(), blobs = ?settings.blobs, "argus listening");
    println!("Argus listening on {}", node.url());
    shutdown_signal().await;
    // Running jobs keep their lease until it lapses; a restarted server resumes them.
    node.stop(false).await
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Worker(args) => work(args).await,
        Command::ServeModel(args) => {
            init_logging(&args.log_format, "info,tower_http=info");
            argus_app::serve_model(&args.model, args.bind, args.allow_private_urls, shutdown_signal()).await
        }
        Command::Keys(args) => {
            let s = argus_app::stored_secrets(&Settings::resolve(&args)?).await?;
            println!("Training-Key:   {}", s.training_key);
            println!("Prediction-Key: {}", s.prediction_key);
            Ok(())
        }
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
