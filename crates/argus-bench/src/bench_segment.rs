//! `argus-bench segment`: the weight-free segmenter on scenes with exact masks (the logo with its alpha, and
//! elliptical cut-outs of scikit-image photographs pasted onto other photographs), and the latency of a
//! segmentation job through the HTTP API of an in-process server on a 1024 px image.
//!
//! - Mean IoU from a box prompt (the mask's tight box) and from one foreground click (the simulator's first
//!   click: the object pixel farthest from its boundary).
//! - NoC@85 / NoC@90: clicks until IoU ≥ 0.85 / 0.90 with the standard simulator (next click at the centre
//!   of the largest error region), at most 20 (counted as 20 when never reached).
//! - Median and p90 job latency (POST → Completed, polling every 5 ms) for a 1024×768 image, beside the bare
//!   engine time on the same image in the same run.
//! - Segment Anything: with `--sam-weights` the same quality figures plus encoder, decoder and per-prompt job
//!   latency (first prompt, then with the cached embedding); without weights, ViT-B and MobileSAM are timed
//!   with random weights of their real shapes (timing only).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use argus_vision::composite::{mask_scenes, segmentation_set, MaskScene};
use argus_vision::segmentation::sam::{write_random_checkpoint, EncoderSpec, SamEngine};
use argus_vision::segmentation::segment::{grabcut, mask_iou, next_click, upsample_mask, PromptBox, PromptPoint};
use clap::Args;
use serde_json::{json, Value};

use crate::bench_training::BenchServer;

/// Flags of `argus-bench segment`.
#[derive(Debug, Clone, Args)]
pub struct SegmentBenchArgs {
    /// Directory of model weights (the server needs none for segmentation; used for the in-process server).
    #[arg(long, env = "ARGUS_MODELS_DIR", default_value = "argus-models")]
    pub models_dir: PathBuf,
    /// Directory of the photographs (scripts/fetch-test-photos.sh).
    #[arg(long, default_value = "argus-models/photos")]
    pub photos: PathBuf,
    /// Scenes per object.
    #[arg(long, default_value_t = 6)]
    pub per_object: usize,
    /// Jobs timed through HTTP.
    #[arg(long, default_value_t = 20)]
    pub jobs: usize,
    /// A SAM / MobileSAM safetensors checkpoint: adds its quality and latency.
    #[arg(long, env = "ARGUS_SAM_WEIGHTS")]
    pub sam_weights: Option<PathBuf>,
    /// Without --sam-weights, time SAM ViT-B and MobileSAM with random weights of their real shapes (speed does
    /// not depend on the values; quality is not measured).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub sam_timing: bool,
}

