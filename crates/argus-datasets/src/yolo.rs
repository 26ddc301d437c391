//! Ultralytics YOLO detection: `data.yaml` (`names`), `images/<file>` and `labels/<stem>.txt` with one
//! `class cx cy w h` line per box (normalised centre format). An image with an empty label file is a negative
//! (untagged) image; YOLO has no image-level tags, so a detection project's Negative tag does not survive a
//! YOLO round trip. Reading also accepts segmentation lines (`class x1 y1 x2 y2 …`, their bounding box) and
//! `names` as a list or a map, and pairs every `…/images/…` file with `…/labels/…` as Ultralytics does.

use std::collections::HashMap;

use anyhow::{anyhow, Context, Result};
use yaml_rust2::{Yaml, YamlLoader};

use crate::{Dataset, Files, Item, Labelled, Sink};

/// The folder of the images.
pub const IMAGES: &str = "images";
/// The folder of the label files.
pub const LABELS: &str = "labels";

/// Writes `data.yaml` and one label file per image.
pub fn write(d: &Dataset, sink: &mut Sink) -> Result<()> {
    let names: Vec<String> = d.categories.iter().map(|n| quote(n)).collect();
    let yaml = format!(
        "# Exported by Argus (Ultralytics YOLO detection layout)\npath: .\ntrain: {IMAGES}\nval: {IMAGES}\nnc: {}\nnames: [{}]\n",
        d.categories.len(),
        names.join(", ")
    );
    sink.put("data.yaml", yaml.as_bytes())?;
    for item in &d.items {
        let mut text = String::new();
        for b in &item.boxes {
            text.push_str(&format!(
                "{} {:.6} {:.6} {:.6} {:.6}\n",
                b.category,
                b.left + b.width / 2.0,
                b.top + b.height / 2.0,
                b.width,
                b.height
            ));
        }
        sink.put(&format!("{LABELS}/{}.txt", crate::stem(&item.path)), text.as_bytes())?;
    }
    Ok(())
}

/// A YAML double-quoted string.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Whether the files look like a YOLO detection set (a `data.yaml` or label files).
pub fn is_detection(files: &Files) -> bool {
    files.list().is_ok_and(|all| {
        all.iter()
            .any(|p| p.ends_with(".yaml") || p.ends_with(".yml") || (p.contains("labels/") && p.ends_with(".txt")))
    })
}

/// Reads a YOLO detection set.
pub fn read(files: &mut Files) -> Result<Dataset> {
    let all = files.list()?;
    let yaml_path = all
        .iter()
        .filter(|p| p.ends_with(".yaml") || p.ends_with(".yml"))
        .min_by_key(|p| (!p.ends_with("data.yaml"), p.len()))
        .cloned();
    let mut categories: Vec<String> = match &yaml_path {
        Some(p) => names(&files.read_text(p)?).with_context(|| format!("reading {p}"))?,
        None => Vec::new(),
    };
    let labels: HashMap<&str, &String> = all.iter().filter(|p| p.ends_with(".txt")).map(|p| (p.as_str(), p)).collect();
    let mut items = Vec::new();
    for image in all.iter().filter(|p| crate::is_image_path(p)) {
        let label = label_path(image);
        let bytes = files.read(image)?;
        let (width, height) = crate::dimensions(&bytes).with_context(|| image.clone())?;
        let mut boxes = Vec::new();
        if let Some(path) = labels.get(label.as_str()) {
            for (n, line) in files.read_text(path)?.lines().enumerate() {
                let v: Vec<&str> = line.split_whitespace().collect();
                if v.is_empty() {
                    continue;
                }
                let nums: Vec<f64> = v[1..]
                    .iter()
                    .map(|x| x.parse::<f64>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| anyhow!("{path} line {}: expected numbers after the class", n + 1))?;
                let class: usize = v[0].parse().map_err(|_| anyhow!("{path} line {}: bad class '{}'", n + 1, v[0]))?;
                while categories.len() <= class {
                    categories.push(format!("class{}", categories.len()));
                }
                let b = match nums.len() {
                    4 => Labelled {
                        category: class,
                        left: nums[0] - nums[2] / 2.0,
                        top: nums[1] - nums[3] / 2.0,
                        width: nums[2],
                        height: nums[3],
                        ..Default::default()
                    },
                    k if k >= 6 && k % 2 == 0 => {
                        let xs = nums.iter().step_by(2);
                        let ys = nums.iter().skip(1).step_by(2);
                        let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
                        let (y0, y1) = ys.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
                        Labelled {
                            category: class,
                            left: x0,
                            top: y0,
                            width: x1 - x0,
                            height: y1 - y0,
                            ..Default::default()
                        }
                    }
                    _ => return Err(anyhow!("{path} line {}: expected 'class cx cy w h'", n + 1)),
                };
                boxes.push(b);
            }
        }
        items.push(Item { path: image.clone(), width, height, tags: vec![], boxes });
    }
    if items.is_empty() {
        return Err(anyhow!("no images were found"));
    }
    Ok(Dataset { detection: true, categories, items })
}

