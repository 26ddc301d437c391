//! Training: TrainProject, the training job, iterations (list, get, update, delete, publish, unpublish),
//! honest evaluation (k-fold cross-validation; GetIterationPerformance, GetImagePerformances) and QuickTest.
//!
//! TrainProject freezes a snapshot of the tagged images and tags, creates the iteration in `Training` and
//! enqueues a durable job. The job featurises every image under fixed augmented views with the frozen
//! EfficientNet-Lite0 backbone, runs stratified k-fold cross-validation (each image is predicted by a head
//! that never saw it), trains the final head on everything, writes the head to the blob store and the
//! held-out predictions to the iteration, and marks it `Completed`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::model::IterationStatus;

use super::models::ModelHub;
use super::{check_tag_filter, resized_key, store_err, thumbnail_key, Argus, UrlContext};
use crate::compute::{ClassifierJob, DetectorJob, ImageLimits, LoadedModel, ModelOutput, PreparedImage, TrainedModel};
use crate::domains::{find_domain, DomainType};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::jobs::{Job, JobHandler, JobSpec, Progress, TrainJob};
use crate::limits::{DEFAULT_TAKE, MAX_TAKE};
use crate::model::{
    now, BoundingBox, ClassificationType, Image, ImagePerformance, ImagePrediction, ImageRegion, ImageTag, Iteration,
    IterationPerformance, IterationUpdate, Prediction, Tag, TagPerformance, TagType, Time,
};
use crate::store::{ImageQuery, Order, TaggingStatus};
use argus_metrics::{average_precision, match_detections, precision_recall, std_dev, Detection, GtBox};

pub use crate::jobs::TRAIN_JOB;
/// Images a tag needs before a classifier can be trained.
pub const MIN_IMAGES_PER_TAG: usize = 5;
/// Images a tag needs (with at least one box of it) before a detector can be trained: the hosted service's
/// minimum and the default of [`super::ServiceConfig::min_detection_images_per_tag`].
pub const MIN_IMAGES_PER_TAG_DETECTION: usize = 15;
/// The least a server may be configured to ask for: cross-validation needs two images of each tag.
pub const MIN_CONFIGURABLE_IMAGES_PER_TAG_DETECTION: usize = 2;
const MAX_FOLDS: usize = 5;
/// Detection heads cost more to fit; cross-validation uses fewer folds.
const MAX_FOLDS_DETECTION: usize = 3;
/// Default IoU at which a detection counts as finding a labelled box.
const DEFAULT_OVERLAP: f64 = 0.3;

/// Inputs of TrainProject.
#[derive(Debug, Clone, Default)]
pub struct TrainRequest {
    /// `trainingType`.
    pub training_type: Option<String>,
    /// `reservedBudgetInHours`.
    pub reserved_budget_in_hours: i64,
    /// `forceTrain`.
    pub force_train: bool,
    /// `notificationEmailAddress`.
    pub notification_email_address: Option<String>,
    /// `selectedTags` of the body.
    pub selected_tags: Option<Vec<Uuid>>,
}

/// A tag as an iteration saw it (in the order of the model's outputs).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SnapTag {
    pub(super) id: Uuid,
    pub(super) name: String,
    pub(super) description: String,
    #[serde(rename = "type")]
    pub(super) kind: TagType,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SnapImage {
    id: Uuid,
    created: Time,
    width: u32,
    height: u32,
    tags: Vec<ImageTag>,
    regions: Vec<ImageRegion>,
}

/// What an iteration was trained on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Snapshot {
    fingerprint: String,
    advanced: bool,
    multilabel: bool,
    #[serde(default)]
    detection: bool,
    tags: Vec<SnapTag>,
    images: Vec<SnapImage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EvalImage {
    image_id: Uuid,
    fold: usize,
    /// Classification: one score per class.
    #[serde(default)]
    scores: Vec<f32>,
    /// Detection: the boxes found, `[class, score, left, top, width, height]`.
    #[serde(default)]
    detections: Vec<[f32; 6]>,
}

fn to_row(d: &Detection) -> [f32; 6] {
    [d.class as f32, d.score, d.left, d.top, d.width, d.height]
}

fn from_row(r: &[f32; 6]) -> Detection {
    Detection { class: r[0] as usize, score: r[1], left: r[2], top: r[3], width: r[4], height: r[5] }
}

/// Held-out predictions of an iteration: one score per class (in `classes` order) per image.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Evaluation {
    folds: usize,
    classes: Vec<Uuid>,
    images: Vec<EvalImage>,
}

/// Where an iteration's trained model (classifier or detector) is stored.
pub(super) fn iteration_model_key(project: Uuid, iteration: Uuid, detection: bool) -> String {
    let file = if detection { "detector" } else { "classifier" };
    format!("projects/{project}/iterations/{iteration}/{file}.safetensors")
}

/// The labelled boxes of an image as class-indexed boxes.
fn gt_boxes(img: &SnapImage, classes: &[Uuid]) -> Vec<GtBox> {
    img.regions
        .iter()
        .filter_map(|r| {
            Some(GtBox {
                class: classes.iter().position(|c| *c == r.tag_id)?,
                left: r.left as f32,
                top: r.top as f32,
                width: r.width as f32,
                height: r.height as f32,
            })
        })
        .collect()
}

impl Snapshot {
    /// Whether the iteration is an object detector.
    pub(super) fn is_detection(&self) -> bool {
        self.detection
    }

    /// Whether the iteration is a multilabel classifier.
    pub(super) fn is_multilabel(&self) -> bool {
        self.multilabel
    }

    /// Tag names in the order of the model's outputs.
    pub(super) fn output_names(&self) -> Vec<String> {
        self.tags.iter().map(|t| t.name.clone()).collect()
    }

    /// The tags, in the order of the model's outputs.
    pub(super) fn tags(&self) -> &[SnapTag] {
        &self.tags
    }

