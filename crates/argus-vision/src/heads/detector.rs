//! Object detection on the frozen backbone: an anchor-free, FCOS-style dense head over a feature grid.
//!
//! Every cell of the stride-16 grid sees the stride-16 activations (112 channels on EfficientNet-Lite0, 120 on
//! Lite2) concatenated with the upsampled stride-32 activations (1280 channels). A small MLP (one hidden layer) predicts, per cell, a score
//! per tag and the distances from the cell centre to the four box edges (log scale, in cells). Training
//! targets follow FCOS: cells whose centre lies inside a box are positives, their class target is the box's
//! "centerness" (a soft quality target, generalized-focal-loss style), and the box edges are regressed with a
//! smooth-L1 loss weighted by that centerness. Inference decodes every cell; a second stage
//! ([`crate::heads::box_stage`]) refines and rescores the best boxes from features pooled over each; then scores ≥ 0.01
//! are kept and per-tag non-maximum suppression runs.
//!
//! Deterministic given the seed: fixed augmentation geometry, seeded initialisation and batch order.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use half::f16;
use image::{imageops, RgbImage};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::backbone::{preprocess, EfficientNetLite0};
use crate::heads::box_stage::{proposal, BoxRecipe, BoxStage, Corners, GridIntegral};
use crate::proposals::Proposal;
use crate::weights::Variant;
pub use argus_metrics::{box_iou, match_detections, mean_average_precision, Detection, GtBox};

/// Lowest score a detection is reported with.
pub const MIN_SCORE: f32 = 0.01;
/// Detections kept per image after suppression.
pub const MAX_DETECTIONS: usize = 200;
/// One negative cell in this many takes part in a training step.
const NEGATIVE_KEEP: u32 = 4;
/// IoU above which a less confident box of the same tag is suppressed.
pub const NMS_IOU: f64 = 0.45;
/// IoU above which a dense-head box is not taken as a second-stage candidate (class-agnostic).
pub const CANDIDATE_NMS_IOU: f64 = 0.7;

/// How hard to train a detector.
#[derive(Debug, Clone, Copy)]
pub struct DetectionRecipe {
    /// The backbone whose feature maps the head reads.
    pub backbone: Variant,
    /// Backbone input side in pixels (a multiple of 32).
    pub input_size: u32,
    /// Augmented views per image (the first is the image itself).
    pub views: usize,
    /// Optimisation steps.
    pub steps: usize,
    /// Views per minibatch.
    pub batch: usize,
    /// Hidden units of the head.
    pub hidden: usize,
    /// Learning rate.
    pub learning_rate: f64,
    /// Seed of initialisation and batch order.
    pub seed: u64,
    /// The second stage that rescores and refines the dense head's boxes (none: the dense head answers).
    pub second: Option<BoxRecipe>,
    /// Score every image together with its mirror image (each output the mean of the two): twice the backbone
    /// work per prediction.
    pub mirror: bool,
}

impl DetectionRecipe {
    /// Quick training ("Regular").
    pub fn regular() -> Self {
        Self {
            backbone: Variant::Lite0,
            input_size: 320,
            views: 4,
            steps: 300,
            batch: 8,
            hidden: 64,
            learning_rate: 3e-3,
            seed: 7,
            second: Some(BoxRecipe::default()),
            mirror: false,
        }
    }

    /// Longer training ("Advanced"): the larger EfficientNet-Lite2, more augmentation, a wider head, more
    /// steps, and every image scored together with its mirror image.
    ///
    /// Chosen on three splits of the raccoon photographs (`examples/detector_lab.rs`, `LAB_SPLIT` 7/8/9),
    /// mAP@0.5 at 15 / 30 training photographs: Regular 0.822 / 0.864; Lite2 at 320 px 0.854 / 0.861, with the
    /// mirror 0.880 / 0.869; Lite2 at 416 px (split 7 only) 0.862 / 0.875 for a third more time.
    pub fn advanced() -> Self {
        Self {
            backbone: Variant::Lite2,
            input_size: 320,
            views: 8,
            steps: 600,
            batch: 8,
            hidden: 96,
            learning_rate: 3e-3,
            seed: 7,
            second: Some(BoxRecipe::default()),
            mirror: true,
        }
    }
}

