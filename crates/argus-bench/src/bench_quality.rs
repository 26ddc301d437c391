//! `argus-bench quality`: model quality on real photographs, trained through the public API of an in-process
//! server and scored on photographs the model never saw, beside a linear-probe reference computed in the same
//! run on the same draws (`scripts/quality_probe.py`: the same EfficientNet-Lite0 weights under ONNX Runtime,
//! centre crop and mirror averaging, scikit-learn's LogisticRegression with C chosen by 5-fold CV).
//!
//! - Classification: ants vs bees with 5, 10 and 30 photographs per tag (seeded draws, scored on all the
//!   others), fruit (apple / banana / orange) with 10 per tag (scored on the other 8 per tag). Regular in a
//!   compact domain (the small backbone), Regular (General) and Advanced; top-1 accuracy from the Prediction
//!   API, beside the iteration's own cross-validated precision and recall (threshold 0.5).
//! - Detection: raccoons with 15 and 30 training photographs, scored on a fixed 100 others; mAP@0.5 (all-point
//!   AP per tag, mean over tags) computed here from the Prediction API's boxes, beside the iteration's reported
//!   mAP; fruit (apple / banana / orange, 23 photographs with Custom Vision regions) in 3 stratified folds, every
//!   photograph scored by the detector of the fold that left it out. The fruit set has fewer than the hosted
//!   minimum of 15 photographs per tag, so the benchmark's server is configured to ask for 5
//!   (`min_detection_images_per_tag`).
//! - Training wall time of every run and the process's peak resident memory.
//!
//! The protocols (which photographs are drawn for training, which are held out) are fixed by seeds and never
//! chosen image by image: what improves here must improve on photographs nobody has seen.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use argus_datasets::{Files, Format};
use argus_vision::heads::detector::{mean_average_precision, Detection, GtBox};
use base64::Engine as _;
use clap::Args;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Value};

use crate::bench_detection::DETECTION_DOMAIN;
use crate::bench_training::{peak_rss_mib, BenchServer, Client, COMPACT_DOMAIN};
use argus_app::config::ServeArgs;

/// Flags of `argus-bench quality`.
#[derive(Debug, Clone, Args)]
pub struct QualityBenchArgs {
    /// Folder of the labelled photographs (ants-bees/, fruit/, raccoon/).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Directory of model weights.
    #[arg(long, env = "ARGUS_MODELS_DIR", default_value = "argus-models")]
    pub models_dir: PathBuf,
    /// Python with onnxruntime, onnx, numpy, scikit-learn and pillow, for the linear-probe reference
    /// (scripts/bench-quality.sh installs one); without it the reference column is left out.
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Seeded draws per classification cell.
    #[arg(long, default_value_t = 3)]
    pub draws: usize,
    /// Skip the Advanced runs.
    #[arg(long)]
    pub skip_advanced: bool,
    /// Only this part: `classification` or `detection`.
    #[arg(long)]
    pub only: Option<String>,
    /// Photographs per tag of the ants-vs-bees cells.
    #[arg(long, value_delimiter = ',', default_values_t = [5usize, 10, 30])]
    pub sizes: Vec<usize>,
    /// Leave out the fruit cells.
    #[arg(long)]
    pub no_fruit: bool,
    /// Leave out the raccoon cells.
    #[arg(long)]
    pub no_raccoon: bool,
}

/// Folds of the fruit detection cell (every photograph is scored once, by a detector that never saw it).
const FRUIT_DETECTION_FOLDS: usize = 3;
/// Images per tag the benchmark's server asks before a detector trains (the fruit folds have 6 or more).
const FRUIT_MIN_PER_TAG: usize = 5;

const RECIPES: [(&str, &str); 2] =
    [("Regular", "trainingType=Regular"), ("Advanced", "trainingType=Advanced&reservedBudgetInHours=1")];

