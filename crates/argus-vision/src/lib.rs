//! Argus pure compute. For now: decoding uploaded images safely (format sniffing, size limits before the
//! pixels are decoded, EXIF orientation) and producing the resized copy and thumbnail that the store keeps.
//! The pretrained backbone, heads, metrics and segmentation engines will live here too.

pub mod imageio;

pub use imageio::{prepare_image, ImageError, ImageLimits, PreparedImage};
