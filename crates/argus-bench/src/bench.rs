//! `argus-bench data`: upload throughput (64-image multipart batches, images/s) and listing latency (256 images,
//! median), each beside a reference measured in the same run: the bare decode-and-derive work for the same
//! images (the compute floor of an upload), and the bare store query for the same listing.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use argus_core::store::ImageQuery;
use argus_vision::{prepare_image, ImageLimits};
use clap::Args;
use image::{Rgb, RgbImage};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};

use argus_app::config::{ServeArgs, Settings};

/// Flags of `argus-bench data`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Images to upload (a multiple of 64 is best).
    #[arg(long, default_value_t = 512)]
    pub images: usize,
    /// Image width in pixels.
    #[arg(long, default_value_t = 1024)]
    pub width: u32,
    /// Image height in pixels.
    #[arg(long, default_value_t = 768)]
    pub height: u32,
    /// Listing requests to time.
    #[arg(long, default_value_t = 50)]
    pub list_runs: usize,
}

/// A photo-like synthetic JPEG of `w` × `h` (gradients, rectangles, noise), distinct per draw of `rng`.
pub(crate) fn synthetic_jpeg(rng: &mut rand::rngs::StdRng, w: u32, h: u32) -> Vec<u8> {
    // Smooth gradients plus noise and a few rectangles: photo-like entropy, distinct bytes per image.
    let (a, b, c) = (rng.gen_range(0..255u32), rng.gen_range(0..255u32), rng.gen_range(0..255u32));
    let mut img = RgbImage::from_fn(w, h, |x, y| {
        Rgb([((x * 255 / w + a) % 256) as u8, ((y * 255 / h + b) % 256) as u8, (((x + y) / 4 + c) % 256) as u8])
    });
    for _ in 0..6 {
        let (x0, y0) = (rng.gen_range(0..w), rng.gen_range(0..h));
        let (rw, rh) = (rng.gen_range(8..w / 3), rng.gen_range(8..h / 3));
        let colour = Rgb([rng.gen(), rng.gen(), rng.gen()]);
        for y in y0..(y0 + rh).min(h) {
            for x in x0..(x0 + rw).min(w) {
                img.put_pixel(x, y, colour);
            }
        }
    }
    for p in img.pixels_mut() {
        let n: i16 = rng.gen_range(-12..12);
        for ch in p.0.iter_mut() {
            *ch = (*ch as i16 + n).clamp(0, 255) as u8;
        }
    }
    let mut out = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 88);
    image::DynamicImage::ImageRgb8(img).write_with_encoder(enc).map(|_| out).unwrap_or_default()
}

/// The median of some timings.
pub(crate) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// A progress bar with a message.
pub(crate) fn bar(len: usize, msg: &'static str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64).with_message(msg);
    pb.set_style(
        ProgressStyle::with_template("{msg:>24} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb
}

/// Runs the benchmark and prints a table.
pub async fn run(args: BenchArgs) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let settings = Settings::resolve(&ServeArgs { data_dir: Some(tmp.path().to_path_buf()), ..Default::default() })?;
    let node = argus_app::Node::start(&settings, argus_app::NodeOptions::loopback()).await?;
    let key = node.training_key();
    let argus = node.state.argus.clone();
    let base = format!("{}/customvision/v3.3/training", node.url());
    let client = reqwest::Client::new();

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let gen = bar(args.images, "generating images");
    let images: Vec<Vec<u8>> = (0..args.images)
        .map(|_| {
            gen.inc(1);
            synthetic_jpeg(&mut rng, args.width, args.height)
        })
        .collect();
    gen.finish();
    let mean_kb = images.iter().map(Vec::len).sum::<usize>() as f64 / images.len().max(1) as f64 / 1024.0;

    // Reference: the same decode + orientation + derivative work, on the same number of threads, no HTTP/store.
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let refs = images.clone();
    let t0 = Instant::now();
    tokio::task::spawn_blocking(move || {
        std::thread::scope(|s| {
            for chunk in refs.chunks(refs.len().div_ceil(workers).max(1)) {
                s.spawn(move || {
                    for img in chunk {
                        let _ = prepare_image(img, &ImageLimits::default());
                    }
                });
            }
        })
    })
    .await?;
    let reference_ips = args.images as f64 / t0.elapsed().as_secs_f64();

    let project: serde_json::Value = client
        .post(format!("{base}/projects?name=bench"))
        .header("Training-Key", &key)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let pid = project["id"].as_str().context("project id")?.to_string();
    let up = bar(args.images, "uploading (64/batch)");
    let t0 = Instant::now();
    for batch in images.chunks(64) {
        let mut form = reqwest::multipart::Form::new();
        for img in batch {
            form = form.part("imageData", reqwest::multipart::Part::bytes(img.clone()));
        }
        let resp = client
            .post(format!("{base}/projects/{pid}/images"))
            .header("Training-Key", &key)
            .multipart(form)
            .send()
            .await?;
        anyhow::ensure!(resp.status().as_u16() == 200, "upload answered {}", resp.status());
        up.inc(batch.len() as u64);
    }
    up.finish();
    let upload_ips = args.images as f64 / t0.elapsed().as_secs_f64();

    let mut http = Vec::new();
    let mut direct = Vec::new();
    let pid_uuid: uuid::Uuid = pid.parse()?;
    let lb = bar(args.list_runs, "listing 256 images");
    for _ in 0..args.list_runs {
        let t = Instant::now();
        let resp =
            client.get(format!("{base}/projects/{pid}/images?take=256")).header("Training-Key", &key).send().await?;
        let body = resp.bytes().await?;
        http.push(t.elapsed());
        anyhow::ensure!(body.len() > 2, "empty listing");
        let t = Instant::now();
        let rows = argus
            .store
            .query_images(pid_uuid, &ImageQuery { take: 256, ..Default::default() })
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        direct.push(t.elapsed());
        anyhow::ensure!(rows.len() == 256.min(args.images), "store returned {} rows", rows.len());
        lb.inc(1);
    }
    lb.finish();
    let (http_med, direct_med) = (median(http), median(direct));

    println!();
    println!(
        "Argus bench: {} images of {}x{} JPEG (mean {:.0} KiB), {} worker threads",
        args.images, args.width, args.height, mean_kb, workers
    );
    println!("| measurement | Argus | reference | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| 64-image batch upload (HTTP, multipart) | {:.1} images/s | {:.1} images/s (bare decode + derivatives) | {:.2}x |",
        upload_ips,
        reference_ips,
        upload_ips / reference_ips
    );
    println!(
        "| list 256 images (GET /images?take=256), median of {} | {:.2} ms | {:.2} ms (bare store query) | {:.2}x |",
        args.list_runs,
        http_med.as_secs_f64() * 1e3,
        direct_med.as_secs_f64() * 1e3,
        http_med.as_secs_f64() / direct_med.as_secs_f64().max(1e-9)
    );
    node.stop(false).await
}