/// The photographs of a folder, sorted by name.
fn photos(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// One classification cell's draw: training and test photographs per tag.
struct Draw {
    name: String,
    tags: Vec<String>,
    train: Vec<Vec<PathBuf>>,
    test: Vec<Vec<PathBuf>>,
}

/// `n` photographs per tag drawn with `seed` for training; the rest (at most `test_per_tag` each) for test.
fn draw(name: String, classes: &[(String, Vec<PathBuf>)], n: usize, seed: u64, test_per_tag: usize) -> Draw {
    let mut train = Vec::new();
    let mut test = Vec::new();
    for (k, (_, files)) in classes.iter().enumerate() {
        let mut f = files.clone();
        f.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(k as u64)));
        let rest: Vec<PathBuf> = f[n.min(f.len())..].iter().take(test_per_tag).cloned().collect();
        train.push(f[..n.min(f.len())].to_vec());
        test.push(rest);
    }
    Draw { name, tags: classes.iter().map(|(t, _)| t.clone()).collect(), train, test }
}

struct Run {
    accuracy: f64,
    precision: f64,
    recall: f64,
    took: Duration,
}

async fn prediction(server: &BenchServer, path: &str, bytes: Vec<u8>) -> Result<Value> {
    let resp = server
        .client
        .http
        .post(format!("{}/customvision/v3.0/prediction/{path}", server.root))
        .header("Prediction-Key", &server.prediction_key)
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("prediction {status}: {v}");
    }
    Ok(v)
}

async fn publish(c: &Client, pid: &str, it: &str) -> Result<()> {
    c.json(c.http.post(format!("{}/projects/{pid}/iterations/{it}/publish?publishName=q&predictionId=bench", c.base)))
        .await?;
    Ok(())
}

/// Trains one draw in a new project (in `domain`, or the default General domain) and scores its unseen photographs.
async fn classification_run(
    server: &BenchServer,
    d: &Draw,
    label: &str,
    domain: Option<&str>,
    query: &str,
) -> Result<Run> {
    let c = &server.client;
    let tag_refs: Vec<&str> = d.tags.iter().map(String::as_str).collect();
    let name: String =
        format!("{}-{label}", d.name).chars().map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '-' }).collect();
    let domain = domain.map(|id| format!("&domainId={id}")).unwrap_or_default();
    let (pid, tags) = c.project(&format!("{name}{domain}"), &tag_refs).await?;
    for (t, files) in tags.iter().zip(&d.train) {
        for chunk in files.chunks(32) {
            let mut form = reqwest::multipart::Form::new();
            for f in chunk {
                let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
                let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("photo.jpg").to_string();
                form = form.part("imageData", reqwest::multipart::Part::bytes(bytes).file_name(name));
            }
            c.json(c.http.post(format!("{}/projects/{pid}/images?tagIds={t}", c.base)).multipart(form)).await?;
        }
    }
    let (it, took) = c.train(&pid, query).await?;
    let perf =
        c.json(c.http.get(format!("{}/projects/{pid}/iterations/{it}/performance?threshold=0.5", c.base))).await?;
    publish(c, &pid, &it).await?;
    let (mut right, mut total) = (0usize, 0usize);
    for (k, files) in d.test.iter().enumerate() {
        for f in files {
            let v =
                prediction(server, &format!("{pid}/classify/iterations/q/image/nostore"), std::fs::read(f)?).await?;
            let best = v["predictions"].as_array().into_iter().flatten().max_by(|a, b| {
                a["probability"].as_f64().unwrap_or(0.0).total_cmp(&b["probability"].as_f64().unwrap_or(0.0))
            });
            if best.and_then(|p| p["tagId"].as_str()) == Some(tags[k].as_str()) {
                right += 1;
            }
            total += 1;
        }
    }
    Ok(Run {
        accuracy: right as f64 / total.max(1) as f64,
        precision: perf["precision"].as_f64().unwrap_or(f64::NAN),
        recall: perf["recall"].as_f64().unwrap_or(f64::NAN),
        took,
    })
}

