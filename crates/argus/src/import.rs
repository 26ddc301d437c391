//! `argus import customvision`: the command line of the migration from a Custom Vision endpoint
//! ([`argus_migrate::customvision`]).
//!
//! The destination is either a running Argus (`--into URL --into-key KEY`) or a data directory (`--data-dir`,
//! the default): for a directory an Argus server is started in this process on a loopback port, so both ways go
//! through the same public API and the same validation.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use argus_app::config::{ServeArgs, Settings};
use argus_app::{Node, NodeOptions};
use argus_migrate::client::{RetryPolicy, TrainingApi};
use argus_migrate::customvision::{ImportOptions, Importer, Summary, MAX_BATCH, MAX_PAGE};
use argus_migrate::journal::{write_atomically, Journal};
use clap::{Args, Subcommand};

/// `argus import …`.
#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Copy projects, tags, images, regions and metadata from a Custom Vision Training endpoint (Azure's, or
    /// another Argus).
    Customvision(CustomVisionArgs),
}

/// Arguments of `argus import customvision`.
#[derive(Debug, Args)]
pub struct CustomVisionArgs {
    /// The source endpoint, e.g. https://<resource>.cognitiveservices.azure.com
    #[arg(long, env = "ARGUS_IMPORT_ENDPOINT")]
    pub endpoint: String,
    /// The source's Training key.
    #[arg(long, env = "ARGUS_IMPORT_TRAINING_KEY", hide_env_values = true)]
    pub training_key: String,
    /// Source projects to copy, by id or name (repeatable). [default: all]
    #[arg(long = "project")]
    pub projects: Vec<String>,
    /// Import into this data directory (an Argus server is started in this process). [default: ./argus-data]
    #[arg(long, env = "ARGUS_DATA_DIR", conflicts_with = "into")]
    pub data_dir: Option<PathBuf>,
    /// Import into a running Argus (or any Custom Vision-compatible endpoint that honours `requestedId`).
    #[arg(long, requires = "into_key")]
    pub into: Option<String>,
    /// The Training key of `--into`.
    #[arg(long, env = "ARGUS_INTO_TRAINING_KEY", hide_env_values = true)]
    pub into_key: Option<String>,
    /// Train each project after its images are in, and wait for the iteration.
    #[arg(long)]
    pub train: bool,
    /// The journal that lets a rerun resume. [default: ./argus-import-journal.json]
    #[arg(long, default_value = "argus-import-journal.json")]
    pub journal: PathBuf,
    /// Where the summary and every failure (with its reason) are written as JSON.
    #[arg(long, default_value = "argus-import-report.json")]
    pub report: PathBuf,
    /// Images per listing page (the service allows at most 256).
    #[arg(long, default_value_t = MAX_PAGE)]
    pub page_size: usize,
    /// Images per upload batch (the service allows at most 64).
    #[arg(long, default_value_t = MAX_BATCH)]
    pub batch_size: usize,
    /// Originals downloaded at once.
    #[arg(long, default_value_t = 8)]
    pub downloads: usize,
    /// Attempts per request on 429 / 5xx before giving up.
    #[arg(long, default_value_t = 10)]
    pub attempts: u32,
    /// Directory of model weights, for --train into a data directory. [default: ./argus-models]
    #[arg(long, env = "ARGUS_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
}

/// Runs `argus import customvision`.
pub async fn customvision(args: CustomVisionArgs) -> Result<()> {
    if !(1..=MAX_PAGE).contains(&args.page_size) {
        return Err(anyhow!("--page-size must be 1 to {MAX_PAGE}"));
    }
    if !(1..=MAX_BATCH).contains(&args.batch_size) {
        return Err(anyhow!("--batch-size must be 1 to {MAX_BATCH}"));
    }
    let retry = RetryPolicy { attempts: args.attempts.max(1), ..Default::default() };
    let source = TrainingApi::new(&args.endpoint, &args.training_key, retry)?;
    let mut local = None;
    let (destination, destination_name) = match (&args.into, &args.into_key) {
        (Some(url), Some(key)) => {
            let api = TrainingApi::new(url, key, retry)?;
            let name = api.base().to_string();
            (api, name)
        }
        _ => {
            let dir = args.data_dir.clone().unwrap_or_else(|| PathBuf::from("argus-data"));
            let node = local_node(dir.clone(), args.models_dir.clone(), args.train).await?;
            let api = TrainingApi::new(&node.url(), &node.training_key(), retry)?;
            local = Some(node);
            let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
            (api, format!("dir:{}", dir.display()))
        }
    };
    if destination.base() == source.base() {
        return Err(anyhow!("the source and the destination are the same endpoint"));
    }
    let mut journal = Journal::open(&args.journal, source.base(), &destination_name)?;
    let options = ImportOptions {
        projects: args.projects.clone(),
        page_size: args.page_size,
        batch_size: args.batch_size,
        downloads: args.downloads,
        train: args.train,
        progress: true,
    };
    let started = chrono::Utc::now();
    let outcome = Importer { source: &source, destination: &destination, journal: &mut journal, options }.run().await;
    if let Some(node) = local {
        node.stop(true).await?;
    }
    let summary = outcome?;
    let report = serde_json::json!({
        "source": source.base(),
        "destination": destination_name,
        "started": started,
        "finished": chrono::Utc::now(),
        "summary": summary,
    });
    write_atomically(&args.report, &serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing the report {}", args.report.display()))?;
    print_summary(&summary, &args.report);
    if summary.images_failed > 0 || !summary.failures.is_empty() {
        return Err(anyhow!(
            "{} images and {} other items could not be copied; reasons in {}. Rerun the same command to retry them.",
            summary.images_failed,
            summary.failures.len().saturating_sub(summary.images_failed),
            args.report.display()
        ));
    }
    Ok(())
}

fn print_summary(s: &Summary, report: &std::path::Path) {
    println!();
    println!("Projects (source id → Argus id):");
    for m in &s.project_ids {
        let same = if m.source == m.destination { " (same id)" } else { " (the source id was taken here)" };
        println!("  {:<32} {} → {}{same}", m.name, m.source, m.destination);
    }
    println!(
        "Projects: {} ({} created) · tags: {} copied, {} already there · images: {} copied, {} already there, {} failed · regions: {} copied",
        s.projects,
        s.projects_created,
        s.tags_copied,
        s.tags_skipped,
        s.images_copied,
        s.images_skipped,
        s.images_failed,
        s.regions_copied
    );
    for (name, status) in &s.trained {
        println!("  trained {name}: {status}");
    }
    for note in &s.notes {
        println!("Note: {note}");
    }
    println!("Report: {}", report.display());
}

/// An Argus node over a data directory, in this process, on a loopback port (training too with `--train`:
/// the import waits for it, and a training cut short resumes in `argus serve`).
async fn local_node(data_dir: PathBuf, models_dir: Option<PathBuf>, train: bool) -> Result<Node> {
    let settings = Settings::resolve(&ServeArgs { data_dir: Some(data_dir), models_dir, ..Default::default() })?;
    let mut options = NodeOptions::loopback();
    if train {
        options.training_workers = settings.training_workers;
    }
    Node::start(&settings, options).await
}
