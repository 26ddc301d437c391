//! The `tagged-images.json` layout of Microsoft's Custom Vision samples (the AI-102 labs upload from it):
//! `{"files": [{"filename": "image1.jpg", "tags": [{"tag": "apple", "left": 0.1, "top": 0.2, "width": 0.3,
//! "height": 0.4}, …]}, …]}` with the images in `images/` (or beside the file). Boxes are already Custom
//! Vision's normalised `left, top, width, height`; a tag without a box is an image tag (classification).

use std::collections::HashMap;

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};

use crate::{Dataset, Files, Item, Labelled, Sink};

/// The annotation file.
pub const ANNOTATIONS: &str = "tagged-images.json";
/// The folder of the images.
pub const IMAGES: &str = "images";

#[derive(Serialize, Deserialize)]
struct TaggedImages {
    files: Vec<TaggedFile>,
}

#[derive(Serialize, Deserialize)]
struct TaggedFile {
    filename: String,
    #[serde(default)]
    tags: Vec<TaggedRegion>,
}

#[derive(Serialize, Deserialize)]
struct TaggedRegion {
    tag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    left: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    top: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    width: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    height: Option<f64>,
}

/// Whether the dataset holds a `tagged-images.json`.
pub fn is_present(files: &Files) -> bool {
    files.list().is_ok_and(|all| all.iter().any(|p| p.rsplit('/').next() == Some(ANNOTATIONS)))
}

/// Writes `tagged-images.json` (the images go to `images/`).
pub fn write(d: &Dataset, sink: &mut Sink) -> Result<()> {
    let files = d
        .items
        .iter()
        .map(|item| TaggedFile {
            filename: item.path.clone(),
            tags: item
                .tags
                .iter()
                .map(|t| TaggedRegion {
                    tag: d.categories[*t].clone(),
                    left: None,
                    top: None,
                    width: None,
                    height: None,
                })
                .chain(item.boxes.iter().map(|b| TaggedRegion {
                    tag: d.categories[b.category].clone(),
                    left: Some(b.left),
                    top: Some(b.top),
                    width: Some(b.width),
                    height: Some(b.height),
                }))
                .collect(),
        })
        .collect();
    sink.put(ANNOTATIONS, &serde_json::to_vec_pretty(&TaggedImages { files })?)
}

/// Reads the first `tagged-images.json` found; categories in order of first appearance.
pub fn read(files: &mut Files) -> Result<Dataset> {
    let all = files.list()?;
    let json_path = all
        .iter()
        .filter(|p| p.rsplit('/').next() == Some(ANNOTATIONS))
        .min_by_key(|p| p.len())
        .ok_or_else(|| anyhow!("no {ANNOTATIONS} was found"))?
        .clone();
    let text = files.read_text(&json_path)?;
    let parsed: TaggedImages = serde_json::from_str(&text).with_context(|| format!("{json_path} is malformed"))?;
    let base = json_path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let join = |a: &str, b: &str| if a.is_empty() { b.to_string() } else { format!("{a}/{b}") };
    let present: std::collections::HashSet<&str> = all.iter().map(String::as_str).collect();
    let mut categories: Vec<String> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut category = |name: &str| {
        *index.entry(name.to_string()).or_insert_with(|| {
            categories.push(name.to_string());
            categories.len() - 1
        })
    };
    let mut items = Vec::new();
    let mut detection = false;
    for f in parsed.files {
        let name = f.filename.trim_start_matches("./");
        let path = [join(&join(base, IMAGES), name), join(base, name)]
            .into_iter()
            .find(|p| present.contains(p.as_str()))
            .ok_or_else(|| anyhow!("{name}, named in {json_path}, is not in the dataset"))?;
        let mut item = Item { path, ..Default::default() };
        for t in f.tags {
            let c = category(&t.tag);
            match (t.left, t.top, t.width, t.height) {
                (Some(left), Some(top), Some(width), Some(height)) => {
                    detection = true;
                    item.boxes.push(Labelled { category: c, left, top, width, height, ..Default::default() });
                }
                (None, None, None, None) => {
                    if !item.tags.contains(&c) {
                        item.tags.push(c);
                    }
                }
                _ => return Err(anyhow!("a region of {name} lacks some of left, top, width and height")),
            }
        }
        let bytes = files.read(&item.path)?;
        (item.width, item.height) = crate::dimensions(&bytes).with_context(|| format!("reading {}", item.path))?;
        items.push(item);
    }
    Ok(Dataset { detection, categories, items })
}

#[cfg(test)]
mod tests {
    use crate::tests::{classification_set, detection_set, labels, round_trip};
    use crate::Format;

    #[test]
    fn detection_and_classification_round_trip() {
        for d in [detection_set(), classification_set()] {
            let back = round_trip(Format::CustomVision, &d);
            assert_eq!(back.detection, d.detection);
            let mut want = d.categories.clone();
            let mut got = back.categories.clone();
            want.sort();
            got.sort();
            // Categories no image uses are not in the file (it lists images, not tags).
            want.retain(|c| {
                d.items
                    .iter()
                    .any(|i| i.tags.iter().chain(i.boxes.iter().map(|b| &b.category)).any(|t| &d.categories[*t] == c))
            });
            assert_eq!(got, want);
            assert_eq!(labels(&back), labels(&d));
        }
    }
}
