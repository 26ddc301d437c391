//! `argus-bench backbone`: EfficientNet-Lite0 forward time per image at batch 1 and 8, beside ONNX Runtime
//! running the same network (built from the same weights by `scripts/bench_backbone_ort.py`) in the same
//! run, on the same number of threads. The script also checks that both produce the same logits.
//!
//! The two alternate in rounds (Argus then ONNX Runtime, then the other way round), so that a busy moment of a
//! shared machine falls on both rather than on whichever happened to be running; each reports the median and
//! the fastest of all its passes, and the ratio of the two medians of each pair of adjacent rounds is reported
//! too (its median and quartiles over the pairs): on a machine whose speed drifts during the run (a shared
//! virtual machine), the pairs compare passes that ran within a second of each other. Between rounds the machine is left idle for [`QUIET`]: ONNX Runtime's pool
//! threads keep spinning for some 40 ms after a run (measured from the reference process's CPU time), which on
//! two cores took a core from whichever Argus round came next and raised Argus's batch-1 median by a third.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use argus_vision::backbone::{preprocess, EfficientNetLite0};
use argus_vision::weights::WEIGHTS_FILE;
use candle_core::Tensor;
use clap::Args;

/// How long the machine is left idle before each round, so that neither engine's spinning threads run into
/// the other's timed passes.
const QUIET: std::time::Duration = std::time::Duration::from_millis(150);

/// Flags of `argus-bench backbone`.
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
    /// Timed batch-1 passes per engine, spread over the rounds (batch 8 runs a quarter as many).
    #[arg(long, default_value_t = 120)]
    pub runs: usize,
    /// Rounds the two engines alternate in.
    #[arg(long, default_value_t = 12)]
    pub rounds: usize,
    /// Threads for both engines (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also time the two depthwise kernels alone, one thread, on each depthwise layer's shape.
    #[arg(long)]
    pub kernels: bool,
}

/// Milliseconds per image of each of `passes` timed passes (after one untimed one).
fn argus_passes(net: &EfficientNetLite0, x: &Tensor, passes: usize) -> Result<Vec<f64>> {
    let batch = x.dim(0)? as f64;
    net.imagenet_logits(x)?;
    (0..passes)
        .map(|_| {
            let s = Instant::now();
            net.imagenet_logits(x)?;
            Ok(s.elapsed().as_secs_f64() * 1e3 / batch)
        })
        .collect()
}

/// The ONNX Runtime reference, running in its own process and timing on request.
struct Reference {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Reference {
    /// The reference's next line of output as JSON.
    fn read(&mut self) -> Result<serde_json::Value> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        if line.is_empty() {
            let mut err = String::new();
            if let Some(mut e) = self.child.stderr.take() {
                std::io::Read::read_to_string(&mut e, &mut err)?;
            }
            bail!("the ONNX Runtime reference stopped: {err}");
        }
        serde_json::from_str(&line).context("reading the reference's output")
    }

    /// Milliseconds per image of each of `passes` timed passes at `batch` images.
    fn passes(&mut self, batch: usize, passes: usize) -> Result<Vec<f64>> {
        writeln!(self.stdin, "{batch} {passes}")?;
        self.stdin.flush()?;
        serde_json::from_value(self.read()?).context("reading the reference's timings")
    }
}

/// Median and minimum of some timings.
fn median_and_best(mut t: Vec<f64>) -> (f64, f64) {
    t.sort_by(f64::total_cmp);
    (t.get(t.len() / 2).copied().unwrap_or(f64::NAN), t.first().copied().unwrap_or(f64::NAN))
}