    /// The ids of the images it was trained on.
    pub(super) fn image_ids(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.images.iter().map(|i| i.id)
    }
}

pub(super) fn snapshot_of(v: serde_json::Value) -> ApiResult<Snapshot> {
    serde_json::from_value(v).map_err(ApiError::internal)
}

fn not_trained(id: Uuid) -> ApiError {
    ApiError::new(ErrorCode::BadRequestIterationIsNotTrained, format!("Iteration {id} has not finished training."))
}

impl Argus {
    /// The iteration, with live progress while it trains.
    pub(crate) async fn iteration_record(&self, project: Uuid, id: Uuid) -> ApiResult<(Iteration, serde_json::Value)> {
        let (mut it, snap) = self
            .store
            .get_iteration(project, id)
            .await
            .map_err(store_err)?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFoundIteration, format!("Iteration {id} was not found.")))?;
        self.attach_progress(&mut it).await;
        Ok((it, snap))
    }

    async fn attach_progress(&self, it: &mut Iteration) {
        if it.status != IterationStatus::Training {
            return;
        }
        // The training job has the iteration's id (see `insert_iteration_with_job`).
        if let Ok(Some(j)) = self.jobs.get_job(it.id).await {
            it.training_progress = Some((j.progress * 1000.0).round() / 10.0);
            it.training_message = j.message;
        }
    }

    /// TrainProject.
    pub async fn train_project(&self, project_id: Uuid, req: TrainRequest) -> ApiResult<Iteration> {
        let project = self.project(project_id).await?;
        let domain = find_domain(project.settings.domain_id).ok_or_else(|| {
            ApiError::new(ErrorCode::ErrorProjectInvalidDomain, "The project's domain is unknown to this server.")
        })?;
        let advanced = match req.training_type.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("") | Some("regular") => false,
            Some("advanced") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!("trainingType must be Regular or Advanced, not '{other}'.")))
            }
        };
        if advanced && req.reserved_budget_in_hours < 1 {
            return Err(ApiError::new(
                ErrorCode::BadRequestReservedBudgetInHoursNotEnoughForAdvancedTraining,
                "Advanced training needs reservedBudgetInHours of at least 1.",
            ));
        }
        if req.reserved_budget_in_hours < 0 {
            return Err(ApiError::bad_request("reservedBudgetInHours must not be negative."));
        }
        if let Some(email) = req.notification_email_address.as_deref().filter(|e| !e.is_empty()) {
            let ok =
                email.split_once('@').is_some_and(|(a, b)| !a.is_empty() && b.contains('.') && !b.starts_with('.'));
            if !ok {
                return Err(ApiError::new(
                    ErrorCode::BadRequestInvalidEmailAddress,
                    format!("'{email}' is not an email address."),
                ));
            }
        }
        if self.jobs.active_jobs(TRAIN_JOB, &project_id.to_string()).await.map_err(store_err)? > 0 {
            return Err(ApiError::new(
                ErrorCode::BadRequestTrainingAlreadyInProgress,
                "This project is already training.",
            ));
        }
        let detection = domain.kind == DomainType::ObjectDetection;
        let multilabel = !detection && project.settings.classification_type == Some(ClassificationType::Multilabel);
        let large_backbone = !detection && crate::domains::large_backbone(domain.id);

        // Snapshot: tags (selected or all) and every tagged image.
        let all_tags = self.store.list_tags(project_id).await.map_err(store_err)?;
        let selected: Vec<Tag> = match &req.selected_tags {
            Some(ids) if !ids.is_empty() => {
                if let Some(bad) = ids.iter().find(|id| !all_tags.iter().any(|t| t.id == **id)) {
                    return Err(ApiError::new(ErrorCode::NotFoundTag, format!("Selected tag {bad} was not found.")));
                }
                all_tags.iter().filter(|t| ids.contains(&t.id)).cloned().collect()
            }
            _ => all_tags.clone(),
        };
        let selected_ids: HashSet<Uuid> = selected.iter().map(|t| t.id).collect();
        let mut images = Vec::new();
        let mut skip = 0;
        loop {
            let q = ImageQuery {
                tagging: TaggingStatus::Tagged,
                order: Order::Oldest,
                skip,
                take: 256,
                ..Default::default()
            };
            let page = self.store.query_images(project_id, &q).await.map_err(store_err)?;
            if page.is_empty() {
                break;
            }
            skip += page.len() as u32;
            for r in page {
                let tags: Vec<ImageTag> = r.tags.into_iter().filter(|t| selected_ids.contains(&t.tag_id)).collect();
                let regions: Vec<ImageRegion> =
                    r.regions.into_iter().filter(|g| selected_ids.contains(&g.tag_id)).collect();
                // A detector learns from boxes; a classifier from image tags.
                let usable = if detection { !regions.is_empty() } else { !tags.is_empty() };
                if usable {
                    images.push(SnapImage {
                        id: r.id,
                        created: r.created,
                        width: r.width,
                        height: r.height,
                        tags,
                        regions,
                    });
                }
            }
        }
        let mut counts: HashMap<Uuid, usize> = HashMap::new();
        for img in &images {
            let mut seen: HashSet<Uuid> = HashSet::new();
            if detection {
                seen.extend(img.regions.iter().map(|r| r.tag_id));
            } else {
                seen.extend(img.tags.iter().map(|t| t.tag_id));
            }
            for t in seen {
                *counts.entry(t).or_default() += 1;
            }
        }
        let used: Vec<&Tag> = selected.iter().filter(|t| counts.get(&t.id).copied().unwrap_or(0) > 0).collect();
        if detection {
            if let Some(neg) = used.iter().find(|t| t.kind == TagType::Negative) {
                return Err(ApiError::new(
                    ErrorCode::BadRequestDetectionTrainingNotAllowNegativeTag,
                    format!("Object detection cannot train on the Negative tag '{}'.", neg.name),
                ));
            }
            if used.is_empty() {
                return Err(ApiError::new(
                    ErrorCode::BadRequestDetectionTrainingValidationFailed,
                    format!(
                        "Draw regions on at least {} images per tag before training.",
                        self.config.min_detection_images_per_tag
                    ),
                ));
            }
        }
        let (minimum, code) = if detection {
            (
                self.config.min_detection_images_per_tag.max(MIN_CONFIGURABLE_IMAGES_PER_TAG_DETECTION),
                ErrorCode::BadRequestDetectionTrainingValidationFailed,
            )
        } else {
            (MIN_IMAGES_PER_TAG, ErrorCode::BadRequestClassificationTrainingValidationFailed)
        };
        let too_few: Vec<String> = used
            .iter()
            .filter(|t| counts.get(&t.id).copied().unwrap_or(0) < minimum)
            .map(|t| format!("'{}' ({})", t.name, counts.get(&t.id).copied().unwrap_or(0)))
            .collect();
        if !too_few.is_empty() {
            let what = if detection { "images with regions" } else { "images" };
            return Err(ApiError::new(
                code,
                format!("Every tag needs at least {minimum} {what}; too few for {}.", too_few.join(", ")),
            ));
        }
        let regular = used.iter().filter(|t| t.kind != TagType::Negative).count();
        if !detection && !multilabel && used.len() < 2 {
            return Err(ApiError::new(
                ErrorCode::BadRequestMultiClassClassificationTrainingValidationFailed,
                "A multiclass project needs at least 2 tags with images.",
            ));
        }
        if regular < 1 {
            return Err(ApiError::new(
                ErrorCode::BadRequestTrainingValidationFailed,
                "Tag at least 5 images with a regular (non-Negative) tag.",
            ));
        }
        let tags: Vec<SnapTag> = used
            .iter()
            .map(|t| SnapTag { id: t.id, name: t.name.clone(), description: t.description.clone(), kind: t.kind })
            .collect();
        let fingerprint = {
            let mut h = Sha256::new();
            h.update(if advanced { b"advanced" as &[u8] } else { b"regular" });
            h.update(if multilabel { b"multilabel" as &[u8] } else { b"multiclass" });
            h.update(if detection { b"detection" as &[u8] } else { b"classification" });
            if large_backbone {
                h.update(b"large-backbone");
            }
            for t in &tags {
                h.update(t.id.as_bytes());
            }
            for i in &images {
                h.update(i.id.as_bytes());
                for t in &i.tags {
                    h.update(t.tag_id.as_bytes());
                }
                for r in &i.regions {
                    h.update(r.tag_id.as_bytes());
                    for v in [r.left, r.top, r.width, r.height] {
                        h.update(v.to_le_bytes());
                    }
                }
            }
            hex::encode(h.finalize())
        };
        let iterations = self.store.list_iterations(project_id).await.map_err(store_err)?;
        if !req.force_train {
            for it in iterations.iter().rev().filter(|i| i.status == IterationStatus::Completed).take(1) {
                if let Some((_, snap)) = self.store.get_iteration(project_id, it.id).await.map_err(store_err)? {
                    if snapshot_of(snap)?.fingerprint == fingerprint {
                        return Err(ApiError::new(
                            ErrorCode::BadRequestTrainingNotNeeded,
                            "Nothing changed since the last trained iteration; pass forceTrain=true to train again.",
                        ));
                    }
                }
            }
        }
        let t = now();
        let id = Uuid::new_v4();
        let iteration = Iteration {
            id,
            name: format!("Iteration {}", iterations.len() + 1),
            status: IterationStatus::Training,
            created: t,
            last_modified: t,
            trained_at: None,
            project_id,
            // What Argus can export this iteration to (compact domains: ONNX and DockerFile, detectors DockerFile).
            exportable: !domain.exportable_platforms.is_empty(),
            exportable_to: domain.exportable_platforms.iter().map(|p| p.to_string()).collect(),
            domain_id: Some(domain.id),
            classification_type: project.settings.classification_type,
            training_type: if advanced { "Advanced" } else { "Regular" }.into(),
            reserved_budget_in_hours: req.reserved_budget_in_hours.clamp(0, i32::MAX as i64) as i32,
            training_time_in_minutes: 0,
            publish_name: String::new(),
            original_publish_resource_id: String::new(),
            training_progress: Some(0.0),
            training_message: Some("queued".into()),
        };
        let snapshot = Snapshot { fingerprint, advanced, multilabel, detection, tags, images };
        // The iteration and its job are one transaction: a crash leaves both or neither.
        let job = JobSpec::Train(TrainJob { project: project_id, iteration: id }).to_new_job(project_id.to_string(), 2);
        let snapshot_json = serde_json::to_value(&snapshot).map_err(ApiError::internal)?;
        self.store.insert_iteration_with_job(&iteration, &snapshot_json, &job).await.map_err(|e| match e {
            // Another node started a training of this project since the check above.
            crate::store::StoreError::Conflict(_) => {
                ApiError::new(ErrorCode::BadRequestTrainingAlreadyInProgress, "This project is already training.")
            }
            other => store_err(other),
        })?;
        tracing::info!(project = %project_id, iteration = %id, images = snapshot.images.len(), advanced, "training queued");
        Ok(iteration)
    }

    /// Runs one training attempt (called by the job handler).
    async fn run_training(&self, project: Uuid, iteration: Uuid, progress: Progress) -> ApiResult<()> {
        let started = std::time::Instant::now();
        let (it, snap) = self.iteration_record(project, iteration).await?;
        let snap = snapshot_of(snap)?;
        progress.set(0.02, "loading images");
        let mut images = Vec::with_capacity(snap.images.len());
        for img in &snap.images {
            let bytes = self.blobs.get(&resized_key(project, img.id)).await.map_err(store_err)?.ok_or_else(|| {
                ApiError::new(
                    ErrorCode::ErrorFeaturizationUnrecognizedJob,
                    format!("Image {} is no longer stored.", img.id),
                )
            })?;
            images.push(bytes);
        }
        let classes: Vec<Uuid> = snap.tags.iter().map(|t| t.id).collect();
        let engine = self.models.engine();
        let p = progress.clone();
        let (trained, folds, fold_of) = if snap.detection {
            let boxes: Vec<Vec<GtBox>> = snap.images.iter().map(|i| gt_boxes(i, &classes)).collect();
            let labels: Vec<Vec<usize>> = boxes.iter().map(|b| b.iter().map(|g| g.class).collect()).collect();
            let (folds, fold_of) = stratified_folds(&labels, classes.len(), MAX_FOLDS_DETECTION);
            let job = DetectorJob {
                images,
                boxes,
                classes: classes.len(),
                advanced: snap.advanced,
                folds,
                fold_of: fold_of.clone(),
            };
            let trained = tokio::task::spawn_blocking(move || engine.train_detector(job, &p))
                .await
                .map_err(ApiError::internal)??;
            (trained, folds, fold_of)
        } else {
            let targets: Vec<Vec<f32>> = snap
                .images
                .iter()
                .map(|img| {
                    let have: Vec<bool> = classes.iter().map(|c| img.tags.iter().any(|t| t.tag_id == *c)).collect();
                    let k = have.iter().filter(|h| **h).count().max(1) as f32;
                    have.iter()
                        .map(|h| {
                            if *h {
                                if snap.multilabel {
                                    1.0
                                } else {
                                    1.0 / k
                                }
                            } else {
                                0.0
                            }
                        })
                        .collect()
                })
                .collect();
            let labels: Vec<Vec<usize>> = snap
                .images
                .iter()
                .map(|i| {
                    classes
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| i.tags.iter().any(|t| t.tag_id == **c))
                        .map(|(k, _)| k)
                        .collect()
                })
                .collect();
            let (folds, fold_of) = stratified_folds(&labels, classes.len(), MAX_FOLDS);
            let job = ClassifierJob {
                images,
                targets,
                multilabel: snap.multilabel,
                advanced: snap.advanced,
                large_backbone: it.domain_id.is_some_and(crate::domains::large_backbone),
                folds,
                fold_of: fold_of.clone(),
            };
            let trained = tokio::task::spawn_blocking(move || engine.train_classifier(job, &p))
                .await
                .map_err(ApiError::internal)??;
            (trained, folds, fold_of)
        };
        let TrainedModel { model, held_out } = trained;
        // Held-out predictions, by image: what a model that never saw the image said about it.
        let evaluation = Evaluation {
            folds,
            classes,
            images: held_out
                .into_iter()
                .zip(&snap.images)
                .zip(fold_of)
                .map(|((out, img), fold)| {
                    let (scores, detections) = match out {
                        ModelOutput::Scores(s) => (s, Vec::new()),
                        ModelOutput::Boxes(b) => (Vec::new(), b.iter().map(to_row).collect()),
                    };
                    EvalImage { image_id: img.id, fold, scores, detections }
                })
                .collect(),
        };
        self.finish_training(project, iteration, &snap, model, evaluation, started, &progress).await
    }

    /// Stores a trained model and its held-out evaluation, and completes the iteration.
    #[allow(clippy::too_many_arguments)]
    async fn finish_training(
        &self,
        project: Uuid,
        iteration: Uuid,
        snap: &Snapshot,
        model: Vec<u8>,
        evaluation: Evaluation,
        started: std::time::Instant,
        progress: &Progress,
    ) -> ApiResult<()> {
        let folds = evaluation.folds;
        progress.set(0.97, "saving the model");
        self.blobs
            .put(&iteration_model_key(project, iteration, snap.detection), Bytes::from(model))
            .await
            .map_err(store_err)?;
        // The iteration may have been deleted while it trained: then there is nothing to complete.
        let Some((mut it, _)) = self.store.get_iteration(project, iteration).await.map_err(store_err)? else {
            let _ = self.blobs.delete_prefix(&format!("projects/{project}/iterations/{iteration}/")).await;
            return Ok(());
        };
        self.store
            .set_evaluation(project, iteration, &serde_json::to_value(&evaluation).map_err(ApiError::internal)?)
            .await
            .map_err(store_err)?;
        let t = now();
        it.status = IterationStatus::Completed;
        it.trained_at = Some(t);
        it.last_modified = t;
        it.training_time_in_minutes = started.elapsed().as_secs().div_ceil(60).max(1) as i32;
        it.training_progress = Some(100.0);
        it.training_message = Some(format!(
            "trained on {} images, {} tags, {folds}-fold cross-validated",
            snap.images.len(),
            snap.tags.len()
        ));
        self.store.update_iteration(&it).await.map_err(store_err)?;
        tracing::info!(project = %project, iteration = %iteration, secs = started.elapsed().as_secs_f64(), "training completed");
        Ok(())
    }

    async fn mark_failed(&self, project: Uuid, iteration: Uuid, reason: &str) {
        if let Ok(Some((mut it, _))) = self.store.get_iteration(project, iteration).await {
            it.status = IterationStatus::Failed;
            it.last_modified = now();
            it.training_progress = None;
            it.training_message = Some(reason.to_string());
            if let Err(e) = self.store.update_iteration(&it).await {
                tracing::error!(error = %e, "could not mark the iteration failed");
            }
        }
        tracing::warn!(project = %project, iteration = %iteration, reason, "training failed");
    }

    /// GetIterations.
    pub async fn iterations(&self, project: Uuid) -> ApiResult<Vec<Iteration>> {
        self.project(project).await?;
        let mut its = self.store.list_iterations(project).await.map_err(store_err)?;
        for it in its.iter_mut() {
            self.attach_progress(it).await;
        }
        Ok(its)
    }

    /// GetIteration.
    pub async fn iteration(&self, project: Uuid, id: Uuid) -> ApiResult<Iteration> {
        self.project(project).await?;
        Ok(self.iteration_record(project, id).await?.0)
    }

    /// UpdateIteration (name only).
    pub async fn update_iteration(&self, project: Uuid, id: Uuid, update: IterationUpdate) -> ApiResult<Iteration> {
        let mut it = self.iteration(project, id).await?;
        if let Some(name) = update.name {
            let name = name.trim().to_string();
            if name.is_empty() || name.chars().count() > 200 {
                return Err(ApiError::new(
                    ErrorCode::BadRequestIterationName,
                    "The iteration name must be 1 to 200 characters.",
                ));
            }
            let others = self.store.list_iterations(project).await.map_err(store_err)?;
            if others.iter().any(|o| o.id != id && o.name.eq_ignore_ascii_case(&name)) {
                return Err(ApiError::new(
                    ErrorCode::BadRequestIterationNameNotUnique,
                    format!("An iteration is already named '{name}'."),
                ));
            }
            it.name = name;
        }
        it.last_modified = now();
        self.store.update_iteration(&it).await.map_err(store_err)?;
        Ok(it)
    }

    /// DeleteIteration (not while published).
    pub async fn delete_iteration(&self, project: Uuid, id: Uuid) -> ApiResult<()> {
        let it = self.iteration(project, id).await?;
        if !it.publish_name.is_empty() {
            return Err(ApiError::new(
                ErrorCode::BadRequestIterationIsPublished,
                format!("Iteration {id} is published as '{}'; unpublish it first.", it.publish_name),
            ));
        }
        self.store.delete_iteration(project, id).await.map_err(store_err)?;
        self.models.evict(id);
        // Images deleted from the workspace that only this iteration still showed are gone now.
        let still_shown = self.images_in_iterations(project).await?;
        for image in self.store.purge_retired_images(project, None, &still_shown).await.map_err(store_err)? {
            self.remove_image_blobs(project, image).await;
        }
        if let Err(e) = self.blobs.delete_prefix(&format!("projects/{project}/iterations/{id}/")).await {
            tracing::warn!(error = %e, "iteration blob cleanup failed; the sweep will retry");
        }
        Ok(())
    }

    /// PublishIteration.
    pub async fn publish_iteration(
        &self,
        project: Uuid,
        id: Uuid,
        name: Option<&str>,
        resource: Option<&str>,
        overwrite: bool,
    ) -> ApiResult<bool> {
        let mut it = self.iteration(project, id).await?;
        let name = name.map(str::trim).unwrap_or("");
        if name.is_empty() || name.chars().count() > 256 || name.contains('/') {
            return Err(ApiError::new(
                ErrorCode::BadRequestInvalidPublishName,
                "publishName must be 1 to 256 characters without '/'.",
            ));
        }
        let resource = resource.map(str::trim).unwrap_or("");
        if resource.is_empty() {
            return Err(ApiError::new(
                ErrorCode::BadRequestInvalidPublishTarget,
                "predictionId (the prediction resource id) is required.",
            ));
        }
        if it.status != IterationStatus::Completed {
            return Err(not_trained(id));
        }
        for mut other in self.store.list_iterations(project).await.map_err(store_err)? {
            if other.id != id && other.publish_name == name {
                if !overwrite {
                    return Err(ApiError::new(
                        ErrorCode::BadRequestInvalidPublishName,
                        format!("'{name}' is already used by {}; pass overwrite=true to move it.", other.name),
                    ));
                }
                other.publish_name.clear();
                other.original_publish_resource_id.clear();
                self.store.update_iteration(&other).await.map_err(store_err)?;
            }
        }
        it.publish_name = name.to_string();
        it.original_publish_resource_id = resource.to_string();
        it.last_modified = now();
        self.store.update_iteration(&it).await.map_err(store_err)?;
        Ok(true)
    }

    /// UnpublishIteration.
    pub async fn unpublish_iteration(&self, project: Uuid, id: Uuid) -> ApiResult<()> {
        let mut it = self.iteration(project, id).await?;
        if it.publish_name.is_empty() {
            return Err(ApiError::new(
                ErrorCode::BadRequestIterationNotPublished,
                format!("Iteration {id} is not published."),
            ));
        }
        it.publish_name.clear();
        it.original_publish_resource_id.clear();
        it.last_modified = now();
        self.store.update_iteration(&it).await.map_err(store_err)
    }

    async fn evaluation(&self, project: Uuid, id: Uuid) -> ApiResult<(Iteration, Snapshot, Evaluation)> {
        let (it, snap) = self.iteration_record(project, id).await?;
        if it.status != IterationStatus::Completed {
            return Err(not_trained(id));
        }
        let eval = self.store.get_evaluation(project, id).await.map_err(store_err)?.ok_or_else(|| {
            ApiError::new(ErrorCode::NotFoundIterationPerformance, "This iteration has no evaluation.")
        })?;
        Ok((it, snapshot_of(snap)?, serde_json::from_value(eval).map_err(ApiError::internal)?))
    }

    /// GetIterationPerformance: recomputed from the held-out predictions at `threshold` (default 0.5) and,
    /// for detection, `overlap_threshold` (IoU at which a box counts as found, default 0.3).
    pub async fn iteration_performance(
        &self,
        project: Uuid,
        id: Uuid,
        threshold: Option<f64>,
        overlap_threshold: Option<f64>,
    ) -> ApiResult<IterationPerformance> {
        self.project(project).await?;
        let threshold = threshold.unwrap_or(0.5);
        if !(0.0..=1.0).contains(&threshold) {
            return Err(ApiError::bad_request("threshold must be between 0 and 1."));
        }
        let overlap = overlap_threshold.unwrap_or(DEFAULT_OVERLAP);
        if !(0.0..=1.0).contains(&overlap) {
            return Err(ApiError::bad_request("overlapThreshold must be between 0 and 1."));
        }
        let (_, snap, eval) = self.evaluation(project, id).await?;
        // Per class and fold: (score, correct) of every prediction, and the number of things to find.
        let classes = eval.classes.len();
        let mut scored = vec![vec![Vec::<(f64, bool)>::new(); eval.folds]; classes];
        let mut positives = vec![vec![0usize; eval.folds]; classes];
        let by_id: HashMap<Uuid, &SnapImage> = snap.images.iter().map(|i| (i.id, i)).collect();
        for e in &eval.images {
            let (Some(img), true) = (by_id.get(&e.image_id), e.fold < eval.folds) else { continue };
            if snap.detection {
                let truth = gt_boxes(img, &eval.classes);
                for g in &truth {
                    positives[g.class][e.fold] += 1;
                }
                let dets: Vec<Detection> = e.detections.iter().map(from_row).collect();
                for (score, class, hit) in match_detections(&dets, &truth, overlap) {
                    if class < classes {
                        scored[class][e.fold].push((score as f64, hit));
                    }
                }
            } else {
                for (c, tag) in eval.classes.iter().enumerate() {
                    let has = img.tags.iter().any(|t| t.tag_id == *tag);
                    positives[c][e.fold] += has as usize;
                    scored[c][e.fold].push((e.scores.get(c).copied().unwrap_or(0.0) as f64, has));
                }
            }
        }
        let mut per_tag = Vec::new();
        let mut pooled_all = Vec::new();
        let mut positives_all = 0;
        let mut fold_pooled: Vec<(Vec<(f64, bool)>, usize)> = vec![(Vec::new(), 0); eval.folds];
        for (c, tag) in eval.classes.iter().enumerate() {
            let Some(st) = snap.tags.iter().find(|t| t.id == *tag) else { continue };
            if st.kind == TagType::Negative {
                continue;
            }
            let all: Vec<(f64, bool)> = scored[c].iter().flatten().copied().collect();
            let found: usize = positives[c].iter().sum();
            let (precision, recall) = precision_recall(&all, found, threshold);
            let mut fp = Vec::new();
            let mut fr = Vec::new();
            for (f, pooled) in fold_pooled.iter_mut().enumerate() {
                let (p, r) = precision_recall(&scored[c][f], positives[c][f], threshold);
                fp.push(p);
                fr.push(r);
                pooled.0.extend_from_slice(&scored[c][f]);
                pooled.1 += positives[c][f];
            }
            per_tag.push(TagPerformance {
                id: st.id,
                name: st.name.clone(),
                precision,
                precision_std_deviation: std_dev(&fp),
                recall,
                recall_std_deviation: std_dev(&fr),
                average_precision: average_precision(&all, found),
            });
            positives_all += found;
            pooled_all.extend(all);
        }
        let (precision, recall) = precision_recall(&pooled_all, positives_all, threshold);
        let folds: Vec<(f64, f64)> = fold_pooled.iter().map(|(s, p)| precision_recall(s, *p, threshold)).collect();
        let map = if per_tag.is_empty() {
            0.0
        } else {
            per_tag.iter().map(|t| t.average_precision).sum::<f64>() / per_tag.len() as f64
        };
        Ok(IterationPerformance {
            precision,
            precision_std_deviation: std_dev(&folds.iter().map(|f| f.0).collect::<Vec<_>>()),
            recall,
            recall_std_deviation: std_dev(&folds.iter().map(|f| f.1).collect::<Vec<_>>()),
            average_precision: map,
            per_tag_performance: per_tag,
        })
    }

    async fn performance_images(
        &self,
        project: Uuid,
        id: Uuid,
        tag_ids: &[Uuid],
    ) -> ApiResult<(Snapshot, Evaluation, Vec<usize>)> {
        self.project(project).await?;
        check_tag_filter(tag_ids)?;
        let (_, snap, eval) = self.evaluation(project, id).await?;
        // Images deleted with allIterations leave the performance views too.
        let evaluated: Vec<Uuid> = eval.images.iter().map(|e| e.image_id).collect();
        let existing = self.store.existing_image_ids(project, &evaluated).await.map_err(store_err)?;
        let keep: Vec<usize> = (0..eval.images.len())
            .filter(|i| existing.contains(&eval.images[*i].image_id))
            .filter(|i| {
                tag_ids.is_empty()
                    || snap.images.iter().find(|s| s.id == eval.images[*i].image_id).is_some_and(|s| {
                        s.tags.iter().any(|t| tag_ids.contains(&t.tag_id))
                            || s.regions.iter().any(|r| tag_ids.contains(&r.tag_id))
                    })
            })
            .collect();
        Ok((snap, eval, keep))
    }

    /// GetImagePerformanceCount.
    pub async fn image_performance_count(&self, project: Uuid, id: Uuid, tag_ids: Vec<Uuid>) -> ApiResult<u64> {
        Ok(self.performance_images(project, id, &tag_ids).await?.2.len() as u64)
    }

    /// GetImagePerformances: held-out images with their predictions, newest first by default.
    #[allow(clippy::too_many_arguments)]
    pub async fn image_performances(
        &self,
        ctx: &UrlContext,
        project: Uuid,
        id: Uuid,
        tag_ids: Vec<Uuid>,
        order_by: Option<&str>,
        take: Option<i64>,
        skip: Option<i64>,
    ) -> ApiResult<Vec<ImagePerformance>> {
        let take = take.unwrap_or(DEFAULT_TAKE as i64);
        if !(0..=MAX_TAKE as i64).contains(&take) {
            return Err(ApiError::bad_request(format!("take must be between 0 and {MAX_TAKE}.")));
        }
        let skip = skip.unwrap_or(0).max(0) as usize;
        let oldest = match order_by.map(str::to_ascii_lowercase).as_deref() {
            None | Some("") | Some("newest") => false,
            Some("oldest") => true,
            Some(o) => return Err(ApiError::bad_request(format!("orderBy must be Newest or Oldest, not '{o}'."))),
        };
        let (snap, eval, mut keep) = self.performance_images(project, id, &tag_ids).await?;
        let by_id: HashMap<Uuid, &SnapImage> = snap.images.iter().map(|i| (i.id, i)).collect();
        keep.sort_by_key(|i| by_id.get(&eval.images[*i].image_id).map(|s| (s.created, s.id)));
        if !oldest {
            keep.reverse();
        }
        let names: HashMap<Uuid, &SnapTag> = snap.tags.iter().map(|t| (t.id, t)).collect();
        Ok(keep
            .into_iter()
            .skip(skip)
            .take(take as usize)
            .filter_map(|i| {
                let e = &eval.images[i];
                let s = by_id.get(&e.image_id)?;
                let predictions = if snap.detection {
                    let dets: Vec<Detection> = e.detections.iter().map(from_row).collect();
                    detection_predictions(&dets, &eval.classes, &names)
                } else {
                    predictions(&eval.classes, &e.scores, &names)
                };
                Some(ImagePerformance {
                    predictions,
                    id: s.id,
                    created: s.created,
                    width: s.width,
                    height: s.height,
                    image_uri: self.signed_url(ctx, &resized_key(project, s.id)),
                    thumbnail_uri: self.signed_url(ctx, &thumbnail_key(project, s.id)),
                    tags: s.tags.clone(),
                    regions: s.regions.clone(),
                })
            })
            .collect())
    }

    /// QuickTestImage / QuickTestImageUrl: runs a trained iteration (the latest by default) on an image and,
    /// unless `store` is false, stores the result for QueryPredictions.
    pub async fn quick_test(
        &self,
        project: Uuid,
        iteration: Option<Uuid>,
        bytes: Bytes,
        store: bool,
    ) -> ApiResult<ImagePrediction> {
        self.project(project).await?;
        let id = match iteration {
            Some(id) => id,
            None => self
                .store
                .list_iterations(project)
                .await
                .map_err(store_err)?
                .into_iter()
                .rev()
                .find(|i| i.status == IterationStatus::Completed)
                .map(|i| i.id)
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::NotFoundProjectDefaultIteration,
                        "The project has no trained iteration yet.",
                    )
                })?,
        };
        let (it, snap) = self.iteration_record(project, id).await?;
        if it.status != IterationStatus::Completed {
            return Err(not_trained(id));
        }
        let snap = snapshot_of(snap)?;
        let original = bytes.clone();
        let (preds, kept) =
            self.run_model(project, id, &snap, bytes, crate::limits::MAX_TRAINING_IMAGE_BYTES, store).await?;
        let result = ImagePrediction { id: Uuid::new_v4(), project, iteration: id, created: now(), predictions: preds };
        if let Some(prepared) = kept {
            self.store_prediction(&result, &snap, it.domain_id.unwrap_or_default(), String::new(), original, prepared)
                .await?;
        }
        Ok(result)
    }

    /// Runs a trained iteration's model on image bytes: every tag's probability (classification) or the
    /// boxes found (detection), best first.
    pub(super) async fn predict_image(
        &self,
        project: Uuid,
        iteration: Uuid,
        snap: &Snapshot,
        bytes: Bytes,
        max_bytes: usize,
    ) -> ApiResult<Vec<Prediction>> {
        Ok(self.run_model(project, iteration, snap, bytes, max_bytes, false).await?.0)
    }

    /// [`Argus::predict_image`], also returning the image's stored derivatives (from the same decode) when
    /// `keep` is set.
    pub(super) async fn run_model(
        &self,
        project: Uuid,
        iteration: Uuid,
        snap: &Snapshot,
        bytes: Bytes,
        max_bytes: usize,
        keep: bool,
    ) -> ApiResult<(Vec<Prediction>, Option<PreparedImage>)> {
        // The blob store is read only when the model is not loaded yet.
        let model = match self.models.cached(iteration) {
            Some(model) => model,
            None => {
                let stored = self
                    .blobs
                    .get(&iteration_model_key(project, iteration, snap.detection))
                    .await
                    .map_err(store_err)?
                    .ok_or_else(|| {
                        ApiError::new(
                            ErrorCode::ErrorPredictionModelNotFound,
                            "The model of this iteration is missing.",
                        )
                    })?;
                let engine = self.models.engine();
                let detection = snap.detection;
                let model = tokio::task::spawn_blocking(move || engine.load_model(&stored, detection))
                    .await
                    .map_err(ApiError::internal)??;
                self.models.cache(iteration, Arc::clone(&model));
                model
            }
        };
        infer(&self.models, model, snap.tags(), bytes, max_bytes, keep).await
    }

    /// Tags as an iteration saw them (GetTags / GetTag with `iterationId`).
    pub(crate) async fn iteration_tags(&self, project: Uuid, iteration: Uuid) -> ApiResult<Vec<Tag>> {
        let (_, snap) = self.iteration_record(project, iteration).await?;
        let snap = snapshot_of(snap)?;
        Ok(snap
            .tags
            .iter()
            .map(|t| Tag {
                id: t.id,
                name: t.name.clone(),
                description: t.description.clone(),
                kind: t.kind,
                image_count: snap.images.iter().filter(|i| i.tags.iter().any(|x| x.tag_id == t.id)).count() as i64,
            })
            .collect())
    }

    /// Ids of every image that some iteration of the project trained on (from the iterations' snapshots).
    pub(crate) async fn images_in_iterations(&self, project: Uuid) -> ApiResult<HashSet<Uuid>> {
        let mut ids = HashSet::new();
        for it in self.store.list_iterations(project).await.map_err(store_err)? {
            if let Some((_, snap)) = self.store.get_iteration(project, it.id).await.map_err(store_err)? {
                ids.extend(snapshot_of(snap)?.image_ids());
            }
        }
        Ok(ids)
    }

    /// Images as an iteration saw them (tags and regions at training time), for `iterationId` listings.
    pub(crate) async fn iteration_images(
        &self,
        ctx: &UrlContext,
        project: Uuid,
        iteration: Uuid,
    ) -> ApiResult<Vec<Image>> {
        let (_, snap) = self.iteration_record(project, iteration).await?;
        let snap = snapshot_of(snap)?;
        let ids: Vec<Uuid> = snap.images.iter().map(|i| i.id).collect();
        let mut current: HashMap<Uuid, _> = HashMap::new();
        for chunk in ids.chunks(256) {
            for r in self.store.get_images(project, chunk).await.map_err(store_err)? {
                current.insert(r.id, r);
            }
            // Deleted from the workspace since (without allIterations): still part of this iteration.
            let missing: Vec<Uuid> = chunk.iter().filter(|id| !current.contains_key(id)).copied().collect();
            if !missing.is_empty() {
                for r in self.store.get_retired_images(project, &missing).await.map_err(store_err)? {
                    current.insert(r.id, r);
                }
            }
        }
        Ok(snap
            .images
            .into_iter()
            .filter_map(|s| {
                let mut r = current.remove(&s.id)?;
                r.tags = s.tags;
                r.regions = s.regions;
                Some(self.render_image(ctx, r))
            })
            .collect())
    }
}

