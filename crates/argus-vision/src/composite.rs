//! Labelled scenes composited from real photographs, for detection benchmarks and tests: objects (photo
//! crops, or images with an alpha channel such as a logo) pasted at random scale, position and mirroring
//! onto other photographs, with their exact boxes — the shape of logo or product detection.

use image::{imageops, Rgb, RgbImage, RgbaImage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::heads::detector::GtBox;

/// A composited image and the boxes of the objects pasted into it.
#[derive(Debug, Clone)]
pub struct Scene {
    /// The pixels.
    pub image: RgbImage,
    /// Normalised boxes, one per pasted object.
    pub boxes: Vec<GtBox>,
}

/// Pastes `object` (alpha-blended) at (x, y) with size (w, h) into `canvas`, scaled and optionally
/// mirrored, with a brightness factor.
fn paste(canvas: &mut RgbImage, object: &RgbaImage, (x, y, w, h): (u32, u32, u32, u32), flip: bool, gain: f32) {
    let mut obj = imageops::resize(object, w, h, imageops::FilterType::Triangle);
    if flip {
        obj = imageops::flip_horizontal(&obj);
    }
    for (ox, oy, p) in obj.enumerate_pixels() {
        let (cx, cy) = (x + ox, y + oy);
        if cx >= canvas.width() || cy >= canvas.height() {
            continue;
        }
        let a = p.0[3] as f32 / 255.0;
        let dst = canvas.get_pixel_mut(cx, cy);
        for c in 0..3 {
            let v = (p.0[c] as f32 * gain).min(255.0);
            dst.0[c] = (v * a + dst.0[c] as f32 * (1.0 - a)).round() as u8;
        }
    }
}

/// A random crop (60–100 % of each side) of a background photograph, resized to `cw` × `ch`.
fn background_canvas(bg: &RgbImage, rng: &mut StdRng, cw: u32, ch: u32) -> RgbImage {
    let (bw, bh) = bg.dimensions();
    let s: f32 = rng.gen_range(0.6..1.0);
    let (sw, sh) = (((bw as f32) * s) as u32, ((bh as f32) * s) as u32);
    let (sx, sy) = (rng.gen_range(0..=bw - sw), rng.gen_range(0..=bh - sh));
    imageops::resize(&imageops::crop_imm(bg, sx, sy, sw, sh).to_image(), cw, ch, imageops::FilterType::Triangle)
}

/// The tight box of an object's opaque pixels (alpha > 32), as fractions of its size.
fn opaque_extent(object: &RgbaImage) -> (f32, f32, f32, f32) {
    let (w, h) = object.dimensions();
    let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
    for (x, y, p) in object.enumerate_pixels() {
        if p.0[3] > 32 {
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x + 1);
            y1 = y1.max(y + 1);
        }
    }
    if x1 <= x0 || y1 <= y0 {
        return (0.0, 0.0, 1.0, 1.0);
    }
    (x0 as f32 / w as f32, y0 as f32 / h as f32, x1 as f32 / w as f32, y1 as f32 / h as f32)
}

/// How objects are placed in composited scenes.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    /// Range of the object's shorter side as a fraction of the scene's height.
    pub scale: (f32, f32),
    /// Probability that a scene also holds an object of another class.
    pub second_object: f64,
}

impl Placement {
    /// Detection scenes: objects at 22–55 % of the height, a second object one time in three.
    pub const DETECTION: Placement = Placement { scale: (0.22, 0.55), second_object: 1.0 / 3.0 };
    /// Classification scenes: exactly one object, at 25–60 % of the height.
    pub const CLASSIFICATION: Placement = Placement { scale: (0.25, 0.6), second_object: 0.0 };
}

/// `per_class` scenes for each object class: each scene holds one object of its class and, one time in three,
/// an object of another class. Backgrounds are random crops of `backgrounds`, `size` pixels wide and 3/4 as
/// tall. Deterministic given `seed`.
pub fn scenes(objects: &[RgbaImage], backgrounds: &[RgbImage], per_class: usize, size: u32, seed: u64) -> Vec<Scene> {
    placed_scenes(objects, backgrounds, per_class, size, Placement::DETECTION, seed)
}

