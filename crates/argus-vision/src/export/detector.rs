//! A trained detector as one ONNX graph (opset 13) that computes what the server computes: the backbone's
//! stride-16 and upsampled stride-32 maps (rounded to half precision, as the server stores its grids), the dense
//! head over every cell, the class-agnostic suppression that picks the second stage's candidates, the second
//! stage's pooled box features read from summed-area tables (bilinear reads, exact as in
//! [`crate::heads::box_stage`]), its refinement passes and rescoring, and the per-tag suppression — with the mirror
//! image scored beside the image when the head was trained so. Contract of the General (compact) \[S1\] export:
//! input [`DETECTOR_INPUT`] `[1, 3, S, S]` RGB 0–255 (the image resized to S × S), outputs [`DETECTED_BOXES`]
//! `[1, N, 4]` (x1 y1 x2 y2, normalised), [`DETECTED_SCORES`] `[1, N]` and [`DETECTED_CLASSES`] `[1, N]` (int64),
//! most confident first, at most [`MAX_DETECTIONS`].

use crate::backbone::{Weights, INPUT_MEAN, INPUT_SCALE};
use crate::export::onnx::{tensor_info, AttributeProto, GraphBuilder, FLOAT, INT64, VARIABLE};
use crate::export::{backbone, image_metadata, Precision};
use crate::heads::box_stage::{BoxStage, RING};
use crate::heads::detector::{DetectorHead, CANDIDATE_NMS_IOU, MAX_DETECTIONS, MIN_SCORE, NMS_IOU};
use crate::heads::logreg::Model;

/// Name of the detector's input: `[1, 3, S, S]` float RGB in 0–255.
pub const DETECTOR_INPUT: &str = "image_tensor";
/// Name of the boxes output: `[1, N, 4]`, x1 y1 x2 y2 in [0, 1].
pub const DETECTED_BOXES: &str = "detected_boxes";
/// Name of the scores output: `[1, N]`.
pub const DETECTED_SCORES: &str = "detected_scores";
/// Name of the classes output: `[1, N]` int64 indices into `labels.txt`.
pub const DETECTED_CLASSES: &str = "detected_classes";

/// Writes a detector as an ONNX model (see the module documentation). `weights` is the backbone checkpoint
/// (safetensors) the head was trained on. Deterministic bytes.
pub fn detector_onnx(
    weights: &std::path::Path,
    head: &DetectorHead,
    precision: Precision,
) -> Result<Vec<u8>, crate::weights::WeightsError> {
    let weights = crate::weights::load_safetensors(weights)?;
    Ok(detector_graph(&weights, head, precision)?)
}

/// Small graph-building steps on top of [`GraphBuilder`].
struct Ops<'a> {
    g: &'a mut GraphBuilder,
}