/// Stratified folds: images grouped by their first class, dealt round-robin. `labels` holds the class indices
/// of each image; the fold count is the rarest class's image count, between 2 and `max_folds`.
fn stratified_folds(labels: &[Vec<usize>], classes: usize, max_folds: usize) -> (usize, Vec<usize>) {
    let min_per_class = (0..classes).map(|c| labels.iter().filter(|l| l.contains(&c)).count()).min().unwrap_or(0);
    let folds = min_per_class.clamp(2, max_folds);
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.sort_by_key(|i| (labels[*i].iter().min().copied().unwrap_or(0), *i));
    let mut fold_of = vec![0usize; labels.len()];
    for (rank, i) in order.iter().enumerate() {
        fold_of[*i] = rank % folds;
    }
    (folds, fold_of)
}

fn detection_predictions(dets: &[Detection], classes: &[Uuid], names: &HashMap<Uuid, &SnapTag>) -> Vec<Prediction> {
    dets.iter()
        .filter_map(|d| {
            let c = classes.get(d.class)?;
            Some(Prediction {
                probability: d.score as f64,
                tag_id: *c,
                tag_name: names.get(c).map(|t| t.name.clone()).unwrap_or_default(),
                bounding_box: Some(BoundingBox {
                    left: d.left as f64,
                    top: d.top as f64,
                    width: d.width as f64,
                    height: d.height as f64,
                }),
                tag_type: names.get(c).map(|t| t.kind),
            })
        })
        .collect()
}

