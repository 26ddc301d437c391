//! Prediction: a stored head read back beside the backbone it was trained on, run on an uploaded image. The
//! one inference path of the server and of a model served on its own (`argus serve-model`), so that both
//! answer the same.

use std::sync::Arc;

use argus_core::compute::{ImageLimits, LoadedModel, ModelOutput, PreparedImage};
use argus_core::error::{ApiError, ApiResult, ErrorCode};
use argus_vision::backbone::EfficientNetLite0;
use argus_vision::heads::classifier::LinearHead;
use argus_vision::heads::detector::DetectorHead;
use argus_vision::weights::Variant;

use crate::images::{decode, derivatives};
use crate::VisionEngine;

/// A trained iteration's head: the part trained on top of the shared backbone.
#[derive(Debug)]
pub enum Head {
    /// Image classifier.
    Classifier(LinearHead),
    /// Object detector.
    Detector(DetectorHead),
}

impl Head {
    /// Reads a stored head of the given kind. An unreadable file is an internal error whose message says why
    /// (`argus serve-model` shows it for a broken model folder).
    pub fn read(stored: &[u8], detector: bool) -> ApiResult<Self> {
        let unreadable = |e: &dyn std::fmt::Display| {
            tracing::error!(error = %e, "unreadable model file");
            ApiError::new(ErrorCode::ErrorUnknown, format!("the model file is unreadable: {e}"))
        };
        Ok(if detector {
            Self::Detector(DetectorHead::from_bytes(stored).map_err(|e| unreadable(&e))?)
        } else {
            Self::Classifier(LinearHead::from_bytes(stored).map_err(|e| unreadable(&e))?)
        })
    }

    /// The backbone it was trained on (and runs on).
    pub fn backbone(&self) -> Variant {
        match self {
            Self::Classifier(h) => h.backbone,
            Self::Detector(h) => h.backbone,
        }
    }
}

/// A head and its backbone, ready to predict.
pub struct Model {
    head: Head,
    backbone: Arc<EfficientNetLite0>,
}

impl Model {
    /// Reads a stored head and loads (or reuses) its backbone.
    pub fn load(engine: &VisionEngine, stored: &[u8], detector: bool) -> ApiResult<Self> {
        let head = Head::read(stored, detector)?;
        let backbone = engine.backbone_of(head.backbone())?;
        Ok(Self { head, backbone })
    }
}

impl LoadedModel for Model {
    fn predict(
        &self,
        image: &[u8],
        limits: ImageLimits,
        keep: bool,
    ) -> ApiResult<(ModelOutput, Option<PreparedImage>)> {
        let started = std::time::Instant::now();
        let (img, mime) = decode(image, limits)?;
        let rgb = img.to_rgb8();
        let out = match &self.head {
            Head::Classifier(h) => {
                let f = h.image_feature(&self.backbone, &rgb).map_err(ApiError::internal)?;
                ModelOutput::Scores(h.predict(&f))
            }
            Head::Detector(h) => ModelOutput::Boxes(h.detect_image(&self.backbone, &rgb).map_err(ApiError::internal)?),
        };
        let kind = if self.is_detector() { "detect" } else { "classify" };
        metrics::histogram!("argus_prediction_compute_seconds", "kind" => kind).record(started.elapsed().as_secs_f64());
        let kept = if keep { Some(derivatives(&img, mime, limits)?) } else { None };
        Ok((out, kept))
    }

    fn is_detector(&self) -> bool {
        matches!(self.head, Head::Detector(_))
    }
}
