//! Dataset interchange: COCO, YOLO, Pascal VOC and the `tagged-images.json` of Microsoft's Custom Vision samples
//! (and folders per tag for classification) to and from one neutral model, [`Dataset`].
//!
//! Boxes are kept as Custom Vision keeps them — normalised `left, top, width, height` — and converted to each
//! format's convention on the way out (COCO `bbox` in pixels `[x, y, w, h]`, YOLO normalised centre format, VOC
//! pixel corners). Image bytes are not held here: a writer names the path of every image ([`image_paths`]) and the
//! caller puts the bytes there through a [`Sink`]; a reader lists the images with their paths inside the
//! [`Files`] it read.
//!
//! - [`files`]: a folder or a zip, read ([`Files`]) or written atomically ([`Sink`]).
//! - [`coco`], [`yolo`], [`voc`], [`customvision`], [`folders`]: the formats.

pub mod coco;
pub mod customvision;
pub mod files;
pub mod folders;
pub mod voc;
pub mod yolo;

use anyhow::{anyhow, Result};

pub use files::{Files, Sink};

/// The formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// COCO `instances.json` (detection: `bbox` in pixels; classification: one annotation per tag, no `bbox`).
    Coco,
    /// Ultralytics YOLO (detection: `labels/*.txt` + `data.yaml`; classification: a folder per tag).
    Yolo,
    /// Pascal VOC (detection: `Annotations/*.xml` + `JPEGImages/`; classification: a folder per tag).
    Voc,
    /// Custom Vision samples' `tagged-images.json` (normalised regions, or image tags) + `images/`.
    CustomVision,
}

impl std::str::FromStr for Format {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "coco" => Ok(Self::Coco),
            "yolo" => Ok(Self::Yolo),
            "voc" | "pascal-voc" | "pascalvoc" => Ok(Self::Voc),
            "customvision" | "custom-vision" | "tagged-images" => Ok(Self::CustomVision),
            other => Err(anyhow!("unknown dataset format '{other}' (coco, yolo, voc or customvision)")),
        }
    }
}

/// A labelled set of images.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dataset {
    /// Boxes (object detection) rather than image tags (classification).
    pub detection: bool,
    /// Tag names; labels refer to them by index.
    pub categories: Vec<String>,
    /// The images.
    pub items: Vec<Item>,
}

/// One image and its labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Item {
    /// Path of the image inside the dataset (`/`-separated); on export, a file name ([`image_paths`] places it).
    pub path: String,
    /// Width in pixels (0: unknown).
    pub width: u32,
    /// Height in pixels (0: unknown).
    pub height: u32,
    /// Image-level tags (classification, and tags without a box such as Negative in detection).
    pub tags: Vec<usize>,
    /// Boxes.
    pub boxes: Vec<Labelled>,
}

/// A box in normalised coordinates (0–1 of the image's width and height), with its outline when known.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Labelled {
    /// Index into [`Dataset::categories`].
    pub category: usize,
    /// Left edge.
    pub left: f64,
    /// Top edge.
    pub top: f64,
    /// Width.
    pub width: f64,
    /// Height.
    pub height: f64,
    /// The object's outline, normalised like the box: closed rings of `[x, y]` (COCO's polygon
    /// segmentation); empty when only the box is known.
    pub outline: Vec<Vec<[f64; 2]>>,
}

impl Labelled {
    /// The box clipped to the image; None when nothing of it is left.
    pub fn clipped(self) -> Option<Self> {
        let (x0, y0) = (self.left.clamp(0.0, 1.0), self.top.clamp(0.0, 1.0));
        let (x1, y1) = ((self.left + self.width).clamp(0.0, 1.0), (self.top + self.height).clamp(0.0, 1.0));
        (x1 > x0 && y1 > y0).then_some(Self { left: x0, top: y0, width: x1 - x0, height: y1 - y0, ..self })
    }
}

/// Where an exported image's bytes go in `format` (several paths for a multi-tag image in a folder layout).
pub fn image_paths(format: Format, dataset: &Dataset, item: &Item) -> Vec<String> {
    match (format, dataset.detection) {
        (Format::Coco, _) => vec![format!("{}/{}", coco::IMAGES, item.path)],
        (Format::CustomVision, _) => vec![format!("{}/{}", customvision::IMAGES, item.path)],
        (Format::Yolo, true) => vec![format!("{}/{}", yolo::IMAGES, item.path)],
        (Format::Voc, true) => vec![format!("{}/{}", voc::IMAGES, item.path)],
        (_, false) => folders::paths(dataset, item),
    }
}

/// Writes the annotation files of `dataset` in `format` (the images go where [`image_paths`] says).
pub fn write_annotations(format: Format, dataset: &Dataset, sink: &mut Sink) -> Result<()> {
    match (format, dataset.detection) {
        (Format::Coco, _) => coco::write(dataset, sink),
        (Format::CustomVision, _) => customvision::write(dataset, sink),
        (Format::Yolo, true) => yolo::write(dataset, sink),
        (Format::Voc, true) => voc::write(dataset, sink),
        (_, false) => folders::write(dataset, sink),
    }
}

/// Reads a dataset in `format`; image sizes the annotations do not give are read from the images' headers.
pub fn read(format: Format, files: &mut Files) -> Result<Dataset> {
    let mut dataset = match format {
        Format::Coco => coco::read(files)?,
        Format::CustomVision => customvision::read(files)?,
        Format::Yolo if yolo::is_detection(files) => yolo::read(files)?,
        Format::Voc if voc::is_detection(files) => voc::read(files)?,
        _ => folders::read(files)?,
    };
    for item in &mut dataset.items {
        item.boxes = std::mem::take(&mut item.boxes).into_iter().filter_map(Labelled::clipped).collect();
    }
    Ok(dataset)
}

