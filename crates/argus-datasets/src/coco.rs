//! COCO: `annotations/instances.json` (`images`, `annotations`, `categories`) and the images in `images/`.
//!
//! Detection annotations carry `bbox` `[x, y, width, height]` in pixels, `area` and `iscrowd: 0`; a
//! classification tag is an annotation with a `category_id` and no `bbox` (how FiftyOne and CVAT keep image-level
//! labels in COCO). Reading accepts any `.json` file with COCO's keys (CVAT's `instances_default.json`,
//! Roboflow's `_annotations.coco.json`, …) and finds each image next to it, in an `images/` folder beside it or
//! one level up, or by its path from the dataset's root.

use std::collections::HashMap;

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{Dataset, Files, Item, Labelled, Sink};

/// The folder of the images.
pub const IMAGES: &str = "images";
/// The annotation file written.
pub const ANNOTATIONS: &str = "annotations/instances.json";

#[derive(Deserialize)]
struct CocoFile {
    images: Vec<CocoImage>,
    #[serde(default)]
    annotations: Vec<CocoAnnotation>,
    #[serde(default)]
    categories: Vec<CocoCategory>,
}

#[derive(Deserialize, Serialize)]
struct CocoImage {
    id: i64,
    file_name: String,
    #[serde(default)]
    width: u32,
    #[serde(default)]
    height: u32,
}