/// The probe's accuracy per draw name, from one run of the Python reference over every draw.
fn probe(python: &Path, weights: &Path, draws: &[Draw]) -> Result<BTreeMap<String, (f64, f64)>> {
    let tasks: Vec<Value> = draws
        .iter()
        .map(|d| {
            let list = |sets: &[Vec<PathBuf>]| -> Vec<Value> {
                sets.iter()
                    .enumerate()
                    .flat_map(|(k, files)| files.iter().map(move |f| json!([f.to_string_lossy(), k])))
                    .collect()
            };
            json!({"name": d.name, "train": list(&d.train), "test": list(&d.test)})
        })
        .collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/quality_probe.py");
    let mut child = std::process::Command::new(python)
        .arg(&script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", python.display()))?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().context("probe stdin")?;
        stdin.write_all(json!({"weights": weights, "tasks": tasks}).to_string().as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("the linear probe failed ({})", out.status);
    }
    let mut result = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: Value = serde_json::from_str(line)?;
        let name = v["name"].as_str().unwrap_or_default().to_string();
        result.insert(name, (v["accuracy"].as_f64().unwrap_or(f64::NAN), v["C"].as_f64().unwrap_or(f64::NAN)));
    }
    Ok(result)
}

/// One detector trained through the API and run over test photographs.
struct DetRun {
    /// Detections per test photograph (class = index into the run's tags).
    dets: Vec<Vec<Detection>>,
    /// The iteration's reported (cross-validated) mAP at overlap 0.5.
    reported: f64,
    took: Duration,
}

/// A labelled detection photograph: its file and boxes (class = index into the set's tags).
type DetPhoto = (PathBuf, Vec<GtBox>);

/// Trains a detector on `train` (boxes of `tags`) through the API and detects on `test` through the
/// Prediction API.
async fn detection_run(
    server: &BenchServer,
    name: &str,
    train: &[DetPhoto],
    test: &[DetPhoto],
    tags: &[&str],
    query: &str,
) -> Result<DetRun> {
    let c = &server.client;
    let p = c.json(c.http.post(format!("{}/projects?name={name}&domainId={DETECTION_DOMAIN}", c.base))).await?;
    let pid = p["id"].as_str().context("project id")?.to_string();
    let mut tag_ids = Vec::new();
    for tag in tags {
        let t = c.json(c.http.post(format!("{}/projects/{pid}/tags?name={tag}", c.base))).await?;
        tag_ids.push(t["id"].as_str().context("tag id")?.to_string());
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    for chunk in train.chunks(16) {
        let mut images = Vec::new();
        for (path, boxes) in chunk {
            let regions: Vec<Value> = boxes
                .iter()
                .map(|b| json!({"tagId": tag_ids[b.class], "left": b.left, "top": b.top, "width": b.width, "height": b.height}))
                .collect();
            images.push(json!({"name": path.file_name().and_then(|n| n.to_str()), "contents": b64.encode(std::fs::read(path)?), "regions": regions}));
        }
        c.json(c.http.post(format!("{}/projects/{pid}/images/files", c.base)).json(&json!({ "images": images })))
            .await?;
    }
    let (it, took) = c.train(&pid, query).await?;
    let perf = c
        .json(
            c.http.get(format!(
                "{}/projects/{pid}/iterations/{it}/performance?threshold=0.5&overlapThreshold=0.5",
                c.base
            )),
        )
        .await?;
    publish(c, &pid, &it).await?;
    let mut dets = Vec::new();
    for (path, _) in test {
        let v = prediction(server, &format!("{pid}/detect/iterations/q/image/nostore"), std::fs::read(path)?).await?;
        dets.push(
            v["predictions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    let b = &p["boundingBox"];
                    Some(Detection {
                        class: tag_ids.iter().position(|t| Some(t.as_str()) == p["tagId"].as_str())?,
                        score: p["probability"].as_f64()? as f32,
                        left: b["left"].as_f64()? as f32,
                        top: b["top"].as_f64()? as f32,
                        width: b["width"].as_f64()? as f32,
                        height: b["height"].as_f64()? as f32,
                    })
                })
                .collect::<Vec<_>>(),
        );
    }
    Ok(DetRun { dets, reported: perf["averagePrecision"].as_f64().unwrap_or(f64::NAN), took })
}