/// The `i`-th augmented view of an image and its boxes: 0 is the image, then flips and crops at fixed
/// positions. Boxes are clipped to the crop; a box less than 40 % visible is dropped.
pub fn detection_view(img: &RgbImage, boxes: &[GtBox], i: usize) -> (RgbImage, Vec<GtBox>) {
    // (x fraction, y fraction, scale, flip)
    const VIEWS: [(f32, f32, f32, bool); 8] = [
        (0.0, 0.0, 1.0, false),
        (0.0, 0.0, 1.0, true),
        (0.5, 0.5, 0.8, false),
        (0.0, 1.0, 0.75, true),
        (1.0, 0.0, 0.85, false),
        (0.2, 0.8, 0.7, false),
        (0.9, 0.6, 0.8, true),
        (0.5, 0.1, 0.9, true),
    ];
    let (fx, fy, scale, flip) = VIEWS[i % VIEWS.len()];
    let (w, h) = img.dimensions();
    let (cw, ch) = (((w as f32) * scale).max(1.0) as u32, ((h as f32) * scale).max(1.0) as u32);
    let (x, y) = ((((w - cw) as f32) * fx) as u32, (((h - ch) as f32) * fy) as u32);
    let mut out = if scale < 1.0 { imageops::crop_imm(img, x, y, cw, ch).to_image() } else { img.clone() };
    // Crop window in normalised coordinates.
    let (ox, oy) = (x as f32 / w as f32, y as f32 / h as f32);
    let (sw, sh) = (cw as f32 / w as f32, ch as f32 / h as f32);
    let mut kept = Vec::new();
    for b in boxes {
        let x0 = ((b.left - ox) / sw).clamp(0.0, 1.0);
        let y0 = ((b.top - oy) / sh).clamp(0.0, 1.0);
        let x1 = ((b.left + b.width - ox) / sw).clamp(0.0, 1.0);
        let y1 = ((b.top + b.height - oy) / sh).clamp(0.0, 1.0);
        let visible = (x1 - x0) * sw * (y1 - y0) * sh;
        if x1 > x0 && y1 > y0 && visible >= 0.4 * b.width * b.height {
            kept.push(GtBox { class: b.class, left: x0, top: y0, width: x1 - x0, height: y1 - y0 });
        }
    }
    if flip {
        out = imageops::flip_horizontal(&out);
        for b in kept.iter_mut() {
            b.left = 1.0 - b.left - b.width;
        }
    }
    (out, kept)
}

/// Per-cell features of one image: `rows × cols` cells of `dim` values, row-major, kept in half precision (a
/// training set's grids are the bulk of a detector training's memory).
#[derive(Debug, Clone)]
pub struct FeatureGrid {
    /// Cells per column.
    pub rows: usize,
    /// Cells per row.
    pub cols: usize,
    /// Channels of one cell: the stride-16 ones first, then the stride-32 ones.
    pub dim: usize,
    /// How many of a cell's channels are stride-16 activations.
    pub s16: usize,
    /// `rows * cols * dim` values.
    pub data: Vec<f16>,
}

/// Feature grids of images resized to `size` × `size`, batched through the backbone.
pub fn feature_grids(net: &EfficientNetLite0, images: &[RgbImage], size: u32) -> candle_core::Result<Vec<FeatureGrid>> {
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(4) {
        let batch: Vec<Tensor> = chunk.iter().map(|i| preprocess(i, size)).collect::<candle_core::Result<_>>()?;
        let x = Tensor::cat(&batch, 0)?;
        let (s16, s32) = net.feature_maps(&x)?;
        let (_, s16_dim, rows, cols) = s16.dims4()?;
        let dim = s16_dim + s32.dim(1)?;
        let up = s32.upsample_nearest2d(rows, cols)?;
        // (N, C, H, W) → (N, H, W, C)
        let cells = Tensor::cat(&[&s16, &up], 1)?.permute((0, 2, 3, 1))?.contiguous()?;
        for n in 0..chunk.len() {
            let data: Vec<f16> =
                cells.get(n)?.flatten_all()?.to_vec1::<f32>()?.into_iter().map(f16::from_f32).collect();
            out.push(FeatureGrid { rows, cols, dim, s16: s16_dim, data });
        }
    }
    Ok(out)
}

