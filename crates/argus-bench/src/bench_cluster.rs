//! `argus-bench cluster`: the cluster's stores (PostgreSQL + an S3-compatible bucket) beside the embedded ones
//! (SQLite + a local directory), measured in the same run through the HTTP API of an in-process node on each:
//!
//! - 64-image batch uploads (images/s) and 256-image listings (median latency);
//! - the time from TrainProject to Completed (2 tags × 10 images, Regular);
//! - Prediction API requests/s at concurrency 16 against the published iteration;
//! - the job queue alone: M workers claiming and completing N no-op jobs (jobs/s).
//!
//! The cluster stores come from `--database` / `--blobs` (credentials from `AWS_*`); `scripts/cluster-services.sh`
//! starts a PostgreSQL and a SeaweedFS on loopback for it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use argus_core::jobs::{Job, JobHandler, NewJob, Progress};
use clap::Args;
use rand::SeedableRng;
use serde_json::Value;

use argus_app::config::{ServeArgs, Settings};

use crate::bench::{bar, median, synthetic_jpeg};
use crate::bench_training::Client;

/// Flags of `argus-bench cluster`.
#[derive(Debug, Clone, Args)]
pub struct ClusterBenchArgs {
    /// The cluster's database (`postgres://…`).
    #[arg(long, env = "ARGUS_DATABASE_URL")]
    pub database: String,
    /// The cluster's blob store (`s3://bucket/prefix`).
    #[arg(long, env = "ARGUS_BLOBS_URL")]
    pub blobs: String,
    /// S3 endpoint of a self-hosted server. [default: AWS_ENDPOINT_URL]
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub s3_endpoint: Option<String>,
    /// Directory of model weights.
    #[arg(long, env = "ARGUS_MODELS_DIR", default_value = "argus-models")]
    pub models_dir: std::path::PathBuf,
    /// Images to upload.
    #[arg(long, default_value_t = 256)]
    pub images: usize,
    /// Listing requests to time.
    #[arg(long, default_value_t = 30)]
    pub list_runs: usize,
    /// Seconds of prediction load at concurrency 16.
    #[arg(long, default_value_t = 10)]
    pub predict_secs: u64,
    /// No-op jobs for the queue benchmark.
    #[arg(long, default_value_t = 400)]
    pub jobs: usize,
    /// Workers claiming them.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
}

/// What one backend measured.
struct Figures {
    upload_ips: f64,
    list_median: Duration,
    train_secs: f64,
    predict_rps: f64,
    jobs_per_sec: f64,
}

/// A job that does nothing: the queue's own cost.
struct Noop;

#[async_trait::async_trait]
impl JobHandler for Noop {
    fn kind(&self) -> &'static str {
        "bench-noop"
    }
    async fn run(&self, _job: &Job, _progress: Progress) -> Result<Value, (String, bool)> {
        Ok(Value::Null)
    }
    async fn abandoned(&self, _job: &Job, _reason: &str) {}
}

