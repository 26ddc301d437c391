//! `argus-bench training`: end-to-end classification training through the HTTP API of an in-process server
//! (upload, train, poll, quick test), on real photographs shipped with scikit-image.
//!
//! - Wall time of Regular and Advanced training for 2 tags × 20 images (crops of chelsea vs coffee).
//! - Accuracy with 5, 10 and 20 training images per tag, Regular and Advanced, on 4 object tags (cat, cup,
//!   logo, astronaut's head) each pasted at random scale, position and mirroring onto other photographs
//!   (`argus_vision::composite::classification_set`): the model must find the object in a scene, and the
//!   test scenes are built on background photographs never seen in training. Each (images per tag, recipe)
//!   cell is trained on 3 independent draws of training scenes and reports the mean accuracy.
//! - Peak resident memory of the process (VmHWM).
//!
//! The objects themselves are the same photographs in training and test (as in logo or product recognition);
//! what changes is their scale, position, lighting and everything around them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use argus_vision::composite::{classification_set, placed_scenes, Placement};
use clap::Args;
use image::RgbImage;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use argus_app::config::{ServeArgs, Settings};

/// Flags of `argus-bench training`.
#[derive(Debug, Clone, Args)]
pub struct TrainBenchArgs {
    /// Directory of model weights.
    #[arg(long, env = "ARGUS_MODELS_DIR", default_value = "argus-models")]
    pub models_dir: PathBuf,
    /// Directory of the photographs (scripts/fetch-test-photos.sh).
    #[arg(long, default_value = "argus-models/photos")]
    pub photos: PathBuf,
    /// Skip the Advanced timing run.
    #[arg(long)]
    pub skip_advanced: bool,
}

/// The two training types, as TrainProject query strings.
const RECIPES: [(&str, &str); 2] =
    [("Regular", "trainingType=Regular"), ("Advanced", "trainingType=Advanced&reservedBudgetInHours=1")];

/// A compact classification domain (General (compact)): its Regular training keeps the small backbone
/// (EfficientNet-Lite0 at 224 px), where every other classification domain trains on Lite2.
pub(crate) const COMPACT_DOMAIN: &str = "0732100f-1a38-4e49-a514-c9b44c697ab5";

/// Test scenes per tag in the accuracy benchmark.
const TEST_SCENES_PER_TAG: usize = 30;

/// Independent training sets drawn per (images per tag, recipe) in the accuracy benchmark; the table reports
/// the mean accuracy over them, so that one lucky or unlucky draw does not decide the comparison.
const TRAINING_DRAWS: usize = 3;

/// JPEG (quality 90) bytes of an image.
fn jpeg(img: RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90);
    let _ = image::DynamicImage::ImageRgb8(img).write_with_encoder(enc);
    out
}

fn crop(img: &RgbImage, rng: &mut rand::rngs::StdRng) -> Vec<u8> {
    let (w, h) = img.dimensions();
    let s: f32 = rng.gen_range(0.45..0.8);
    let (cw, ch) = ((w as f32 * s) as u32, (h as f32 * s) as u32);
    let (x, y) = (rng.gen_range(0..=w - cw), rng.gen_range(0..=h - ch));
    let mut c = image::imageops::crop_imm(img, x, y, cw, ch).to_image();
    if rng.gen_bool(0.5) {
        c = image::imageops::flip_horizontal(&c);
    }
    jpeg(c)
}

/// A Training API client of the in-process server.
pub(crate) struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    pub(crate) key: String,
}

