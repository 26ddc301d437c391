//! The compute port: what the use cases ask of the vision engine (decode an upload, train a classifier or a
//! detector, predict, propose regions, segment, export), in the use cases' own terms. `argus-engine`
//! implements [`Compute`] on `argus-vision`; the composition root (`argus-app`) hands it to
//! [`crate::service::Argus`]. Core decides the protocol (which images are held out in which fold, what is
//! stored where, which error the API answers); the engine decides how pixels become features, heads and boxes.
//!
//! Every method is blocking CPU work: call it from a blocking thread (`tokio::task::spawn_blocking`).

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

pub use argus_metrics::{Detection, GtBox};

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::jobs::Progress;

/// Limits an image is decoded under.
#[derive(Debug, Clone, Copy)]
pub struct ImageLimits {
    /// Largest accepted encoded size in bytes.
    pub max_bytes: usize,
    /// Largest accepted width or height in pixels (checked from the header, before any pixel is decoded).
    pub max_side: u32,
}

/// Why an image was refused; each carries the engine's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// The encoded bytes exceed [`ImageLimits::max_bytes`].
    #[error("{0}")]
    TooLarge(String),
    /// A side exceeds [`ImageLimits::max_side`].
    #[error("{0}")]
    DimensionsTooLarge(String),
    /// Not a decodable image of a supported format.
    #[error("{0}")]
    Format(String),
}

impl From<ImageError> for ApiError {
    /// The answer to a request about one image (prediction, quick test).
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::TooLarge(m) => ApiError::new(ErrorCode::BadRequestImageSizeBytes, m),
            ImageError::DimensionsTooLarge(m) => ApiError::new(ErrorCode::BadRequestImageDimensions, m),
            ImageError::Format(m) => ApiError::new(ErrorCode::BadRequestImageFormat, m),
        }
    }
}

/// An image ready to be stored: the original's facts and its JPEG derivatives.
#[derive(Debug, Clone)]
pub struct PreparedImage {
    /// Width after EXIF orientation was applied.
    pub width: u32,
    /// Height after EXIF orientation was applied.
    pub height: u32,
    /// MIME type of the original bytes.
    pub mime: &'static str,
    /// JPEG of the upright image, longest side at most 1024 px: what training and the image URLs read.
    pub resized_jpeg: Vec<u8>,
    /// JPEG of the upright image, longest side at most 200 px.
    pub thumbnail_jpeg: Vec<u8>,
}

/// What a model says about one image.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelOutput {
    /// A classifier: one probability per tag, in the model's tag order.
    Scores(Vec<f32>),
    /// A detector: the boxes found (class = index in the model's tag order), most confident first.
    Boxes(Vec<Detection>),
}

/// A classifier to train. Images are the stored resized JPEGs, in the snapshot's order.
#[derive(Debug, Clone)]
pub struct ClassifierJob {
    /// The images.
    pub images: Vec<Bytes>,
    /// Per image, the target probability of each tag (one-hot, split between tags, or multi-hot).
    pub targets: Vec<Vec<f32>>,
    /// Independent sigmoids per tag (Multilabel) instead of one softmax.
    pub multilabel: bool,
    /// The Advanced recipe (larger backbone, more views) instead of Regular.
    pub advanced: bool,
    /// Regular training on the larger backbone too (every classification domain but the compact ones).
    pub large_backbone: bool,
    /// Number of cross-validation folds.
    pub folds: usize,
    /// The fold each image is held out in.
    pub fold_of: Vec<usize>,
}

/// A detector to train. Images are the stored resized JPEGs, in the snapshot's order.
#[derive(Debug, Clone)]
pub struct DetectorJob {
    /// The images.
    pub images: Vec<Bytes>,
    /// Per image, its labelled boxes (class = index in the snapshot's tag order).
    pub boxes: Vec<Vec<GtBox>>,
    /// Number of tags.
    pub classes: usize,
    /// The Advanced recipe instead of Regular.
    pub advanced: bool,
    /// Number of cross-validation folds.
    pub folds: usize,
    /// The fold each image is held out in.
    pub fold_of: Vec<usize>,
}

