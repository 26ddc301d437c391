//! `argus-bench predict`: load on the Prediction API of an in-process server serving a published classifier
//! (trained on scikit-image photographs), from a Rust load generator over loopback: requests/s and p50/p99
//! latency at concurrency 1, 4 and 16, beside the bare model (decode + backbone + head, no HTTP, as many
//! threads as the server runs models at once) measured in the same run — the physical ceiling here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use argus_vision::heads::classifier::{features, Pooling};
use clap::Args;

use crate::bench_training::{BenchServer, COMPACT_DOMAIN};

/// Flags of `argus-bench predict`.
#[derive(Debug, Clone, Args)]
pub struct PredictBenchArgs {
    /// Directory of model weights.
    #[arg(long, env = "ARGUS_MODELS_DIR", default_value = "argus-models")]
    pub models_dir: PathBuf,
    /// Directory of the photographs (scripts/fetch-test-photos.sh).
    #[arg(long, default_value = "argus-models/photos")]
    pub photos: PathBuf,
    /// Requests per concurrency level.
    #[arg(long, default_value_t = 96)]
    pub requests: usize,
}

fn jpeg_crop(img: &image::RgbImage, x: f32, y: f32, w: f32, h: f32) -> Result<Vec<u8>> {
    let (iw, ih) = img.dimensions();
    let c = image::imageops::crop_imm(
        img,
        (iw as f32 * x) as u32,
        (ih as f32 * y) as u32,
        (iw as f32 * w) as u32,
        (ih as f32 * h) as u32,
    )
    .to_image();
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(c).write_to(&mut out, image::ImageFormat::Jpeg)?;
    Ok(out.into_inner())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

struct Level {
    concurrency: usize,
    rps: f64,
    p50: f64,
    p99: f64,
}

async fn load(url: &str, key: &str, body: &[u8], concurrency: usize, total: usize) -> Result<Level> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, next, url, key, body) =
            (http.clone(), Arc::clone(&next), url.to_string(), key.to_string(), body.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                let t = Instant::now();
                let resp = http
                    .post(&url)
                    .header("Prediction-Key", &key)
                    .header("Content-Type", "application/octet-stream")
                    .body(body.clone())
                    .send()
                    .await?;
                if !resp.status().is_success() {
                    bail!("prediction failed: {}", resp.status());
                }
                resp.bytes().await?;
                lat.push(t.elapsed());
            }
            Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let wall = t0.elapsed().as_secs_f64();
    all.sort();
    Ok(Level { concurrency, rps: all.len() as f64 / wall, p50: percentile(&all, 0.5), p99: percentile(&all, 0.99) })
}

/// Runs the prediction load benchmark.
pub async fn run(args: PredictBenchArgs) -> Result<()> {
    let load_photo = |n: &str| -> Result<image::RgbImage> {
        Ok(image::open(args.photos.join(n))
            .with_context(|| format!("{n}: run scripts/fetch-test-photos.sh"))?
            .to_rgb8())
    };
    let (chelsea, coffee) = (load_photo("chelsea.png")?, load_photo("coffee.png")?);
    let tmp = tempfile::tempdir()?;
    let server = BenchServer::start(tmp.path(), &args.models_dir).await?;
    let c = &server.client;
    // A compact-domain project, so that the served model runs EfficientNet-Lite0 at 224 px like the bare
    // reference below (General-domain classifiers run Lite2 at 260 px).
    let (pid, tags) = c.project(&format!("load&domainId={COMPACT_DOMAIN}"), &["cat", "coffee"]).await?;
    let crops = [
        (0.0, 0.0, 0.8, 0.8),
        (0.2, 0.2, 0.8, 0.8),
        (0.1, 0.0, 0.85, 0.9),
        (0.0, 0.15, 0.9, 0.85),
        (0.15, 0.1, 0.7, 0.75),
    ];
    for (tag, img) in tags.iter().zip([&chelsea, &coffee]) {
        let mut form = reqwest::multipart::Form::new();
        for b in crops {
            form = form.part("imageData", reqwest::multipart::Part::bytes(jpeg_crop(img, b.0, b.1, b.2, b.3)?));
        }
        c.json(c.http.post(format!("{}/projects/{pid}/images?tagIds={tag}", c.base)).multipart(form)).await?;
    }
    let (it, _) = c.train(&pid, "trainingType=Regular").await?;
    c.json(
        c.http.post(format!("{}/projects/{pid}/iterations/{it}/publish?publishName=bench&predictionId=bench", c.base)),
    )
    .await?;
    let body = jpeg_crop(&chelsea, 0.0, 0.0, 1.0, 1.0)?;
    let base = format!("{}/customvision/v3.1/prediction/{pid}/classify/iterations/bench/image", server.root);

    // Bare model: decode + backbone + head on as many threads as the server runs models at once.
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let net = argus_engine::VisionEngine::new(&args.models_dir).backbone().map_err(|e| anyhow::anyhow!(e.message))?;
    let n_bare = args.requests;
    let t0 = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = (0..cores)
            .map(|k| {
                let (net, body) = (Arc::clone(&net), &body);
                scope.spawn(move || -> Result<()> {
                    for _ in (k..n_bare).step_by(cores) {
                        let img = image::load_from_memory(body)?.to_rgb8();
                        features(&net, &[img], 224, Pooling::MeanMax)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("bare-model thread panicked"))??;
        }
        Ok(())
    })?;
    let bare = n_bare as f64 / t0.elapsed().as_secs_f64();
    println!("bare model ({cores} threads): {bare:.1} images/s");

    let key = server.prediction_key.clone();
    load(&format!("{base}/nostore"), &key, &body, 2, 8).await?; // warm-up
    let mut levels = Vec::new();
    for conc in [1usize, 4, 16] {
        let l = load(&format!("{base}/nostore"), &key, &body, conc, args.requests).await?;
        println!("nostore, concurrency {conc}: {:.1} req/s, p50 {:.1} ms, p99 {:.1} ms", l.rps, l.p50, l.p99);
        levels.push(l);
    }
    let stored = load(&base, &key, &body, 16, args.requests).await?;
    println!("stored, concurrency 16: {:.1} req/s, p50 {:.1} ms, p99 {:.1} ms", stored.rps, stored.p50, stored.p99);

    println!();
    println!("| route | concurrency | requests/s | p50 ms | p99 ms | vs bare model |");
    println!("|---|---|---|---|---|---|");
    println!("| bare model (decode + backbone + head, {cores} threads, no HTTP) | — | {bare:.1} | — | — | 1.00× |");
    for l in &levels {
        println!(
            "| classify/…/image/nostore | {} | {:.1} | {:.1} | {:.1} | {:.2}× |",
            l.concurrency,
            l.rps,
            l.p50,
            l.p99,
            l.rps / bare
        );
    }
    println!(
        "| classify/…/image (stored) | 16 | {:.1} | {:.1} | {:.1} | {:.2}× |",
        stored.rps,
        stored.p50,
        stored.p99,
        stored.rps / bare
    );
    if let Some(l16) = levels.last() {
        println!(
            "HTTP serving cost at concurrency 16 (nostore): {:.1} % of the bare model's throughput",
            (1.0 - l16.rps / bare) * 100.0
        );
    }
    server.stop().await;
    Ok(())
}