/// [`scenes`] with another [`Placement`] of the objects.
pub fn placed_scenes(
    objects: &[RgbaImage],
    backgrounds: &[RgbImage],
    per_class: usize,
    size: u32,
    placement: Placement,
    seed: u64,
) -> Vec<Scene> {
    let mut rng = StdRng::seed_from_u64(seed);
    let extents: Vec<_> = objects.iter().map(opaque_extent).collect();
    let (cw, ch) = (size, size * 3 / 4);
    let mut out = Vec::new();
    if objects.is_empty() || backgrounds.is_empty() {
        return out;
    }
    for i in 0..per_class {
        for class in 0..objects.len() {
            let bg =
                &backgrounds[(i * objects.len() + class + rng.gen_range(0..backgrounds.len())) % backgrounds.len()];
            let mut canvas = background_canvas(bg, &mut rng, cw, ch);
            let mut classes = vec![class];
            if objects.len() > 1 && placement.second_object > 0.0 && rng.gen_bool(placement.second_object) {
                classes.push((class + rng.gen_range(1..objects.len())) % objects.len());
            }
            let mut boxes: Vec<GtBox> = Vec::new();
            for c in classes {
                let obj = &objects[c];
                let aspect = obj.width() as f32 / obj.height() as f32;
                for _attempt in 0..20 {
                    let side = rng.gen_range(placement.scale.0..placement.scale.1) * ch as f32;
                    let (w, h) = if aspect >= 1.0 { (side * aspect, side) } else { (side, side / aspect) };
                    let (w, h) = (w.min(cw as f32 * 0.9) as u32, h.min(ch as f32 * 0.9) as u32);
                    let (x, y) = (rng.gen_range(0..=cw - w), rng.gen_range(0..=ch - h));
                    let flip = rng.gen_bool(0.5);
                    let (ex0, ey0, ex1, ey1) = extents[c];
                    let (ex0, ex1) = if flip { (1.0 - ex1, 1.0 - ex0) } else { (ex0, ex1) };
                    let b = GtBox {
                        class: c,
                        left: (x as f32 + ex0 * w as f32) / cw as f32,
                        top: (y as f32 + ey0 * h as f32) / ch as f32,
                        width: (ex1 - ex0) * w as f32 / cw as f32,
                        height: (ey1 - ey0) * h as f32 / ch as f32,
                    };
                    let overlaps = boxes.iter().any(|o| {
                        let ix = (o.left + o.width).min(b.left + b.width) - o.left.max(b.left);
                        let iy = (o.top + o.height).min(b.top + b.height) - o.top.max(b.top);
                        ix > 0.0 && iy > 0.0
                    });
                    if overlaps {
                        continue;
                    }
                    paste(&mut canvas, obj, (x, y, w, h), flip, rng.gen_range(0.8..1.15));
                    boxes.push(b);
                    break;
                }
            }
            out.push(Scene { image: canvas, boxes });
        }
    }
    out
}

/// A composited image with the exact mask of the one object pasted into it.
#[derive(Debug, Clone)]
pub struct MaskScene {
    /// The pixels.
    pub image: RgbImage,
    /// 255 where the object's opaque pixels (alpha ≥ 128) landed, 0 elsewhere.
    pub mask: image::GrayImage,
}

/// `per_object` scenes per object, each one object pasted (random scale 25–60 % of the height, position,
/// mirroring) onto a random crop of a background, `size` × 3/4 `size`, with its exact mask.
pub fn mask_scenes(
    objects: &[RgbaImage],
    backgrounds: &[RgbImage],
    per_object: usize,
    size: u32,
    seed: u64,
) -> Vec<MaskScene> {
    let mut rng = StdRng::seed_from_u64(seed);
    let (cw, ch) = (size, size * 3 / 4);
    let mut out = Vec::new();
    if backgrounds.is_empty() {
        return out;
    }
    for i in 0..per_object {
        for obj in objects {
            let bg = &backgrounds[(i + rng.gen_range(0..backgrounds.len())) % backgrounds.len()];
            let mut canvas = background_canvas(bg, &mut rng, cw, ch);
            let aspect = obj.width() as f32 / obj.height() as f32;
            let side = rng.gen_range(0.25..0.6) * ch as f32;
            let (w, h) = if aspect >= 1.0 { (side * aspect, side) } else { (side, side / aspect) };
            let (w, h) = ((w.min(cw as f32 * 0.9) as u32).max(2), (h.min(ch as f32 * 0.9) as u32).max(2));
            let (x, y) = (rng.gen_range(0..=cw - w), rng.gen_range(0..=ch - h));
            let flip = rng.gen_bool(0.5);
            paste(&mut canvas, obj, (x, y, w, h), flip, rng.gen_range(0.85..1.1));
            let mut placed = imageops::resize(obj, w, h, imageops::FilterType::Triangle);
            if flip {
                placed = imageops::flip_horizontal(&placed);
            }
            let mut mask = image::GrayImage::new(cw, ch);
            for (ox, oy, p) in placed.enumerate_pixels() {
                if p.0[3] >= 128 && x + ox < cw && y + oy < ch {
                    mask.put_pixel(x + ox, y + oy, image::Luma([255]));
                }
            }
            out.push(MaskScene { image: canvas, mask });
        }
    }
    out
}

