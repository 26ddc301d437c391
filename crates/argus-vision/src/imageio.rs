//! Decoding and derivative generation for uploaded images.
//!
//! Every upload goes through [`prepare_image`]: it sniffs the format from the bytes (never trusting a file
//! name or content type), reads the dimensions from the header and refuses oversized images *before* any
//! pixel is decoded (decompression bombs), decodes the first frame (GIF), applies the EXIF orientation, and
//! encodes two JPEG derivatives: a resized copy and a thumbnail.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

/// Limits applied while preparing an image.
#[derive(Debug, Clone, Copy)]
pub struct ImageLimits {
    /// Largest accepted encoded size in bytes.
    pub max_bytes: usize,
    /// Largest accepted width or height in pixels (checked from the header, before decoding).
    pub max_side: u32,
    /// Longest side of the resized copy.
    pub resized_side: u32,
    /// Longest side of the thumbnail.
    pub thumbnail_side: u32,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self { max_bytes: 6 * 1024 * 1024, max_side: 10_240, resized_side: 1024, thumbnail_side: 200 }
    }
}

/// Why an image was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    /// The encoded bytes exceed [`ImageLimits::max_bytes`].
    #[error("image is {size} bytes; the limit is {limit} bytes")]
    TooLarge {
        /// Size of the upload.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// A side exceeds [`ImageLimits::max_side`].
    #[error("image is {width}x{height} pixels; each side must be at most {limit} pixels")]
    DimensionsTooLarge {
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
        /// The limit in force.
        limit: u32,
    },
    /// The bytes are not a decodable image of a supported format.
    #[error("unsupported or corrupt image: {0}")]
    Format(String),
}

/// An image ready to be stored: the original bytes' facts plus JPEG derivatives.
#[derive(Debug, Clone)]
pub struct PreparedImage {
    /// Width after EXIF orientation was applied.
    pub width: u32,
    /// Height after EXIF orientation was applied.
    pub height: u32,
    /// MIME type of the original bytes.
    pub mime: &'static str,
    /// JPEG of the oriented image, longest side at most [`ImageLimits::resized_side`].
    pub resized_jpeg: Vec<u8>,
    /// JPEG of the oriented image, longest side at most [`ImageLimits::thumbnail_side`].
    pub thumbnail_jpeg: Vec<u8>,
}

fn mime_of(format: ImageFormat) -> Option<&'static str> {
    Some(match format {
        ImageFormat::Jpeg => "image/jpeg",
        ImageFormat::Png => "image/png",
        ImageFormat::Bmp => "image/bmp",
        ImageFormat::Gif => "image/gif",
        ImageFormat::WebP => "image/webp",
        _ => return None,
    })
}

/// Decodes `bytes` into an oriented RGB image, enforcing `limits` before the pixels are decoded.
/// Returns the image and the MIME type of the original format.
pub fn decode_oriented(bytes: &[u8], limits: &ImageLimits) -> Result<(DynamicImage, &'static str), ImageError> {
    if bytes.len() > limits.max_bytes {
        return Err(ImageError::TooLarge { size: bytes.len(), limit: limits.max_bytes });
    }
    let reader =
        ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| ImageError::Format(e.to_string()))?;
    let format = reader.format().ok_or_else(|| ImageError::Format("unrecognised image format".into()))?;
    let mime = mime_of(format).ok_or_else(|| ImageError::Format(format!("{format:?} images are not supported")))?;
    let mut decoder = reader.into_decoder().map_err(|e| ImageError::Format(e.to_string()))?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(ImageError::Format("image has a zero-sized side".into()));
    }
    if width > limits.max_side || height > limits.max_side {
        return Err(ImageError::DimensionsTooLarge { width, height, limit: limits.max_side });
    }
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| ImageError::Format(e.to_string()))?;
    img.apply_orientation(orientation);
    Ok((DynamicImage::ImageRgb8(img.to_rgb8()), mime))
}

fn encode_jpeg(img: &DynamicImage, quality: u8) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
    img.write_with_encoder(encoder).map_err(|e| ImageError::Format(e.to_string()))?;
    Ok(out)
}

fn shrink(img: &DynamicImage, side: u32) -> DynamicImage {
    if img.width().max(img.height()) <= side {
        img.clone()
    } else {
        // `thumbnail` is an area-averaging downscale: fast and alias-free for large reductions.
        img.thumbnail(side, side)
    }
}

