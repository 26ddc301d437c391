//! The detector's second stage: it rescores and refines the dense head's candidate boxes from features pooled
//! over each box, as R-CNN does over a frozen backbone.
//!
//! A box's features are the area-weighted mean of the grid cells inside it (all of a cell's channels), the mean
//! of a ring around it (the box grown 1.6×, minus the box: tells whether the object goes on past an edge), the
//! stride-16 means of its four quadrants (tells whether a part of the box is empty) and its geometry. Training
//! samples boxes around every labelled box (jittered in position and size) and anywhere in the image, and fits,
//! to convergence with L-BFGS: a per-tag logistic scorer whose soft target rises from 0 at IoU 0.35 to 1 at IoU
//! 0.65 (so scores rank boxes by how well they fit, which is what average precision rewards), and a ridge
//! regression of the usual R-CNN box deltas for the boxes that overlap a labelled one. Deterministic given the
//! seed.

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};

use crate::heads::detector::{tensor_values, FeatureGrid, GtBox};
use crate::heads::logreg::{Loss, Model, Problem};
use crate::proposals::{iou, Proposal};

/// Length of one box's feature vector on grids of `dim` channels per cell, `s16` of them stride-16 ones: the
/// inside and ring means of every channel, the stride-16 means of the four quadrants, the geometry.
pub fn box_dim(dim: usize, s16: usize) -> usize {
    2 * dim + 4 * s16 + 4
}
/// How much a box is grown to find its ring.
pub(crate) const RING: f32 = 1.6;
/// IoU at or below which a sample's score target is 0, and at or above which it is 1.
const IOU_LOW: f32 = 0.35;
const IOU_HIGH: f32 = 0.65;

/// Most candidates a stored head may ask for per image.
const MAX_CANDIDATES: usize = 500;

/// How the second stage is trained and run.
#[derive(Debug, Clone, Copy)]
pub struct BoxRecipe {
    /// Jittered boxes sampled around each labelled box of a view.
    pub jitters: usize,
    /// Boxes sampled anywhere in a view.
    pub randoms: usize,
    /// L2 penalty of the scorer (on standardised features).
    pub score_lambda: f64,
    /// L2 penalty of the box refiner.
    pub box_lambda: f64,
    /// Candidates taken from the dense head per image.
    pub candidates: usize,
    /// Refinement passes applied to a candidate before it is scored.
    pub refinements: usize,
    /// Weight of the dense head's score in the final one (a weighted geometric mean with the stage's own).
    pub blend: f32,
    /// Scale every feature to unit variance (otherwise only centre them and scale all by one number).
    pub standardise: bool,
}

impl Default for BoxRecipe {
    fn default() -> Self {
        Self {
            jitters: 16,
            randoms: 24,
            score_lambda: 1.0,
            box_lambda: 3.0,
            candidates: 40,
            refinements: 2,
            blend: 0.5,
            standardise: false,
        }
    }
}

/// A box as `[x0, y0, x1, y1]`, normalised to [0, 1].
pub type Corners = [f32; 4];

/// Corners of a labelled box.
pub fn corners(b: &GtBox) -> Corners {
    [b.left, b.top, b.left + b.width, b.top + b.height]
}

/// A box as a [`Proposal`] of confidence `confidence`.
pub fn proposal(c: &Corners, confidence: f32) -> Proposal {
    Proposal {
        left: c[0] as f64,
        top: c[1] as f64,
        width: (c[2] - c[0]) as f64,
        height: (c[3] - c[1]) as f64,
        confidence: confidence as f64,
    }
}

/// Intersection over union of two boxes.
pub fn corner_iou(a: &Corners, b: &Corners) -> f32 {
    iou(&proposal(a, 1.0), &proposal(b, 1.0)) as f32
}