fn tight_box(mask: &image::GrayImage) -> PromptBox {
    let (w, h) = mask.dimensions();
    let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
    for (x, y, p) in mask.enumerate_pixels() {
        if p.0[0] >= 128 {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
        }
    }
    PromptBox {
        x_min: x0 as f32 / w as f32,
        y_min: y0 as f32 / h as f32,
        x_max: x1 as f32 / w as f32,
        y_max: y1 as f32 / h as f32,
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(((v.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0)
}

/// Mean quality of one engine over the scenes.
struct Quality {
    box_iou: f64,
    click_iou: f64,
    noc85: f64,
    noc90: f64,
}

/// Scores an engine: IoU from the tight box, IoU after the simulator's first click, and clicks to reach
/// IoU 0.85 / 0.90 (at most 20, counted as 20 when never reached). `segment(scene, points, box)` returns the
/// mask at the scene's full resolution.
fn evaluate(
    scenes: &[MaskScene],
    mut segment: impl FnMut(usize, &[PromptPoint], Option<PromptBox>) -> Result<image::GrayImage>,
) -> Result<Quality> {
    let (mut box_iou, mut click_iou, mut noc85, mut noc90) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, sc) in scenes.iter().enumerate() {
        let (w, h) = sc.mask.dimensions();
        box_iou.push(mask_iou(&segment(i, &[], Some(tight_box(&sc.mask)))?, &sc.mask));
        let (mut clicks, mut pred) = (Vec::new(), image::GrayImage::new(w, h));
        let (mut n85, mut n90) = (20usize, 20usize);
        for k in 1..=20 {
            let Some(c) = next_click(&pred, &sc.mask) else { break };
            clicks.push(c);
            pred = segment(i, &clicks, None)?;
            let iou = mask_iou(&pred, &sc.mask);
            if k == 1 {
                click_iou.push(iou);
            }
            if iou >= 0.85 && n85 == 20 {
                n85 = k;
            }
            if iou >= 0.90 {
                n90 = k;
                break;
            }
        }
        noc85.push(n85 as f64);
        noc90.push(n90 as f64);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    Ok(Quality { box_iou: mean(&box_iou), click_iou: mean(&click_iou), noc85: mean(&noc85), noc90: mean(&noc90) })
}

/// Runs the segmentation benchmark.
pub async fn run(args: SegmentBenchArgs) -> Result<()> {
    let (objects, backgrounds) =
        segmentation_set(&args.photos).map_err(anyhow::Error::msg).context("run scripts/fetch-test-photos.sh")?;
    let scenes = mask_scenes(&objects, &backgrounds, args.per_object, 512, 5);
    let q = evaluate(&scenes, |i, points, bbox| {
        let (w, h) = scenes[i].mask.dimensions();
        Ok(upsample_mask(&grabcut(&scenes[i].image, points, bbox).mask, w, h))
    })?;
    println!(
        "{} scenes: box IoU {:.3}, 1-click IoU {:.3}, NoC@85 {:.2}, NoC@90 {:.2}",
        scenes.len(),
        q.box_iou,
        q.click_iou,
        q.noc85,
        q.noc90
    );

    // Latency on a 1024 px image: bare engine, then through HTTP.
    let big = mask_scenes(&objects[1..2], &backgrounds, 1, 1024, 9).remove(0);
    let bbox = tight_box(&big.mask);
    let mut bare = Vec::new();
    for _ in 0..args.jobs.min(10) {
        let t = Instant::now();
        let img = big.image.clone();
        grabcut(&img, &[], Some(bbox));
        bare.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut jpeg = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(big.image.clone()).write_to(&mut jpeg, image::ImageFormat::Jpeg)?;
    let jpeg = jpeg.into_inner();
    let tmp = tempfile::tempdir()?;
    let server = BenchServer::start(tmp.path(), &args.models_dir).await?;
    let body = json!({"engine": "grabcut", "boundingBox": box_json(bbox)});
    let mut latency = job_latencies(&server, &jpeg, &[body], args.jobs).await?;
    server.stop().await;
    let (bare_p50, lat_p50) = (percentile(&mut bare, 0.5), percentile(&mut latency, 0.5));
    let lat_p90 = percentile(&mut latency, 0.9);
    println!();
    println!("| measurement (GrabCut engine, 2 cores) | value |");
    println!("|---|---|");
    println!("| mean IoU from a box prompt ({} scenes) | {:.3} |", scenes.len(), q.box_iou);
    println!("| mean IoU from one foreground click | {:.3} |", q.click_iou);
    println!("| NoC@85 (clicks, max 20) | {:.2} |", q.noc85);
    println!("| NoC@90 (clicks, max 20) | {:.2} |", q.noc90);
    println!("| job latency, 1024×768 JPEG, box prompt: median / p90 (HTTP POST → Completed) | {lat_p50:.0} / {lat_p90:.0} ms |");
    println!("| bare engine on the same image (decode excluded), median | {bare_p50:.0} ms |");

    let checkpoints: Vec<(String, PathBuf, bool)> = match &args.sam_weights {
        Some(p) => vec![(argus_vision::segmentation::sam::infer_spec(p)?.name(), p.clone(), true)],
        None if args.sam_timing => {
            let mut v = Vec::new();
            for (i, spec) in [EncoderSpec::vit_b(), EncoderSpec::TinyVit].into_iter().enumerate() {
                let path = tmp.path().join(format!("sam-random-{i}.safetensors"));
                write_random_checkpoint(&spec, &path, 1)?;
                v.push((format!("{} (random weights: timing only)", spec.name()), path, false));
            }
            v
        }
        None => Vec::new(),
    };
    for (name, path, quality) in checkpoints {
        sam_section(&args, &name, &path, quality, &scenes, &big, &jpeg).await?;
    }
    Ok(())
}

fn box_json(b: PromptBox) -> Value {
    json!({"xMin": b.x_min, "yMin": b.y_min, "xMax": b.x_max, "yMax": b.y_max})
}

/// Uploads `image` as a file, then times `jobs` segmentation jobs (POST → Completed, polling every 5 ms), the
/// request bodies taken in turn from `bodies` (each gets the file reference added).
async fn job_latencies(server: &BenchServer, image: &[u8], bodies: &[Value], jobs: usize) -> Result<Vec<f64>> {
    let http = reqwest::Client::new();
    let key = server.client.key.clone();
    let api = format!("{}/api/v1/projects/bench", server.root);
    let f: Value = http
        .post(format!("{api}/files"))
        .bearer_auth(&key)
        .json(&json!({"name": "big.jpg", "mimeType": "image/jpeg"}))
        .send()
        .await?
        .json()
        .await?;
    let upload = f["uploadUrl"].as_str().context("uploadUrl")?;
    http.put(upload).body(image.to_vec()).send().await?.error_for_status()?;
    let mut latency = Vec::new();
    for i in 0..jobs {
        let mut body = bodies[i % bodies.len()].clone();
        body["items"] = json!([{"fileId": f["id"]}]);
        let t = Instant::now();
        let job: Value = http
            .post(format!("{api}/context/vision/segment"))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await?
            .json()
            .await?;
        let id = job["jobId"].as_i64().with_context(|| format!("no job: {job}"))?;
        loop {
            let v: Value =
                http.get(format!("{api}/context/vision/segment/{id}")).bearer_auth(&key).send().await?.json().await?;
            match v["status"].as_str() {
                Some("Completed") => break,
                Some("Failed") => bail!("segmentation failed: {v}"),
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
        latency.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(latency)
}

/// Segment Anything: quality on the scenes (real weights only), bare encoder and decoder times, and job latency
/// through HTTP — the first prompt on an image (encoder + decoder) and the following ones (cached embedding).
#[allow(clippy::too_many_arguments)]
async fn sam_section(
    args: &SegmentBenchArgs,
    name: &str,
    path: &std::path::Path,
    quality: bool,
    scenes: &[MaskScene],
    big: &MaskScene,
    jpeg: &[u8],
) -> Result<()> {
    let engine = SamEngine::load(path)?;
    let model = engine.model();
    let mut rows: Vec<(String, String)> = Vec::new();
    if quality {
        let embeddings = scenes.iter().map(|sc| model.embed(&sc.image)).collect::<Result<Vec<_>, _>>()?;
        let q = evaluate(scenes, |i, points, bbox| {
            let (w, h) = scenes[i].mask.dimensions();
            Ok(model.decode(&embeddings[i], points, bbox)?.mask(w, h)?)
        })?;
        rows.push((format!("mean IoU from a box prompt ({} scenes)", scenes.len()), format!("{:.3}", q.box_iou)));
        rows.push(("mean IoU from one foreground click".into(), format!("{:.3}", q.click_iou)));
        rows.push(("NoC@85 / NoC@90 (clicks, max 20)".into(), format!("{:.2} / {:.2}", q.noc85, q.noc90)));
    }
    let t = Instant::now();
    let emb = model.embed(&big.image)?;
    let encode_ms = t.elapsed().as_secs_f64() * 1e3;
    let bbox = tight_box(&big.mask);
    let centre =
        PromptPoint { x: (bbox.x_min + bbox.x_max) / 2.0, y: (bbox.y_min + bbox.y_max) / 2.0, foreground: true };
    let mut decode = Vec::new();
    for i in 0..10 {
        let t = Instant::now();
        let m = if i % 2 == 0 { model.decode(&emb, &[centre], None)? } else { model.decode(&emb, &[], Some(bbox))? };
        m.working_mask()?;
        decode.push(t.elapsed().as_secs_f64() * 1e3);
    }
    drop(engine);
    let tmp = tempfile::tempdir()?;
    let server = BenchServer::start_with_sam(tmp.path(), &args.models_dir, Some(path.to_path_buf())).await?;
    let point = json!({"engine": "sam", "points": [{"x": centre.x, "y": centre.y, "label": 1}]});
    let boxed = json!({"engine": "sam", "boundingBox": box_json(bbox)});
    let first = job_latencies(&server, jpeg, std::slice::from_ref(&point), 1).await?;
    // The same bytes again: a new file, the same content hash, so the embedding is cached.
    let mut cached = job_latencies(&server, jpeg, &[point, boxed], args.jobs).await?;
    server.stop().await;
    rows.push(("image encoder, 1024×768 (bare)".into(), format!("{encode_ms:.0} ms")));
    rows.push((
        "prompt encoder + mask decoder + upsampling (bare), median".into(),
        format!("{:.0} ms", percentile(&mut decode, 0.5)),
    ));
    rows.push(("job latency, first prompt on an image (HTTP, encoder included)".into(), format!("{:.0} ms", first[0])));
    rows.push((
        "job latency per prompt with the cached embedding: median / p90 (HTTP)".into(),
        format!("{:.0} / {:.0} ms", percentile(&mut cached, 0.5), percentile(&mut cached, 0.9)),
    ));
    println!();
    println!("| measurement (SAM {name}, 2 cores) | value |");
    println!("|---|---|");
    for (k, v) in rows {
        println!("| {k} | {v} |");
    }
    Ok(())
}