/// Runs the benchmark.
pub fn run(args: BackboneBenchArgs) -> Result<()> {
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().context("building the thread pool")?;
    let net = EfficientNetLite0::from_file(&args.models_dir.join(WEIGHTS_FILE))
        .context("loading weights (argus models pull)")?;
    let img =
        image::open(&args.photo).with_context(|| format!("{} (scripts/fetch-test-photos.sh)", args.photo.display()))?;
    let x1 = preprocess(&img.to_rgb8(), 224)?;
    let x8 = Tensor::cat(&vec![x1.clone(); 8], 0)?;
    // ARGUS_PROFILE_STAGES=1 prints where a batch-1 pass spends its time (each stage's fastest of 15 passes,
    // which a busy machine disturbs least).
    if std::env::var_os("ARGUS_PROFILE_STAGES").is_some() {
        let mut best = pool.install(|| net.stage_times(&x1))?;
        for _ in 1..15 {
            for (b, (_, ms)) in best.iter_mut().zip(pool.install(|| net.stage_times(&x1))?) {
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
        for d in argus_vision::kernels::depthwise::depthwise_kernel_speeds(200) {
            let (c, k, s, h) = d.shape;
            println!("| {c}, {k}×{k}, /{s}, {h}×{h} | {:.1} | {:.1} |", d.planar_gmacs, d.channels_last_gmacs);
        }
    }

    let tmp = tempfile::tempdir()?;
    let (inp, logits) = (tmp.path().join("input.npy"), tmp.path().join("logits.npy"));
    x1.write_npy(&inp)?;
    pool.install(|| net.imagenet_logits(&x1))?.write_npy(&logits)?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench_backbone_ort.py");
    let mut child = Command::new(&args.python)
        .arg(&script)
        .arg(args.models_dir.join(WEIGHTS_FILE))
        .arg(&inp)
        .arg(&logits)
        .arg(threads.to_string())
        // numpy's OpenBLAS would otherwise keep threads of its own spinning beside both engines.
        .env("OPENBLAS_NUM_THREADS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {} (scripts/bench-backbone.sh sets it up)", args.python))?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        bail!("the reference's pipes were not opened");
    };
    let mut reference = Reference { child, stdin, stdout: BufReader::new(stdout) };
    let hello = reference.read()?;

    let rounds = args.rounds.max(1);
    let mut rows = Vec::new();
    for (batch, x, runs) in [(1, &x1, args.runs), (8, &x8, args.runs.div_ceil(4))] {
        let per_round = runs.div_ceil(rounds).max(1);
        let (mut ours, mut theirs, mut paired) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let argus = || {
                std::thread::sleep(QUIET);
                pool.install(|| argus_passes(&net, x, per_round))
            };
            let theirs_round = |reference: &mut Reference| {
                std::thread::sleep(QUIET);
                reference.passes(batch, per_round)
            };
            let (a, t) = if round % 2 == 0 {
                let a = argus()?;
                (a, theirs_round(&mut reference)?)
            } else {
                let t = theirs_round(&mut reference)?;
                (argus()?, t)
            };
            // The two rounds ran back to back: their ratio is the least disturbed by the machine's speed
            // drifting over the whole run.
            paired.push(median_and_best(a.clone()).0 / median_and_best(t.clone()).0);
            ours.extend(a);
            theirs.extend(t);
        }
        rows.push((batch, median_and_best(ours), median_and_best(theirs), paired));
    }
    drop(reference.stdin);
    reference.child.wait()?;

    println!(
        "EfficientNet-Lite0, 224x224, {threads} thread(s) each; ONNX Runtime {}; max |logit difference| {:.2e}; \
         {rounds} alternating rounds",
        hello["onnxruntime"].as_str().unwrap_or("?"),
        hello["max_abs_logit_diff"].as_f64().unwrap_or(f64::NAN)
    );
    println!(
        "| batch | Argus ms/image, median (best) | ONNX Runtime ms/image, median (best) | Argus / ORT, medians (best) \
         | Argus / ORT per round pair, median [quartiles] |"
    );
    println!("|---|---|---|---|---|");
    for (batch, (om, ob), (tm, tb), mut paired) in rows {
        paired.sort_by(f64::total_cmp);
        let q = |f: f64| {
            paired.get((paired.len().saturating_sub(1) as f64 * f).round() as usize).copied().unwrap_or(f64::NAN)
        };
        println!(
            "| {batch} | {om:.2} ({ob:.2}) | {tm:.2} ({tb:.2}) | {:.2}x ({:.2}x) | {:.2}x [{:.2}x–{:.2}x] |",
            om / tm,
            ob / tb,
            q(0.5),
            q(0.25),
            q(0.75)
        );
    }
    Ok(())
}