/// A feature grid's summed-area table: the area-weighted sum of any box's cells in four bilinear reads.
///
/// `data[(r * (cols + 1) + c) * dim + k]` is the sum of channel `k` over the cells above and left of grid
/// corner `(r, c)`. Within a cell that integral is bilinear in the corner's position, so interpolating the table
/// at a fractional corner is exact, and a box's sum is `I(x1, y1) − I(x0, y1) − I(x1, y0) + I(x0, y0)`.
pub struct GridIntegral {
    rows: usize,
    cols: usize,
    dim: usize,
    s16: usize,
    data: Vec<f32>,
}

impl GridIntegral {
    /// The table of a grid.
    pub fn new(grid: &FeatureGrid) -> Self {
        let (rows, cols, dim) = (grid.rows, grid.cols, grid.dim);
        let stride = (cols + 1) * dim;
        let mut data = vec![0f32; (rows + 1) * stride];
        let mut line = vec![0f32; dim];
        for r in 0..rows {
            line.iter_mut().for_each(|v| *v = 0.0);
            let (above, below) = data.split_at_mut((r + 1) * stride);
            let above = &above[r * stride..];
            for c in 0..cols {
                let cell = &grid.data[(r * cols + c) * dim..][..dim];
                let out = &mut below[(c + 1) * dim..][..dim];
                let up = &above[(c + 1) * dim..][..dim];
                for k in 0..dim {
                    line[k] += cell[k].to_f32();
                    out[k] = up[k] + line[k];
                }
            }
        }
        Self { rows, cols, dim, s16: grid.s16, data }
    }

    /// Adds `sign ×` the table interpolated at `(x, y)` (in cells, inside the grid) to `out`.
    fn add_corner(&self, x: f32, y: f32, sign: f32, out: &mut [f32]) {
        let c = (x.floor() as usize).min(self.cols.saturating_sub(1));
        let r = (y.floor() as usize).min(self.rows.saturating_sub(1));
        let (fx, fy) = (x - c as f32, y - r as f32);
        let dim = self.dim;
        let stride = (self.cols + 1) * dim;
        let n = out.len();
        let weights = [(1.0 - fx) * (1.0 - fy), fx * (1.0 - fy), (1.0 - fx) * fy, fx * fy];
        let offsets = [r * stride + c * dim, r * stride + (c + 1) * dim];
        let offsets = [offsets[0], offsets[1], offsets[0] + stride, offsets[1] + stride];
        for (w, o) in weights.iter().zip(offsets) {
            let w = sign * w;
            if w == 0.0 {
                continue;
            }
            for (v, t) in out.iter_mut().zip(&self.data[o..o + n]) {
                *v += w * t;
            }
        }
    }

    /// Area-weighted sums of the first `out.len()` channels over box `b` (clipped to the grid); returns the
    /// covered area in cells.
    fn box_sums(&self, b: &Corners, out: &mut [f32]) -> f32 {
        out.iter_mut().for_each(|v| *v = 0.0);
        let (rows, cols) = (self.rows as f32, self.cols as f32);
        let (x0, x1) = (b[0].clamp(0.0, 1.0) * cols, b[2].clamp(0.0, 1.0) * cols);
        let (y0, y1) = (b[1].clamp(0.0, 1.0) * rows, b[3].clamp(0.0, 1.0) * rows);
        if x1 <= x0 || y1 <= y0 || self.rows == 0 || self.cols == 0 {
            return 0.0;
        }
        self.add_corner(x1, y1, 1.0, out);
        self.add_corner(x0, y1, -1.0, out);
        self.add_corner(x1, y0, -1.0, out);
        self.add_corner(x0, y0, 1.0, out);
        (x1 - x0) * (y1 - y0)
    }
}