/// A trained model and the honest evaluation that came with it.
#[derive(Debug, Clone)]
pub struct TrainedModel {
    /// The model file to store (read back by [`Compute::load_model`] and the exports).
    pub model: Vec<u8>,
    /// Per training image, what a model trained without its fold said about it.
    pub held_out: Vec<ModelOutput>,
}

/// A model read for prediction, with the backbone it runs on.
pub trait LoadedModel: Send + Sync {
    /// Runs the model on an image's bytes (decoded upright within `limits`). With `keep`, also returns the
    /// image's stored derivatives, from the same decode.
    fn predict(&self, image: &[u8], limits: ImageLimits, keep: bool)
        -> ApiResult<(ModelOutput, Option<PreparedImage>)>;

    /// Whether it is an object detector.
    fn is_detector(&self) -> bool;
}

/// Weight precision of an ONNX export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// FP32 weights.
    Float32,
    /// Weights rounded to FP16, computed in FP32: half the file.
    Float16,
}

/// What an exported ONNX graph takes and gives: what its package's manifest, metadata and README say.
#[derive(Debug, Clone, Copy)]
pub enum OnnxInterface {
    /// A classifier.
    Classifier {
        /// Input name: `[1, 3, size, size]` RGB 0–255 of the centre-cropped image.
        input: &'static str,
        /// Output name: `[1, tags]` probabilities.
        output: &'static str,
        /// Input side in pixels.
        size: u32,
        /// One sigmoid per tag, else a softmax.
        multilabel: bool,
    },
    /// An object detector.
    Detector {
        /// Input name: `[1, 3, size, size]` RGB 0–255 of the stretched image.
        input: &'static str,
        /// Output name of the `[1, N, 4]` boxes (x1, y1, x2, y2 in [0, 1]).
        boxes: &'static str,
        /// Output name of the `[1, N]` scores.
        scores: &'static str,
        /// Output name of the `[1, N]` tag indices.
        classes: &'static str,
        /// Input side in pixels.
        size: u32,
        /// Whether the mirror image is scored too.
        mirror: bool,
        /// Per-tag suppression IoU.
        nms_iou: f64,
        /// The lowest score reported.
        min_score: f32,
        /// The most boxes reported.
        max_detections: usize,
    },
}

/// An exported ONNX graph.
#[derive(Debug, Clone)]
pub struct OnnxModel {
    /// The `model.onnx` bytes (deterministic for a given model).
    pub bytes: Vec<u8>,
    /// Its inputs and outputs.
    pub interface: OnnxInterface,
}

/// A class-agnostic region proposal, normalised to [0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionBox {
    /// Left edge.
    pub left: f64,
    /// Top edge.
    pub top: f64,
    /// Width.
    pub width: f64,
    /// Height.
    pub height: f64,
    /// Confidence in [0, 1].
    pub confidence: f64,
}

/// The segmentation method of a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentMethod {
    /// GrabCut on the image's colours (always available).
    GrabCut,
    /// Segment Anything (needs its checkpoint).
    Sam,
}

/// A point prompt in the image's normalised coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PromptPoint {
    /// Horizontal position in [0, 1].
    pub x: f32,
    /// Vertical position in [0, 1].
    pub y: f32,
    /// On the object (true) or on the background.
    pub foreground: bool,
}

/// A box prompt in the image's normalised coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PromptBox {
    /// Left edge.
    pub x_min: f32,
    /// Top edge.
    pub y_min: f32,
    /// Right edge.
    pub x_max: f32,
    /// Bottom edge.
    pub y_max: f32,
}

