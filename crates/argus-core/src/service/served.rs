//! A trained model served on its own, with no store: what `argus serve-model` runs from a DockerFile export.
//!
//! The export writes a model folder (`model.json`, the head, the backbone weights it runs on); [`ServedModel`]
//! loads it and answers predictions through the same inference code as the server ([`super::training`]'s
//! `infer`), so that the container's answers are the server's.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::models::ModelHub;
use super::predictions::{check_prediction, PredictionKind};
use super::training::{infer, SnapTag};
use crate::compute::{Compute, LoadedModel};
use crate::error::ApiResult;
use crate::limits::MAX_PREDICTION_IMAGE_BYTES;
use crate::model::{now, ImagePrediction};

/// Version of the model folder's layout.
pub const MODEL_FOLDER_FORMAT: u32 = 1;

/// `model.json` of a model folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ModelManifest {
    pub(super) format: u32,
    pub(super) project: Uuid,
    pub(super) iteration: Uuid,
    pub(super) iteration_name: String,
    pub(super) publish_name: String,
    pub(super) detection: bool,
    pub(super) multilabel: bool,
    pub(super) domain: Option<Uuid>,
    pub(super) tags: Vec<SnapTag>,
    /// The head's file, relative to the folder.
    pub(super) head: String,
    /// The folder of backbone weights, relative to the folder.
    pub(super) weights: String,
}

/// A model loaded from a model folder.
pub struct ServedModel {
    manifest: ModelManifest,
    model: Arc<dyn LoadedModel>,
    models: ModelHub,
}

impl std::fmt::Debug for ServedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedModel").field("iteration", &self.manifest.iteration).finish()
    }
}

fn unreadable(dir: &Path, what: impl std::fmt::Display) -> String {
    format!("{} is not an Argus model folder: {what}", dir.display())
}

impl ServedModel {
    /// Loads the folder `dir` (the `model/` folder of a DockerFile export) and its backbone, on the engine
    /// `engine_for` builds for the folder's weights directory. Blocking: call from a blocking thread.
    pub fn load(dir: &Path, engine_for: impl FnOnce(PathBuf) -> Arc<dyn Compute>) -> Result<Self, String> {
        let text = std::fs::read_to_string(dir.join("model.json")).map_err(|e| unreadable(dir, e))?;
        let manifest: ModelManifest = serde_json::from_str(&text).map_err(|e| unreadable(dir, e))?;
        if manifest.format > MODEL_FOLDER_FORMAT {
            return Err(unreadable(dir, format!("format {} is newer than this Argus reads", manifest.format)));
        }
        let bytes = std::fs::read(dir.join(&manifest.head)).map_err(|e| unreadable(dir, e))?;
        let engine = engine_for(dir.join(&manifest.weights));
        // The backbone loads now: a broken folder fails at start, not at the first request.
        let model = engine.load_model(&bytes, manifest.detection).map_err(|e| unreadable(dir, e.message))?;
        Ok(Self { manifest, model, models: ModelHub::new(engine) })
    }

    /// The project the model was trained in.
    pub fn project(&self) -> Uuid {
        self.manifest.project
    }

    /// The iteration it is.
    pub fn iteration(&self) -> Uuid {
        self.manifest.iteration
    }

    /// The name it was published under (empty when it was not).
    pub fn publish_name(&self) -> &str {
        &self.manifest.publish_name
    }

    /// Whether it is an object detector.
    pub fn is_detector(&self) -> bool {
        self.manifest.detection
    }

    /// Predicts on an image. `kind`: the route asked for (classify or detect), `None` for the container's
    /// routes that serve whichever the model is; `with_tag_type`: each prediction carries its tag's type, as
    /// the Prediction API v3.1 answers.
    pub async fn predict(
        &self,
        kind: Option<PredictionKind>,
        bytes: Bytes,
        with_tag_type: bool,
    ) -> ApiResult<ImagePrediction> {
        let detection = self.manifest.detection;
        // The container's routes ask for whichever the model is.
        let kind = kind.unwrap_or(if detection { PredictionKind::Detect } else { PredictionKind::Classify });
        check_prediction(kind, detection, "This model", bytes.len())?;
        let (predictions, _) =
            infer(&self.models, Arc::clone(&self.model), &self.manifest.tags, bytes, MAX_PREDICTION_IMAGE_BYTES, false)
                .await?;
        Ok(ImagePrediction {
            id: Uuid::new_v4(),
            project: self.manifest.project,
            iteration: self.manifest.iteration,
            created: now(),
            predictions: predictions
                .into_iter()
                .map(|mut p| {
                    if !with_tag_type {
                        p.tag_type = None;
                    }
                    p
                })
                .collect(),
        })
    }
}