async fn measure(label: &str, settings: &Settings, args: &ClusterBenchArgs) -> Result<Figures> {
    println!("== {label}");
    let mut options = argus_app::NodeOptions::full(settings);
    options.bind = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    options.sweeps = false;
    let node = argus_app::Node::start(settings, options).await?;
    let c = Client {
        http: reqwest::Client::new(),
        base: format!("{}/customvision/v3.3/training", node.url()),
        key: node.training_key(),
    };
    let client = c.http.clone();

    // Uploads and listings.
    let (pid, _) = c.project(&format!("bench-{}", uuid::Uuid::new_v4()), &[]).await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let images: Vec<Vec<u8>> = (0..args.images).map(|_| synthetic_jpeg(&mut rng, 640, 480)).collect();
    let up = bar(args.images, "uploading (64/batch)");
    let t0 = Instant::now();
    for batch in images.chunks(64) {
        let mut form = reqwest::multipart::Form::new();
        for img in batch {
            form = form.part("imageData", reqwest::multipart::Part::bytes(img.clone()));
        }
        c.json(client.post(format!("{}/projects/{pid}/images", c.base)).multipart(form)).await?;
        up.inc(batch.len() as u64);
    }
    up.finish();
    let upload_ips = args.images as f64 / t0.elapsed().as_secs_f64();
    let mut lists = Vec::new();
    for _ in 0..args.list_runs {
        let t = Instant::now();
        let page = c.json(client.get(format!("{}/projects/{pid}/images?take=256", c.base))).await?;
        lists.push(t.elapsed());
        anyhow::ensure!(page.as_array().map(Vec::len) == Some(256.min(args.images)), "short listing");
    }
    let list_median = median(lists);
    c.json(client.delete(format!("{}/projects/{pid}", c.base))).await.ok();

    // TrainProject → Completed.
    let (pid, tags) = c.project(&format!("bench-train-{}", uuid::Uuid::new_v4()), &["warm", "cool"]).await?;
    for (t, tag) in tags.iter().enumerate() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(100 + t as u64);
        c.upload(&pid, tag, (0..10).map(|_| synthetic_jpeg(&mut rng, 320, 240)).collect()).await?;
    }
    let (iid, took) = c.train(&pid, "").await?;
    let train_secs = took.as_secs_f64();
    c.json(client.post(format!("{}/projects/{pid}/iterations/{iid}/publish?publishName=live&predictionId=x", c.base)))
        .await?;

    // Prediction load at concurrency 16.
    let predict = format!("{}/customvision/v3.0/prediction/{pid}/classify/iterations/live/image/nostore", node.url());
    let body = synthetic_jpeg(&mut rand::rngs::StdRng::seed_from_u64(5), 640, 480);
    let done = Arc::new(AtomicUsize::new(0));
    let end = Instant::now() + Duration::from_secs(args.predict_secs);
    let pkey = node.state.keys.prediction.clone();
    let t0 = Instant::now();
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (client, url, body, done, pkey) =
                (client.clone(), predict.clone(), body.clone(), Arc::clone(&done), pkey.clone());
            tokio::spawn(async move {
                while Instant::now() < end {
                    let r = client.post(&url).header("Prediction-Key", &pkey).body(body.clone()).send().await;
                    if matches!(&r, Ok(resp) if resp.status().is_success()) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.await?;
    }
    let predict_rps = done.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64();
    c.json(client.delete(format!("{}/projects/{pid}/iterations/{iid}/publish", c.base))).await.ok();

    // The queue alone: M workers on N no-op jobs.
    let queue = Arc::clone(&node.state.argus.jobs);
    let scope = format!("bench-{}", uuid::Uuid::new_v4());
    for _ in 0..args.jobs {
        queue
            .enqueue(NewJob { kind: "bench-noop".into(), scope: scope.clone(), payload: Value::Null, max_attempts: 1 })
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let (stop, rx) = tokio::sync::watch::channel(false);
    let config =
        argus_jobs::PoolConfig { concurrency: args.workers, idle_poll: Duration::from_millis(5), ..Default::default() };
    let t0 = Instant::now();
    let pool = argus_jobs::start(Arc::clone(&queue), vec![Arc::new(Noop)], config, rx);
    while queue.active_jobs("bench-noop", &scope).await.map_err(|e| anyhow::anyhow!("{e}"))? > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let jobs_per_sec = args.jobs as f64 / t0.elapsed().as_secs_f64();
    let _ = stop.send(true);
    pool.join().await;

    node.stop(false).await?;
    Ok(Figures { upload_ips, list_median, train_secs, predict_rps, jobs_per_sec })
}

/// Runs the benchmark and prints a table.
pub async fn run(args: ClusterBenchArgs) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let embedded = Settings::resolve(&ServeArgs {
        data_dir: Some(tmp.path().to_path_buf()),
        models_dir: Some(args.models_dir.clone()),
        ..Default::default()
    })?;
    let cluster = Settings::resolve(&ServeArgs {
        data_dir: Some(tmp.path().join("unused")),
        models_dir: Some(args.models_dir.clone()),
        database: Some(args.database.clone()),
        blobs: Some(args.blobs.clone()),
        s3_endpoint: args.s3_endpoint.clone(),
        ..Default::default()
    })?;
    let local = measure("SQLite + local directory", &embedded, &args).await?;
    let remote = measure("PostgreSQL + S3", &cluster, &args).await?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    println!();
    println!("Argus cluster bench: {} images of 640x480, {cores} cores, one process per store", args.images);
    println!("| measurement | SQLite + local dir | PostgreSQL + S3 | cluster / embedded |");
    println!("|---|---|---|---|");
    let row = |name: &str, a: f64, b: f64, unit: &str| {
        println!("| {name} | {a:.1} {unit} | {b:.1} {unit} | {:.2}x |", b / a.max(1e-9));
    };
    row("64-image batch upload", local.upload_ips, remote.upload_ips, "images/s");
    row(
        &format!("list 256 images, median of {}", args.list_runs),
        local.list_median.as_secs_f64() * 1e3,
        remote.list_median.as_secs_f64() * 1e3,
        "ms",
    );
    row("TrainProject → Completed (2 × 10 images, Regular)", local.train_secs, remote.train_secs, "s");
    row("predictions at concurrency 16", local.predict_rps, remote.predict_rps, "requests/s");
    row(
        &format!("job queue: {} workers on {} no-op jobs", args.workers, args.jobs),
        local.jobs_per_sec,
        remote.jobs_per_sec,
        "jobs/s",
    );
    Ok(())
}
