//! `argus bench backbone`: EfficientNet-Lite0 forward time per image at batch 1 and 8, beside ONNX Runtime
//! running the same network (built from the same weights by `scripts/bench_backbone_ort.py`) in the same
//! run, on the same number of threads. The script also checks that both produce the same logits.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use argus_vision::backbone::{preprocess, EfficientNetLite0};
use argus_vision::weights::WEIGHTS_FILE;
use candle_core::Tensor;
use clap::Args;

/// Flags of `argus bench backbone`.
#[derive(Debug, Clone, Args)]
pub struct BackboneBenchArgs {
    /// Directory of model weights.
    #[arg(long, env = "ARGUS_MODELS_DIR", default_value = "argus-models")]
    pub models_dir: PathBuf,
    /// A photograph to run on.
    #[arg(long, default_value = "argus-models/photos/chelsea.png")]
    pub photo: PathBuf,
    /// Python with onnxruntime, onnx and numpy (scripts/bench-backbone.sh makes one).
    #[arg(long, env = "ARGUS_BENCH_PYTHON", default_value = ".venv-bench/bin/python")]
    pub python: String,
    /// Timed runs per batch size.
    #[arg(long, default_value_t = 30)]
    pub runs: usize,
    /// Also time the two depthwise kernels alone, one thread, on each depthwise layer's shape.
    #[arg(long)]
    pub kernels: bool,
}

fn median_ms_per_image(net: &EfficientNetLite0, x: &Tensor, runs: usize) -> Result<f64> {
    let batch = x.dim(0)?;
    for _ in 0..3 {
        net.imagenet_logits(x)?;
    }
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            net.imagenet_logits(x).map(|_| s.elapsed().as_secs_f64() * 1e3 / batch as f64)
        })
        .collect::<candle_core::Result<_>>()?;
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

/// Runs the benchmark.
pub fn run(args: BackboneBenchArgs) -> Result<()> {
    let net = EfficientNetLite0::from_file(&args.models_dir.join(WEIGHTS_FILE))
        .context("loading weights (argus models pull)")?;
    let img =
        image::open(&args.photo).with_context(|| format!("{} (scripts/fetch-test-photos.sh)", args.photo.display()))?;
    let x1 = preprocess(&img.to_rgb8(), 224)?;
    let x8 = Tensor::cat(&vec![x1.clone(); 8], 0)?;
    let ours1 = median_ms_per_image(&net, &x1, args.runs)?;
    // ARGUS_PROFILE_STAGES=1 prints where a batch-1 pass spends its time (each stage's fastest of 15 passes,
    // which a busy machine disturbs least).
    if std::env::var_os("ARGUS_PROFILE_STAGES").is_some() {
        let mut best = net.stage_times(&x1)?;
        for _ in 1..15 {
            for (b, (_, ms)) in best.iter_mut().zip(net.stage_times(&x1)?) {
                b.1 = b.1.min(ms);
            }
        }
        for (stage, ms) in &best {
            eprintln!("{stage:>9}: {ms:.2} ms");
        }
        eprintln!("      sum: {:.2} ms", best.iter().map(|(_, ms)| ms).sum::<f64>());
    }
    if args.kernels {
        println!("| depthwise layer (channels, k, stride, input) | planar GMAC/s | channels-last GMAC/s |");
        println!("|---|---|---|");
        for d in argus_vision::backbone::depthwise_kernel_speeds(200) {
            let (c, k, s, h) = d.shape;
            println!("| {c}, {k}×{k}, /{s}, {h}×{h} | {:.1} | {:.1} |", d.planar_gmacs, d.channels_last_gmacs);
        }
    }
    let ours8 = median_ms_per_image(&net, &x8, args.runs.div_ceil(4))?;
    eprintln!("Argus: batch 1 {ours1:.2} ms/image, batch 8 {ours8:.2} ms/image");

    let tmp = tempfile::tempdir()?;
    let (inp, logits) = (tmp.path().join("input.npy"), tmp.path().join("logits.npy"));
    x1.write_npy(&inp)?;
    net.imagenet_logits(&x1)?.write_npy(&logits)?;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench_backbone_ort.py");
    let out = Command::new(&args.python)
        .arg(&script)
        .arg(args.models_dir.join(WEIGHTS_FILE))
        .arg(&inp)
        .arg(&logits)
        .arg(threads.to_string())
        .arg(args.runs.to_string())
        .output()
        .with_context(|| format!("running {} (scripts/bench-backbone.sh sets it up)", args.python))?;
    if !out.status.success() {
        bail!("the ONNX Runtime reference failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).context("reading the reference's output")?;
    let ort1 = r["batch1_ms_per_image"].as_f64().context("batch1")?;
    let ort8 = r["batch8_ms_per_image"].as_f64().context("batch8")?;
    println!(
        "EfficientNet-Lite0, 224x224, {threads} threads; ONNX Runtime {}; max |logit difference| {:.2e}",
        r["onnxruntime"].as_str().unwrap_or("?"),
        r["max_abs_logit_diff"].as_f64().unwrap_or(f64::NAN)
    );
    println!("| batch | Argus ms/image | ONNX Runtime ms/image | Argus / ORT |");
    println!("|---|---|---|---|");
    println!("| 1 | {ours1:.1} | {ort1:.1} | {:.2}x |", ours1 / ort1);
    println!("| 8 | {ours8:.1} | {ort8:.1} | {:.2}x |", ours8 / ort8);
    Ok(())
}
