//! ONNX export: a stored head and its backbone written as one graph by `argus-vision`'s export writers, with
//! the interface the package documents.

use argus_core::compute::{OnnxInterface, OnnxModel, Precision};
use argus_core::error::{ApiError, ApiResult, ErrorCode};
use argus_vision::export::detector::{
    detector_onnx, DETECTED_BOXES, DETECTED_CLASSES, DETECTED_SCORES, DETECTOR_INPUT,
};
use argus_vision::export::{self as writers, classifier_onnx, CLASSIFIER_INPUT, CLASSIFIER_OUTPUT};
use argus_vision::heads::classifier::HeadKind;
use argus_vision::heads::detector::{MAX_DETECTIONS, MIN_SCORE, NMS_IOU};

use crate::predict::Head;
use crate::VisionEngine;

/// Writes a stored model as an ONNX graph (see [`argus_core::compute::Compute::export_onnx`]).
pub fn onnx(engine: &VisionEngine, stored: &[u8], detector: bool, precision: Precision) -> ApiResult<OnnxModel> {
    let precision = match precision {
        Precision::Float32 => writers::Precision::Float32,
        Precision::Float16 => writers::Precision::Float16,
    };
    let head = Head::read(stored, detector)?;
    let weights = engine.weights_path(head.backbone())?;
    let (bytes, interface) = match &head {
        Head::Detector(h) => (
            detector_onnx(&weights, h, precision),
            OnnxInterface::Detector {
                input: DETECTOR_INPUT,
                boxes: DETECTED_BOXES,
                scores: DETECTED_SCORES,
                classes: DETECTED_CLASSES,
                size: h.input_size,
                mirror: h.mirror,
                nms_iou: NMS_IOU,
                min_score: MIN_SCORE,
                max_detections: MAX_DETECTIONS,
            },
        ),
        Head::Classifier(h) => (
            classifier_onnx(&weights, h, precision),
            OnnxInterface::Classifier {
                input: CLASSIFIER_INPUT,
                output: CLASSIFIER_OUTPUT,
                size: h.input_size,
                multilabel: h.kind == HeadKind::Multilabel,
            },
        ),
    };
    let bytes =
        bytes.map_err(|e| ApiError::new(ErrorCode::ErrorExporterInvalidFeaturizer, format!("export failed: {e}")))?;
    Ok(OnnxModel { bytes, interface })
}
