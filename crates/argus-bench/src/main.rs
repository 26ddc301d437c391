//! `argus-bench`: Argus's benchmarks, a binary of their own so that the shipped `argus` carries none of them.
//! Each drives an in-process node (`argus_app::Node`) over HTTP, or the vision code directly, and prints its
//! figures beside a reference measured in the same run.

mod bench;
mod bench_backbone;
mod bench_cluster;
mod bench_detection;
mod bench_predict;
mod bench_proposals;
mod bench_quality;
mod bench_segment;
mod bench_training;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Benchmarks against an in-process Argus.
#[derive(Debug, Parser)]
#[command(name = "argus-bench", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
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
    /// The cluster's stores (PostgreSQL + S3) beside the embedded ones (SQLite + a directory).
    Cluster(bench_cluster::ClusterBenchArgs),
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        BenchCommand::Data(args) => bench::run(args).await,
        BenchCommand::Training(args) => bench_training::run(args).await,
        BenchCommand::Detection(args) => bench_detection::run(args).await,
        BenchCommand::Predict(args) => bench_predict::run(args).await,
        BenchCommand::Segment(args) => bench_segment::run(args).await,
        BenchCommand::Backbone(args) => bench_backbone::run(args),
        BenchCommand::Proposals(args) => bench_proposals::run(args).await,
        BenchCommand::Quality(args) => bench_quality::run(args).await,
        BenchCommand::Cluster(args) => bench_cluster::run(args).await,
    }
}