/// Per-cell training targets of one grid: class targets (`cells × classes`), regression targets
/// (`cells × 4`) and regression weights (`cells`).
fn targets(rows: usize, cols: usize, boxes: &[GtBox], classes: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let cells = rows * cols;
    let mut cls = vec![0f32; cells * classes];
    let mut reg = vec![0f32; cells * 4];
    let mut wgt = vec![0f32; cells];
    let mut owner_area = vec![f32::INFINITY; cells];
    let min_d = 0.25;
    let mut assign = |cell: usize, b: &GtBox, quality: f32, cx: f32, cy: f32| {
        let area = b.width * b.height;
        if area >= owner_area[cell] {
            return;
        }
        owner_area[cell] = area;
        for c in 0..classes {
            cls[cell * classes + c] = 0.0;
        }
        cls[cell * classes + b.class] = quality;
        let d = [
            (cx - b.left) * cols as f32,
            (cy - b.top) * rows as f32,
            (b.left + b.width - cx) * cols as f32,
            (b.top + b.height - cy) * rows as f32,
        ];
        for k in 0..4 {
            reg[cell * 4 + k] = d[k].max(min_d).ln();
        }
        wgt[cell] = quality.max(0.1);
    };
    for b in boxes {
        let mut any = false;
        for r in 0..rows {
            for c in 0..cols {
                let (cx, cy) = ((c as f32 + 0.5) / cols as f32, (r as f32 + 0.5) / rows as f32);
                let (l, t) = (cx - b.left, cy - b.top);
                let (rr, bb) = (b.left + b.width - cx, b.top + b.height - cy);
                if l > 0.0 && t > 0.0 && rr > 0.0 && bb > 0.0 {
                    let centerness = ((l.min(rr) / l.max(rr)) * (t.min(bb) / t.max(bb))).sqrt();
                    assign(r * cols + c, b, centerness.sqrt(), cx, cy);
                    any = true;
                }
            }
        }
        if !any {
            // A box smaller than a cell: its centre cell answers for it.
            let c = (((b.left + b.width / 2.0) * cols as f32) as usize).min(cols - 1);
            let r = (((b.top + b.height / 2.0) * rows as f32) as usize).min(rows - 1);
            let (cx, cy) = ((c as f32 + 0.5) / cols as f32, (r as f32 + 0.5) / rows as f32);
            assign(r * cols + c, b, 1.0, cx, cy);
        }
    }
    (cls, reg, wgt)
}

/// A trained detection head.
#[derive(Debug, Clone)]
pub struct DetectorHead {
    /// The backbone it reads feature maps of.
    pub backbone: Variant,
    /// Backbone input side it was trained with.
    pub input_size: u32,
    pub(crate) classes: usize,
    /// Whether it scores an image together with its mirror image.
    pub mirror: bool,
    pub(crate) hidden: usize,
    pub(crate) mean: Vec<f32>,
    pub(crate) inv_std: Vec<f32>,
    pub(crate) w1: Vec<f32>,
    pub(crate) b1: Vec<f32>,
    pub(crate) w2: Vec<f32>,
    pub(crate) b2: Vec<f32>,
    /// The second stage, when the head was trained with one.
    pub(crate) stage2: Option<Box<BoxStage>>,
}

