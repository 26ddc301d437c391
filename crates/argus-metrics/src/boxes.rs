//! Boxes as training labels them and detectors report them (normalised to [0, 1], class-indexed), their
//! intersection over union, the greedy matching that decides which detections found a labelled box, and the
//! mean average precision over a set of images.

use crate::average_precision;

/// A labelled box, normalised to [0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GtBox {
    /// Class index.
    pub class: usize,
    /// Left edge.
    pub left: f32,
    /// Top edge.
    pub top: f32,
    /// Width.
    pub width: f32,
    /// Height.
    pub height: f32,
}

/// A detected box, normalised to [0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// Class index.
    pub class: usize,
    /// Probability in [0, 1].
    pub score: f32,
    /// Left edge.
    pub left: f32,
    /// Top edge.
    pub top: f32,
    /// Width.
    pub width: f32,
    /// Height.
    pub height: f32,
}

impl GtBox {
    /// `[left, top, width, height]`, for [`iou`].
    pub fn ltwh(&self) -> [f64; 4] {
        [self.left as f64, self.top as f64, self.width as f64, self.height as f64]
    }
}

impl Detection {
    /// `[left, top, width, height]`, for [`iou`].
    pub fn ltwh(&self) -> [f64; 4] {
        [self.left as f64, self.top as f64, self.width as f64, self.height as f64]
    }
}

/// Intersection over union of two `[left, top, width, height]` boxes (0 when both are empty).
pub fn iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let x0 = a[0].max(b[0]);
    let y0 = a[1].max(b[1]);
    let x1 = (a[0] + a[2]).min(b[0] + b[2]);
    let y1 = (a[1] + a[3]).min(b[1] + b[3]);
    let inter = (x1 - x0).max(0.0) * (y1 - y0).max(0.0);
    let union = a[2] * a[3] + b[2] * b[3] - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// IoU of a detection and a labelled box.
pub fn box_iou(d: &Detection, g: &GtBox) -> f64 {
    iou(d.ltwh(), g.ltwh())
}

/// Matches detections of one image to its labelled boxes at `overlap` IoU, greedily by score (each box
/// matches at most once, same class only): (score, class, true positive) per detection.
pub fn match_detections(dets: &[Detection], truth: &[GtBox], overlap: f64) -> Vec<(f32, usize, bool)> {
    let mut order: Vec<usize> = (0..dets.len()).collect();
    order.sort_by(|a, b| dets[*b].score.total_cmp(&dets[*a].score));
    let mut used = vec![false; truth.len()];
    let mut out = Vec::with_capacity(dets.len());
    for i in order {
        let d = &dets[i];
        let best = truth
            .iter()
            .enumerate()
            .filter(|(j, g)| !used[*j] && g.class == d.class)
            .map(|(j, g)| (j, box_iou(d, g)))
            .filter(|(_, v)| *v >= overlap)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((j, _)) = best {
            used[j] = true;
        }
        out.push((d.score, d.class, best.is_some()));
    }
    out
}

/// Mean average precision at `overlap` IoU over images and classes: (mean over classes, per-class AP).
/// A class with no labelled box in `truth` is left out of the mean.
pub fn mean_average_precision(
    dets: &[Vec<Detection>],
    truth: &[Vec<GtBox>],
    classes: usize,
    overlap: f64,
) -> (f64, Vec<f64>) {
    let mut scored: Vec<Vec<(f64, bool)>> = vec![Vec::new(); classes];
    let mut positives = vec![0usize; classes];
    for (d, t) in dets.iter().zip(truth) {
        for g in t {
            if g.class < classes {
                positives[g.class] += 1;
            }
        }
        for (score, class, tp) in match_detections(d, t, overlap) {
            if class < classes {
                scored[class].push((score as f64, tp));
            }
        }
    }
    let aps: Vec<f64> = (0..classes).map(|c| average_precision(&scored[c], positives[c])).collect();
    let present: Vec<f64> = (0..classes).filter(|c| positives[*c] > 0).map(|c| aps[c]).collect();
    let map = if present.is_empty() { 0.0 } else { present.iter().sum::<f64>() / present.len() as f64 };
    (map, aps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_is_greedy_by_score_and_class_aware() {
        let g = [GtBox { class: 0, left: 0.1, top: 0.1, width: 0.3, height: 0.3 }];
        let d = |class, score, left| Detection { class, score, left, top: 0.1, width: 0.3, height: 0.3 };
        let m = match_detections(&[d(0, 0.4, 0.12), d(0, 0.9, 0.1), d(1, 0.8, 0.1)], &g, 0.5);
        assert_eq!(m, vec![(0.9, 0, true), (0.8, 1, false), (0.4, 0, false)]);
    }

    #[test]
    fn iou_of_overlapping_disjoint_and_empty_boxes() {
        assert!((iou([0.0, 0.0, 2.0, 1.0], [1.0, 0.0, 2.0, 1.0]) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(iou([0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 1.0, 1.0]), 0.0);
        assert_eq!(iou([0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]), 0.0);
    }

    #[test]
    fn map_leaves_out_classes_with_nothing_to_find() {
        let truth = vec![vec![GtBox { class: 0, left: 0.1, top: 0.1, width: 0.3, height: 0.3 }]];
        let dets = vec![vec![Detection { class: 0, score: 0.9, left: 0.1, top: 0.1, width: 0.3, height: 0.3 }]];
        let (map, aps) = mean_average_precision(&dets, &truth, 2, 0.5);
        assert_eq!((map, aps), (1.0, vec![1.0, 0.0]));
    }
}