impl Ops<'_> {
    fn op(&mut self, op: &str, inputs: &[&str]) -> String {
        self.g.node(op, inputs, vec![])
    }
    fn add(&mut self, a: &str, b: &str) -> String {
        self.op("Add", &[a, b])
    }
    fn sub(&mut self, a: &str, b: &str) -> String {
        self.op("Sub", &[a, b])
    }
    fn mul(&mut self, a: &str, b: &str) -> String {
        self.op("Mul", &[a, b])
    }
    fn div(&mut self, a: &str, b: &str) -> String {
        self.op("Div", &[a, b])
    }
    /// `a ⊙ v` for a float constant `v`.
    fn mul_by(&mut self, a: &str, v: f32) -> String {
        let c = self.g.scalar(v);
        self.mul(a, &c)
    }
    /// `a + v` for a float constant `v`.
    fn add_to(&mut self, a: &str, v: f32) -> String {
        let c = self.g.scalar(v);
        self.add(a, &c)
    }
    /// `v − a` for a float constant `v`.
    fn from(&mut self, v: f32, a: &str) -> String {
        let c = self.g.scalar(v);
        self.sub(&c, a)
    }
    fn max_with(&mut self, a: &str, v: f32) -> String {
        let c = self.g.scalar(v);
        self.op("Max", &[a, &c])
    }
    fn min_with(&mut self, a: &str, v: f32) -> String {
        let c = self.g.scalar(v);
        self.op("Min", &[a, &c])
    }
    fn clip(&mut self, a: &str, lo: f32, hi: f32) -> String {
        let (l, h) = (self.g.scalar(lo), self.g.scalar(hi));
        self.op("Clip", &[a, &l, &h])
    }
    fn greater(&mut self, a: &str, b: &str) -> String {
        self.op("Greater", &[a, b])
    }
    fn cast(&mut self, a: &str, to: i32) -> String {
        self.g.node("Cast", &[a], vec![AttributeProto::int("to", to as i64)])
    }
    fn concat(&mut self, parts: &[&str], axis: i64) -> String {
        self.g.node("Concat", parts, vec![AttributeProto::int("axis", axis)])
    }
    fn reshape(&mut self, a: &str, shape: &[i64]) -> String {
        let s = self.g.int64s(shape);
        self.op("Reshape", &[a, &s])
    }
    /// Entries `indices` of `a` along `axis` (the axis kept).
    fn take(&mut self, a: &str, indices: &[i64], axis: i64) -> String {
        let i = self.g.int64s(indices);
        self.g.node("Gather", &[a, &i], vec![AttributeProto::int("axis", axis)])
    }
    fn gather(&mut self, a: &str, indices: &str, axis: i64) -> String {
        self.g.node("Gather", &[a, indices], vec![AttributeProto::int("axis", axis)])
    }
    fn slice(&mut self, a: &str, starts: &[i64], ends: &[i64], axes: &[i64]) -> String {
        let (s, e, x) = (self.g.int64s(starts), self.g.int64s(ends), self.g.int64s(axes));
        self.op("Slice", &[a, &s, &e, &x])
    }
    /// `a` reversed along `axis`.
    fn reverse(&mut self, a: &str, axis: i64) -> String {
        let (s, e, x, st) =
            (self.g.int64s(&[-1]), self.g.int64s(&[i64::MIN]), self.g.int64s(&[axis]), self.g.int64s(&[-1]));
        self.op("Slice", &[a, &s, &e, &x, &st])
    }
    fn unsqueeze(&mut self, a: &str, axis: i64) -> String {
        let x = self.g.int64s(&[axis]);
        self.op("Unsqueeze", &[a, &x])
    }
    /// 1.0 where boxes `b` `[M, 4]` are not empty (x1 > x0 and y1 > y0), else 0.0, as `[M, 1]`.
    fn and_valid(&mut self, b: &str) -> String {
        let [x0, y0, x1, y1] = self.columns(b);
        self.nonempty(&x0, &y0, &x1, &y1)
    }
    /// 1.0 where `x1 > x0` and `y1 > y0`, else 0.0.
    fn nonempty(&mut self, x0: &str, y0: &str, x1: &str, y1: &str) -> String {
        let (wide, tall) = (self.greater(x1, x0), self.greater(y1, y0));
        let both = self.op("And", &[&wide, &tall]);
        self.cast(&both, FLOAT)
    }
    /// Columns of boxes `b` [M, 4].
    fn columns(&mut self, b: &str) -> [String; 4] {
        [self.take(b, &[0], 1), self.take(b, &[1], 1), self.take(b, &[2], 1), self.take(b, &[3], 1)]
    }
    /// `x · Wᵀ + b` for a fitted linear model (`weight` one row per output).
    fn linear(&mut self, x: &str, model: &Model, d: usize) -> String {
        let outputs = model.bias.len();
        let mut transposed = vec![0f32; d * outputs];
        for k in 0..outputs {
            for j in 0..d {
                transposed[j * outputs + k] = model.weight[k * d + j];
            }
        }
        let w = self.g.exact_floats(&[d, outputs], &transposed);
        let b = self.g.exact_floats(&[outputs], &model.bias);
        let xw = self.op("MatMul", &[x, &w]);
        self.add(&xw, &b)
    }
}

/// A grid's summed-area table and its shape.
struct Table {
    /// `[(rows + 1) · (cols + 1), dim]`.
    flat: String,
    rows: usize,
    cols: usize,
    dim: usize,
    s16: usize,
}

