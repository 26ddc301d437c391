//! `argus dataset export|import`: the command line of [`argus_migrate::dataset`] (COCO, YOLO, Pascal VOC through
//! the Training API of a running Argus, or of any Custom Vision endpoint).

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use argus_datasets::Format;
use argus_migrate::client::{RetryPolicy, TrainingApi};
use clap::{Args, Subcommand};

/// `argus dataset …`.
#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Write a project's images and labels as COCO, YOLO or Pascal VOC (a folder, or a .zip).
    Export(ExportArgs),
    /// Read COCO, YOLO or Pascal VOC (a folder or a .zip) into a project (created when no project has the name).
    Import(ImportArgs),
}

/// Where the Training API is.
#[derive(Debug, Args)]
pub struct Endpoint {
    /// The Training endpoint (an Argus server, or a Custom Vision resource).
    #[arg(long, env = "ARGUS_ENDPOINT", default_value = "http://127.0.0.1:8080")]
    pub endpoint: String,
    /// Its Training key.
    #[arg(long, env = "ARGUS_TRAINING_KEY", hide_env_values = true)]
    pub training_key: String,
}

/// Arguments of `argus dataset export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The project, by id or name.
    pub project: String,
    /// coco, yolo, voc or customvision (classification projects: COCO categories or image tags in
    /// tagged-images.json, or a folder per tag for yolo and voc).
    #[arg(long)]
    pub format: Format,
    /// A folder, or a file ending in .zip.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub endpoint: Endpoint,
}

/// Arguments of `argus dataset import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The dataset: a folder or a .zip.
    pub path: PathBuf,
    /// coco, yolo, voc or customvision (tagged-images.json).
    #[arg(long)]
    pub format: Format,
    /// The project, by id or name; a name no project has creates one (detection when the dataset has boxes).
    #[arg(long)]
    pub project: String,
    #[command(flatten)]
    pub endpoint: Endpoint,
}

fn api(e: &Endpoint) -> Result<TrainingApi> {
    TrainingApi::new(&e.endpoint, &e.training_key, RetryPolicy::default())
}

/// Runs `argus dataset …`.
pub async fn run(cmd: DatasetCommand) -> Result<()> {
    match cmd {
        DatasetCommand::Export(a) => {
            let c = argus_migrate::dataset::export(&api(&a.endpoint)?, &a.project, a.format, &a.out, true).await?;
            println!(
                "Exported {} images, {} boxes and {} tags to {}{}",
                c.images,
                c.boxes,
                c.tags,
                a.out.display(),
                if c.failed.is_empty() { String::new() } else { format!("; {} images failed", c.failed.len()) }
            );
            finish(&c.failed)
        }
        DatasetCommand::Import(a) => {
            let (p, c) =
                argus_migrate::dataset::import(&api(&a.endpoint)?, a.format, &a.path, &a.project, true).await?;
            println!(
                "Imported into project '{}' ({}): {} images, {} boxes, {} new tags, {} already there{}",
                p.name,
                p.id,
                c.images,
                c.boxes,
                c.tags,
                c.duplicates,
                if c.failed.is_empty() { String::new() } else { format!(", {} failed", c.failed.len()) }
            );
            finish(&c.failed)
        }
    }
}

fn finish(failed: &[String]) -> Result<()> {
    for f in failed.iter().take(20) {
        eprintln!("  failed: {f}");
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(anyhow!("{} images could not be copied", failed.len()))
    }
}