/// The feature vector of a box on a grid ([`box_dim`] values).
pub fn box_features(grid: &GridIntegral, b: &Corners) -> Vec<f32> {
    let (dim, s16) = (grid.dim, grid.s16);
    let mut out = vec![0f32; box_dim(dim, s16)];
    let mut inside = vec![0f32; dim];
    let area = grid.box_sums(b, &mut inside).max(1e-6);
    let (cx, cy) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
    let (w, h) = ((b[2] - b[0]).max(1e-4), (b[3] - b[1]).max(1e-4));
    let grown = [cx - w * RING / 2.0, cy - h * RING / 2.0, cx + w * RING / 2.0, cy + h * RING / 2.0];
    let mut outer = vec![0f32; dim];
    let outer_area = grid.box_sums(&grown, &mut outer);
    let ring_area = outer_area - area;
    for k in 0..dim {
        out[k] = inside[k] / area;
        // A box that fills the image has no ring: its ring reads as its inside.
        out[dim + k] = if ring_area > 0.05 { (outer[k] - inside[k]) / ring_area } else { out[k] };
    }
    let mut quad = vec![0f32; s16];
    for (q, (qx, qy)) in [(0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.5, 0.5)].into_iter().enumerate() {
        let part = [b[0] + qx * w, b[1] + qy * h, b[0] + (qx + 0.5) * w, b[1] + (qy + 0.5) * h];
        let a = grid.box_sums(&part, &mut quad).max(1e-6);
        for k in 0..s16 {
            out[2 * dim + q * s16 + k] = quad[k] / a;
        }
    }
    let g = 2 * dim + 4 * s16;
    out[g..].copy_from_slice(&[cx, cy, w.ln(), h.ln()]);
    out
}

/// R-CNN deltas that take box `p` to box `g`: centre shifts in units of `p`'s size, log size ratios.
pub fn deltas(p: &Corners, g: &Corners) -> [f32; 4] {
    let (pw, ph) = ((p[2] - p[0]).max(1e-4), (p[3] - p[1]).max(1e-4));
    let (gw, gh) = ((g[2] - g[0]).max(1e-4), (g[3] - g[1]).max(1e-4));
    let (pcx, pcy) = (p[0] + pw / 2.0, p[1] + ph / 2.0);
    let (gcx, gcy) = (g[0] + gw / 2.0, g[1] + gh / 2.0);
    [(gcx - pcx) / pw, (gcy - pcy) / ph, (gw / pw).ln(), (gh / ph).ln()]
}

/// Box `p` moved by deltas `d` (the inverse of [`deltas`]), clipped to the image.
pub fn apply_deltas(p: &Corners, d: &[f32; 4]) -> Corners {
    let (pw, ph) = ((p[2] - p[0]).max(1e-4), (p[3] - p[1]).max(1e-4));
    let (cx, cy) = (p[0] + pw / 2.0 + d[0] * pw, p[1] + ph / 2.0 + d[1] * ph);
    let (w, h) = (pw * d[2].clamp(-1.0, 1.0).exp(), ph * d[3].clamp(-1.0, 1.0).exp());
    [
        (cx - w / 2.0).clamp(0.0, 1.0),
        (cy - h / 2.0).clamp(0.0, 1.0),
        (cx + w / 2.0).clamp(0.0, 1.0),
        (cy + h / 2.0).clamp(0.0, 1.0),
    ]
}

/// Boxes sampled in one view: every labelled box, jitters around each, and boxes anywhere.
fn sample_boxes(truth: &[GtBox], recipe: &BoxRecipe, rng: &mut impl Rng) -> Vec<Corners> {
    let mut out = Vec::new();
    for g in truth {
        let c = corners(g);
        out.push(c);
        let (w, h) = (g.width.max(1e-3), g.height.max(1e-3));
        for _ in 0..recipe.jitters {
            let (dx, dy) = (rng.gen_range(-0.3f32..0.3) * w, rng.gen_range(-0.3f32..0.3) * h);
            let (sw, sh) = (rng.gen_range(-0.5f32..0.5).exp(), rng.gen_range(-0.5f32..0.5).exp());
            let (cx, cy) = (g.left + w / 2.0 + dx, g.top + h / 2.0 + dy);
            let (nw, nh) = (w * sw, h * sh);
            out.push([
                (cx - nw / 2.0).clamp(0.0, 1.0),
                (cy - nh / 2.0).clamp(0.0, 1.0),
                (cx + nw / 2.0).clamp(0.0, 1.0),
                (cy + nh / 2.0).clamp(0.0, 1.0),
            ]);
        }
    }
    for _ in 0..recipe.randoms {
        let (w, h) = (rng.gen_range(0.08f32.ln()..0.0).exp(), rng.gen_range(0.08f32.ln()..0.0).exp());
        let (x, y) = (rng.gen_range(0.0..=(1.0 - w)), rng.gen_range(0.0..=(1.0 - h)));
        out.push([x, y, x + w, y + h]);
    }
    out.retain(|b| b[2] - b[0] > 1e-3 && b[3] - b[1] > 1e-3);
    out
}