fn detector_graph(weights: &Weights, head: &DetectorHead, precision: Precision) -> candle_core::Result<Vec<u8>> {
    let mut g = GraphBuilder::new(precision == Precision::Float16);
    let size = head.input_size as usize;
    let mirrored = head.mirror;
    let batch = if mirrored { 2 } else { 1 };
    let classes = head.classes;
    let (mean, scale) = (g.scalar(INPUT_MEAN), g.scalar(1.0 / INPUT_SCALE));
    let centred = g.node("Sub", &[DETECTOR_INPUT, &mean], vec![]);
    let mut x = g.node("Mul", &[&centred, &scale], vec![]);
    if mirrored {
        let mut o = Ops { g: &mut g };
        let flipped = o.reverse(&x, 3);
        x = o.concat(&[&x, &flipped], 0);
    }
    let (s16_map, top) = backbone(&mut g, weights, &x, size)?;
    let mut o = Ops { g: &mut g };
    // The server's grid: the stride-16 map beside the stride-32 one upsampled (nearest, exactly 2×), each cell
    // stored in half precision.
    let scales = o.g.exact_floats(&[4], &[1.0, 1.0, 2.0, 2.0]);
    let up = o.g.node(
        "Resize",
        &[&top, "", &scales],
        vec![
            AttributeProto::string("mode", "nearest"),
            AttributeProto::string("coordinate_transformation_mode", "asymmetric"),
            AttributeProto::string("nearest_mode", "floor"),
        ],
    );
    let cells = o.concat(&[&s16_map, &up], 1);
    let cells = round_to_half(&mut o, &cells);
    let nhwc = o.g.node("Transpose", &[&cells], vec![AttributeProto::ints("perm", &[0, 2, 3, 1])]);
    let grid_side = size.div_ceil(16);
    let (rows, cols, dim) = (grid_side, grid_side, head.mean.len());
    let s16 = dim - top_channels(weights)?;
    let flat = o.reshape(&nhwc, &[batch as i64, (rows * cols) as i64, dim as i64]);

    // The dense head on every cell.
    let mean = o.g.exact_floats(&[dim], &head.mean);
    let inv_std = o.g.exact_floats(&[dim], &head.inv_std);
    let centred = o.sub(&flat, &mean);
    let xs = o.mul(&centred, &inv_std);
    let out = classes + 4;
    let w1 = o.g.exact_floats(&[dim, head.hidden], &head.w1);
    let b1 = o.g.exact_floats(&[head.hidden], &head.b1);
    let w2 = o.g.exact_floats(&[head.hidden, out], &head.w2);
    let b2 = o.g.exact_floats(&[out], &head.b2);
    let h = o.op("MatMul", &[&xs, &w1]);
    let h = o.add(&h, &b1);
    let h = o.op("Relu", &[&h]);
    let raw = o.op("MatMul", &[&h, &w2]);
    let raw = o.add(&raw, &b2);
    let own = o.take(&raw, &[0], 0);
    let own = o.reshape(&own, &[(rows * cols) as i64, out as i64]);
    let logits = o.slice(&own, &[0], &[classes as i64], &[1]);
    let mut probs = o.op("Sigmoid", &[&logits]);
    let mut distances = o.slice(&own, &[classes as i64], &[out as i64], &[1]);
    if mirrored {
        // Each cell's output averaged with its mirror cell's, left and right distances swapped.
        let other = o.take(&raw, &[1], 0);
        let other = o.reshape(&other, &[rows as i64, cols as i64, out as i64]);
        let other = o.reverse(&other, 1);
        let other = o.reshape(&other, &[(rows * cols) as i64, out as i64]);
        let other_logits = o.slice(&other, &[0], &[classes as i64], &[1]);
        let other_probs = o.op("Sigmoid", &[&other_logits]);
        let c = classes as i64;
        let swapped = o.take(&other, &[c + 2, c + 1, c, c + 3], 1);
        let sum = o.add(&probs, &other_probs);
        probs = o.mul_by(&sum, 0.5);
        let sum = o.add(&distances, &swapped);
        distances = o.mul_by(&sum, 0.5);
    }
    // Decoded boxes: the cell centre minus / plus the distances (log scale, in cells), clipped to the image.
    let mut centres = Vec::with_capacity(rows * cols * 4);
    for r in 0..rows {
        for c in 0..cols {
            let (cx, cy) = ((c as f32 + 0.5) / cols as f32, (r as f32 + 0.5) / rows as f32);
            centres.extend_from_slice(&[cx, cy, cx, cy]);
        }
    }
    let centres = o.g.exact_floats(&[rows * cols, 4], &centres);
    let clipped = o.clip(&distances, -6.0, 6.0);
    let extents = o.op("Exp", &[&clipped]);
    let per_cell = o.g.exact_floats(&[1, 4], &[cols as f32, rows as f32, cols as f32, rows as f32]);
    let extents = o.div(&extents, &per_cell);
    let signs = o.g.exact_floats(&[1, 4], &[-1.0, -1.0, 1.0, 1.0]);
    let extents = o.mul(&extents, &signs);
    let boxes = o.add(&centres, &extents);
    let boxes = o.clip(&boxes, 0.0, 1.0);
    let valid = o.and_valid(&boxes);
    let probs = o.mul(&probs, &valid);

    let (final_boxes, final_scores) = match &head.stage2 {
        Some(stage) => {
            let tables: Vec<Table> = (0..batch)
                .map(|n| {
                    let grid = o.take(&flat, &[n as i64], 0);
                    let grid = o.reshape(&grid, &[rows as i64, cols as i64, dim as i64]);
                    summed_area_table(&mut o, &grid, rows, cols, dim, s16)
                })
                .collect();
            second_stage(&mut o, stage, &tables, &boxes, &probs)
        }
        None => (boxes, probs),
    };
    suppress(&mut o, &final_boxes, &final_scores);

    let s = size as i64;
    Ok(g.finish(
        "argus_detector",
        vec![tensor_info(DETECTOR_INPUT, FLOAT, &[1, 3, s, s])],
        vec![
            tensor_info(DETECTED_BOXES, FLOAT, &[1, VARIABLE, 4]),
            tensor_info(DETECTED_SCORES, FLOAT, &[1, VARIABLE]),
            tensor_info(DETECTED_CLASSES, INT64, &[1, VARIABLE]),
        ],
        &image_metadata(),
        "Argus object detector: EfficientNet-Lite feature maps, a dense head and a second stage over pooled boxes.",
    ))
}

