//! Uploads through `argus-vision`'s safe decoder, in the port's terms: limits in, derivatives or a refusal out.

use argus_core::compute::{ImageError, ImageLimits, PreparedImage};
use argus_vision::image::{DynamicImage, RgbImage};
use argus_vision::imageio;

/// The decoder's limits for the port's (derivative sizes are the decoder's defaults).
pub fn limits(l: ImageLimits) -> imageio::ImageLimits {
    imageio::ImageLimits { max_bytes: l.max_bytes, max_side: l.max_side, ..imageio::ImageLimits::default() }
}

/// The decoder's refusal as the port's.
pub fn refusal(e: imageio::ImageError) -> ImageError {
    let message = e.to_string();
    match e {
        imageio::ImageError::TooLarge { .. } => ImageError::TooLarge(message),
        imageio::ImageError::DimensionsTooLarge { .. } => ImageError::DimensionsTooLarge(message),
        imageio::ImageError::Format(_) => ImageError::Format(message),
    }
}

fn prepared(p: imageio::PreparedImage) -> PreparedImage {
    PreparedImage {
        width: p.width,
        height: p.height,
        mime: p.mime,
        resized_jpeg: p.resized_jpeg,
        thumbnail_jpeg: p.thumbnail_jpeg,
    }
}

/// Decodes an upload and encodes its derivatives ([`argus_vision::prepare_image`]).
pub fn prepare(bytes: &[u8], l: ImageLimits) -> Result<PreparedImage, ImageError> {
    argus_vision::prepare_image(bytes, &limits(l)).map(prepared).map_err(refusal)
}

/// Decodes an image upright within `l`: the image and its original MIME type.
pub fn decode(bytes: &[u8], l: ImageLimits) -> Result<(DynamicImage, &'static str), ImageError> {
    imageio::decode_oriented(bytes, &limits(l)).map_err(refusal)
}

/// The stored derivatives of an already decoded image.
pub fn derivatives(img: &DynamicImage, mime: &'static str, l: ImageLimits) -> Result<PreparedImage, ImageError> {
    imageio::derivatives(img, mime, &limits(l)).map(prepared).map_err(refusal)
}

/// A stored derivative (a JPEG this server wrote) as RGB.
pub fn stored_rgb(bytes: &[u8]) -> Result<RgbImage, String> {
    Ok(argus_vision::image::load_from_memory(bytes).map_err(|e| format!("decoding a stored image: {e}"))?.to_rgb8())
}
