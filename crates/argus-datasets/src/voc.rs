//! Pascal VOC detection: `Annotations/<stem>.xml` per image (`<filename>`, `<size>`, `<object><name>` +
//! `<bndbox>` with `xmin ymin xmax ymax` in whole pixels, read as edges from the top-left corner, as LabelImg and
//! CVAT write them) and the images in `JPEGImages/`. An image without objects keeps its XML (a negative image);
//! VOC has no image-level tags. Reading finds each XML's image by `<filename>` beside it, in `JPEGImages/`, or by
//! its stem anywhere in the dataset.

use std::collections::HashMap;

use anyhow::{anyhow, Context, Result};
use serde::Deserialize;

use crate::{Dataset, Files, Item, Labelled, Sink};

/// The folder of the images.
pub const IMAGES: &str = "JPEGImages";
/// The folder of the annotation files.
pub const ANNOTATIONS: &str = "Annotations";

#[derive(Deserialize)]
struct Annotation {
    #[serde(default)]
    filename: Option<String>,
    #[serde(default)]
    size: Option<Size>,
    #[serde(default, rename = "object")]
    objects: Vec<Object>,
}

#[derive(Deserialize)]
struct Size {
    width: f64,
    height: f64,
}

#[derive(Deserialize)]
struct Object {
    name: String,
    bndbox: BndBox,
}

#[derive(Deserialize)]
struct BndBox {
    xmin: f64,
    ymin: f64,
    xmax: f64,
    ymax: f64,
}

/// XML text with `& < > " '` escaped.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

/// Writes one XML per image and `ImageSets/Main/default.txt` listing them.
pub fn write(d: &Dataset, sink: &mut Sink) -> Result<()> {
    let mut list = String::new();
    for item in &d.items {
        let mut xml = format!(
            "<annotation>\n  <folder>{IMAGES}</folder>\n  <filename>{}</filename>\n  <source><database>Argus</database></source>\n  \
             <size>\n    <width>{}</width>\n    <height>{}</height>\n    <depth>3</depth>\n  </size>\n  <segmented>0</segmented>\n",
            escape(&item.path),
            item.width,
            item.height
        );
        for b in &item.boxes {
            let (w, h) = (item.width as f64, item.height as f64);
            xml.push_str(&format!(
                "  <object>\n    <name>{}</name>\n    <pose>Unspecified</pose>\n    <truncated>0</truncated>\n    \
                 <difficult>0</difficult>\n    <bndbox>\n      <xmin>{}</xmin>\n      <ymin>{}</ymin>\n      \
                 <xmax>{}</xmax>\n      <ymax>{}</ymax>\n    </bndbox>\n  </object>\n",
                escape(&d.categories[b.category]),
                (b.left * w).round(),
                (b.top * h).round(),
                ((b.left + b.width) * w).round(),
                ((b.top + b.height) * h).round()
            ));
        }
        xml.push_str("</annotation>\n");
        let stem = crate::stem(&item.path);
        sink.put(&format!("{ANNOTATIONS}/{stem}.xml"), xml.as_bytes())?;
        list.push_str(stem);
        list.push('\n');
    }
    sink.put("ImageSets/Main/default.txt", list.as_bytes())
}

/// Whether the files look like a VOC detection set (XML annotations).
pub fn is_detection(files: &Files) -> bool {
    files.list().is_ok_and(|all| all.iter().any(|p| p.to_ascii_lowercase().ends_with(".xml")))
}

/// Reads a VOC detection set.
pub fn read(files: &mut Files) -> Result<Dataset> {
    let all = files.list()?;
    let present: std::collections::HashSet<&str> = all.iter().map(String::as_str).collect();
    let by_stem: HashMap<&str, &String> =
        all.iter().filter(|p| crate::is_image_path(p)).map(|p| (crate::stem(p), p)).collect();
    let mut categories: Vec<String> = Vec::new();
    let mut items = Vec::new();
    for xml_path in all.iter().filter(|p| p.to_ascii_lowercase().ends_with(".xml")) {
        let text = files.read_text(xml_path)?;
        let a: Annotation =
            quick_xml::de::from_str(&text).with_context(|| format!("{xml_path} is not a Pascal VOC annotation"))?;
        let dir = xml_path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let parent = dir.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let join = |a: &str, b: &str| if a.is_empty() { b.to_string() } else { format!("{a}/{b}") };
        let image = a
            .filename
            .as_deref()
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .and_then(|f| {
                [join(dir, f), join(&join(parent, IMAGES), f), join(IMAGES, f)]
                    .into_iter()
                    .find(|p| present.contains(p.as_str()))
            })
            .or_else(|| by_stem.get(crate::stem(xml_path)).map(|p| p.to_string()))
            .ok_or_else(|| anyhow!("the image of {xml_path} is not in the dataset"))?;
        let (width, height) = match &a.size {
            Some(s) if s.width > 0.0 && s.height > 0.0 => (s.width as u32, s.height as u32),
            _ => crate::dimensions(&files.read(&image)?).with_context(|| image.clone())?,
        };
        let (w, h) = (width as f64, height as f64);
        let mut boxes = Vec::new();
        for o in &a.objects {
            let name = o.name.trim().to_string();
            let category = match categories.iter().position(|c| *c == name) {
                Some(i) => i,
                None => {
                    categories.push(name);
                    categories.len() - 1
                }
            };
            let b = &o.bndbox;
            boxes.push(Labelled {
                category,
                left: b.xmin / w,
                top: b.ymin / h,
                width: (b.xmax - b.xmin) / w,
                height: (b.ymax - b.ymin) / h,
                ..Default::default()
            });
        }
        items.push(Item { path: image, width, height, tags: vec![], boxes });
    }
    Ok(Dataset { detection: true, categories, items })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{detection_set, labels, round_trip};
    use crate::Format;

    #[test]
    fn detection_round_trips_within_a_pixel() {
        let mut d = detection_set();
        let back = round_trip(Format::Voc, &d);
        d.items[1].tags.clear();
        // Categories come back in the order they first appear; compare by name.
        assert_eq!(labels(&back), labels(&d));
    }

    #[test]
    fn a_labelimg_file_reads() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut sink = Sink::dir(dir.path()).expect("sink");
        let xml = "<annotation><folder>images</folder><filename>r1.jpg</filename><size><width>650</width>\
                   <height>417</height><depth>3</depth></size><object><name>raccoon</name><pose>Unspecified</pose>\
                   <bndbox><xmin>81</xmin><ymin>88</ymin><xmax>522</xmax><ymax>408</ymax></bndbox></object>\
                   </annotation>";
        sink.put("annotations/r1.xml", xml.as_bytes()).expect("xml");
        sink.put("images/r1.jpg", b"not decoded").expect("img");
        let d = read(&mut Files::open(dir.path()).expect("open")).expect("read");
        assert_eq!(d.categories, vec!["raccoon"]);
        assert_eq!(d.items[0].path, "images/r1.jpg");
        let b = d.items[0].boxes[0].clone();
        assert!((b.left - 81.0 / 650.0).abs() < 1e-9 && (b.height - 320.0 / 417.0).abs() < 1e-9);
    }
}