/// `v` rounded to the nearest half-precision value (ties to even), in float arithmetic: what the server's
/// grids hold. A Cast to FLOAT16 and back would say the same, but OpenVINO removes such pairs of casts as
/// redundant. Half precision keeps 11 significant bits: `v` is rounded to a multiple of 2^(e − 10), `e` its
/// binary exponent (from −14, where half precision's subnormals begin, to 15); the powers of two come from
/// tables, so every step is exact.
fn round_to_half(o: &mut Ops, v: &str) -> String {
    const LOWEST: i32 = -14;
    const HIGHEST: i32 = 15;
    let powers: Vec<f32> = (LOWEST..=HIGHEST + 1).map(|e| 2f32.powi(e)).collect();
    let spacings: Vec<f32> = (LOWEST..=HIGHEST + 1).map(|e| 2f32.powi(e - 10)).collect();
    let powers = o.g.exact_floats(&[powers.len()], &powers);
    let spacings = o.g.exact_floats(&[spacings.len()], &spacings);
    let magnitude = o.op("Abs", &[v]);
    let log = o.op("Log", &[&magnitude]);
    let log2 = o.mul_by(&log, std::f32::consts::LOG2_E);
    let floor = o.op("Floor", &[&log2]);
    // The logarithm may land one off near a power of two: correct against the exact powers.
    let guess = o.clip(&floor, LOWEST as f32, HIGHEST as f32);
    let index = o.add_to(&guess, -(LOWEST as f32));
    let index = o.cast(&index, INT64);
    let power = o.gather(&powers, &index, 0);
    let twice = o.mul_by(&power, 2.0);
    let below_twice = o.op("Less", &[&magnitude, &twice]);
    let up = o.op("Not", &[&below_twice]);
    let up = o.cast(&up, FLOAT);
    let under = o.op("Less", &[&magnitude, &power]);
    let lowest = o.g.scalar(LOWEST as f32);
    let above_lowest = o.greater(&guess, &lowest);
    let down = o.op("And", &[&under, &above_lowest]);
    let down = o.cast(&down, FLOAT);
    let exponent = o.add(&guess, &up);
    let exponent = o.sub(&exponent, &down);
    let exponent = o.clip(&exponent, LOWEST as f32, HIGHEST as f32);
    let index = o.add_to(&exponent, -(LOWEST as f32));
    let index = o.cast(&index, INT64);
    let spacing = o.gather(&spacings, &index, 0);
    let steps = o.div(v, &spacing);
    let steps = o.op("Round", &[&steps]);
    o.mul(&steps, &spacing)
}

