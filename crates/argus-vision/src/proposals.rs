//! Class-agnostic region proposals from the backbone's stride-16 features ("objectness"), for labelling help
//! (GetImageRegionProposals); a heuristic, not a trained detector.
//!
//! Two maps over the feature grid: how unlike the image's border each cell's features are (a background
//! prior: objects seldom fill the border), and the mean absolute activation. Each is normalised, thresholded
//! at several levels and split into connected components; a component's bounding box is scored by its mean
//! value, and overlapping boxes are suppressed. Background-contrast boxes rank first — on the detection
//! benchmark's unseen scenes they find far more objects (`argus-bench proposals`) — and activation boxes fill
//! the places left.

use argus_metrics::GtBox;
use image::RgbImage;

use crate::backbone::{tensor_from_rgb, EfficientNetLite0};

/// A proposed box, normalised to [0, 1], with a confidence in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Proposal {
    /// Left edge.
    pub left: f64,
    /// Top edge.
    pub top: f64,
    /// Width.
    pub width: f64,
    /// Height.
    pub height: f64,
    /// Confidence.
    pub confidence: f64,
}

/// Intersection over union of two proposals.
pub fn iou(a: &Proposal, b: &Proposal) -> f64 {
    argus_metrics::iou(a.ltwh(), b.ltwh())
}

impl Proposal {
    /// `[left, top, width, height]`.
    pub fn ltwh(&self) -> [f64; 4] {
        [self.left, self.top, self.width, self.height]
    }
}

impl From<&GtBox> for Proposal {
    /// A labelled box as a proposal of confidence 1.
    fn from(g: &GtBox) -> Self {
        let [left, top, width, height] = g.ltwh();
        Self { left, top, width, height, confidence: 1.0 }
    }
}

/// Greedy non-maximum suppression: keeps the most confident boxes, dropping any that overlap a kept one by
/// more than `threshold` IoU.
pub fn nms(boxes: Vec<Proposal>, threshold: f64) -> Vec<Proposal> {
    nms_indices(&boxes, threshold, usize::MAX).into_iter().map(|i| boxes[i]).collect()
}

/// [`nms`] that answers the kept boxes' indices in `boxes`, most confident first, stopping after `max`.
pub fn nms_indices(boxes: &[Proposal], threshold: f64, max: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|a, b| boxes[*b].confidence.total_cmp(&boxes[*a].confidence));
    let mut kept: Vec<usize> = Vec::new();
    for i in order {
        if kept.len() >= max {
            break;
        }
        if kept.iter().all(|k| iou(&boxes[*k], &boxes[i]) <= threshold) {
            kept.push(i);
        }
    }
    kept
}

/// Proposals from an activation map (row-major `h × w`, any scale).
pub fn proposals_from_energy(energy: &[f32], w: usize, h: usize, max: usize) -> Vec<Proposal> {
    let hi = energy.iter().copied().fold(f32::MIN, f32::max);
    let lo = energy.iter().copied().fold(f32::MAX, f32::min);
    if energy.is_empty() || hi <= lo {
        return Vec::new();
    }
    let norm: Vec<f32> = energy.iter().map(|e| (e - lo) / (hi - lo)).collect();
    let mut boxes = Vec::new();
    for level in [0.3f32, 0.45, 0.6, 0.75] {
        let mut seen = vec![false; w * h];
        for start in 0..w * h {
            if seen[start] || norm[start] < level {
                continue;
            }
            let (mut x0, mut y0, mut x1, mut y1, mut sum, mut n) = (w, h, 0, 0, 0f32, 0usize);
            let mut stack = vec![start];
            seen[start] = true;
            while let Some(i) = stack.pop() {
                let (x, y) = (i % w, i / w);
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
                sum += norm[i];
                n += 1;
                let mut push = |j: usize| {
                    if !seen[j] && norm[j] >= level {
                        seen[j] = true;
                        stack.push(j);
                    }
                };
                if x > 0 {
                    push(i - 1);
                }
                if x + 1 < w {
                    push(i + 1);
                }
                if y > 0 {
                    push(i - w);
                }
                if y + 1 < h {
                    push(i + w);
                }
            }
            if n < 2 {
                continue;
            }
            boxes.push(Proposal {
                left: x0 as f64 / w as f64,
                top: y0 as f64 / h as f64,
                width: (x1 - x0 + 1) as f64 / w as f64,
                height: (y1 - y0 + 1) as f64 / h as f64,
                confidence: (sum / n as f32) as f64,
            });
        }
    }
    let mut kept = nms(boxes, 0.7);
    kept.truncate(max);
    kept
}