fn predictions(classes: &[Uuid], scores: &[f32], names: &HashMap<Uuid, &SnapTag>) -> Vec<Prediction> {
    let mut p: Vec<Prediction> = classes
        .iter()
        .zip(scores)
        .map(|(c, s)| Prediction {
            probability: *s as f64,
            tag_id: *c,
            tag_name: names.get(c).map(|t| t.name.clone()).unwrap_or_default(),
            bounding_box: None,
            tag_type: names.get(c).map(|t| t.kind),
        })
        .collect();
    p.sort_by(|a, b| b.probability.total_cmp(&a.probability));
    p
}

/// Runs `train` jobs.
pub struct TrainingJobs(pub Argus);

#[async_trait]
impl JobHandler for TrainingJobs {
    fn kind(&self) -> &'static str {
        TRAIN_JOB
    }

    async fn run(&self, job: &Job, progress: Progress) -> Result<serde_json::Value, (String, bool)> {
        let JobSpec::Train(p) = JobSpec::of(job).map_err(|e| (e, false))? else {
            return Err((format!("job {} is not a training", job.id), false));
        };
        match self.0.run_training(p.project, p.iteration, progress).await {
            Ok(()) => Ok(serde_json::json!({"iteration": p.iteration})),
            // Missing weights, a vanished image or a failed fit will not go better on a second attempt.
            Err(e) => Err((e.message, false)),
        }
    }

    async fn abandoned(&self, job: &Job, reason: &str) {
        if let Ok(JobSpec::Train(p)) = JobSpec::of(job) {
            self.0.mark_failed(p.project, p.iteration, reason).await;
        }
    }
}