/// Channels of the backbone's top feature map (its head convolution's outputs).
fn top_channels(weights: &Weights) -> candle_core::Result<usize> {
    match weights.get("_conv_head.weight") {
        Some(w) => w.dim(0),
        None => candle_core::bail!("the checkpoint has no _conv_head.weight"),
    }
}

/// The summed-area table of one grid `[rows, cols, dim]`: cumulative sums down and across, a zero row and column
/// in front.
fn summed_area_table(o: &mut Ops, grid: &str, rows: usize, cols: usize, dim: usize, s16: usize) -> Table {
    let (down, across) = (o.g.int64_scalar(0), o.g.int64_scalar(1));
    let summed = o.op("CumSum", &[grid, &down]);
    let summed = o.op("CumSum", &[&summed, &across]);
    let pads = o.g.int64s(&[1, 1, 0, 0, 0, 0]);
    let padded = o.op("Pad", &[&summed, &pads]);
    let flat = o.reshape(&padded, &[((rows + 1) * (cols + 1)) as i64, dim as i64]);
    Table { flat, rows, cols, dim, s16 }
}

/// Area-weighted channel sums over boxes `b` `[M, 4]` (clipped to the grid) and their areas in cells:
/// `([M, dim], [M, 1])`, zero for an empty box — [`crate::heads::box_stage`]'s four bilinear reads of the table.
fn box_sums(o: &mut Ops, t: &Table, b: &str) -> (String, String) {
    let [b0, b1, b2, b3] = o.columns(b);
    let (cols, rows) = (t.cols as f32, t.rows as f32);
    let scaled = |o: &mut Ops, v: &str, n: f32| {
        let c = o.clip(v, 0.0, 1.0);
        o.mul_by(&c, n)
    };
    let (x0, x1, y0, y1) = (scaled(o, &b0, cols), scaled(o, &b2, cols), scaled(o, &b1, rows), scaled(o, &b3, rows));
    let valid = o.nonempty(&x0, &y0, &x1, &y1);
    let stride = (t.cols + 1) as f32;
    let (mut indices, mut weights) = (Vec::new(), Vec::new());
    for (x, y, sign) in [(&x1, &y1, 1.0), (&x0, &y1, -1.0), (&x1, &y0, -1.0), (&x0, &y0, 1.0)] {
        let fx = o.op("Floor", &[x]);
        let c = o.min_with(&fx, cols - 1.0);
        let fy = o.op("Floor", &[y]);
        let r = o.min_with(&fy, rows - 1.0);
        let (dx, dy) = (o.sub(x, &c), o.sub(y, &r));
        let (ex, ey) = (o.from(1.0, &dx), o.from(1.0, &dy));
        let row = o.mul_by(&r, stride);
        let base = o.add(&row, &c);
        let right = o.add_to(&base, 1.0);
        let below = o.add_to(&base, stride);
        let diagonal = o.add_to(&base, stride + 1.0);
        indices.extend([base, right, below, diagonal]);
        let taps = [o.mul(&ex, &ey), o.mul(&dx, &ey), o.mul(&ex, &dy), o.mul(&dx, &dy)];
        for w in taps {
            weights.push(o.mul_by(&w, sign));
        }
    }
    let refs: Vec<&str> = indices.iter().map(String::as_str).collect();
    let indices = o.concat(&refs, 1);
    let refs: Vec<&str> = weights.iter().map(String::as_str).collect();
    let weights = o.concat(&refs, 1);
    let indices = o.cast(&indices, INT64);
    let indices = o.reshape(&indices, &[-1]);
    let values = o.gather(&t.flat, &indices, 0);
    let weights = o.reshape(&weights, &[-1, 1]);
    let weighted = o.mul(&values, &weights);
    let weighted = o.reshape(&weighted, &[-1, 16, t.dim as i64]);
    let axes = o.g.int64s(&[1]);
    let sums = o.g.node("ReduceSum", &[&weighted, &axes], vec![AttributeProto::int("keepdims", 0)]);
    let sums = o.mul(&sums, &valid);
    let (w, h) = (o.sub(&x1, &x0), o.sub(&y1, &y0));
    let area = o.mul(&w, &h);
    (sums, o.mul(&area, &valid))
}