/// An object cut from a photograph along the ellipse inscribed in a rectangle (exact alpha mask).
pub fn ellipse_object(photo: &RgbImage, x: u32, y: u32, w: u32, h: u32) -> RgbaImage {
    let crop = imageops::crop_imm(photo, x, y, w, h).to_image();
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    RgbaImage::from_fn(w, h, |px, py| {
        let Rgb([r, g, b]) = *crop.get_pixel(px, py);
        let d = ((px as f32 + 0.5 - cx) / cx).powi(2) + ((py as f32 + 0.5 - cy) / cy).powi(2);
        image::Rgba([r, g, b, if d <= 1.0 { 255 } else { 0 }])
    })
}

/// The segmentation benchmark's objects (exact masks) and backgrounds, from scikit-image's photographs:
/// the logo (its own alpha), and elliptical cut-outs of the cat's face, the coffee cup and the astronaut.
pub fn segmentation_set(photos: &std::path::Path) -> Result<(Vec<RgbaImage>, Vec<RgbImage>), String> {
    let objects = vec![
        open_photo(photos, "logo.png")?.to_rgba8(),
        ellipse_object(&open_photo(photos, "chelsea.png")?.to_rgb8(), 60, 10, 320, 280),
        ellipse_object(&open_photo(photos, "coffee.png")?.to_rgb8(), 75, 15, 410, 375),
        ellipse_object(&open_photo(photos, "astronaut.png")?.to_rgb8(), 150, 20, 170, 200),
    ];
    let backgrounds = open_rgb(
        photos,
        [
            "brick.png",
            "grass.png",
            "gravel.png",
            "moon.png",
            "hubble_deep_field.jpg",
            "motorcycle_right.png",
            "rocket.jpg",
            "coins.png",
        ],
    )?;
    Ok((objects, backgrounds))
}

/// An opaque object from a rectangular crop of a photograph.
pub fn crop_object(photo: &RgbImage, x: u32, y: u32, w: u32, h: u32) -> RgbaImage {
    let crop = imageops::crop_imm(photo, x, y, w, h).to_image();
    RgbaImage::from_fn(crop.width(), crop.height(), |px, py| {
        let Rgb([r, g, b]) = *crop.get_pixel(px, py);
        image::Rgba([r, g, b, 255])
    })
}

/// The detection benchmark's photographs (all from scikit-image's data folder, BSD-3-Clause): three object
/// tags and disjoint training and test backgrounds.
#[derive(Debug, Clone)]
pub struct DetectionSet {
    /// Tag names, in class order.
    pub tags: Vec<&'static str>,
    /// One object image per tag.
    pub objects: Vec<RgbaImage>,
    /// Backgrounds of training scenes.
    pub train_backgrounds: Vec<RgbImage>,
    /// Backgrounds of test scenes (never seen in training).
    pub test_backgrounds: Vec<RgbImage>,
}

/// Backgrounds of the benchmarks' training scenes (scikit-image photographs).
const TRAIN_BACKGROUNDS: [&str; 9] = [
    "astronaut.png",
    "brick.png",
    "camera.png",
    "grass.png",
    "gravel.png",
    "moon.png",
    "motorcycle_left.png",
    "ihc.png",
    "rocket.jpg",
];