/// One segmentation prompt on an image.
#[derive(Debug, Clone)]
pub struct SegmentRequest {
    /// The image file's bytes.
    pub image: Bytes,
    /// The limits it is decoded under.
    pub limits: ImageLimits,
    /// The method.
    pub method: SegmentMethod,
    /// Point prompts.
    pub points: Vec<PromptPoint>,
    /// An optional box prompt.
    pub bbox: Option<PromptBox>,
    /// Also return the mask at the image's full size, COCO run-length encoded.
    pub rle: bool,
    /// Only encode the image (SAM), so that the prompts after it answer at once.
    pub prepare: bool,
    /// Outline components smaller than this fraction of the image are left out.
    pub min_area: f64,
}

/// A mask, COCO run-length encoded (column-major runs, starting with background).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RleMask {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The run lengths.
    pub counts: Vec<u32>,
}

/// The object a prompt outlined.
#[derive(Debug, Clone, PartialEq)]
pub struct Segmentation {
    /// Confidence in [0, 1].
    pub score: f32,
    /// Its outline as polygons of normalised (x, y) vertices, small components left out.
    pub polygons: Vec<Vec<(f32, f32)>>,
    /// The full-size mask, when asked for.
    pub rle: Option<RleMask>,
}

/// Where SAM image embeddings are shared between processes (the blob store, through core's keys).
pub trait SharedEmbeddings {
    /// The embedding of the image with content hash `image` under the checkpoint `fingerprint`, if stored.
    fn load(&self, fingerprint: &str, image: &[u8; 32]) -> Option<Vec<u8>>;
    /// Stores an embedding (a failure is logged, not fatal: the next prompt encodes again).
    fn store(&self, fingerprint: &str, image: &[u8; 32], embedding: Vec<u8>);
}

/// The vision engine, as the use cases need it.
pub trait Compute: Send + Sync + 'static {
    /// Decodes an upload (format sniffed from the bytes, limits checked before any pixel is decoded, EXIF
    /// orientation applied) and encodes its stored derivatives.
    fn prepare_image(&self, bytes: &[u8], limits: ImageLimits) -> Result<PreparedImage, ImageError>;

    /// Trains a classifier: featurises the images, cross-validates over the job's folds (choosing the head's
    /// regularisation), fits the final head on everything. Reports progress from 0.05 to 0.98.
    fn train_classifier(&self, job: ClassifierJob, progress: &Progress) -> ApiResult<TrainedModel>;

    /// Trains a detector, cross-validated over the job's folds. Reports progress from 0.05 to 0.97.
    fn train_detector(&self, job: DetectorJob, progress: &Progress) -> ApiResult<TrainedModel>;

    /// Reads a stored model (`detector`: which kind it is) and loads the backbone it runs on.
    fn load_model(&self, model: &[u8], detector: bool) -> ApiResult<Arc<dyn LoadedModel>>;

    /// A stored model as one ONNX graph that computes what [`LoadedModel::predict`] computes.
    fn export_onnx(&self, model: &[u8], detector: bool, precision: Precision) -> ApiResult<OnnxModel>;

    /// The backbone weights a stored model runs on: the checkpoint's file name and where it is (a DockerFile
    /// package carries it).
    fn backbone_weights(&self, model: &[u8], detector: bool) -> ApiResult<(String, PathBuf)>;

    /// Class-agnostic region proposals on an image (a stored resized JPEG), best first, at most `max`.
    fn propose_regions(&self, image: &[u8], max: usize) -> ApiResult<Vec<RegionBox>>;

    /// Whether [`SegmentMethod::Sam`] can run; the error says what to do (it is shown to API users).
    fn sam_available(&self) -> Result<(), String>;

    /// Runs a segmentation prompt, or with `prepare` only encodes the image (then `None`). SAM embeddings are
    /// read from and written to `shared`.
    fn segment(&self, request: &SegmentRequest, shared: &dyn SharedEmbeddings) -> Result<Option<Segmentation>, String>;
}