impl DetectorHead {
    /// Number of classes it detects.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Channels of the grid cells it reads (one standardisation statistic per channel).
    fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Trains a head on feature grids and their boxes. `progress` is called with the fraction done.
    pub fn fit(
        grids: &[&FeatureGrid],
        boxes: &[Vec<GtBox>],
        classes: usize,
        recipe: &DetectionRecipe,
        progress: &dyn Fn(f64),
    ) -> candle_core::Result<Self> {
        if grids.is_empty() || classes == 0 || grids.len() != boxes.len() {
            candle_core::bail!("nothing to train on");
        }
        let (dim, s16) = (grids[0].dim, grids[0].s16);
        if grids.iter().any(|g| g.dim != dim || g.s16 != s16 || g.data.len() != g.rows * g.cols * dim) {
            candle_core::bail!("feature grids of different shapes");
        }
        let dev = Device::Cpu;
        // Standardisation statistics from a strided sample of cells.
        let total_cells: usize = grids.iter().map(|g| g.rows * g.cols).sum();
        let stride = (total_cells / 20_000).max(1);
        let mut mean = vec![0f64; dim];
        let mut sq = vec![0f64; dim];
        let mut seen = 0usize;
        let mut k = 0usize;
        for g in grids {
            for cell in g.data.chunks_exact(dim) {
                if k.is_multiple_of(stride) {
                    for (i, v) in cell.iter().enumerate() {
                        let v = v.to_f64();
                        mean[i] += v;
                        sq[i] += v * v;
                    }
                    seen += 1;
                }
                k += 1;
            }
        }
        let n = seen.max(1) as f64;
        let mean: Vec<f32> = mean.iter().map(|m| (m / n) as f32).collect();
        let inv_std: Vec<f32> =
            sq.iter().zip(&mean).map(|(s, m)| 1.0 / (((s / n) as f32 - m * m).max(0.0).sqrt() + 1e-3)).collect();

        let targets: Vec<_> = grids.iter().zip(boxes).map(|(g, b)| targets(g.rows, g.cols, b, classes)).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(recipe.seed);
        let h = recipe.hidden;
        let out = classes + 4;
        let scale1 = (2.0 / dim as f32).sqrt();
        let w1_init: Vec<f32> = (0..dim * h).map(|_| rng.gen_range(-1.0f32..1.0) * scale1 * 1.7).collect();
        let scale2 = (1.0 / h as f32).sqrt();
        let w2_init: Vec<f32> = (0..h * out).map(|_| rng.gen_range(-1.0f32..1.0) * scale2 * 0.1).collect();
        // Class logits start at a 1 % prior; distances at one cell.
        let b2_init: Vec<f32> = (0..out).map(|i| if i < classes { -4.6 } else { 0.0 }).collect();
        let w1 = Var::from_tensor(&Tensor::from_vec(w1_init, (dim, h), &dev)?)?;
        let b1 = Var::zeros(h, DType::F32, &dev)?;
        let w2 = Var::from_tensor(&Tensor::from_vec(w2_init, (h, out), &dev)?)?;
        let b2 = Var::from_tensor(&Tensor::from_vec(b2_init, out, &dev)?)?;
        let params = ParamsAdamW { lr: recipe.learning_rate, weight_decay: 1e-4, ..Default::default() };
        let mut opt = AdamW::new(vec![w1.clone(), b1.clone(), w2.clone(), b2.clone()], params)?;

        let inv_std_t = Tensor::from_slice(&inv_std, (dim, 1), &dev)?;
        let mean_s: Vec<f32> = mean.iter().zip(&inv_std).map(|(m, s)| m * s).collect();
        let mean_s_t = Tensor::from_vec(mean_s, (1, dim), &dev)?;
        let mut order: Vec<usize> = (0..grids.len()).collect();
        let mut cursor = order.len();
        for step in 0..recipe.steps {
            let mut batch = Vec::with_capacity(recipe.batch);
            while batch.len() < recipe.batch.min(grids.len()) {
                if cursor >= order.len() {
                    order.shuffle(&mut rng);
                    cursor = 0;
                }
                batch.push(order[cursor]);
                cursor += 1;
            }
            let mut xs = Vec::new();
            let mut yc = Vec::new();
            let mut yr = Vec::new();
            let mut yw = Vec::new();
            // Every positive cell, and a random quarter of the negatives (weighted ×4 in the loss).
            let mut cw = Vec::new();
            for &i in &batch {
                let (tc, tr, tw) = &targets[i];
                for (cell, x) in grids[i].data.chunks_exact(dim).enumerate() {
                    let positive = tw[cell] > 0.0;
                    if !positive && rng.gen_range(0..NEGATIVE_KEEP) != 0 {
                        continue;
                    }
                    xs.extend(x.iter().map(|v| v.to_f32()));
                    yc.extend_from_slice(&tc[cell * classes..(cell + 1) * classes]);
                    yr.extend_from_slice(&tr[cell * 4..(cell + 1) * 4]);
                    yw.push(tw[cell]);
                    cw.push(if positive { 1.0 } else { NEGATIVE_KEEP as f32 });
                }
            }
            let rows = yw.len();
            let cw = Tensor::from_vec(cw, (rows, 1), &dev)?;
            let positives = yw.iter().filter(|w| **w > 0.0).count().max(1) as f64;
            let x = Tensor::from_vec(xs, (rows, dim), &dev)?;
            let yc = Tensor::from_vec(yc, (rows, classes), &dev)?;
            let yr = Tensor::from_vec(yr, (rows, 4), &dev)?;
            let yw = Tensor::from_vec(yw, (rows, 1), &dev)?;
            // Standardisation folded into the first layer: ((x − m) ⊙ s)·W = x·(s ⊙ W) − (m ⊙ s)·W.
            let w1s = w1.as_tensor().broadcast_mul(&inv_std_t)?;
            let b1s = (b1.as_tensor() - mean_s_t.matmul(w1.as_tensor())?.squeeze(0)?)?;
            let hid = x.matmul(&w1s)?.broadcast_add(&b1s)?.relu()?;
            let o = hid.matmul(w2.as_tensor())?.broadcast_add(b2.as_tensor())?;
            let z = o.narrow(1, 0, classes)?;
            let r = o.narrow(1, classes, 4)?;
            // Quality focal loss: BCE with soft targets, modulated by |σ(z) − y|².
            let p = candle_nn::ops::sigmoid(&z)?;
            let bce = ((z.relu()? - z.mul(&yc)?)? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
            let modulator = (p - &yc)?.sqr()?.detach();
            let cls_loss = (bce.mul(&modulator)?.broadcast_mul(&cw)?.sum_all()? / positives)?;
            // Smooth L1 on log distances, weighted by the cell's quality.
            let d = (r - yr)?.abs()?;
            let smooth = d.minimum(1.0)?.sqr()?.affine(0.5, 0.0)?.add(&(d.clone() - 1.0)?.relu()?)?;
            let reg_loss = (smooth.broadcast_mul(&yw)?.sum_all()? / positives)?;
            let loss = (cls_loss + reg_loss)?;
            opt.backward_step(&loss)?;
            if step % 20 == 0 {
                progress(step as f64 / recipe.steps as f64);
            }
        }
        let to_vec = |v: &Var| v.as_tensor().flatten_all()?.to_vec1::<f32>();
        let stage2 = match &recipe.second {
            Some(r) => Some(Box::new(BoxStage::fit(grids, boxes, classes, r, recipe.seed)?)),
            None => None,
        };
        progress(1.0);
        Ok(Self {
            backbone: recipe.backbone,
            input_size: recipe.input_size,
            classes,
            mirror: recipe.mirror,
            hidden: h,
            mean,
            inv_std,
            w1: to_vec(&w1)?,
            b1: to_vec(&b1)?,
            w2: to_vec(&w2)?,
            b2: to_vec(&b2)?,
            stage2,
        })
    }

    /// The dense head's raw output for every cell: a logit per tag, then the four log distances.
    fn raw(&self, grid: &FeatureGrid) -> candle_core::Result<Vec<Vec<f32>>> {
        let dev = Device::Cpu;
        let dim = self.dim();
        if grid.dim != dim || grid.data.len() != grid.rows * grid.cols * dim {
            candle_core::bail!("a grid of {} channels given to a head trained on {dim}", grid.dim);
        }
        let cells = grid.rows * grid.cols;
        let xs: Vec<f32> = grid
            .data
            .chunks_exact(dim)
            .flat_map(|cell| cell.iter().zip(&self.mean).zip(&self.inv_std).map(|((v, m), s)| (v.to_f32() - m) * s))
            .collect();
        let out = self.classes + 4;
        let x = Tensor::from_vec(xs, (cells, dim), &dev)?;
        let w1 = Tensor::from_slice(&self.w1, (dim, self.hidden), &dev)?;
        let b1 = Tensor::from_slice(&self.b1, self.hidden, &dev)?;
        let w2 = Tensor::from_slice(&self.w2, (self.hidden, out), &dev)?;
        let b2 = Tensor::from_slice(&self.b2, out, &dev)?;
        let o = x.matmul(&w1)?.broadcast_add(&b1)?.relu()?.matmul(&w2)?.broadcast_add(&b2)?;
        o.to_vec2::<f32>()
    }

    /// The dense head's output for every cell: its decoded box and a probability per tag. With `mirror` (the
    /// grid of the mirror image, same shape), each cell's output is the mean of its own and of its mirror cell's
    /// (left and right distances swapped), probabilities averaged.
    fn dense(&self, grid: &FeatureGrid, mirror: Option<&FeatureGrid>) -> candle_core::Result<Vec<(Corners, Vec<f32>)>> {
        let sigmoid = |z: f32| 1.0 / (1.0 + (-z).exp());
        let mut o = self.raw(grid)?;
        o.iter_mut().for_each(|row| row[..self.classes].iter_mut().for_each(|z| *z = sigmoid(*z)));
        if let Some(m) = mirror {
            if (m.rows, m.cols) != (grid.rows, grid.cols) {
                candle_core::bail!("the mirror grid has another shape");
            }
            let om = self.raw(m)?;
            for (i, row) in o.iter_mut().enumerate() {
                let (r, c) = (i / grid.cols, i % grid.cols);
                let other = &om[r * grid.cols + (grid.cols - 1 - c)];
                for k in 0..self.classes {
                    row[k] = (row[k] + sigmoid(other[k])) / 2.0;
                }
                let d = self.classes;
                let swapped = [other[d + 2], other[d + 1], other[d], other[d + 3]];
                for (k, v) in swapped.iter().enumerate() {
                    row[d + k] = (row[d + k] + v) / 2.0;
                }
            }
        }
        let mut cellboxes = Vec::with_capacity(o.len());
        for (i, row) in o.iter().enumerate() {
            let (r, c) = (i / grid.cols, i % grid.cols);
            let (cx, cy) = ((c as f32 + 0.5) / grid.cols as f32, (r as f32 + 0.5) / grid.rows as f32);
            let d: Vec<f32> = row[self.classes..].iter().map(|v| v.clamp(-6.0, 6.0).exp()).collect();
            let x0 = (cx - d[0] / grid.cols as f32).clamp(0.0, 1.0);
            let y0 = (cy - d[1] / grid.rows as f32).clamp(0.0, 1.0);
            let x1 = (cx + d[2] / grid.cols as f32).clamp(0.0, 1.0);
            let y1 = (cy + d[3] / grid.rows as f32).clamp(0.0, 1.0);
            if x1 <= x0 || y1 <= y0 {
                continue;
            }
            cellboxes.push(([x0, y0, x1, y1], row[..self.classes].to_vec()));
        }
        Ok(cellboxes)
    }

    /// Detections in one feature grid, after per-class NMS, best first, at most [`MAX_DETECTIONS`].
    ///
    /// With a second stage, the dense head's best boxes (class-agnostic NMS at IoU 0.7, at most the recipe's
    /// candidate count) are refined and rescored by it; otherwise the dense head's scores and boxes are final.
    pub fn detect(&self, grid: &FeatureGrid) -> candle_core::Result<Vec<Detection>> {
        self.detect_with_mirror(grid, None)
    }

    /// [`DetectorHead::detect`] reading the mirror image's grid too (`mirror`, the same image flipped
    /// horizontally): both stages average each cell's and each box's outputs with their mirror's.
    pub fn detect_with_mirror(
        &self,
        grid: &FeatureGrid,
        mirror: Option<&FeatureGrid>,
    ) -> candle_core::Result<Vec<Detection>> {
        let mut scored = self.dense(grid, mirror)?;
        if let Some(stage) = &self.stage2 {
            // Class-agnostic NMS over the cells, keeping each survivor's per-tag scores.
            let best = |s: &[f32]| s.iter().copied().fold(0f32, f32::max);
            let cells: Vec<usize> = (0..scored.len()).filter(|i| best(&scored[*i].1) >= MIN_SCORE).collect();
            let boxes: Vec<Proposal> = cells.iter().map(|i| proposal(&scored[*i].0, best(&scored[*i].1))).collect();
            let kept = crate::proposals::nms_indices(&boxes, CANDIDATE_NMS_IOU, stage.candidates());
            let table = GridIntegral::new(grid);
            let mirror_table = mirror.map(GridIntegral::new);
            if !stage.accepts(&table) || mirror_table.as_ref().is_some_and(|m| !stage.accepts(m)) {
                candle_core::bail!("the grid does not fit the detector's second stage");
            }
            scored = kept
                .iter()
                .map(|k| &scored[cells[*k]])
                .map(|(b, s)| stage.rescore(&table, mirror_table.as_ref(), b, s))
                .collect();
        }
        let mut per_class: HashMap<usize, Vec<Proposal>> = HashMap::new();
        for (b, scores) in &scored {
            if b[2] <= b[0] || b[3] <= b[1] {
                continue;
            }
            for (k, score) in scores.iter().enumerate() {
                if *score >= MIN_SCORE {
                    per_class.entry(k).or_default().push(proposal(b, *score));
                }
            }
        }
        let mut dets: Vec<Detection> = per_class
            .into_iter()
            .flat_map(|(class, boxes)| {
                crate::proposals::nms(boxes, NMS_IOU).into_iter().map(move |p| Detection {
                    class,
                    score: p.confidence as f32,
                    left: p.left as f32,
                    top: p.top as f32,
                    width: p.width as f32,
                    height: p.height as f32,
                })
            })
            .collect();
        dets.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.class.cmp(&b.class)));
        dets.truncate(MAX_DETECTIONS);
        Ok(dets)
    }

    /// Detects objects in an image.
    pub fn detect_image(&self, net: &EfficientNetLite0, img: &RgbImage) -> candle_core::Result<Vec<Detection>> {
        if self.mirror {
            // The image and its mirror in one batch.
            let grids = feature_grids(net, &[img.clone(), imageops::flip_horizontal(img)], self.input_size)?;
            return match grids.as_slice() {
                [g, m] => self.detect_with_mirror(g, Some(m)),
                _ => Ok(Vec::new()),
            };
        }
        let grids = feature_grids(net, std::slice::from_ref(img), self.input_size)?;
        match grids.first() {
            Some(g) => self.detect(g),
            None => Ok(Vec::new()),
        }
    }

    /// Serialises the head to safetensors bytes.
    pub fn to_bytes(&self) -> candle_core::Result<Vec<u8>> {
        let dev = Device::Cpu;
        let out = self.classes + 4;
        let dim = self.dim();
        let meta = [
            self.classes as f32,
            self.input_size as f32,
            self.hidden as f32,
            self.backbone.code() as f32,
            if self.mirror { 1.0 } else { 0.0 },
        ];
        let mut tensors = vec![
            ("meta".to_string(), Tensor::from_slice(&meta, 5, &dev)?),
            ("mean".to_string(), Tensor::from_slice(&self.mean, dim, &dev)?),
            ("inv_std".to_string(), Tensor::from_slice(&self.inv_std, dim, &dev)?),
            ("w1".to_string(), Tensor::from_slice(&self.w1, (dim, self.hidden), &dev)?),
            ("b1".to_string(), Tensor::from_slice(&self.b1, self.hidden, &dev)?),
            ("w2".to_string(), Tensor::from_slice(&self.w2, (self.hidden, out), &dev)?),
            ("b2".to_string(), Tensor::from_slice(&self.b2, out, &dev)?),
        ];
        if let Some(stage) = &self.stage2 {
            tensors.extend(stage.tensors()?);
        }
        crate::heads::classifier::safetensors_bytes(&tensors)
    }

    /// Reads a head written by [`DetectorHead::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> candle_core::Result<Self> {
        let t = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)?;
        let get = |k: &str| tensor_values(&t, k);
        let meta = get("meta")?;
        if !(3..=5).contains(&meta.len()) {
            candle_core::bail!("detector metadata malformed");
        }
        let (classes, input_size, hidden) = (meta[0] as usize, meta[1] as u32, meta[2] as usize);
        // Heads written before the backbone and mirroring were recorded read EfficientNet-Lite0, unmirrored.
        let code = meta.get(3).copied().unwrap_or(0.0);
        let backbone = Variant::from_code(code as u32)
            .filter(|_| code >= 0.0)
            .ok_or_else(|| candle_core::Error::Msg(format!("detector names an unknown backbone ({code})")))?;
        let mean = get("mean")?;
        let dim = mean.len();
        let head = Self {
            backbone,
            input_size,
            classes,
            mirror: meta.get(4).copied().unwrap_or(0.0) != 0.0,
            hidden,
            mean,
            inv_std: get("inv_std")?,
            w1: get("w1")?,
            b1: get("b1")?,
            w2: get("w2")?,
            b2: get("b2")?,
            stage2: BoxStage::from_tensors(&t, classes, dim)?.map(Box::new),
        };
        let out = classes + 4;
        if dim == 0
            || head.inv_std.len() != dim
            || head.w1.len() != dim * hidden
            || head.b1.len() != hidden
            || head.w2.len() != hidden * out
            || head.b2.len() != out
        {
            candle_core::bail!("detector tensors have inconsistent shapes");
        }
        Ok(head)
    }
}

