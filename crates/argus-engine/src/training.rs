//! Training on the frozen backbone, over the folds core chose: the classifier featurises each image under
//! fixed augmented views, cross-validates the head's regularisation (each image scored by a head that never
//! saw it) and fits the final head on everything; the detector featurises its views once and fits a head per
//! fold and a final one. Augmentation is seeded by each image's stored bytes, so that the same photographs
//! train the same model on every server and every run.

use argus_core::compute::{ClassifierJob, DetectorJob, ModelOutput, TrainedModel};
use argus_core::error::{ApiError, ApiResult, ErrorCode};
use argus_core::jobs::Progress;
use argus_vision::heads::classifier::{cross_validate, training_features, HeadKind, TrainingRecipe};
use argus_vision::heads::detector::{detection_view, feature_grids, DetectionRecipe, DetectorHead, GtBox};
use sha2::{Digest, Sha256};

use crate::images::stored_rgb;
use crate::VisionEngine;

/// A failed fit: the training request failed (and will not go better on a second attempt).
fn failed(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::ErrorProjectTrainingRequestFailed, e.to_string())
}

/// A seed drawn from an image's bytes (the first eight bytes of their SHA-256).
pub fn content_seed(bytes: &[u8]) -> u64 {
    let digest = Sha256::digest(bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// The classifier recipe a job asks for: Advanced, Regular on the larger backbone, or Regular.
fn classifier_recipe(advanced: bool, large_backbone: bool) -> TrainingRecipe {
    match (advanced, large_backbone) {
        (true, _) => TrainingRecipe::advanced(),
        (false, true) => TrainingRecipe::regular_large(),
        (false, false) => TrainingRecipe::regular(),
    }
}

/// Trains a classifier (see [`argus_core::compute::Compute::train_classifier`]).
pub fn train_classifier(engine: &VisionEngine, job: ClassifierJob, progress: &Progress) -> ApiResult<TrainedModel> {
    let mut recipe = classifier_recipe(job.advanced, job.large_backbone);
    let usable = engine.trainable_backbone(recipe.backbone);
    if usable != recipe.backbone {
        // Without the larger backbone's weights: Regular falls back to its small recipe, Advanced to the small
        // backbone at a larger input.
        recipe = if job.advanced {
            TrainingRecipe { backbone: usable, input_size: 288, ..recipe }
        } else {
            TrainingRecipe::regular()
        };
    }
    let backbone = engine.backbone_of(recipe.backbone)?;
    let kind = if job.multilabel { HeadKind::Multilabel } else { HeadKind::Multiclass };
    let n = job.images.len();
    let mut rows: Vec<Vec<Vec<f32>>> = Vec::with_capacity(n);
    let mut scored: Vec<Vec<f32>> = Vec::with_capacity(n);
    for (i, bytes) in job.images.iter().enumerate() {
        let img = stored_rgb(bytes).map_err(failed)?;
        let (r, s) = training_features(&backbone, &img, &recipe, content_seed(bytes)).map_err(failed)?;
        rows.push(r);
        scored.push(s);
        progress.set(0.05 + 0.75 * (i + 1) as f64 / n as f64, format!("featurising images ({}/{n})", i + 1));
    }
    progress.set(0.8, format!("cross-validating ({} folds, {} strengths)", job.folds, recipe.lambdas.len()));
    let cv = cross_validate(&rows, &scored, &job.targets, &job.fold_of, job.folds, kind, &recipe, &|f| {
        progress.set(0.8 + 0.18 * f, "cross-validating");
    })
    .map_err(failed)?;
    tracing::info!(lambda = cv.lambda, losses = ?cv.losses, "head regularisation chosen by cross-validation");
    Ok(TrainedModel {
        model: cv.head.to_bytes().map_err(ApiError::internal)?,
        held_out: cv.held_out.into_iter().map(ModelOutput::Scores).collect(),
    })
}

/// Trains a detector (see [`argus_core::compute::Compute::train_detector`]): featurises augmented views once,
/// fits one head per fold to score its held-out images, then the final head on everything.
pub fn train_detector(engine: &VisionEngine, job: DetectorJob, progress: &Progress) -> ApiResult<TrainedModel> {
    let mut recipe = if job.advanced { DetectionRecipe::advanced() } else { DetectionRecipe::regular() };
    recipe.backbone = engine.trainable_backbone(recipe.backbone);
    let backbone = engine.backbone_of(recipe.backbone)?;
    let n = job.images.len();
    let mut grids = Vec::with_capacity(n);
    let mut view_boxes = Vec::with_capacity(n);
    for (i, bytes) in job.images.iter().enumerate() {
        let img = stored_rgb(bytes).map_err(failed)?;
        let (views, vb): (Vec<_>, Vec<_>) = (0..recipe.views).map(|v| detection_view(&img, &job.boxes[i], v)).unzip();
        grids.push(feature_grids(&backbone, &views, recipe.input_size).map_err(failed)?);
        view_boxes.push(vb);
        progress.set(0.05 + 0.55 * (i + 1) as f64 / n as f64, format!("featurising images ({}/{n})", i + 1));
    }
    let (folds, fold_of) = (job.folds, &job.fold_of);
    let fits = folds + 1;
    let fit = |rows: &[usize], k: usize| -> ApiResult<DetectorHead> {
        let g: Vec<_> = rows.iter().flat_map(|i| grids[*i].iter()).collect();
        let b: Vec<Vec<GtBox>> = rows.iter().flat_map(|i| view_boxes[*i].iter().cloned()).collect();
        let report = |f: f64| {
            progress.set(0.6 + 0.37 * (k as f64 + f) / fits as f64, format!("fitting the detector ({}/{fits})", k + 1))
        };
        DetectorHead::fit(&g, &b, job.classes, &recipe, &report).map_err(failed)
    };
    let mut held_out = vec![ModelOutput::Boxes(Vec::new()); n];
    for f in 0..folds {
        let train: Vec<usize> = (0..n).filter(|i| fold_of[*i] != f).collect();
        let head = fit(&train, f)?;
        for i in (0..n).filter(|i| fold_of[*i] == f) {
            // View 1 is the whole image mirrored: what a mirroring head reads beside the image at prediction.
            let mirror = if head.mirror { grids[i].get(1) } else { None };
            held_out[i] = ModelOutput::Boxes(head.detect_with_mirror(&grids[i][0], mirror).map_err(failed)?);
        }
    }
    let all: Vec<usize> = (0..n).collect();
    let head = fit(&all, folds)?;
    Ok(TrainedModel { model: head.to_bytes().map_err(failed)?, held_out })
}

#[cfg(test)]
mod tests {
    use super::*;
    use argus_vision::weights::Variant;

    #[test]
    fn the_larger_backbone_is_asked_by_advanced_or_the_domain() {
        assert_eq!(classifier_recipe(false, false).backbone, Variant::Lite0);
        let large = classifier_recipe(false, true);
        assert_eq!((large.backbone, large.input_size), (Variant::Lite2, 260));
        // Regular's quick schedule stays: only the features change.
        assert_eq!(large.augmented_views, TrainingRecipe::regular().augmented_views);
        assert_eq!(classifier_recipe(true, false).backbone, Variant::Lite2);
        assert_eq!(classifier_recipe(true, true).augmented_views, TrainingRecipe::advanced().augmented_views);
    }
}