/// `…/images/…/x.jpg` → `…/labels/…/x.txt` (the last `images` folder becomes `labels`).
fn label_path(image: &str) -> String {
    let mut parts: Vec<&str> = image.split('/').collect();
    if let Some(i) = parts.iter().rposition(|p| *p == IMAGES) {
        parts[i] = LABELS;
    }
    let joined = parts.join("/");
    match joined.rfind('.') {
        Some(i) if joined[i..].find('/').is_none() => format!("{}.txt", &joined[..i]),
        _ => format!("{joined}.txt"),
    }
}

/// Class names from `data.yaml`: `names` as a list, or as a map from index to name.
fn names(text: &str) -> Result<Vec<String>> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| anyhow!("not YAML: {e}"))?;
    let Some(doc) = docs.first() else { return Ok(Vec::new()) };
    let scalar = |y: &Yaml| match y {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Real(r) => Some(r.clone()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    };
    match &doc["names"] {
        Yaml::Array(a) => Ok(a.iter().map(|y| scalar(y).unwrap_or_default()).collect()),
        Yaml::Hash(h) => {
            let mut pairs: Vec<(usize, String)> = h
                .iter()
                .filter_map(|(k, v)| Some((k.as_i64().and_then(|i| usize::try_from(i).ok())?, scalar(v)?)))
                .collect();
            pairs.sort();
            let mut out = Vec::new();
            for (i, n) in pairs {
                while out.len() < i {
                    out.push(format!("class{}", out.len()));
                }
                out.push(n);
            }
            Ok(out)
        }
        Yaml::BadValue => Ok(Vec::new()),
        _ => Err(anyhow!("'names' is neither a list nor a map")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{detection_set, labels, round_trip};
    use crate::Format;

    #[test]
    fn detection_round_trips_except_image_tags() {
        let mut d = detection_set();
        let back = round_trip(Format::Yolo, &d);
        // YOLO keeps boxes only: the Negative image tag comes back as an unlabelled image.
        d.items[1].tags.clear();
        assert_eq!(back.categories, d.categories);
        assert_eq!(labels(&back), labels(&d));
    }

    #[test]
    fn names_as_a_list_or_a_map_and_label_paths() {
        assert_eq!(names("names: [a, 'b c', \"d\\\"e\"]").expect("list"), vec!["a", "b c", "d\"e"]);
        assert_eq!(names("names:\n  0: cat\n  2: dog\n").expect("map"), vec!["cat", "class1", "dog"]);
        assert_eq!(label_path("train/images/x.y.jpg"), "train/labels/x.y.txt");
        assert_eq!(label_path("images/sub/a.png"), "labels/sub/a.txt");
    }
}
