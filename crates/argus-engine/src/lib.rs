//! The Argus vision engine: [`argus_core::compute::Compute`] implemented on `argus-vision`. It owns the
//! pretrained backbones (each loaded once, on first use, from the models directory) and the optional Segment
//! Anything engine; [`images`] decodes uploads, [`training`] turns images and labels into heads, [`predict`]
//! runs them, [`export`] writes them as ONNX graphs and [`segment`] answers prompts. The composition root
//! (`argus-app`) builds one [`VisionEngine`] per process and hands it to the use cases.

pub mod export;
pub mod images;
pub mod predict;
pub mod segment;
pub mod training;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use argus_core::compute::{
    ClassifierJob, Compute, DetectorJob, ImageError, ImageLimits, LoadedModel, OnnxModel, Precision, PreparedImage,
    RegionBox, SegmentRequest, Segmentation, SharedEmbeddings, TrainedModel,
};
use argus_core::error::{ApiError, ApiResult, ErrorCode};
use argus_core::jobs::Progress;
use argus_vision::backbone::EfficientNetLite0;
use argus_vision::segmentation::sam::SamEngine;
use argus_vision::weights::Variant;

/// The engine: where the models come from and the ones already loaded.
pub struct VisionEngine {
    dir: PathBuf,
    /// One slot per backbone variant (`Variant::ALL` order).
    backbones: [OnceLock<Arc<EfficientNetLite0>>; 2],
    sam_weights: Option<PathBuf>,
    sam: OnceLock<Arc<SamEngine>>,
}

impl std::fmt::Debug for VisionEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VisionEngine({})", self.dir.display())
    }
}

impl VisionEngine {
    /// An engine reading its backbone weights from `dir` (the `--models-dir`).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), backbones: [OnceLock::new(), OnceLock::new()], sam_weights: None, sam: OnceLock::new() }
    }

    /// Enables the Segment Anything engine with the checkpoint at `path` (loaded on first use; its header is
    /// read now, and an unusable file logged).
    pub fn with_sam_weights(mut self, path: Option<PathBuf>) -> Self {
        if let Some(path) = &path {
            match argus_vision::segmentation::sam::infer_spec(path) {
                Ok(spec) => {
                    tracing::info!(weights = %path.display(), encoder = %spec.name(), "Segment Anything enabled")
                }
                Err(e) => {
                    tracing::error!(error = %e, "Segment Anything weights unusable; segmentation defaults to grabcut")
                }
            }
        }
        self.sam_weights = path;
        self
    }

    /// The SAM engine, loading the checkpoint on first use. A failed load is not remembered, so fixing the file
    /// needs no restart.
    pub fn sam(&self) -> Result<Arc<SamEngine>, String> {
        if let Some(e) = self.sam.get() {
            return Ok(Arc::clone(e));
        }
        let path = self.sam_weights.as_ref().ok_or_else(|| {
            "Segment Anything is not configured: set ARGUS_SAM_WEIGHTS (or --sam-weights) to a SAM or MobileSAM \
             safetensors checkpoint, or use the default engine \"grabcut\"."
                .to_string()
        })?;
        let started = std::time::Instant::now();
        let engine = SamEngine::load(path).map_err(|e| e.to_string())?;
        tracing::info!(
            weights = %path.display(),
            encoder = %engine.model().spec().name(),
            ms = started.elapsed().as_millis() as u64,
            "Segment Anything loaded"
        );
        Ok(Arc::clone(self.sam.get_or_init(|| Arc::new(engine))))
    }

    /// The default backbone (EfficientNet-Lite0), loading it on first use.
    pub fn backbone(&self) -> ApiResult<Arc<EfficientNetLite0>> {
        self.backbone_of(Variant::Lite0)
    }

    /// Whether a variant's weights are in the models directory.
    pub fn has_backbone(&self, variant: Variant) -> bool {
        self.dir.join(variant.file()).exists()
    }

    /// The backbone a training that wants `wanted` runs on: `wanted` when its weights are here, otherwise
    /// EfficientNet-Lite0 (with a warning saying how to get the others).
    pub fn trainable_backbone(&self, wanted: Variant) -> Variant {
        if wanted == Variant::Lite0 || self.has_backbone(wanted) {
            return wanted;
        }
        tracing::warn!(
            wanted = wanted.name(),
            "backbone weights missing (run `argus models pull`); training on EfficientNet-Lite0 instead"
        );
        Variant::Lite0
    }

    /// The checkpoint file of a backbone variant (a clear error when it is missing).
    pub fn weights_path(&self, variant: Variant) -> ApiResult<PathBuf> {
        let path = self.dir.join(variant.file());
        if !path.exists() {
            return Err(ApiError::new(
                ErrorCode::ErrorFeaturizationServiceUnavailable,
                format!(
                    "The pretrained {} weights are missing ({}). Run `argus models pull --models-dir {}` and retry.",
                    variant.name(),
                    path.display(),
                    self.dir.display()
                ),
            ));
        }
        Ok(path)
    }

    /// A backbone variant, loading it on first use. Missing weights are a clear error saying how to get them.
    pub fn backbone_of(&self, variant: Variant) -> ApiResult<Arc<EfficientNetLite0>> {
        let slot = &self.backbones[Variant::ALL.iter().position(|v| *v == variant).unwrap_or(0)];
        if let Some(b) = slot.get() {
            return Ok(Arc::clone(b));
        }
        let path = self.weights_path(variant)?;
        let net = EfficientNetLite0::from_file(&path).map_err(|e| {
            ApiError::new(
                ErrorCode::ErrorFeaturizationInvalidFeaturizer,
                format!("{} is unreadable: {e}", path.display()),
            )
        })?;
        Ok(Arc::clone(slot.get_or_init(|| Arc::new(net))))
    }
}

