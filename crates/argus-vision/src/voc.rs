//! Pascal VOC annotations (`<size>` and `<object><bndbox>` in pixels) read into normalised boxes.

use crate::detector::GtBox;

/// Boxes of one Pascal VOC annotation file, normalised to the image's `<size>`, all of class 0 (a file without
/// a size gives none).
pub fn voc_boxes(xml: &str) -> Vec<GtBox> {
    let num = |s: &str, tag: &str| -> Option<f32> {
        let a = s.find(&format!("<{tag}>"))? + tag.len() + 2;
        let b = s[a..].find(&format!("</{tag}>"))? + a;
        s[a..b].trim().parse().ok()
    };
    let (Some(w), Some(h)) = (num(xml, "width"), num(xml, "height")) else { return Vec::new() };
    xml.split("<object>")
        .skip(1)
        .filter_map(|o| {
            let (x0, y0, x1, y1) = (num(o, "xmin")?, num(o, "ymin")?, num(o, "xmax")?, num(o, "ymax")?);
            Some(GtBox {
                class: 0,
                left: (x0 / w).clamp(0.0, 1.0),
                top: (y0 / h).clamp(0.0, 1.0),
                width: ((x1 - x0) / w).clamp(0.0, 1.0),
                height: ((y1 - y0) / h).clamp(0.0, 1.0),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voc_annotations_become_normalised_boxes() {
        let xml = "<annotation><size><width>200</width><height>100</height></size>\
                   <object><bndbox><xmin>20</xmin><ymin>10</ymin><xmax>120</xmax><ymax>60</ymax></bndbox></object>\
                   <object><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>200</xmax><ymax>100</ymax></bndbox></object>\
                   </annotation>";
        let b = voc_boxes(xml);
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].left, b[0].top, b[0].width, b[0].height), (0.1, 0.1, 0.5, 0.5));
        assert_eq!(b[1].width, 1.0);
        assert!(voc_boxes("<annotation></annotation>").is_empty());
    }
}