impl Client {
    pub(crate) async fn json(&self, rb: reqwest::RequestBuilder) -> Result<Value> {
        let resp = rb.header("Training-Key", &self.key).send().await?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{status}: {body}");
        }
        Ok(body)
    }

    pub(crate) async fn project(&self, name: &str, tags: &[&str]) -> Result<(String, Vec<String>)> {
        let p = self.json(self.http.post(format!("{}/projects?name={name}", self.base))).await?;
        let pid = p["id"].as_str().context("id")?.to_string();
        let mut ids = Vec::new();
        for t in tags {
            let v = self.json(self.http.post(format!("{}/projects/{pid}/tags?name={t}", self.base))).await?;
            ids.push(v["id"].as_str().context("tag id")?.to_string());
        }
        Ok((pid, ids))
    }

    pub(crate) async fn upload(&self, pid: &str, tag: &str, images: Vec<Vec<u8>>) -> Result<()> {
        for chunk in images.chunks(64) {
            let mut form = reqwest::multipart::Form::new();
            for img in chunk {
                form = form.part("imageData", reqwest::multipart::Part::bytes(img.clone()));
            }
            self.json(self.http.post(format!("{}/projects/{pid}/images?tagIds={tag}", self.base)).multipart(form))
                .await?;
        }
        Ok(())
    }

    pub(crate) async fn train(&self, pid: &str, query: &str) -> Result<(String, Duration)> {
        let t0 = Instant::now();
        let it = self.json(self.http.post(format!("{}/projects/{pid}/train?{query}", self.base))).await?;
        let id = it["id"].as_str().context("iteration id")?.to_string();
        loop {
            let it = self.json(self.http.get(format!("{}/projects/{pid}/iterations/{id}", self.base))).await?;
            match it["status"].as_str() {
                Some("Completed") => return Ok((id, t0.elapsed())),
                Some("Training") => tokio::time::sleep(Duration::from_millis(100)).await,
                _ => bail!("training failed: {it}"),
            }
        }
    }

    async fn top_tag(&self, pid: &str, iteration: &str, img: Vec<u8>) -> Result<String> {
        let v = self
            .json(
                self.http
                    .post(format!("{}/projects/{pid}/quicktest/image?iterationId={iteration}&store=false", self.base))
                    .header("content-type", "application/octet-stream")
                    .body(img),
            )
            .await?;
        Ok(v["predictions"][0]["tagId"].as_str().unwrap_or_default().to_string())
    }
}

pub(crate) fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Runs the training benchmark.
pub async fn run(args: TrainBenchArgs) -> Result<()> {
    let load = |n: &str| -> Result<RgbImage> {
        Ok(image::open(args.photos.join(n))
            .with_context(|| format!("{n}: run scripts/fetch-test-photos.sh"))?
            .to_rgb8())
    };
    let imgs: Vec<RgbImage> = ["chelsea.png", "coffee.png"].iter().map(|p| load(p)).collect::<Result<_>>()?;

    let tmp = tempfile::tempdir()?;
    let server = BenchServer::start(tmp.path(), &args.models_dir).await?;
    let c = &server.client;

    // Wall time: 2 tags x 20 images.
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut timing = Vec::new();
    for (label, query) in RECIPES {
        if label == "Advanced" && args.skip_advanced {
            continue;
        }
        let (pid, tags) = c.project(&format!("time-{label}"), &["cat", "coffee"]).await?;
        for (t, img) in tags.iter().zip(&imgs) {
            c.upload(&pid, t, (0..20).map(|_| crop(img, &mut rng)).collect()).await?;
        }
        let (_, took) = c.train(&pid, query).await?;
        println!("{label} training, 2 tags x 20 images: {:.1} s", took.as_secs_f64());
        timing.push((label, took));
    }

    // Accuracy on unseen scenes, 4 object tags, Regular and Advanced.
    let set =
        classification_set(&args.photos).map_err(anyhow::Error::msg).context("run scripts/fetch-test-photos.sh")?;
    let tests =
        placed_scenes(&set.objects, &set.test_backgrounds, TEST_SCENES_PER_TAG, 384, Placement::CLASSIFICATION, 999);
    let mut accuracy = Vec::new();
    for n in [5usize, 10, 20] {
        for (label, query) in RECIPES {
            if label == "Advanced" && args.skip_advanced {
                continue;
            }
            let mut draws = Vec::new();
            for draw in 0..TRAINING_DRAWS {
                let seed = 100 + n as u64 + 1000 * draw as u64;
                let train =
                    placed_scenes(&set.objects, &set.train_backgrounds, n, 384, Placement::CLASSIFICATION, seed);
                let (pid, tags) = c.project(&format!("acc-{n}-{label}-{draw}"), &set.tags).await?;
                for (class, t) in tags.iter().enumerate() {
                    let mine = train.iter().filter(|s| s.boxes.first().map(|b| b.class) == Some(class));
                    c.upload(&pid, t, mine.map(|s| jpeg(s.image.clone())).collect()).await?;
                }
                let (it, _) = c.train(&pid, query).await?;
                let mut right = 0;
                for scene in &tests {
                    let Some(truth) = scene.boxes.first().map(|b| &tags[b.class]) else { continue };
                    if c.top_tag(&pid, &it, jpeg(scene.image.clone())).await? == *truth {
                        right += 1;
                    }
                }
                println!("{label}, {n} images/tag, draw {draw}: {right}/{} unseen scenes right", tests.len());
                draws.push(right as f64 / tests.len() as f64);
            }
            let mean = draws.iter().sum::<f64>() / draws.len() as f64;
            let spread = draws.iter().fold(f64::NEG_INFINITY, |a, b| a.max(*b))
                - draws.iter().fold(f64::INFINITY, |a, b| a.min(*b));
            accuracy.push((n, label, mean, spread));
        }
    }
    let peak = peak_rss_mib();

    println!();
    println!("| measurement | value |");
    println!("|---|---|");
    for (label, took) in &timing {
        println!(
            "| {label} training, 2 tags × 20 images (upload excluded, HTTP + job + k-fold) | {:.1} s |",
            took.as_secs_f64()
        );
    }
    for (n, label, acc, spread) in &accuracy {
        println!(
            "| accuracy on {} unseen scenes, {} tags × {n} images, {label}, mean of {TRAINING_DRAWS} training sets \
             (range) | {:.1} % ({:.1}) |",
            tests.len(),
            set.tags.len(),
            acc * 100.0,
            spread * 100.0
        );
    }
    if let Some(p) = peak {
        println!("| peak resident memory of the whole process | {p:.0} MiB |");
    }
    server.stop().await;
    Ok(())
}