/// Region proposals for an image, best first: boxes from the background-contrast map first, then boxes from
/// the activation-energy map in the places left (ranked after them), overlaps above 0.7 IoU dropped.
pub fn propose(net: &EfficientNetLite0, img: &RgbImage, max: usize) -> candle_core::Result<Vec<Proposal>> {
    let resized = image::imageops::resize(img, 320, 320, image::imageops::FilterType::Triangle);
    let x = tensor_from_rgb(&resized)?;
    let (s16, _) = net.feature_maps(&x)?;
    let (_, c, h, w) = s16.dims4()?;
    let activation = s16.abs()?.mean(1)?.flatten_all()?.to_vec1::<f32>()?;
    let contrast = background_contrast(&s16.flatten_all()?.to_vec1::<f32>()?, c, w, h);
    let mut kept = proposals_from_energy(&contrast, w, h, max);
    let floor = kept.last().map_or(1.0, |p| p.confidence);
    for p in proposals_from_energy(&activation, w, h, usize::MAX) {
        if kept.len() >= max {
            break;
        }
        if kept.iter().all(|k| iou(k, &p) <= 0.7) {
            kept.push(Proposal { confidence: p.confidence * floor, ..p });
        }
    }
    Ok(kept)
}

/// How unlike the image's border each cell of a feature map (`c` planes of h × w) is: the cosine distance of
/// its feature vector to its nearest border cells (the mean of the closest tenth). Objects seldom fill the
/// border, so cells that resemble no part of it are likely on one ("background prior").
pub fn background_contrast(feats: &[f32], c: usize, w: usize, h: usize) -> Vec<f32> {
    let p = w * h;
    let unit: Vec<Vec<f32>> = (0..p)
        .map(|i| {
            let v: Vec<f32> = (0..c).map(|k| feats[k * p + i]).collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
            v.into_iter().map(|x| x / n).collect()
        })
        .collect();
    let border: Vec<usize> = (0..p).filter(|&i| i % w == 0 || i % w == w - 1 || i / w == 0 || i / w == h - 1).collect();
    let nearest = (border.len() / 10).max(1);
    (0..p)
        .map(|i| {
            let mut d: Vec<f32> =
                border.iter().map(|&b| 1.0 - unit[i].iter().zip(&unit[b]).map(|(x, y)| x * y).sum::<f32>()).collect();
            d.sort_by(f32::total_cmp);
            d[..nearest.min(d.len())].iter().sum::<f32>() / nearest as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bright_blob_becomes_a_box() {
        let (w, h) = (10, 10);
        let mut e = vec![0.1f32; w * h];
        for y in 2..5 {
            for x in 6..9 {
                e[y * w + x] = 1.0;
            }
        }
        let p = proposals_from_energy(&e, w, h, 5);
        let best = p.first().copied().expect("a proposal");
        assert!((best.left - 0.6).abs() < 1e-9 && (best.top - 0.2).abs() < 1e-9, "{best:?}");
        assert!((best.width - 0.3).abs() < 1e-9 && (best.height - 0.3).abs() < 1e-9);
    }

    #[test]
    fn cells_unlike_the_border_stand_out() {
        // Two channels on a 6 × 6 grid: the background points one way, a 2 × 2 object another.
        let (w, h, c) = (6, 6, 2);
        let mut f = vec![0f32; c * w * h];
        for i in 0..w * h {
            let object = matches!((i % w, i / w), (2..=3, 2..=3));
            f[i] = if object { 0.1 } else { 1.0 };
            f[w * h + i] = if object { 1.0 } else { 0.2 };
        }
        let e = background_contrast(&f, c, w, h);
        let inside = e[2 * w + 2];
        assert!(e.iter().enumerate().all(|(i, &v)| matches!((i % w, i / w), (2..=3, 2..=3)) || v < inside / 10.0));
        let best = proposals_from_energy(&e, w, h, 3)[0];
        assert!((best.left - 2.0 / 6.0).abs() < 1e-9 && (best.width - 2.0 / 6.0).abs() < 1e-9, "{best:?}");
    }

    #[test]
    fn nms_drops_overlaps() {
        let a = Proposal { left: 0.0, top: 0.0, width: 0.5, height: 0.5, confidence: 0.9 };
        let b = Proposal { confidence: 0.8, left: 0.01, ..a };
        let c = Proposal { left: 0.5, top: 0.5, width: 0.5, height: 0.5, confidence: 0.7 };
        assert_eq!(nms(vec![b, c, a], 0.5), vec![a, c]);
        assert!((iou(&a, &a) - 1.0).abs() < 1e-12);
    }
}