/// Width and height from an image's header.
pub fn dimensions(bytes: &[u8]) -> Result<(u32, u32)> {
    image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()?
        .into_dimensions()
        .map_err(|e| anyhow!("reading the image size: {e}"))
}

/// A file extension for image bytes (`jpg` when the format is not recognised).
pub fn extension(bytes: &[u8]) -> &'static str {
    match image::guess_format(bytes) {
        Ok(image::ImageFormat::Png) => "png",
        Ok(image::ImageFormat::Bmp) => "bmp",
        Ok(image::ImageFormat::Gif) => "gif",
        Ok(image::ImageFormat::WebP) => "webp",
        Ok(image::ImageFormat::Tiff) => "tiff",
        _ => "jpg",
    }
}

/// The file name without its folders and extension.
pub(crate) fn stem(path: &str) -> &str {
    let name = path.rsplit('/').next().unwrap_or(path);
    match name.rfind('.') {
        Some(i) if i > 0 => &name[..i],
        _ => name,
    }
}

/// Whether a path names an image file by its extension.
pub(crate) fn is_image_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    [".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"].iter().any(|e| lower.ends_with(e))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A detection set with two categories, a multi-box image, an image tag without a box and an unlabelled image.
    pub fn detection_set() -> Dataset {
        Dataset {
            detection: true,
            categories: vec!["cat".into(), "dog & co".into(), "Negative".into()],
            items: vec![
                Item {
                    path: "a.jpg".into(),
                    width: 640,
                    height: 480,
                    tags: vec![],
                    boxes: vec![
                        Labelled { category: 0, left: 0.1, top: 0.2, width: 0.3, height: 0.4, ..Default::default() },
                        Labelled { category: 1, left: 0.5, top: 0.5, width: 0.25, height: 0.5, ..Default::default() },
                    ],
                },
                Item { path: "b.png".into(), width: 100, height: 200, tags: vec![2], boxes: vec![] },
                Item { path: "c.jpg".into(), width: 300, height: 300, tags: vec![], boxes: vec![] },
            ],
        }
    }

    /// A Multilabel classification set with an untagged image.
    pub fn classification_set() -> Dataset {
        Dataset {
            detection: false,
            categories: vec!["ant".into(), "bee".into()],
            items: vec![
                Item { path: "1.jpg".into(), width: 10, height: 10, tags: vec![0], boxes: vec![] },
                Item { path: "2.jpg".into(), width: 10, height: 10, tags: vec![0, 1], boxes: vec![] },
                Item { path: "3.jpg".into(), width: 10, height: 10, tags: vec![], boxes: vec![] },
            ],
        }
    }

    /// Writes `dataset` in `format` to a folder (with one-pixel PNGs as images) and reads it back.
    pub fn round_trip(format: Format, dataset: &Dataset) -> Dataset {
        let dir = tempfile::tempdir().expect("tmp");
        let mut sink = Sink::dir(dir.path()).expect("sink");
        for (i, item) in dataset.items.iter().enumerate() {
            let mut png = Vec::new();
            // Distinct bytes per image (folder layouts match copies by content).
            let mut img = image::RgbImage::new(item.width.max(1), item.height.max(1));
            img.put_pixel(0, 0, image::Rgb([i as u8, 1, 2]));
            img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).expect("png");
            for p in image_paths(format, dataset, item) {
                sink.put(&p, &png).expect("put");
            }
        }
        write_annotations(format, dataset, &mut sink).expect("write");
        sink.finish().expect("finish");
        read(format, &mut Files::open(dir.path()).expect("open")).expect("read")
    }

    /// A box as (category name, x, y, width, height) in whole pixels.
    pub type PixelBox = (String, i64, i64, i64, i64);

    /// Labels by file stem, with category names, boxes rounded to the pixel.
    pub fn labels(d: &Dataset) -> Vec<(String, Vec<String>, Vec<PixelBox>)> {
        let mut v: Vec<_> = d
            .items
            .iter()
            .map(|i| {
                let mut tags: Vec<String> = i.tags.iter().map(|t| d.categories[*t].clone()).collect();
                tags.sort();
                let px = |v: f64, s: u32| (v * s as f64).round() as i64;
                let mut boxes: Vec<_> = i
                    .boxes
                    .iter()
                    .map(|b| {
                        (
                            d.categories[b.category].clone(),
                            px(b.left, i.width),
                            px(b.top, i.height),
                            px(b.width, i.width),
                            px(b.height, i.height),
                        )
                    })
                    .collect();
                boxes.sort();
                (stem(&i.path).to_string(), tags, boxes)
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn boxes_are_clipped_to_the_image() {
        let b = Labelled { category: 0, left: -0.1, top: 0.5, width: 0.5, height: 0.7, ..Default::default() }
            .clipped()
            .expect("some");
        assert!((b.left, b.top).eq(&(0.0, 0.5)) && (b.width - 0.4).abs() < 1e-12 && (b.height - 0.5).abs() < 1e-12);
        assert!(Labelled { category: 0, left: 1.2, top: 0.0, width: 0.1, height: 0.1, ..Default::default() }
            .clipped()
            .is_none());
    }

    #[test]
    fn formats_parse_and_paths_split() {
        assert_eq!("COCO".parse::<Format>().expect("coco"), Format::Coco);
        assert_eq!("pascal-voc".parse::<Format>().expect("voc"), Format::Voc);
        assert!("csv".parse::<Format>().is_err());
        assert_eq!(stem("images/x.y.jpg"), "x.y");
        assert!(is_image_path("A/B.JPEG") && !is_image_path("labels/b.txt"));
    }
}
