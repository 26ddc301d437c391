//! Argus pure compute: decoding uploaded images safely (format sniffing, size limits before the pixels are
//! decoded, EXIF orientation, derivatives), the pretrained EfficientNet-Lite0 backbone and its weights.

mod aligned;
pub mod backbone;
pub mod box_stage;
pub mod classifier;
pub mod composite;
pub mod detector;
pub mod export;
pub mod finetune;
pub mod imageio;
pub mod logreg;
pub mod maxflow;
pub mod mbconv;
pub mod metrics;
mod products;
pub mod proposals;
pub mod sam;
pub mod segment;
mod team;
pub mod weights;

pub use image;
pub use imageio::{prepare_image, ImageError, ImageLimits, PreparedImage};