/// Runs `model` on an image (decoded upright, within `max_bytes`) and returns its predictions, most probable
/// first, and the image's stored derivatives when `keep`. The one inference path of the server and of a model
/// served on its own (`argus serve-model`), so that both answer the same.
pub(super) async fn infer(
    models: &ModelHub,
    model: Arc<dyn LoadedModel>,
    tags: &[SnapTag],
    bytes: Bytes,
    max_bytes: usize,
    keep: bool,
) -> ApiResult<(Vec<Prediction>, Option<PreparedImage>)> {
    let limits = ImageLimits { max_bytes, max_side: crate::limits::MAX_IMAGE_SIDE };
    let names: HashMap<Uuid, &SnapTag> = tags.iter().map(|t| (t.id, t)).collect();
    let classes: Vec<Uuid> = tags.iter().map(|t| t.id).collect();
    let permit = models.compute_permit().await?;
    let (out, kept) = tokio::task::spawn_blocking(move || {
        let answer = model.predict(&bytes, limits, keep);
        drop(permit);
        answer
    })
    .await
    .map_err(ApiError::internal)??;
    let preds = match out {
        ModelOutput::Scores(scores) => predictions(&classes, &scores, &names),
        ModelOutput::Boxes(dets) => detection_predictions(&dets, &classes, &names),
    };
    Ok((preds, kept))
}