#[derive(Deserialize)]
struct CocoAnnotation {
    image_id: i64,
    category_id: i64,
    #[serde(default)]
    bbox: Option<Vec<f64>>,
    /// Polygons (`[[x0, y0, x1, y1, …], …]` in pixels) or RLE (an object, not read: the box stands for it).
    #[serde(default)]
    segmentation: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct CocoCategory {
    id: i64,
    name: String,
}

/// Writes `annotations/instances.json`.
pub fn write(d: &Dataset, sink: &mut Sink) -> Result<()> {
    let categories: Vec<_> = d
        .categories
        .iter()
        .enumerate()
        .map(|(i, name)| json!({"id": i + 1, "name": name, "supercategory": ""}))
        .collect();
    let mut images = Vec::new();
    let mut annotations = Vec::new();
    for (i, item) in d.items.iter().enumerate() {
        let image_id = i + 1;
        images.push(json!({
            "id": image_id,
            "file_name": format!("{IMAGES}/{}", item.path),
            "width": item.width,
            "height": item.height,
        }));
        for t in &item.tags {
            annotations.push(json!({"id": annotations.len() + 1, "image_id": image_id, "category_id": t + 1}));
        }
        for b in &item.boxes {
            let (w, h) = (item.width as f64, item.height as f64);
            let bbox = [round2(b.left * w), round2(b.top * h), round2(b.width * w), round2(b.height * h)];
            let segmentation: Vec<Vec<f64>> = b
                .outline
                .iter()
                .map(|ring| ring.iter().flat_map(|[x, y]| [round2(x * w), round2(y * h)]).collect())
                .collect();
            // COCO's area is the object's: the outline's when there is one, else the box's.
            let area = if segmentation.is_empty() {
                bbox[2] * bbox[3]
            } else {
                segmentation.iter().map(|ring| ring_area(ring)).sum()
            };
            annotations.push(json!({
                "id": annotations.len() + 1,
                "image_id": image_id,
                "category_id": b.category + 1,
                "bbox": bbox,
                "area": round2(area),
                "iscrowd": 0,
                "segmentation": segmentation,
            }));
        }
    }
    let file = json!({
        "info": {"description": "Exported by Argus", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    });
    sink.put(ANNOTATIONS, &serde_json::to_vec_pretty(&file)?)
}

/// Area of a flat `[x0, y0, x1, y1, …]` ring (shoelace formula).
fn ring_area(ring: &[f64]) -> f64 {
    let n = ring.len() / 2;
    let twice: f64 = (0..n)
        .map(|i| {
            let j = (i + 1) % n;
            ring[2 * i] * ring[2 * j + 1] - ring[2 * j] * ring[2 * i + 1]
        })
        .sum();
    twice.abs() / 2.0
}

/// The polygon segmentation of an annotation, normalised by the image size; empty for RLE or none.
fn polygons_of(seg: Option<&serde_json::Value>, iw: f64, ih: f64) -> Vec<Vec<[f64; 2]>> {
    let Some(rings) = seg.and_then(serde_json::Value::as_array) else { return Vec::new() };
    rings
        .iter()
        .filter_map(|r| {
            let flat: Vec<f64> = r.as_array()?.iter().filter_map(serde_json::Value::as_f64).collect();
            (flat.len() >= 6 && flat.len().is_multiple_of(2) && iw > 0.0 && ih > 0.0)
                .then(|| flat.chunks(2).map(|p| [p[0] / iw, p[1] / ih]).collect())
        })
        .collect()
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Reads the first COCO annotation file found (`annotations/instances*.json` first).
pub fn read(files: &mut Files) -> Result<Dataset> {
    let all = files.list()?;
    let mut candidates: Vec<&String> = all.iter().filter(|p| p.to_ascii_lowercase().ends_with(".json")).collect();
    candidates.sort_by_key(|p| (!p.contains("instances"), p.len()));
    for path in candidates {
        let text = files.read_text(path)?;
        let Ok(coco) = serde_json::from_str::<CocoFile>(&text) else { continue };
        return build(coco, path, &all, files);
    }
    Err(anyhow!("no COCO annotation file (a .json with images, annotations and categories) was found"))
}

fn build(coco: CocoFile, json_path: &str, all: &[String], files: &mut Files) -> Result<Dataset> {
    let base = json_path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let parent = base.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let join = |a: &str, b: &str| if a.is_empty() { b.to_string() } else { format!("{a}/{b}") };
    let present: std::collections::HashSet<&str> = all.iter().map(String::as_str).collect();
    let mut categories = Vec::new();
    let mut category_index: HashMap<i64, usize> = HashMap::new();
    for c in &coco.categories {
        category_index.insert(c.id, categories.len());
        categories.push(c.name.clone());
    }
    let mut items = Vec::new();
    let mut item_index: HashMap<i64, usize> = HashMap::new();
    for image in &coco.images {
        let name = image.file_name.trim_start_matches("./");
        let file = [
            join(base, name),
            join(&join(base, IMAGES), name),
            join(&join(parent, IMAGES), name),
            name.to_string(),
            join(&join(base, IMAGES), name.rsplit('/').next().unwrap_or(name)),
        ]
        .into_iter()
        .find(|p| present.contains(p.as_str()))
        .ok_or_else(|| anyhow!("image '{}' of {json_path} is not in the dataset", image.file_name))?;
        let (mut width, mut height) = (image.width, image.height);
        if width == 0 || height == 0 {
            (width, height) = crate::dimensions(&files.read(&file)?).with_context(|| file.clone())?;
        }
        item_index.insert(image.id, items.len());
        items.push(Item { path: file, width, height, tags: vec![], boxes: vec![] });
    }
    let mut detection = false;
    for a in &coco.annotations {
        let (Some(&i), Some(&c)) = (item_index.get(&a.image_id), category_index.get(&a.category_id)) else {
            return Err(anyhow!(
                "an annotation names image {} or category {}, which {json_path} lacks",
                a.image_id,
                a.category_id
            ));
        };
        let item = &mut items[i];
        match a.bbox.as_deref() {
            Some([x, y, w, h]) => {
                detection = true;
                let (iw, ih) = (item.width as f64, item.height as f64);
                let outline = polygons_of(a.segmentation.as_ref(), iw, ih);
                item.boxes.push(Labelled {
                    category: c,
                    left: x / iw,
                    top: y / ih,
                    width: w / iw,
                    height: h / ih,
                    outline,
                });
            }
            Some(_) => return Err(anyhow!("a bbox in {json_path} does not have four numbers")),
            None => {
                if !item.tags.contains(&c) {
                    item.tags.push(c);
                }
            }
        }
    }
    Ok(Dataset { detection, categories, items })
}

#[cfg(test)]
mod tests {
    use crate::tests::{classification_set, detection_set, labels, round_trip};
    use crate::Format;

    #[test]
    fn outlines_travel_as_polygon_segmentation() {
        let mut d = detection_set();
        let ring = vec![[0.1, 0.2], [0.4, 0.2], [0.4, 0.6], [0.1, 0.6]];
        d.items[0].boxes[0].outline = vec![ring.clone()];
        let dir = tempfile::tempdir().expect("tmp");
        let mut sink = crate::Sink::dir(dir.path()).expect("sink");
        super::write(&d, &mut sink).expect("write");
        sink.finish().expect("finish");
        let text = std::fs::read_to_string(dir.path().join(super::ANNOTATIONS)).expect("json");
        let json: serde_json::Value = serde_json::from_str(&text).expect("parse");
        let first = &json["annotations"][0];
        // 640×480 pixels: the ring 0.3 × 0.4 of the image is 192 × 192 px.
        assert_eq!(first["segmentation"], serde_json::json!([[64.0, 96.0, 256.0, 96.0, 256.0, 288.0, 64.0, 288.0]]));
        assert_eq!(first["area"], serde_json::json!(36864.0));
        assert_eq!(json["annotations"][1]["segmentation"], serde_json::json!([]));
        let back = round_trip(Format::Coco, &d);
        let a = back.items.iter().find(|i| i.path.ends_with("a.jpg")).expect("a.jpg");
        let got = &a.boxes.iter().find(|b| b.category == 0).expect("cat").outline;
        assert_eq!(got.len(), 1);
        for (g, w) in got[0].iter().zip(&ring) {
            assert!((g[0] - w[0]).abs() < 1e-9 && (g[1] - w[1]).abs() < 1e-9, "{got:?}");
        }
    }

    #[test]
    fn detection_and_classification_round_trip() {
        for d in [detection_set(), classification_set()] {
            let back = round_trip(Format::Coco, &d);
            assert_eq!(back.detection, d.detection);
            assert_eq!(back.categories, d.categories);
            assert_eq!(labels(&back), labels(&d));
        }
    }
}