impl Compute for VisionEngine {
    fn prepare_image(&self, bytes: &[u8], limits: ImageLimits) -> Result<PreparedImage, ImageError> {
        images::prepare(bytes, limits)
    }

    fn train_classifier(&self, job: ClassifierJob, progress: &Progress) -> ApiResult<TrainedModel> {
        training::train_classifier(self, job, progress)
    }

    fn train_detector(&self, job: DetectorJob, progress: &Progress) -> ApiResult<TrainedModel> {
        training::train_detector(self, job, progress)
    }

    fn load_model(&self, model: &[u8], detector: bool) -> ApiResult<Arc<dyn LoadedModel>> {
        Ok(Arc::new(predict::Model::load(self, model, detector)?))
    }

    fn export_onnx(&self, model: &[u8], detector: bool, precision: Precision) -> ApiResult<OnnxModel> {
        export::onnx(self, model, detector, precision)
    }

    fn backbone_weights(&self, model: &[u8], detector: bool) -> ApiResult<(String, PathBuf)> {
        let variant = predict::Head::read(model, detector)?.backbone();
        Ok((variant.file().to_string(), self.weights_path(variant)?))
    }

    fn propose_regions(&self, image: &[u8], max: usize) -> ApiResult<Vec<RegionBox>> {
        let net = self.backbone()?;
        let img = argus_vision::image::load_from_memory(image).map_err(ApiError::internal)?.to_rgb8();
        let boxes = argus_vision::proposals::propose(&net, &img, max)
            .map_err(|e| ApiError::new(ErrorCode::ErrorRegionProposal, format!("Region proposal failed: {e}")))?;
        Ok(boxes
            .into_iter()
            .map(|b| RegionBox { left: b.left, top: b.top, width: b.width, height: b.height, confidence: b.confidence })
            .collect())
    }

    fn sam_available(&self) -> Result<(), String> {
        match &self.sam_weights {
            None => Err("engine \"sam\" needs Segment Anything weights: start Argus with ARGUS_SAM_WEIGHTS (or \
                         --sam-weights) pointing at a SAM or MobileSAM safetensors checkpoint, or use \"grabcut\"."
                .into()),
            Some(_) if self.sam.get().is_some() => Ok(()),
            Some(p) => argus_vision::segmentation::sam::infer_spec(p)
                .map(drop)
                .map_err(|e| format!("engine \"sam\" is unavailable ({e}); use \"grabcut\" or fix ARGUS_SAM_WEIGHTS.")),
        }
    }

    fn segment(&self, request: &SegmentRequest, shared: &dyn SharedEmbeddings) -> Result<Option<Segmentation>, String> {
        segment::segment(self, request, shared)
    }
}
