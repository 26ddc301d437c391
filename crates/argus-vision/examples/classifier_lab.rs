//! Development harness for the classifier: the ants-vs-bees draws of `argus-bench quality` (same seeds, same
//! photographs per tag, scored on all the others) trained and scored without the server, so that a recipe
//! change can be judged in a minute. Prints top-1 accuracy per draw and the mean per size.
//!
//! `cargo run --release -p argus-vision --example classifier_lab -- DATA_DIR MODELS_DIR [n ...]`
//!
//! Environment: `LAB_ADVANCED` (the Advanced recipe), `LAB_BACKBONE=lite0|lite2`, `LAB_SIZE`, `LAB_VIEWS`,
//! `LAB_ENSEMBLE` (a Regular Lite0 head beside the recipe's, probabilities averaged), `LAB_FULL` (the whole frame and its mirror as training rows and in the scored average), `LAB_REENCODE` (train on the stored derivative, as the server does), `LAB_TTA=1|2` (test-time augmentation: the full central square, then four corner squares, with mirrors, in the scored average), `LAB_MEANMAX` (mean+max pooling), `LAB_STANDARDISE`, `LAB_LAMBDAS` (comma-separated regularisation grid), `LAB_CONCAT` (EfficientNet-Lite0 features at 224 px
//! appended to the recipe's, same views: an experiment, not a product recipe).