/// The second stage's feature rows of boxes `b` `[K, 4]` on one table: inside and ring means, quadrant means
/// of the stride-16 channels, geometry (`[K, box_dim]`, as [`crate::heads::box_stage::box_features`]).
fn box_features(o: &mut Ops, t: &Table, b: &str) -> String {
    let [b0, b1, b2, b3] = o.columns(b);
    let w = o.sub(&b2, &b0);
    let w = o.max_with(&w, 1e-4);
    let h = o.sub(&b3, &b1);
    let h = o.max_with(&h, 1e-4);
    let cx = o.add(&b0, &b2);
    let cx = o.mul_by(&cx, 0.5);
    let cy = o.add(&b1, &b3);
    let cy = o.mul_by(&cy, 0.5);
    let gw = o.mul_by(&w, RING);
    let gw = o.mul_by(&gw, 0.5);
    let gh = o.mul_by(&h, RING);
    let gh = o.mul_by(&gh, 0.5);
    let grown = [o.sub(&cx, &gw), o.sub(&cy, &gh), o.add(&cx, &gw), o.add(&cy, &gh)];
    let (half_w, half_h) = (o.mul_by(&w, 0.5), o.mul_by(&h, 0.5));
    let (mid_x, mid_y) = (o.add(&b0, &half_w), o.add(&b1, &half_h));
    let (end_x, end_y) = (o.add(&b0, &w), o.add(&b1, &h));
    let quads = [
        [&b0, &b1, &mid_x, &mid_y],
        [&mid_x, &b1, &end_x, &mid_y],
        [&b0, &mid_y, &mid_x, &end_y],
        [&mid_x, &mid_y, &end_x, &end_y],
    ];
    let mut parts: Vec<&str> = vec![&b0, &b1, &b2, &b3];
    parts.extend(grown.iter().map(String::as_str));
    for q in &quads {
        parts.extend(q.iter().map(|s| s.as_str()));
    }
    let all = o.concat(&parts, 1);
    let all = o.reshape(&all, &[-1, 4]);
    let (sums, areas) = box_sums(o, t, &all);
    let dim = t.dim as i64;
    let sums = o.reshape(&sums, &[-1, 6, dim]);
    let areas = o.reshape(&areas, &[-1, 6]);
    let inside_sum = o.take(&sums, &[0], 1);
    let inside_sum = o.reshape(&inside_sum, &[-1, dim]);
    let area = o.take(&areas, &[0], 1);
    let area = o.max_with(&area, 1e-6);
    let inside = o.div(&inside_sum, &area);
    let outer_sum = o.take(&sums, &[1], 1);
    let outer_sum = o.reshape(&outer_sum, &[-1, dim]);
    let outer_area = o.take(&areas, &[1], 1);
    let ring_area = o.sub(&outer_area, &area);
    let ring_sum = o.sub(&outer_sum, &inside_sum);
    let ring_mean = o.div(&ring_sum, &ring_area);
    let threshold = o.g.scalar(0.05);
    let has_ring = o.greater(&ring_area, &threshold);
    let ring = o.op("Where", &[&has_ring, &ring_mean, &inside]);
    let s16 = t.s16 as i64;
    let quad_sums = o.slice(&sums, &[2, 0], &[6, s16], &[1, 2]);
    let quad_areas = o.slice(&areas, &[2], &[6], &[1]);
    let quad_areas = o.max_with(&quad_areas, 1e-6);
    let quad_areas = o.unsqueeze(&quad_areas, 2);
    let quad_means = o.div(&quad_sums, &quad_areas);
    let quad_means = o.reshape(&quad_means, &[-1, 4 * s16]);
    let (lw, lh) = (o.op("Log", &[&w]), o.op("Log", &[&h]));
    o.concat(&[&inside, &ring, &quad_means, &cx, &cy, &lw, &lh], 1)
}

