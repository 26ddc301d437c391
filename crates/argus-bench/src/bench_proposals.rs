//! `argus-bench proposals`: how well GetImageRegionProposals finds the objects of a scene, through the HTTP
//! API of an in-process server, on the detection benchmark's 24 unseen test scenes (objects pasted onto
//! photographs never used in training).
//!
//! For each ground-truth box: whether one of the first 1, 5 or 10 proposals overlaps it by IoU ≥ 0.5 (recall),
//! and the best IoU any proposal reaches (mean best overlap). Beside it, in the same run, the same figures for
//! a fixed, image-independent set of 10 boxes (the whole image, its quadrants, its centre and a 3 × 3 grid of
//! thirds minus corners): proposals that do not beat it carry no information about the image.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use argus_vision::composite::{detection_set, scenes};
use argus_vision::heads::detector::GtBox;
use argus_vision::proposals::{iou, Proposal};
use base64::Engine as _;
use clap::Args;
use serde_json::json;

use crate::bench_detection::DETECTION_DOMAIN;
use crate::bench_training::BenchServer;

/// Flags of `argus-bench proposals`.
#[derive(Debug, Clone, Args)]
pub struct ProposalBenchArgs {
    /// Directory of model weights.
    #[arg(long, env = "ARGUS_MODELS_DIR", default_value = "argus-models")]
    pub models_dir: PathBuf,
    /// Directory of the photographs (scripts/fetch-test-photos.sh).
    #[arg(long, default_value = "argus-models/photos")]
    pub photos: PathBuf,
    /// Seed of the scenes (77: the detection benchmark's test scenes).
    #[arg(long, default_value_t = 77)]
    pub seed: u64,
}

/// Ten boxes that ignore the image: whole, four quadrants, centre half, and the four edge-centred thirds.
fn fixed_boxes() -> Vec<Proposal> {
    let b = |left, top, width, height| Proposal { left, top, width, height, confidence: 1.0 };
    let t = 1.0 / 3.0;
    vec![
        b(0.0, 0.0, 1.0, 1.0),
        b(0.25, 0.25, 0.5, 0.5),
        b(0.0, 0.0, 0.5, 0.5),
        b(0.5, 0.0, 0.5, 0.5),
        b(0.0, 0.5, 0.5, 0.5),
        b(0.5, 0.5, 0.5, 0.5),
        b(t, 0.0, t, t),
        b(0.0, t, t, t),
        b(2.0 * t, t, t, t),
        b(t, 2.0 * t, t, t),
    ]
}

/// Recall at IoU ≥ 0.5 among the first 1, 5 and 10 boxes, and the mean best IoU, over all ground-truth boxes.
fn score(per_scene: &[Vec<Proposal>], truth: &[Vec<GtBox>]) -> ([f64; 3], f64) {
    let (mut hits, mut best_sum, mut n) = ([0usize; 3], 0.0, 0usize);
    for (props, boxes) in per_scene.iter().zip(truth) {
        for g in boxes {
            let g = Proposal::from(g);
            let overlaps: Vec<f64> = props.iter().map(|p| iou(p, &g)).collect();
            for (h, k) in hits.iter_mut().zip([1, 5, 10]) {
                if overlaps.iter().take(k).any(|&o| o >= 0.5) {
                    *h += 1;
                }
            }
            best_sum += overlaps.iter().copied().fold(0.0, f64::max);
            n += 1;
        }
    }
    let n = n.max(1) as f64;
    (hits.map(|h| h as f64 / n), best_sum / n)
}

/// Runs the benchmark.
pub async fn run(args: ProposalBenchArgs) -> Result<()> {
    let set = detection_set(&args.photos).map_err(anyhow::Error::msg).context("run scripts/fetch-test-photos.sh")?;
    let test = scenes(&set.objects, &set.test_backgrounds, 8, 512, args.seed);
    let truth: Vec<Vec<GtBox>> = test.iter().map(|s| s.boxes.clone()).collect();
    let tmp = tempfile::tempdir()?;
    let server = BenchServer::start(tmp.path(), &args.models_dir).await?;
    let c = &server.client;
    let (pid, _) = c.project(&format!("proposals&domainId={DETECTION_DOMAIN}"), &[]).await?;

    let b64 = base64::engine::general_purpose::STANDARD;
    let mut images = Vec::new();
    for sc in &test {
        let mut jpeg = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(sc.image.clone()).write_to(&mut jpeg, image::ImageFormat::Jpeg)?;
        images.push(json!({"name": "scene.jpg", "contents": b64.encode(jpeg.into_inner())}));
    }
    let created = c
        .json(c.http.post(format!("{}/projects/{pid}/images/files", c.base)).json(&json!({ "images": images })))
        .await?;
    let ids: Vec<String> = created["images"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["image"]["id"].as_str().map(str::to_string))
        .collect();
    if ids.len() != test.len() {
        bail!("uploaded {} of {} scenes: {created}", ids.len(), test.len());
    }

    let mut ours = Vec::new();
    let mut latencies = Vec::new();
    for id in &ids {
        let t = Instant::now();
        let v = c.json(c.http.post(format!("{}/projects/{pid}/images/{id}/regionproposals", c.base))).await?;
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
        let props: Vec<Proposal> = v["proposals"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let b = &p["boundingBox"];
                Some(Proposal {
                    left: b["left"].as_f64()?,
                    top: b["top"].as_f64()?,
                    width: b["width"].as_f64()?,
                    height: b["height"].as_f64()?,
                    confidence: p["confidence"].as_f64()?,
                })
            })
            .collect();
        ours.push(props);
    }
    server.stop().await;
    latencies.sort_by(f64::total_cmp);
    let fixed = vec![fixed_boxes(); test.len()];
    let objects: usize = truth.iter().map(Vec::len).sum();
    let returned = ours.iter().map(Vec::len).sum::<usize>() as f64 / ours.len().max(1) as f64;

    println!(
        "{objects} objects in {} unseen scenes; {returned:.1} proposals per image; median latency {:.0} ms",
        test.len(),
        latencies.get(latencies.len() / 2).copied().unwrap_or(f64::NAN)
    );
    println!("| boxes | recall@0.5, first 1 | first 5 | first 10 | mean best IoU |");
    println!("|---|---|---|---|---|");
    for (label, per) in [("GetImageRegionProposals (Argus)", &ours), ("10 fixed boxes (reference)", &fixed)] {
        let ([r1, r5, r10], mbo) = score(per, &truth);
        println!("| {label} | {r1:.2} | {r5:.2} | {r10:.2} | {mbo:.2} |");
    }
    Ok(())
}