/// The values of tensor `k` of a loaded detector file, flattened.
pub(crate) fn tensor_values(t: &HashMap<String, Tensor>, k: &str) -> candle_core::Result<Vec<f32>> {
    t.get(k).ok_or_else(|| candle_core::Error::Msg(format!("detector tensor {k} missing")))?.flatten_all()?.to_vec1()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_move_boxes_with_the_pixels() {
        let img = RgbImage::from_fn(100, 50, |x, _| image::Rgb([x as u8, 0, 0]));
        let b = GtBox { class: 0, left: 0.1, top: 0.2, width: 0.2, height: 0.4 };
        let (v, bs) = detection_view(&img, &[b], 1);
        assert_eq!(v.dimensions(), (100, 50));
        assert!((bs[0].left - 0.7).abs() < 1e-6);
        assert_eq!(v.get_pixel(99, 0).0[0], 0);
        // A crop that cuts most of the box away drops it.
        let far = GtBox { class: 0, left: 0.0, top: 0.0, width: 0.1, height: 0.1 };
        let (_, bs) = detection_view(&img, &[far], 2);
        assert!(bs.is_empty());
    }

    #[test]
    fn targets_mark_cells_inside_boxes() {
        let b = GtBox { class: 1, left: 0.25, top: 0.25, width: 0.5, height: 0.5 };
        let (cls, reg, w) = targets(4, 4, &[b], 2);
        // Cells (1,1),(1,2),(2,1),(2,2) have centres inside.
        let pos: Vec<usize> = (0..16).filter(|i| w[*i] > 0.0).collect();
        assert_eq!(pos, vec![5, 6, 9, 10]);
        assert!(cls[5 * 2 + 1] > 0.5 && cls[5 * 2] == 0.0);
        // Cell (1,1) centre is at 0.375: left distance 0.125 = half a cell.
        assert!((reg[5 * 4] - 0.5f32.ln()).abs() < 1e-5);
        // A tiny box still gets its centre cell.
        let tiny = GtBox { class: 0, left: 0.01, top: 0.01, width: 0.02, height: 0.02 };
        let (_, _, w) = targets(4, 4, &[tiny], 1);
        assert_eq!(w.iter().filter(|v| **v > 0.0).count(), 1);
    }

    /// A grid of `dim` channels (`s16` of them stride-16) whose cells under `b` differ from the rest.
    fn synthetic_grid(dim: usize, s16: usize, b: &GtBox) -> FeatureGrid {
        let (rows, cols) = (6, 6);
        let data = (0..rows * cols)
            .flat_map(|i| {
                let (cx, cy) = (((i % cols) as f32 + 0.5) / cols as f32, ((i / cols) as f32 + 0.5) / rows as f32);
                let inside = cx > b.left && cx < b.left + b.width && cy > b.top && cy < b.top + b.height;
                // Channel 0 also tells cells apart (no two score alike).
                let at = if inside { 1.0 } else { 0.0 } + 0.03 * i as f32;
                (0..dim).map(move |k| {
                    f16::from_f32(if k == 0 {
                        at
                    } else if inside {
                        1.0 + (k % 3) as f32
                    } else {
                        (k % 2) as f32 * 0.1
                    })
                })
            })
            .collect();
        FeatureGrid { rows, cols, dim, s16, data }
    }

    #[test]
    fn heads_record_their_backbone_and_grid_width() {
        let b = GtBox { class: 0, left: 0.2, top: 0.3, width: 0.5, height: 0.4 };
        let grid = synthetic_grid(12, 4, &b);
        let recipe = DetectionRecipe { steps: 20, backbone: Variant::Lite2, ..DetectionRecipe::regular() };
        let head = DetectorHead::fit(&[&grid], &[vec![b]], 1, &recipe, &|_| {}).expect("fit");
        let bytes = head.to_bytes().expect("bytes");
        let again = DetectorHead::from_bytes(&bytes).expect("load");
        assert_eq!((again.backbone, again.dim()), (Variant::Lite2, 12));
        assert_eq!(again.detect(&grid).expect("detect"), head.detect(&grid).expect("detect"));
        // A grid of another width is refused, not misread.
        assert!(again.detect(&synthetic_grid(16, 4, &b)).is_err());
        // Heads written before the backbone was recorded (three metadata values) read Lite0.
        let mut t = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).expect("tensors");
        t.insert("meta".into(), Tensor::from_slice(&[1f32, 320.0, 64.0], 3, &Device::Cpu).expect("meta"));
        let old: Vec<(String, Tensor)> = t.into_iter().collect();
        let legacy =
            DetectorHead::from_bytes(&crate::heads::classifier::safetensors_bytes(&old).expect("bytes")).expect("load");
        assert_eq!(legacy.backbone, Variant::Lite0);
    }

    /// The grid of the mirror image: every row's cells in reverse order.
    fn mirrored(g: &FeatureGrid) -> FeatureGrid {
        let mut data = Vec::with_capacity(g.data.len());
        for r in 0..g.rows {
            for c in (0..g.cols).rev() {
                data.extend_from_slice(&g.data[(r * g.cols + c) * g.dim..][..g.dim]);
            }
        }
        FeatureGrid { data, ..g.clone() }
    }

    #[test]
    fn mirrored_detection_is_equivariant() {
        let b = GtBox { class: 0, left: 0.1, top: 0.3, width: 0.45, height: 0.4 };
        let grid = synthetic_grid(12, 4, &b);
        let recipe = DetectionRecipe { steps: 30, mirror: true, ..DetectionRecipe::regular() };
        let head = DetectorHead::fit(&[&grid], &[vec![b]], 1, &recipe, &|_| {}).expect("fit");
        let m = mirrored(&grid);
        let a = head.detect_with_mirror(&grid, Some(&m)).expect("detect");
        let z = head.detect_with_mirror(&m, Some(&grid)).expect("detect");
        assert!(!a.is_empty() && a.len() == z.len());
        // The mirror image's detections are the image's, flipped (same scores).
        for (x, y) in a.iter().zip(&z) {
            assert!((x.score - y.score).abs() < 1e-4, "{x:?} vs {y:?}");
            assert!((x.left - (1.0 - y.left - y.width)).abs() < 1e-4 && (x.width - y.width).abs() < 1e-4);
            assert!((x.top - y.top).abs() < 1e-4 && (x.height - y.height).abs() < 1e-4);
        }
        // The flag travels with the head.
        assert!(DetectorHead::from_bytes(&head.to_bytes().expect("bytes")).expect("load").mirror);
    }
}