/// A model's logits for boxes `b`, read on the image's table and (when mirrored) averaged with the mirror
/// box's on the mirror image's table, the first output negated there when `negate_first` (a horizontal shift).
fn stage_logits(o: &mut Ops, stage: &BoxStage, tables: &[Table], b: &str, model: &Model, negate_first: bool) -> String {
    let d = stage.mean.len();
    let mean = o.g.exact_floats(&[d], &stage.mean);
    let inv_std = o.g.exact_floats(&[d], &stage.inv_std);
    let read = |o: &mut Ops, table: &Table, boxes: &str| {
        let f = box_features(o, table, boxes);
        let centred = o.sub(&f, &mean);
        let f = o.mul(&centred, &inv_std);
        o.linear(&f, model, d)
    };
    let own = read(o, &tables[0], b);
    let Some(mirror) = tables.get(1) else { return own };
    let [b0, b1, b2, b3] = o.columns(b);
    let (l, r) = (o.from(1.0, &b2), o.from(1.0, &b0));
    let flipped = o.concat(&[&l, &b1, &r, &b3], 1);
    let mut other = read(o, mirror, &flipped);
    if negate_first {
        let outputs = model.bias.len();
        let mut signs = vec![1f32; outputs];
        signs[0] = -1.0;
        let signs = o.g.exact_floats(&[1, outputs], &signs);
        other = o.mul(&other, &signs);
    }
    let sum = o.add(&own, &other);
    o.mul_by(&sum, 0.5)
}

/// Boxes `p` `[K, 4]` moved by R-CNN deltas `d` `[K, 4]`, clipped to the image (as
/// [`crate::heads::box_stage::apply_deltas`]).
fn apply_deltas(o: &mut Ops, p: &str, d: &str) -> String {
    let [p0, p1, p2, p3] = o.columns(p);
    let [d0, d1, d2, d3] = o.columns(d);
    let pw = o.sub(&p2, &p0);
    let pw = o.max_with(&pw, 1e-4);
    let ph = o.sub(&p3, &p1);
    let ph = o.max_with(&ph, 1e-4);
    let centre = |o: &mut Ops, start: &str, size: &str, delta: &str| {
        let half = o.mul_by(size, 0.5);
        let mid = o.add(start, &half);
        let shift = o.mul(delta, size);
        o.add(&mid, &shift)
    };
    let (cx, cy) = (centre(o, &p0, &pw, &d0), centre(o, &p1, &ph, &d1));
    let scale = |o: &mut Ops, size: &str, delta: &str| {
        let c = o.clip(delta, -1.0, 1.0);
        let e = o.op("Exp", &[&c]);
        let s = o.mul(size, &e);
        o.mul_by(&s, 0.5)
    };
    let (hw, hh) = (scale(o, &pw, &d2), scale(o, &ph, &d3));
    let edges = [o.sub(&cx, &hw), o.sub(&cy, &hh), o.add(&cx, &hw), o.add(&cy, &hh)];
    let refs: Vec<&str> = edges.iter().map(String::as_str).collect();
    let b = o.concat(&refs, 1);
    o.clip(&b, 0.0, 1.0)
}

/// The second stage: the dense head's best boxes (class-agnostic suppression) refined and rescored. Returns
/// the refined boxes `[K, 4]` and their per-tag scores `[K, classes]`.
fn second_stage(o: &mut Ops, stage: &BoxStage, tables: &[Table], boxes: &str, probs: &str) -> (String, String) {
    // Each cell's best tag score, as one row `[1, cells]`.
    let by_class = o.g.node("Transpose", &[probs], vec![AttributeProto::ints("perm", &[1, 0])]);
    let axes = AttributeProto::ints("axes", &[0]);
    let best = o.g.node("ReduceMax", &[&by_class], vec![axes, AttributeProto::int("keepdims", 1)]);
    let (_, picked, _) = ranked_nms(o, boxes, &best, stage.candidates, CANDIDATE_NMS_IOU);
    let mut b = o.gather(boxes, &picked, 0);
    let dense = o.gather(probs, &picked, 0);
    for _ in 0..stage.refinements {
        let d = stage_logits(o, stage, tables, &b, &stage.refiner, true);
        b = apply_deltas(o, &b, &d);
    }
    let z = stage_logits(o, stage, tables, &b, &stage.scorer, false);
    let own = o.op("Sigmoid", &[&z]);
    let (keep, lend) = (o.g.scalar(1.0 - stage.blend), o.g.scalar(stage.blend));
    let own = o.op("Pow", &[&own, &keep]);
    let dense = o.max_with(&dense, 1e-6);
    let dense = o.op("Pow", &[&dense, &lend]);
    let scores = o.mul(&own, &dense);
    (b, scores)
}