/// Backgrounds of the benchmarks' test scenes, disjoint from [`TRAIN_BACKGROUNDS`].
const TEST_BACKGROUNDS: [&str; 8] = [
    "hubble_deep_field.jpg",
    "coins.png",
    "clock_motion.png",
    "cell.png",
    "phantom.png",
    "color.png",
    "motorcycle_right.png",
    "retina.jpg",
];

/// Opens one photograph of the photos directory.
fn open_photo(photos: &std::path::Path, name: &str) -> Result<image::DynamicImage, String> {
    image::open(photos.join(name)).map_err(|e| format!("{}: {e}", photos.join(name).display()))
}

/// Opens photographs as RGB.
fn open_rgb<'a>(photos: &std::path::Path, names: impl IntoIterator<Item = &'a str>) -> Result<Vec<RgbImage>, String> {
    names.into_iter().map(|n| open_photo(photos, n).map(|i| i.to_rgb8())).collect()
}

/// Loads the detection benchmark from the photos directory (`scripts/fetch-test-photos.sh`).
pub fn detection_set(photos: &std::path::Path) -> Result<DetectionSet, String> {
    Ok(DetectionSet {
        tags: vec!["cat", "cup", "logo"],
        objects: vec![
            crop_object(&open_photo(photos, "chelsea.png")?.to_rgb8(), 20, 0, 380, 300),
            crop_object(&open_photo(photos, "coffee.png")?.to_rgb8(), 75, 15, 410, 375),
            open_photo(photos, "logo.png")?.to_rgba8(),
        ],
        train_backgrounds: open_rgb(photos, TRAIN_BACKGROUNDS)?,
        test_backgrounds: open_rgb(photos, TEST_BACKGROUNDS)?,
    })
}

/// The classification benchmark: four object tags (the detection set's cat, cup and logo, and an elliptical
/// cut-out of the astronaut's head) to be pasted one per scene, the detection set's training backgrounds
/// less the astronaut photograph, and its test backgrounds (never seen in training).
pub fn classification_set(photos: &std::path::Path) -> Result<DetectionSet, String> {
    let mut set = detection_set(photos)?;
    set.tags.push("astronaut");
    set.objects.push(ellipse_object(&open_photo(photos, "astronaut.png")?.to_rgb8(), 150, 20, 170, 200));
    set.train_backgrounds = open_rgb(photos, TRAIN_BACKGROUNDS.into_iter().filter(|n| *n != "astronaut.png"))?;
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_cover_the_pasted_pixels() {
        let obj = RgbaImage::from_pixel(10, 10, image::Rgba([255, 0, 0, 255]));
        let bg = RgbImage::from_pixel(100, 100, Rgb([0, 0, 0]));
        let s = scenes(&[obj], &[bg], 3, 80, 1);
        assert_eq!(s.len(), 3);
        for scene in &s {
            let b = scene.boxes[0];
            let (w, h) = scene.image.dimensions();
            let cx = ((b.left + b.width / 2.0) * w as f32) as u32;
            let cy = ((b.top + b.height / 2.0) * h as f32) as u32;
            assert!(scene.image.get_pixel(cx, cy).0[0] > 150, "object centre is red");
            let outside = ((b.left + b.width) * w as f32) as u32 + 2;
            if outside < w {
                assert_eq!(scene.image.get_pixel(outside, cy).0[0], 0);
            }
        }
    }

    #[test]
    fn classification_scenes_hold_one_object_of_their_class_at_the_asked_scale() {
        let objects: Vec<RgbaImage> =
            (0..3).map(|c| RgbaImage::from_pixel(20, 10, image::Rgba([80 * c as u8, 200, 0, 255]))).collect();
        let bg = RgbImage::from_pixel(200, 150, Rgb([0, 0, 0]));
        let s = placed_scenes(&objects, &[bg], 4, 160, Placement::CLASSIFICATION, 7);
        assert_eq!(s.len(), 12);
        for (i, scene) in s.iter().enumerate() {
            assert_eq!(scene.boxes.len(), 1, "exactly one object");
            assert_eq!(scene.boxes[0].class, i % 3, "classes in turn");
            // The shorter side of a 2:1 object is its height: 25–60 % of the scene's height (pixel rounding aside).
            let h = scene.boxes[0].height;
            assert!((0.24..=0.61).contains(&h), "height {h}");
        }
        assert_ne!(s[0].image, s[3].image, "scenes differ");
    }
}
