//! Evaluation arithmetic, with no compute behind it: precision and recall at a threshold, average precision
//! (area under the precision-recall curve, all-point interpolation as in PASCAL VOC 2010+), the standard
//! deviation across folds, and for detection the labelled and detected [`boxes`], their IoU and the greedy
//! matching that scores detections (mean average precision). Training (`argus-vision`), the Training API's
//! performance reports (`argus-core`) and the benchmarks all count with these, so that they agree.

pub mod boxes;

pub use boxes::{box_iou, iou, match_detections, mean_average_precision, Detection, GtBox};

/// Average precision of `scored` (score, is-positive) pairs; `positives` is the total number of positives
/// (it may exceed the positives present, e.g. missed detections). Zero positives give 0.
pub fn average_precision(scored: &[(f64, bool)], positives: usize) -> f64 {
    if positives == 0 {
        return 0.0;
    }
    let mut s: Vec<(f64, bool)> = scored.to_vec();
    s.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut points: Vec<(f64, f64)> = Vec::with_capacity(s.len());
    for (_, pos) in &s {
        if *pos {
            tp += 1;
        } else {
            fp += 1;
        }
        points.push((tp as f64 / positives as f64, tp as f64 / (tp + fp) as f64));
    }
    // Interpolate: precision at recall r is the best precision at any recall >= r.
    let mut ap = 0.0;
    let mut best = 0.0f64;
    let mut prev_recall = points.last().map(|p| p.0).unwrap_or(0.0);
    for (recall, precision) in points.iter().rev() {
        ap += (prev_recall - recall) * best;
        best = best.max(*precision);
        prev_recall = *recall;
    }
    ap + prev_recall * best
}

/// Precision and recall of predictions at `threshold`: (precision, recall). With no predicted positives the
/// precision is 0 (nothing right was said); with no actual positives the recall is 0.
pub fn precision_recall(scored: &[(f64, bool)], positives: usize, threshold: f64) -> (f64, f64) {
    let predicted: Vec<&(f64, bool)> = scored.iter().filter(|(s, _)| *s >= threshold).collect();
    let tp = predicted.iter().filter(|(_, p)| *p).count();
    let precision = if predicted.is_empty() { 0.0 } else { tp as f64 / predicted.len() as f64 };
    let recall = if positives == 0 { 0.0 } else { tp as f64 / positives as f64 };
    (precision, recall)
}

/// Sample standard deviation (0 for fewer than two values).
pub fn std_dev(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (values.len() - 1) as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_and_reversed_rankings() {
        let perfect = [(0.9, true), (0.8, true), (0.3, false), (0.1, false)];
        assert!((average_precision(&perfect, 2) - 1.0).abs() < 1e-12);
        let reversed = [(0.9, false), (0.8, false), (0.3, true), (0.1, true)];
        assert!((average_precision(&reversed, 2) - 0.5).abs() < 1e-12);
        let missed = [(0.9, true)];
        assert!((average_precision(&missed, 2) - 0.5).abs() < 1e-12);
        assert_eq!(average_precision(&[], 0), 0.0);
    }

    #[test]
    fn interleaved_ranking_matches_hand_computation() {
        // Ranks: P N P N -> precision 1, 1/2, 2/3, 1/2 at recalls 1/2, 1/2, 1, 1 -> AP = 0.5*1 + 0.5*2/3.
        let s = [(0.9, true), (0.8, false), (0.7, true), (0.6, false)];
        assert!((average_precision(&s, 2) - (0.5 + 1.0 / 3.0)).abs() < 1e-12);
    }

    #[test]
    fn threshold_metrics() {
        let s = [(0.9, true), (0.6, false), (0.4, true)];
        assert_eq!(precision_recall(&s, 2, 0.5), (0.5, 0.5));
        assert_eq!(precision_recall(&s, 2, 0.95), (0.0, 0.0));
        assert!((std_dev(&[1.0, 3.0]) - 2f64.sqrt()).abs() < 1e-12);
    }
}