/// The largest f32 below `v`: keeps what is at or above `v` under a strictly-greater comparison.
fn below(v: f32) -> f32 {
    f32::from_bits(v.to_bits() - 1)
}

/// Greedy per-class suppression of boxes `[N, 4]` with scores `[C, N]` in the server's order: each class's boxes
/// of score at least [`MIN_SCORE`] by score, ties by index (what a stable sort gives), a box dropped when it
/// overlaps a kept one by more than `overlap` IoU, at most `most` kept per class. ONNX's NonMaxSuppression breaks
/// ties its own way (and saturated probabilities tie often), so each class's boxes are first sorted by TopK
/// (which breaks ties by index) and suppressed under distinct rank scores. Returns the kept boxes' classes, box
/// indices and scores (`[M]` each), class by class, each class's best first.
fn ranked_nms(o: &mut Ops, boxes: &str, scores: &str, most: usize, overlap: f64) -> (String, String, String) {
    let shape = o.op("Shape", &[scores]);
    let n = o.slice(&shape, &[1], &[2], &[0]);
    let sorted = o.g.node_outputs(
        "TopK",
        &[scores, &n],
        vec![AttributeProto::int("axis", 1), AttributeProto::int("largest", 1), AttributeProto::int("sorted", 1)],
        2,
    );
    let (values, order) = (&sorted[0], &sorted[1]);
    let class_boxes = o.gather(boxes, order, 0);
    // Ranks as scores: N, N − 1, …, 1 along each row (a reversed running count), zero below the minimum score.
    let zero = o.mul_by(values, 0.0);
    let ones = o.add_to(&zero, 1.0);
    let axis = o.g.int64_scalar(1);
    let ranks = o.g.node("CumSum", &[&ones, &axis], vec![AttributeProto::int("reverse", 1)]);
    let floor = o.g.scalar(below(MIN_SCORE));
    let kept = o.greater(values, &floor);
    let kept = o.cast(&kept, FLOAT);
    let ranks = o.mul(&ranks, &kept);
    let ranks = o.unsqueeze(&ranks, 1);
    let most = o.g.int64s(&[most as i64]);
    let overlap = o.g.exact_floats(&[1], &[overlap as f32]);
    let positive = o.g.exact_floats(&[1], &[0.0]);
    let selected = o.op("NonMaxSuppression", &[&class_boxes, &ranks, &most, &overlap, &positive]);
    let pairs = o.take(&selected, &[0, 2], 1);
    let class_of = o.take(&selected, &[0], 1);
    let class_of = o.reshape(&class_of, &[-1]);
    let box_of = o.op("GatherND", &[order, &pairs]);
    let score_of = o.op("GatherND", &[values, &pairs]);
    (class_of, box_of, score_of)
}

/// Per-tag suppression of boxes `[N, 4]` with scores `[N, classes]`, the best [`MAX_DETECTIONS`] kept (ties by
/// class, then by suppression order, as the server sorts), written to the three outputs.
fn suppress(o: &mut Ops, boxes: &str, scores: &str) {
    let valid = o.and_valid(boxes);
    let scores = o.mul(scores, &valid);
    let by_class = o.g.node("Transpose", &[&scores], vec![AttributeProto::ints("perm", &[1, 0])]);
    let (class_of, box_of, kept) = ranked_nms(o, boxes, &by_class, MAX_DETECTIONS, NMS_IOU);
    let count = o.op("Shape", &[&kept]);
    let cap = o.g.int64s(&[MAX_DETECTIONS as i64]);
    let k = o.op("Min", &[&count, &cap]);
    let top = o.g.node_outputs(
        "TopK",
        &[&kept, &k],
        vec![AttributeProto::int("axis", 0), AttributeProto::int("largest", 1), AttributeProto::int("sorted", 1)],
        2,
    );
    let best_classes = o.gather(&class_of, &top[1], 0);
    let best_boxes = o.gather(&box_of, &top[1], 0);
    let out_boxes = o.gather(boxes, &best_boxes, 0);
    let axes = o.g.int64s(&[0]);
    o.g.node_into("Unsqueeze", &[&out_boxes, &axes], vec![], DETECTED_BOXES);
    o.g.node_into("Unsqueeze", &[&top[0], &axes], vec![], DETECTED_SCORES);
    o.g.node_into("Unsqueeze", &[&best_classes, &axes], vec![], DETECTED_CLASSES);
}