/// An in-process node with a training and a segmentation worker, on a loopback port, for benchmarks.
pub(crate) struct BenchServer {
    /// Training API client.
    pub(crate) client: Client,
    /// `http://127.0.0.1:port`.
    pub(crate) root: String,
    /// The Prediction-Key.
    pub(crate) prediction_key: String,
    node: argus_app::Node,
}

impl BenchServer {
    pub(crate) async fn start(data_dir: &std::path::Path, models_dir: &std::path::Path) -> Result<Self> {
        Self::start_with_sam(data_dir, models_dir, None).await
    }

    /// A server whose segmentation can use the SAM checkpoint at `sam_weights`.
    pub(crate) async fn start_with_sam(
        data_dir: &std::path::Path,
        models_dir: &std::path::Path,
        sam_weights: Option<std::path::PathBuf>,
    ) -> Result<Self> {
        Self::start_with(data_dir, models_dir, ServeArgs { sam_weights, ..Default::default() }).await
    }

    /// A server configured by `args` (its data and models directories are the given ones).
    pub(crate) async fn start_with(
        data_dir: &std::path::Path,
        models_dir: &std::path::Path,
        args: ServeArgs,
    ) -> Result<Self> {
        let settings = Settings::resolve(&ServeArgs {
            data_dir: Some(data_dir.to_path_buf()),
            models_dir: Some(models_dir.to_path_buf()),
            ..args
        })?;
        let options = argus_app::NodeOptions {
            training_workers: 1,
            segment_workers: 1,
            training_poll: Duration::from_millis(20),
            ..argus_app::NodeOptions::loopback()
        };
        let node = argus_app::Node::start(&settings, options).await?;
        // Missing weights fail here, with the error saying how to get them, not in the first training.
        argus_engine::VisionEngine::new(models_dir)
            .weights_path(argus_vision::weights::Variant::Lite0)
            .map_err(|e| anyhow::anyhow!(e.message))?;
        let client = Client {
            http: reqwest::Client::new(),
            base: format!("{}/customvision/v3.3/training", node.url()),
            key: node.training_key(),
        };
        Ok(Self { client, root: node.url(), prediction_key: node.state.keys.prediction.clone(), node })
    }

    pub(crate) async fn stop(self) {
        if let Err(e) = self.node.stop(true).await {
            eprintln!("stopping the benchmark server: {e:#}");
        }
    }
}
