//! Argus pure compute, by concern: decoding uploaded images safely ([`imageio`]: format sniffing, size limits
//! before the pixels are decoded, EXIF orientation, derivatives), the CPU [`kernels`], the pretrained
//! EfficientNet-Lite [`backbone`] and its [`weights`], the trained [`heads`] (classifier, detector, its box
//! stage, the logistic-regression solver), region [`proposals`], [`segmentation`] (GrabCut and SAM), model
//! [`export`] writers; evaluation [`metrics`] are `argus-metrics`, re-exported. Composited benchmark scenes (`composite`) are behind the
//! `composites` feature, for benchmarks and tests only.

pub mod backbone;
#[cfg(feature = "composites")]
pub mod composite;
pub mod export;
pub mod heads;
pub mod imageio;
pub mod kernels;
pub mod proposals;
pub mod segmentation;
pub mod weights;

pub use argus_metrics as metrics;
pub use image;
pub use imageio::{prepare_image, ImageError, ImageLimits, PreparedImage};