/// Validates and decodes `bytes` and produces the stored derivatives.
pub fn prepare_image(bytes: &[u8], limits: &ImageLimits) -> Result<PreparedImage, ImageError> {
    let (img, mime) = decode_oriented(bytes, limits)?;
    derivatives(&img, mime, limits)
}

/// The stored derivatives of an already decoded, oriented image whose original has MIME type `mime`.
pub fn derivatives(img: &DynamicImage, mime: &'static str, limits: &ImageLimits) -> Result<PreparedImage, ImageError> {
    let resized = shrink(img, limits.resized_side);
    let thumb = shrink(&resized, limits.thumbnail_side);
    Ok(PreparedImage {
        width: img.width(),
        height: img.height(),
        mime,
        resized_jpeg: encode_jpeg(&resized, 90)?,
        thumbnail_jpeg: encode_jpeg(&thumb, 80)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    fn encode(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(img.clone()).write_to(&mut out, format).expect("encode");
        out.into_inner()
    }

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 128]))
    }

    #[test]
    fn decodes_every_supported_format() {
        let img = gradient(64, 48);
        for format in [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Bmp, ImageFormat::Gif, ImageFormat::WebP] {
            let bytes = encode(&img, format);
            let p = prepare_image(&bytes, &ImageLimits::default()).unwrap_or_else(|e| panic!("{format:?}: {e}"));
            assert_eq!((p.width, p.height), (64, 48), "{format:?}");
            assert!(p.thumbnail_jpeg.starts_with(&[0xFF, 0xD8]));
        }
    }

    #[test]
    fn derivatives_are_shrunk_keeping_aspect() {
        let bytes = encode(&gradient(2000, 1000), ImageFormat::Png);
        let p = prepare_image(&bytes, &ImageLimits::default()).expect("prepare");
        let resized = image::load_from_memory(&p.resized_jpeg).expect("resized");
        assert_eq!((resized.width(), resized.height()), (1024, 512));
        let thumb = image::load_from_memory(&p.thumbnail_jpeg).expect("thumb");
        assert_eq!((thumb.width(), thumb.height()), (200, 100));
    }

    #[test]
    fn refuses_garbage_size_and_dimensions() {
        let limits = ImageLimits::default();
        assert!(matches!(prepare_image(b"not an image at all", &limits), Err(ImageError::Format(_))));
        let big = vec![0u8; limits.max_bytes + 1];
        assert!(matches!(prepare_image(&big, &limits), Err(ImageError::TooLarge { .. })));
        let small = ImageLimits { max_side: 32, ..limits };
        let bytes = encode(&gradient(64, 16), ImageFormat::Png);
        assert!(matches!(prepare_image(&bytes, &small), Err(ImageError::DimensionsTooLarge { width: 64, .. })));
    }

    #[test]
    fn header_claiming_huge_dimensions_is_refused_before_decoding() {
        // A PNG header that claims 100000 x 100000 pixels followed by no real data: a decompression bomb shape.
        let mut bytes = encode(&gradient(1, 1), ImageFormat::Png);
        bytes[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bytes[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let err = prepare_image(&bytes, &ImageLimits::default()).expect_err("must refuse");
        assert!(matches!(err, ImageError::DimensionsTooLarge { .. } | ImageError::Format(_)), "{err:?}");
    }

    #[test]
    fn exif_orientation_is_applied() {
        // JPEG 40x20 with an EXIF APP1 segment saying "rotate 90° CW" (orientation 6) → 20x40 after orientation.
        let jpeg = encode(&gradient(40, 20), ImageFormat::Jpeg);
        let exif: Vec<u8> = {
            let mut tiff = vec![b'M', b'M', 0, 42, 0, 0, 0, 8, 0, 1];
            tiff.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0]);
            tiff.extend_from_slice(&[0, 0, 0, 0]);
            let mut seg = b"Exif\0\0".to_vec();
            seg.extend_from_slice(&tiff);
            let mut app1 = vec![0xFF, 0xE1];
            app1.extend_from_slice(&((seg.len() + 2) as u16).to_be_bytes());
            app1.extend_from_slice(&seg);
            app1
        };
        let mut with_exif = jpeg[..2].to_vec();
        with_exif.extend_from_slice(&exif);
        with_exif.extend_from_slice(&jpeg[2..]);
        let p = prepare_image(&with_exif, &ImageLimits::default()).expect("prepare");
        assert_eq!((p.width, p.height), (20, 40));
    }
}
