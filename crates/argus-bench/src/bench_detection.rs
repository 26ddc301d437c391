//! `argus-bench detection`: object detection through the HTTP API of an in-process server, on scenes
//! composited from scikit-image photographs (a cat crop, a coffee-cup crop and a logo with transparency
//! pasted at random scale, position and mirroring onto other photographs; test scenes use backgrounds never
//! seen in training).
//!
//! - Wall time of Regular and Advanced detection training for 2 tags × 20 images.
//! - mAP@0.5 on 24 unseen test scenes (3 tags) after training with 15 and 30 images per tag, Regular and
//!   Advanced.
//! - Peak resident memory of the process.

use std::io::Cursor;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use argus_vision::composite::{detection_set, scenes, Scene};
use argus_vision::heads::detector::{mean_average_precision, Detection, GtBox};
use base64::Engine as _;
use clap::Args;
use serde_json::{json, Value};

use crate::bench_training::{peak_rss_mib, BenchServer, Client};

/// The hosted service's "General" object-detection domain.
pub(crate) const DETECTION_DOMAIN: &str = "da2e3a8a-40a5-4171-82f4-58522f70fbc1";

/// Flags of `argus-bench detection`.
#[derive(Debug, Clone, Args)]
pub struct DetectionBenchArgs {
    /// Directory of model weights.
    #[arg(long, env = "ARGUS_MODELS_DIR", default_value = "argus-models")]
    pub models_dir: PathBuf,
    /// Directory of the photographs (scripts/fetch-test-photos.sh).
    #[arg(long, default_value = "argus-models/photos")]
    pub photos: PathBuf,
    /// Skip the Advanced runs.
    #[arg(long)]
    pub skip_advanced: bool,
}

fn jpeg(scene: &Scene) -> Result<Vec<u8>> {
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(scene.image.clone()).write_to(&mut out, image::ImageFormat::Jpeg)?;
    Ok(out.into_inner())
}

async fn upload(c: &Client, pid: &str, tags: &[String], train: &[Scene]) -> Result<()> {
    let b64 = base64::engine::general_purpose::STANDARD;
    for chunk in train.chunks(16) {
        let mut images = Vec::new();
        for sc in chunk {
            let regions: Vec<Value> = sc
                .boxes
                .iter()
                .filter(|b| b.class < tags.len())
                .map(|b| json!({"tagId": tags[b.class], "left": b.left, "top": b.top, "width": b.width, "height": b.height}))
                .collect();
            images.push(json!({"name": "scene.jpg", "contents": b64.encode(jpeg(sc)?), "regions": regions}));
        }
        c.json(c.http.post(format!("{}/projects/{pid}/images/files", c.base)).json(&json!({ "images": images })))
            .await?;
    }
    Ok(())
}

async fn detect(c: &Client, pid: &str, it: &str, tags: &[String], sc: &Scene) -> Result<Vec<Detection>> {
    let v = c
        .json(
            c.http
                .post(format!("{}/projects/{pid}/quicktest/image?iterationId={it}&store=false", c.base))
                .header("content-type", "application/octet-stream")
                .body(jpeg(sc)?),
        )
        .await?;
    Ok(v["predictions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let class = tags.iter().position(|t| Some(t.as_str()) == p["tagId"].as_str())?;
            let b = &p["boundingBox"];
            Some(Detection {
                class,
                score: p["probability"].as_f64()? as f32,
                left: b["left"].as_f64()? as f32,
                top: b["top"].as_f64()? as f32,
                width: b["width"].as_f64()? as f32,
                height: b["height"].as_f64()? as f32,
            })
        })
        .collect())
}

/// Runs the detection benchmark.
pub async fn run(args: DetectionBenchArgs) -> Result<()> {
    let set = detection_set(&args.photos).map_err(anyhow::Error::msg).context("run scripts/fetch-test-photos.sh")?;
    let tmp = tempfile::tempdir()?;
    let server = BenchServer::start(tmp.path(), &args.models_dir).await?;
    let c = &server.client;
    let modes: Vec<(&str, &str)> = if args.skip_advanced {
        vec![("Regular", "trainingType=Regular")]
    } else {
        vec![("Regular", "trainingType=Regular"), ("Advanced", "trainingType=Advanced&reservedBudgetInHours=1")]
    };

    let mut timing: Vec<(&str, Duration)> = Vec::new();
    for (label, query) in &modes {
        let (pid, tags) = c.project(&format!("det-time-{label}&domainId={DETECTION_DOMAIN}"), &["cat", "cup"]).await?;
        let train = scenes(&set.objects[..2], &set.train_backgrounds, 20, 512, 21);
        upload(c, &pid, &tags, &train).await?;
        let (_, took) = c.train(&pid, query).await?;
        println!("{label} detection training, 2 tags x 20 images: {:.1} s", took.as_secs_f64());
        timing.push((label, took));
    }

    let test = scenes(&set.objects, &set.test_backgrounds, 8, 512, 77);
    let truth: Vec<Vec<GtBox>> = test.iter().map(|s| s.boxes.clone()).collect();
    let mut maps = Vec::new();
    for n in [15usize, 30] {
        let train = scenes(&set.objects, &set.train_backgrounds, n, 512, 1000 + n as u64);
        for (label, query) in &modes {
            let (pid, tags) = c.project(&format!("det-{n}-{label}&domainId={DETECTION_DOMAIN}"), &set.tags).await?;
            upload(c, &pid, &tags, &train).await?;
            let (it, took) = c.train(&pid, query).await?;
            let mut dets = Vec::new();
            for sc in &test {
                dets.push(detect(c, &pid, &it, &tags, sc).await?);
            }
            let (map, aps) = mean_average_precision(&dets, &truth, tags.len(), 0.5);
            let per: Vec<String> = set.tags.iter().zip(&aps).map(|(t, a)| format!("{t} {:.2}", a)).collect();
            println!(
                "{label}, {n} images/tag: mAP@0.5 {map:.3} on {} unseen scenes ({}); trained in {:.1} s",
                test.len(),
                per.join(", "),
                took.as_secs_f64()
            );
            maps.push((n, *label, map, took));
        }
    }
    let peak = peak_rss_mib();
    println!();
    println!("| measurement | value |");
    println!("|---|---|");
    for (label, took) in &timing {
        println!(
            "| {label} detection training, 2 tags × 20 images (HTTP + job + 3-fold CV) | {:.1} s |",
            took.as_secs_f64()
        );
    }
    for (n, label, map, took) in &maps {
        println!(
            "| mAP@0.5, 3 tags × {n} images, {label} ({} unseen scenes; trained in {:.0} s) | {map:.3} |",
            test.len(),
            took.as_secs_f64()
        );
    }
    if let Some(p) = peak {
        println!("| peak resident memory of the whole process | {p:.0} MiB |");
    }
    server.stop().await;
    Ok(())
}