/// `(x − mean) · inv_std`, in place, for one feature row.
fn standardise(row: &mut [f32], mean: &[f32], inv_std: &[f32]) {
    for ((x, m), s) in row.iter_mut().zip(mean).zip(inv_std) {
        *x = (*x - m) * s;
    }
}

/// The fitted second stage.
#[derive(Debug, Clone)]
pub struct BoxStage {
    classes: usize,
    pub(crate) refinements: usize,
    pub(crate) candidates: usize,
    pub(crate) blend: f32,
    pub(crate) mean: Vec<f32>,
    pub(crate) inv_std: Vec<f32>,
    pub(crate) scorer: Model,
    pub(crate) refiner: Model,
}

impl BoxStage {
    /// Fits the scorer and the refiner on boxes sampled in the training views.
    pub fn fit(
        grids: &[&FeatureGrid],
        boxes: &[Vec<GtBox>],
        classes: usize,
        recipe: &BoxRecipe,
        seed: u64,
    ) -> candle_core::Result<Self> {
        use rayon::prelude::*;
        let Some(first) = grids.first() else { candle_core::bail!("no grids to train the second stage on") };
        let d = box_dim(first.dim, first.s16);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed_b0c5);
        // Boxes are drawn in view order from one generator, then featurised in parallel (in order).
        let samples: Vec<Vec<Corners>> = boxes.iter().map(|truth| sample_boxes(truth, recipe, &mut rng)).collect();
        let features: Vec<Vec<Vec<f32>>> = grids
            .par_iter()
            .zip(&samples)
            .map(|(grid, sampled)| {
                let table = GridIntegral::new(grid);
                sampled.iter().map(|b| box_features(&table, b)).collect()
            })
            .collect();
        // Every sampled box is a scorer row; those overlapping a labelled box are also refiner rows.
        let (mut xs, mut ys, mut refine_rows, mut ry) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((truth, sampled), feats) in boxes.iter().zip(&samples).zip(features) {
            let gt: Vec<Corners> = truth.iter().map(corners).collect();
            for (b, f) in sampled.iter().zip(feats) {
                let best = gt.iter().enumerate().map(|(i, g)| (i, corner_iou(b, g))).max_by(|a, b| a.1.total_cmp(&b.1));
                let mut target = vec![0f32; classes];
                if let Some((i, overlap)) = best {
                    target[truth[i].class] = ((overlap - IOU_LOW) / (IOU_HIGH - IOU_LOW)).clamp(0.0, 1.0);
                    if overlap >= IOU_LOW {
                        refine_rows.push(xs.len() / d);
                        ry.extend_from_slice(&deltas(b, &gt[i]));
                    }
                }
                xs.extend(f);
                ys.extend(target);
            }
        }
        let n = xs.len() / d;
        if n == 0 {
            candle_core::bail!("no boxes to train the second stage on");
        }
        let mut mean = vec![0f64; d];
        let mut sq = vec![0f64; d];
        for row in xs.chunks_exact(d) {
            for (k, v) in row.iter().enumerate() {
                mean[k] += *v as f64;
                sq[k] += (*v as f64) * (*v as f64);
            }
        }
        let mean: Vec<f32> = mean.iter().map(|m| (m / n as f64) as f32).collect();
        let mut inv_std: Vec<f32> =
            sq.iter().zip(&mean).map(|(s, m)| 1.0 / (((s / n as f64) as f32 - m * m).max(0.0).sqrt() + 1e-3)).collect();
        if !recipe.standardise {
            // One scale for all: the root mean variance.
            let var: f32 = inv_std.iter().map(|s| 1.0 / (s * s)).sum::<f32>() / d as f32;
            inv_std.iter_mut().for_each(|s| *s = 1.0 / var.sqrt().max(1e-6));
        }
        for row in xs.chunks_exact_mut(d) {
            standardise(row, &mean, &inv_std);
        }
        let rx: Vec<f32> = refine_rows.iter().flat_map(|r| &xs[r * d..(r + 1) * d]).copied().collect();
        let scorer =
            Problem { x: &xs, y: &ys, d, c: classes, loss: Loss::Sigmoid }.solve(recipe.score_lambda, None, 300);
        let refiner = if rx.is_empty() {
            Model { weight: vec![0.0; 4 * d], bias: vec![0.0; 4] }
        } else {
            Problem { x: &rx, y: &ry, d, c: 4, loss: Loss::Squared }.solve(recipe.box_lambda, None, 300)
        };
        Ok(Self {
            classes,
            refinements: recipe.refinements,
            candidates: recipe.candidates,
            blend: recipe.blend,
            mean,
            inv_std,
            scorer,
            refiner,
        })
    }

    fn standardised(&self, grid: &GridIntegral, b: &Corners) -> Vec<f32> {
        let mut f = box_features(grid, b);
        standardise(&mut f, &self.mean, &self.inv_std);
        f
    }

    /// Whether boxes on this grid have the features the stage was fitted on.
    pub fn accepts(&self, grid: &GridIntegral) -> bool {
        box_dim(grid.dim, grid.s16) == self.mean.len()
    }

    /// Candidates it rescores per image.
    pub fn candidates(&self) -> usize {
        self.candidates
    }

    /// A candidate box refined, and its probability per tag (blended with `dense`, the dense head's).
    ///
    /// With `mirror` (the grid of the mirror image), every step reads both: the refiner's deltas and the
    /// scorer's logits are the means of the box's and of its mirror box's (horizontal shifts negated).
    pub fn rescore(
        &self,
        grid: &GridIntegral,
        mirror: Option<&GridIntegral>,
        candidate: &Corners,
        dense: &[f32],
    ) -> (Corners, Vec<f32>) {
        let flip = |b: &Corners| [1.0 - b[2], b[1], 1.0 - b[0], b[3]];
        let read = |b: &Corners| (self.standardised(grid, b), mirror.map(|m| self.standardised(m, &flip(b))));
        let mean = |model: &Model, f: &(Vec<f32>, Option<Vec<f32>>), negate_first: bool| {
            let mut z = Problem::logits(model, &f.0);
            if let Some(m) = &f.1 {
                for (k, (v, w)) in z.iter_mut().zip(Problem::logits(model, m)).enumerate() {
                    let w = if negate_first && k == 0 { -w } else { w };
                    *v = (*v + w) / 2.0;
                }
            }
            z
        };
        let mut b = *candidate;
        let mut f = read(&b);
        for _ in 0..self.refinements {
            let d = mean(&self.refiner, &f, true);
            b = apply_deltas(&b, &[d[0], d[1], d[2], d[3]]);
            f = read(&b);
        }
        let scores = mean(&self.scorer, &f, false)
            .iter()
            .zip(dense)
            .map(|(z, d)| {
                let own = 1.0 / (1.0 + (-z).exp());
                own.powf(1.0 - self.blend) * d.max(1e-6).powf(self.blend)
            })
            .collect();
        (b, scores)
    }

    /// Named tensors for a safetensors file.
    pub fn tensors(&self) -> candle_core::Result<Vec<(String, Tensor)>> {
        let dev = Device::Cpu;
        let d = self.mean.len();
        let meta = [self.classes as f32, self.refinements as f32, self.candidates as f32, self.blend];
        Ok(vec![
            ("s2_meta".to_string(), Tensor::from_slice(&meta, 4, &dev)?),
            ("s2_mean".to_string(), Tensor::from_slice(&self.mean, d, &dev)?),
            ("s2_inv_std".to_string(), Tensor::from_slice(&self.inv_std, d, &dev)?),
            ("s2_score_w".to_string(), Tensor::from_slice(&self.scorer.weight, (self.classes, d), &dev)?),
            ("s2_score_b".to_string(), Tensor::from_slice(&self.scorer.bias, self.classes, &dev)?),
            ("s2_box_w".to_string(), Tensor::from_slice(&self.refiner.weight, (4, d), &dev)?),
            ("s2_box_b".to_string(), Tensor::from_slice(&self.refiner.bias, 4, &dev)?),
        ])
    }

    /// Reads the stage from tensors written by [`BoxStage::tensors`] for a head on grids of `dim` channels per
    /// cell; `None` when the file has none (heads trained before the second stage existed).
    pub fn from_tensors(
        t: &std::collections::HashMap<String, Tensor>,
        classes: usize,
        dim: usize,
    ) -> candle_core::Result<Option<Self>> {
        let get = |k: &str| tensor_values(t, k);
        if !t.contains_key("s2_meta") {
            return Ok(None);
        }
        let meta = get("s2_meta")?;
        if meta.len() != 4 || meta[0] as usize != classes {
            candle_core::bail!("second-stage metadata malformed");
        }
        let mean = get("s2_mean")?;
        let d = mean.len();
        // The stride-16 width follows from the feature length: d = 2·dim + 4·s16 + 4.
        if d < 2 * dim + 4 || !(d - 2 * dim - 4).is_multiple_of(4) || (d - 2 * dim - 4) / 4 > dim {
            candle_core::bail!("second-stage features do not fit the head's grid");
        }
        let stage = Self {
            classes,
            refinements: (meta[1].max(0.0) as usize).min(4),
            candidates: (meta[2].max(1.0) as usize).min(MAX_CANDIDATES),
            blend: meta[3].clamp(0.0, 1.0),
            mean,
            inv_std: get("s2_inv_std")?,
            scorer: Model { weight: get("s2_score_w")?, bias: get("s2_score_b")? },
            refiner: Model { weight: get("s2_box_w")?, bias: get("s2_box_b")? },
        };
        if stage.inv_std.len() != d
            || stage.scorer.weight.len() != classes * d
            || stage.scorer.bias.len() != classes
            || stage.refiner.weight.len() != 4 * d
            || stage.refiner.bias.len() != 4
        {
            candle_core::bail!("second-stage tensors have inconsistent shapes");
        }
        Ok(Some(stage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    /// EfficientNet-Lite0's cell: 112 stride-16 + 1280 stride-32 channels.
    const CELL_DIM: usize = 112 + 1280;
    const S16_DIM: usize = 112;

    #[test]
    fn deltas_invert() {
        let p = [0.1, 0.2, 0.5, 0.6];
        let g = [0.15, 0.1, 0.7, 0.65];
        let back = apply_deltas(&p, &deltas(&p, &g));
        for k in 0..4 {
            assert!((back[k] - g[k]).abs() < 1e-5, "{back:?}");
        }
        assert!((corner_iou(&p, &p) - 1.0).abs() < 1e-6);
        assert_eq!(corner_iou(&[0.0, 0.0, 0.1, 0.1], &[0.5, 0.5, 0.6, 0.6]), 0.0);
    }

    #[test]
    fn box_features_average_the_covered_cells_by_area() {
        // A 2 × 2 grid whose cells hold 0, 1, 2, 3 in every channel.
        let data: Vec<f16> = (0..4).flat_map(|v| std::iter::repeat_n(f16::from_f32(v as f32), CELL_DIM)).collect();
        let grid = GridIntegral::new(&FeatureGrid { rows: 2, cols: 2, dim: CELL_DIM, s16: S16_DIM, data });
        // The left half: cells 0 and 2 → mean 1.
        let f = box_features(&grid, &[0.0, 0.0, 0.5, 1.0]);
        assert!((f[0] - 1.0).abs() < 1e-5 && (f[CELL_DIM - 1] - 1.0).abs() < 1e-5);
        // Its ring (grown 1.6×, clipped) reaches only into the right half: cells 1 and 3 → mean 2.
        assert!((f[CELL_DIM] - 2.0).abs() < 1e-4, "{}", f[CELL_DIM]);
        // The top-left quadrant lies in cell 0, the bottom-left one in cell 2.
        assert!(f[2 * CELL_DIM].abs() < 1e-5);
        assert!((f[2 * CELL_DIM + 2 * S16_DIM] - 2.0).abs() < 1e-5);
        // A quarter of cell 3 and three quarters of nothing else: still cell 3's value.
        let f = box_features(&grid, &[0.75, 0.75, 1.0, 1.0]);
        assert!((f[0] - 3.0).abs() < 1e-5);
    }

    #[test]
    fn integral_sums_match_the_area_weighted_cells() {
        // A 3 × 4 grid of distinct values; box sums by the table against sums cell by cell.
        let (rows, cols) = (3usize, 4usize);
        let value = |r: usize, c: usize, k: usize| ((r * 7 + c * 3 + k) % 11) as f32 - 5.0;
        let data: Vec<f16> = (0..rows * cols)
            .flat_map(|i| (0..CELL_DIM).map(move |k| f16::from_f32(value(i / cols, i % cols, k))))
            .collect();
        let table = GridIntegral::new(&FeatureGrid { rows, cols, dim: CELL_DIM, s16: S16_DIM, data });
        for b in [[0.1f32, 0.2, 0.85, 0.9], [0.0, 0.0, 1.0, 1.0], [0.3, 0.31, 0.33, 0.6], [-0.2, 0.5, 0.4, 1.3]] {
            let mut got = vec![0f32; CELL_DIM];
            let area = table.box_sums(&b, &mut got);
            let (x0, x1) = (b[0].clamp(0.0, 1.0) * cols as f32, b[2].clamp(0.0, 1.0) * cols as f32);
            let (y0, y1) = (b[1].clamp(0.0, 1.0) * rows as f32, b[3].clamp(0.0, 1.0) * rows as f32);
            let mut want = vec![0f32; CELL_DIM];
            let mut want_area = 0f32;
            for r in 0..rows {
                let wy = (y1.min(r as f32 + 1.0) - y0.max(r as f32)).max(0.0);
                for c in 0..cols {
                    let w = (x1.min(c as f32 + 1.0) - x0.max(c as f32)).max(0.0) * wy;
                    want_area += w;
                    for (k, v) in want.iter_mut().enumerate() {
                        *v += w * value(r, c, k);
                    }
                }
            }
            assert!((area - want_area).abs() < 1e-4, "{b:?}: area {area} vs {want_area}");
            for k in 0..CELL_DIM {
                assert!((got[k] - want[k]).abs() < 1e-3, "{b:?} channel {k}: {} vs {}", got[k], want[k]);
            }
        }
    }

    #[test]
    fn samples_cover_good_and_bad_fits() {
        let truth = [GtBox { class: 0, left: 0.2, top: 0.2, width: 0.4, height: 0.5 }];
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let boxes = sample_boxes(&truth, &BoxRecipe::default(), &mut rng);
        let g = corners(&truth[0]);
        let ious: Vec<f32> = boxes.iter().map(|b| corner_iou(b, &g)).collect();
        assert!(ious.iter().any(|v| *v > IOU_HIGH));
        assert!(ious.iter().filter(|v| **v < IOU_LOW).count() >= 10);
        assert!(boxes.iter().all(|b| b.iter().all(|v| (0.0..=1.0).contains(v))));
    }
}