/// A detection set read by `argus-datasets` in `format` (what `argus dataset import` reads): each image with
/// boxes as (path on disk, boxes), sorted by path, and the tag names, sorted, that the boxes' classes index.
fn detection_set(dir: &Path, format: Format) -> Result<(Vec<String>, Vec<DetPhoto>)> {
    let files = &mut Files::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    let set = argus_datasets::read(format, files).with_context(|| format!("reading {}", dir.display()))?;
    let mut tags = set.categories.clone();
    tags.sort();
    let class_of: Vec<usize> =
        set.categories.iter().map(|c| tags.iter().position(|t| t == c).unwrap_or_default()).collect();
    let mut out: Vec<DetPhoto> = set
        .items
        .iter()
        .filter(|item| !item.boxes.is_empty())
        .map(|item| {
            let boxes = item
                .boxes
                .iter()
                .map(|b| GtBox {
                    class: class_of[b.category],
                    left: b.left as f32,
                    top: b.top as f32,
                    width: b.width as f32,
                    height: b.height as f32,
                })
                .collect();
            (dir.join(&item.path), boxes)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((tags, out))
}

/// Deals photographs to `k` folds, stratified by their first box's tag after a seeded shuffle.
fn detection_folds(photos: &[DetPhoto], k: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..photos.len()).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    order.sort_by_key(|i| photos[*i].1.iter().map(|b| b.class).min().unwrap_or(0));
    let mut fold = vec![0; photos.len()];
    for (rank, i) in order.iter().enumerate() {
        fold[*i] = rank % k;
    }
    fold
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Runs the quality benchmark and prints its tables.
pub async fn run(args: QualityBenchArgs) -> Result<()> {
    let data = match args.data.clone() {
        Some(d) => d,
        None => {
            let d = PathBuf::from("../shared/data");
            if !d.is_dir() {
                bail!("no labelled photographs: pass --data DIR (a folder with ants-bees/, fruit/ and raccoon/)");
            }
            d
        }
    };
    let recipes: Vec<(&str, &str)> =
        RECIPES.iter().copied().filter(|(l, _)| !(args.skip_advanced && *l == "Advanced")).collect();
    // Classification also runs Regular in a compact domain (the small backbone), first.
    let mut class_recipes: Vec<(&str, Option<&str>, &str)> = recipes.iter().map(|(l, q)| (*l, None, *q)).collect();
    class_recipes.insert(0, ("Regular, General (compact)", Some(COMPACT_DOMAIN), RECIPES[0].1));
    let tmp = tempfile::tempdir()?;
    // Fruit photographs hold 9 / 13 / 11 of each tag: fewer than the hosted minimum of 15 per tag, so this
    // server asks for what one fold's training part has.
    let serve = ServeArgs { min_detection_images_per_tag: Some(FRUIT_MIN_PER_TAG), ..Default::default() };
    let server = BenchServer::start_with(tmp.path(), &args.models_dir, serve).await?;
    let want = |part: &str| args.only.as_deref().is_none_or(|o| o == part);

    if want("classification") {
        let ants = photos(&data.join("ants-bees/train/ants"))?;
        let bees = photos(&data.join("ants-bees/train/bees"))?;
        let fruit: Vec<(String, Vec<PathBuf>)> = ["apple", "banana", "orange"]
            .iter()
            .map(|t| Ok((t.to_string(), photos(&data.join("fruit/classification").join(t))?)))
            .collect::<Result<_>>()?;
        let ab = vec![("ants".to_string(), ants), ("bees".to_string(), bees)];
        let mut cells: Vec<(String, usize, Vec<Draw>)> = Vec::new();
        for &n in &args.sizes {
            let draws = (0..args.draws)
                .map(|d| {
                    draw(format!("ants-bees {n}/tag draw {d}"), &ab, n, 1000 + 10 * n as u64 + d as u64, usize::MAX)
                })
                .collect();
            cells.push(("ants vs bees".into(), n, draws));
        }
        let draws = (0..args.draws)
            .map(|d| draw(format!("fruit 10/tag draw {d}"), &fruit, 10, 2000 + d as u64, usize::MAX))
            .collect();
        if !args.no_fruit {
            cells.push(("fruit (3 tags)".into(), 10, draws));
        }

        let all: Vec<&Draw> = cells.iter().flat_map(|(_, _, d)| d).collect();
        let probe_result = match &args.python {
            Some(py) => {
                let owned: Vec<Draw> = all
                    .iter()
                    .map(|d| Draw {
                        name: d.name.clone(),
                        tags: d.tags.clone(),
                        train: d.train.clone(),
                        test: d.test.clone(),
                    })
                    .collect();
                let t0 = Instant::now();
                let r = probe(py, &args.models_dir.join("efficientnet-lite0.safetensors"), &owned)?;
                println!("linear probe: {} draws in {:.0} s", r.len(), t0.elapsed().as_secs_f64());
                Some(r)
            }
            None => None,
        };
        let mut rows = Vec::new();
        for (task, n, draws) in &cells {
            let mut per_recipe = Vec::new();
            for (label, domain, query) in &class_recipes {
                let mut runs = Vec::new();
                for d in draws {
                    let r = classification_run(&server, d, label, *domain, query).await?;
                    println!(
                        "{}, {label}: {:.1} % on {} unseen (reported P {:.1} % R {:.1} %), trained in {:.1} s",
                        d.name,
                        r.accuracy * 100.0,
                        d.test.iter().map(Vec::len).sum::<usize>(),
                        r.precision * 100.0,
                        r.recall * 100.0,
                        r.took.as_secs_f64()
                    );
                    runs.push(r);
                }
                per_recipe.push((*label, runs));
            }
            let probe_acc = probe_result.as_ref().map(|p| {
                let v: Vec<f64> = draws.iter().filter_map(|d| p.get(&d.name).map(|x| x.0)).collect();
                let c: Vec<String> = draws.iter().filter_map(|d| p.get(&d.name).map(|x| format!("{}", x.1))).collect();
                (mean(&v), c.join("/"))
            });
            rows.push((task.clone(), *n, draws[0].test.iter().map(Vec::len).sum::<usize>(), per_recipe, probe_acc));
        }
        println!();
        println!("| real photographs | per tag | unseen | recipe | accuracy (mean of {} draws) | reported P / R | train time | linear probe (C) |", args.draws);
        println!("|---|---|---|---|---|---|---|---|");
        for (task, n, unseen, per_recipe, probe_acc) in &rows {
            for (label, runs) in per_recipe {
                let acc: Vec<f64> = runs.iter().map(|r| r.accuracy).collect();
                let p: Vec<f64> = runs.iter().map(|r| r.precision).collect();
                let r: Vec<f64> = runs.iter().map(|r| r.recall).collect();
                let t: Vec<f64> = runs.iter().map(|r| r.took.as_secs_f64()).collect();
                let probe_cell = match probe_acc {
                    Some((a, c)) => format!("{:.1} % ({c})", a * 100.0),
                    None => "–".into(),
                };
                println!(
                    "| {task} | {n} | {unseen} | {label} | {:.1} % | {:.1} % / {:.1} % | {:.1} s | {probe_cell} |",
                    mean(&acc) * 100.0,
                    mean(&p) * 100.0,
                    mean(&r) * 100.0,
                    mean(&t)
                );
            }
        }
        println!();
    }

    if want("detection") {
        let (_, mut all) = detection_set(&data.join("raccoon"), Format::Voc)?;
        all.shuffle(&mut rand::rngs::StdRng::seed_from_u64(7));
        let test: Vec<_> = all.iter().take(100).cloned().collect();
        let pool: Vec<_> = all.iter().skip(100).cloned().collect();
        let animals: usize = test.iter().map(|(_, b)| b.len()).sum();
        let truth: Vec<Vec<GtBox>> = test.iter().map(|(_, b)| b.clone()).collect();
        let mut rows = Vec::new();
        let sizes: &[usize] = if args.no_raccoon { &[] } else { &[15, 30] };
        for &n in sizes {
            for (label, query) in &recipes {
                let r = detection_run(
                    &server,
                    &format!("raccoon-{n}-{label}"),
                    &pool[..n.min(pool.len())],
                    &test,
                    &["raccoon"],
                    query,
                )
                .await?;
                let (map, _) = mean_average_precision(&r.dets, &truth, 1, 0.5);
                println!(
                    "raccoon, {n} training photos, {label}: mAP@0.5 {map:.3} on 100 unseen ({animals} animals), reported {:.3}, trained in {:.0} s",
                    r.reported,
                    r.took.as_secs_f64()
                );
                rows.push((
                    format!("raccoon | {n} | 100 unseen ({animals} animals)"),
                    *label,
                    map,
                    r.reported,
                    r.took.as_secs_f64(),
                ));
            }
        }
        if !args.no_fruit {
            let (tags, fruit) = detection_set(&data.join("fruit/detection"), Format::CustomVision)?;
            let k = FRUIT_DETECTION_FOLDS;
            let fold = detection_folds(&fruit, k, 11);
            let names: Vec<&str> = tags.iter().map(String::as_str).collect();
            let truth: Vec<Vec<GtBox>> = fruit.iter().map(|(_, b)| b.clone()).collect();
            let objects: usize = truth.iter().map(Vec::len).sum();
            for (label, query) in &recipes {
                let mut dets = vec![Vec::new(); fruit.len()];
                let (mut reported, mut took) = (Vec::new(), 0.0);
                for f in 0..k {
                    let train: Vec<DetPhoto> =
                        (0..fruit.len()).filter(|i| fold[*i] != f).map(|i| fruit[i].clone()).collect();
                    let held: Vec<usize> = (0..fruit.len()).filter(|i| fold[*i] == f).collect();
                    let test: Vec<DetPhoto> = held.iter().map(|i| fruit[*i].clone()).collect();
                    let r =
                        detection_run(&server, &format!("fruit-fold{f}-{label}"), &train, &test, &names, query).await?;
                    for (i, d) in held.iter().zip(r.dets) {
                        dets[*i] = d;
                    }
                    reported.push(r.reported);
                    took += r.took.as_secs_f64();
                }
                let (map, per_tag) = mean_average_precision(&dets, &truth, tags.len(), 0.5);
                let per: Vec<String> = tags.iter().zip(&per_tag).map(|(t, a)| format!("{t} {a:.2}")).collect();
                println!(
                    "fruit detection, {k}-fold, {label}: mAP@0.5 {map:.3} over {} photographs ({objects} objects; {}), reported {:.3}, trained in {took:.0} s",
                    fruit.len(),
                    per.join(", "),
                    mean(&reported)
                );
                rows.push((
                    format!(
                        "fruit (3 tags) | {k}-fold, ~{} | {} held out ({objects} objects)",
                        fruit.len() * (k - 1) / k,
                        fruit.len()
                    ),
                    *label,
                    map,
                    mean(&reported),
                    took / k as f64,
                ));
            }
        }
        println!();
        println!("| detection, real photographs | training photos | scored on | recipe | mAP@0.5 | reported mAP (CV) | train time |");
        println!("|---|---|---|---|---|---|---|");
        for (cell, label, map, reported, took) in &rows {
            println!("| {cell} | {label} | {map:.3} | {reported:.3} | {took:.0} s |");
        }
        println!();
    }
    if let Some(p) = peak_rss_mib() {
        println!("peak resident memory of the whole process: {p:.0} MiB");
    }
    server.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_seeded_and_disjoint() {
        let files: Vec<PathBuf> = (0..20).map(|i| PathBuf::from(format!("{i}.jpg"))).collect();
        let classes = vec![("a".to_string(), files.clone()), ("b".to_string(), files)];
        let d1 = draw("x".into(), &classes, 5, 3, usize::MAX);
        let d2 = draw("x".into(), &classes, 5, 3, usize::MAX);
        assert_eq!(d1.train, d2.train);
        assert_eq!(d1.train[0].len(), 5);
        assert_eq!(d1.test[0].len(), 15);
        assert!(d1.train[0].iter().all(|f| !d1.test[0].contains(f)));
        assert_ne!(d1.train[0], draw("x".into(), &classes, 5, 4, usize::MAX).train[0]);
    }
}