use argus_vision::backbone::EfficientNetLite0;
use argus_vision::heads::classifier::{cross_validate, training_features, HeadKind, Pooling, TrainingRecipe};
use argus_vision::weights::Variant;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Folds of the cross-validation, at most (the server's value).
const MAX_FOLDS: usize = 5;

fn photos(dir: &Path) -> Result<Vec<PathBuf>, std::io::Error> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)?
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let data = PathBuf::from(args.get(1).ok_or("data dir")?).join("ants-bees").join("train");
    let models = PathBuf::from(args.get(2).ok_or("models dir")?);
    let sizes: Vec<usize> = args.iter().skip(3).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![5, 10, 30] } else { sizes };
    let mut recipe =
        if std::env::var("LAB_ADVANCED").is_ok() { TrainingRecipe::advanced() } else { TrainingRecipe::regular() };
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<f64>().ok());
    match std::env::var("LAB_BACKBONE").as_deref() {
        Ok("lite0") => recipe.backbone = Variant::Lite0,
        Ok("lite2") => recipe.backbone = Variant::Lite2,
        _ => {}
    }
    recipe.input_size = env("LAB_SIZE").map_or(recipe.input_size, |v| v as u32);
    recipe.augmented_views = env("LAB_VIEWS").map_or(recipe.augmented_views, |v| v as usize);
    if std::env::var("LAB_MEANMAX").is_ok() {
        recipe.pooling = Pooling::MeanMax;
    }
    recipe.standardise = std::env::var("LAB_STANDARDISE").is_ok();
    if let Ok(list) = std::env::var("LAB_LAMBDAS") {
        let lambdas: Vec<f64> = list.split(',').filter_map(|v| v.parse().ok()).collect();
        recipe.lambdas = Box::leak(lambdas.into_boxed_slice());
    }
    eprintln!("{recipe:?}");
    let net = EfficientNetLite0::from_file(&models.join(recipe.backbone.file()))?;
    let concat = match std::env::var("LAB_CONCAT") {
        Ok(_) => Some(EfficientNetLite0::from_file(&models.join(Variant::Lite0.file()))?),
        Err(_) => None,
    };
    let lite0 = TrainingRecipe { backbone: Variant::Lite0, input_size: 224, ..recipe };
    let classes: Vec<(String, Vec<PathBuf>)> = ["ants", "bees"]
        .iter()
        .map(|t| Ok((t.to_string(), photos(&data.join(t))?)))
        .collect::<Result<_, std::io::Error>>()?;
    // Every photograph's training rows and scored feature, once (seeded by its index).
    let t0 = Instant::now();
    let reencode = std::env::var("LAB_REENCODE").is_ok();
    let tta = env("LAB_TTA").map(|v| v as u32);
    let full = std::env::var("LAB_FULL").is_ok();
    // LAB_ENSEMBLE: a Regular (Lite0) head trained beside the recipe's, their probabilities averaged.
    let ensemble = match std::env::var("LAB_ENSEMBLE") {
        Ok(_) => Some(EfficientNetLite0::from_file(&models.join(Variant::Lite0.file()))?),
        Err(_) => None,
    };
    let regular = TrainingRecipe::regular();
    let mut feats = Vec::new();
    for (k, (_, files)) in classes.iter().enumerate() {
        let mut per = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let img = image::open(f)?.to_rgb8();
            let seed = (k * 10_000 + i) as u64;
            // As the server: train on the stored derivative (re-encoded), score the original bytes.
            let train_img = if reencode {
                let prepared = argus_vision::prepare_image(&std::fs::read(f)?, &argus_vision::ImageLimits::default())?;
                image::load_from_memory(&prepared.resized_jpeg)?.to_rgb8()
            } else {
                img.clone()
            };
            let (mut rows, mut scored) = training_features(&net, &train_img, &recipe, seed)?;
            if reencode {
                scored = training_features(&net, &img, &TrainingRecipe { augmented_views: 0, ..recipe }, seed)?.1;
            }
            if full {
                // The whole frame (stretched) and its mirror as two more rows, and in the scored average.
                let frames = [train_img.clone(), image::imageops::flip_horizontal(&train_img)];
                let extra =
                    argus_vision::heads::classifier::features(&net, &frames, recipe.input_size, recipe.pooling)?;
                let test_frames = [img.clone(), image::imageops::flip_horizontal(&img)];
                let test_extra =
                    argus_vision::heads::classifier::features(&net, &test_frames, recipe.input_size, recipe.pooling)?;
                scored = scored
                    .iter()
                    .zip(test_extra[0].iter().zip(&test_extra[1]))
                    .map(|(c, (a, b))| (c + (a + b) / 2.0) / 2.0)
                    .collect();
                rows.extend(extra);
            }
            if let Some(level) = tta {
                // Test-time augmentation: the scored feature also averages the full central square and its
                // mirror (level 1), and four corner squares of 80 % of the shorter side with mirrors (level 2).
                let (w, h) = img.dimensions();
                let side = w.min(h);
                let mut crops: Vec<(u32, u32, u32)> = vec![((w - side) / 2, (h - side) / 2, side)];
                if level >= 2 {
                    let c = (side as f32 * 0.8) as u32;
                    crops.extend([(0, 0, c), (w - c, 0, c), (0, h - c, c), (w - c, h - c, c)]);
                }
                let mut views = Vec::new();
                for (x, y, c) in crops {
                    let sq = image::imageops::crop_imm(&img, x, y, c, c).to_image();
                    let sq = image::imageops::resize(
                        &sq,
                        recipe.input_size,
                        recipe.input_size,
                        image::imageops::FilterType::Triangle,
                    );
                    views.push(image::imageops::flip_horizontal(&sq));
                    views.push(sq);
                }
                let extra = argus_vision::heads::classifier::features(&net, &views, recipe.input_size, recipe.pooling)?;
                let k = 2.0 + extra.len() as f32;
                scored = scored
                    .iter()
                    .enumerate()
                    .map(|(j, c)| (2.0 * c + extra.iter().map(|e| e[j]).sum::<f32>()) / k)
                    .collect();
            }
            if let Some(extra) = &concat {
                let (rows0, scored0) = training_features(extra, &img, &lite0, seed)?;
                rows.iter_mut().zip(rows0).for_each(|(r, r0)| r.extend(r0));
                scored.extend(scored0);
            }
            let second = match &ensemble {
                Some(net0) => Some(training_features(net0, &train_img, &regular, seed)?),
                None => None,
            };
            per.push((rows, scored, second));
        }
        feats.push(per);
    }
    eprintln!("features in {:.1} s", t0.elapsed().as_secs_f64());
    for n in sizes {
        let mut accs = Vec::new();
        for d in 0..3u64 {
            let seed = 1000 + 10 * n as u64 + d;
            let (mut rows, mut scored, mut targets, mut labels) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let (mut rows2, mut scored2) = (Vec::new(), Vec::new());
            let mut test = Vec::new();
            for (k, (_, files)) in classes.iter().enumerate() {
                let mut order: Vec<usize> = (0..files.len()).collect();
                order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(k as u64)));
                for (rank, &i) in order.iter().enumerate() {
                    let (r, s, second) = &feats[k][i];
                    if rank < n {
                        rows.push(r.clone());
                        scored.push(s.clone());
                        if let Some((r2, s2)) = second {
                            rows2.push(r2.clone());
                            scored2.push(s2.clone());
                        }
                        targets.push((0..classes.len()).map(|c| if c == k { 1.0 } else { 0.0 }).collect::<Vec<f32>>());
                        labels.push(k);
                    } else {
                        test.push((k, s, second.as_ref().map(|x| &x.1)));
                    }
                }
            }
            // Stratified round-robin folds, as the server deals them.
            let folds = n.clamp(2, MAX_FOLDS);
            let mut idx: Vec<usize> = (0..labels.len()).collect();
            idx.sort_by_key(|i| (labels[*i], *i));
            let mut fold_of = vec![0; labels.len()];
            for (rank, i) in idx.iter().enumerate() {
                fold_of[*i] = rank % folds;
            }
            let cv = cross_validate(&rows, &scored, &targets, &fold_of, folds, HeadKind::Multiclass, &recipe, &|_| {})?;
            let cv2 = if rows2.is_empty() {
                None
            } else {
                Some(cross_validate(
                    &rows2,
                    &scored2,
                    &targets,
                    &fold_of,
                    folds,
                    HeadKind::Multiclass,
                    &regular,
                    &|_| {},
                )?)
            };
            let right = test
                .iter()
                .filter(|(k, s, s2)| {
                    let mut p = cv.head.predict(s);
                    if let (Some(cv2), Some(s2)) = (&cv2, s2) {
                        let q = cv2.head.predict(s2);
                        p.iter_mut().zip(q).for_each(|(a, b)| *a = (*a + b) / 2.0);
                    }
                    (0..p.len()).max_by(|a, b| p[*a].total_cmp(&p[*b])) == Some(*k)
                })
                .count();
            let acc = 100.0 * right as f64 / test.len() as f64;
            println!("{n}/tag draw {d}: {acc:.1} % ({right}/{}), lambda {}", test.len(), cv.lambda);
            accs.push(acc);
        }
        println!("{n}/tag mean: {:.1} %", accs.iter().sum::<f64>() / accs.len() as f64);
    }
    Ok(())
}
