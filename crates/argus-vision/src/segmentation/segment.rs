//! Interactive segmentation without learned weights: GrabCut (Rother et al. 2004) over a working copy of the
//! image (longest side [`WORK_SIDE`]). Foreground and background colour models are Gaussian mixtures; an
//! 8-connected graph with contrast-sensitive edges is cut with [`crate::segmentation::maxflow`]. A box prompt bounds the
//! object (outside is background); prompt points are hard seeds (label 1 foreground, 0 background). The mask
//! is turned into polygons (one per connected component, Douglas–Peucker simplified) and, on request, COCO
//! run-length encoding.

use image::{imageops, GrayImage, Luma, RgbImage};
use imageproc::contours::{find_contours, BorderType};
use imageproc::geometry::approximate_polygon_dp;
use imageproc::point::Point;

use crate::segmentation::maxflow::FlowGraph;

/// Longest side of the working copy the cut runs on.
pub const WORK_SIDE: u32 = 512;
/// Most vertices of one polygon.
pub const MAX_VERTICES: usize = 1000;
const COMPONENTS: usize = 5;
const ITERATIONS: usize = 5;
const GAMMA: f32 = 50.0;

/// A prompt point in relative coordinates; `foreground` is label 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PromptPoint {
    /// x in [0, 1].
    pub x: f32,
    /// y in [0, 1].
    pub y: f32,
    /// Label 1 (true) or 0.
    pub foreground: bool,
}

/// A box prompt in relative coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PromptBox {
    /// Left.
    pub x_min: f32,
    /// Top.
    pub y_min: f32,
    /// Right.
    pub x_max: f32,
    /// Bottom.
    pub y_max: f32,
}

/// A segmentation: the mask at working resolution and a score in [0, 1].
#[derive(Debug, Clone)]
pub struct Segmentation {
    /// 255 = object, 0 = background, at working resolution.
    pub mask: GrayImage,
    /// Mean foreground posterior of the object's pixels under the final colour models.
    pub score: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Bg,
    Fg,
    ProbBg,
    ProbFg,
}

impl Label {
    fn is_fg(self) -> bool {
        matches!(self, Label::Fg | Label::ProbFg)
    }
}

/// A Gaussian mixture over RGB with full covariances.
#[derive(Debug, Clone)]
struct Gmm {
    weight: [f32; COMPONENTS],
    mean: [[f32; 3]; COMPONENTS],
    inv_cov: [[f32; 9]; COMPONENTS],
    norm: [f32; COMPONENTS],
}

fn invert3(c: &[f64; 9]) -> Option<([f32; 9], f64)> {
    let det =
        c[0] * (c[4] * c[8] - c[5] * c[7]) - c[1] * (c[3] * c[8] - c[5] * c[6]) + c[2] * (c[3] * c[7] - c[4] * c[6]);
    if det <= 1e-12 {
        return None;
    }
    let inv = [
        (c[4] * c[8] - c[5] * c[7]) / det,
        (c[2] * c[7] - c[1] * c[8]) / det,
        (c[1] * c[5] - c[2] * c[4]) / det,
        (c[5] * c[6] - c[3] * c[8]) / det,
        (c[0] * c[8] - c[2] * c[6]) / det,
        (c[2] * c[3] - c[0] * c[5]) / det,
        (c[3] * c[7] - c[4] * c[6]) / det,
        (c[1] * c[6] - c[0] * c[7]) / det,
        (c[0] * c[4] - c[1] * c[3]) / det,
    ];
    Some((inv.map(|v| v as f32), det))
}

impl Gmm {
    /// Component densities (weighted) of a colour.
    fn component(&self, k: usize, z: &[f32; 3]) -> f32 {
        if self.weight[k] <= 0.0 {
            return 0.0;
        }
        let d = [z[0] - self.mean[k][0], z[1] - self.mean[k][1], z[2] - self.mean[k][2]];
        let m = &self.inv_cov[k];
        let q = d[0] * (m[0] * d[0] + m[1] * d[1] + m[2] * d[2])
            + d[1] * (m[3] * d[0] + m[4] * d[1] + m[5] * d[2])
            + d[2] * (m[6] * d[0] + m[7] * d[1] + m[8] * d[2]);
        self.weight[k] * self.norm[k] * (-0.5 * q).exp()
    }

    fn density(&self, z: &[f32; 3]) -> f32 {
        (0..COMPONENTS).map(|k| self.component(k, z)).sum()
    }

    fn best(&self, z: &[f32; 3]) -> usize {
        (0..COMPONENTS).max_by(|a, b| self.component(*a, z).total_cmp(&self.component(*b, z))).unwrap_or(0)
    }

    /// Fits a mixture to colours with given component assignments.
    fn fit(pixels: &[[f32; 3]], assign: &[usize]) -> Self {
        let mut count = [0f64; COMPONENTS];
        let mut sum = [[0f64; 3]; COMPONENTS];
        let mut prod = [[0f64; 9]; COMPONENTS];
        for (z, &k) in pixels.iter().zip(assign) {
            count[k] += 1.0;
            for i in 0..3 {
                sum[k][i] += z[i] as f64;
                for j in 0..3 {
                    prod[k][i * 3 + j] += z[i] as f64 * z[j] as f64;
                }
            }
        }
        let total: f64 = count.iter().sum::<f64>().max(1.0);
        let mut g = Gmm {
            weight: [0.0; COMPONENTS],
            mean: [[0.0; 3]; COMPONENTS],
            inv_cov: [[0.0; 9]; COMPONENTS],
            norm: [0.0; COMPONENTS],
        };
        for k in 0..COMPONENTS {
            if count[k] < 1.0 {
                continue;
            }
            let mean = [sum[k][0] / count[k], sum[k][1] / count[k], sum[k][2] / count[k]];
            let mut cov = [0f64; 9];
            for i in 0..3 {
                for j in 0..3 {
                    cov[i * 3 + j] = prod[k][i * 3 + j] / count[k] - mean[i] * mean[j];
                }
                cov[i * 3 + i] += 0.01; // regularise flat regions
            }
            if let Some((inv, det)) = invert3(&cov) {
                g.weight[k] = (count[k] / total) as f32;
                g.mean[k] = mean.map(|v| v as f32);
                g.inv_cov[k] = inv;
                g.norm[k] = (1.0 / ((2.0 * std::f64::consts::PI).powi(3) * det).sqrt()) as f32;
            }
        }
        g
    }

    /// A mixture from colours alone: components seeded by brightness quantiles, refined by k-means.
    fn init(pixels: &[[f32; 3]]) -> (Self, Vec<usize>) {
        let mut assign = vec![0usize; pixels.len()];
        if pixels.is_empty() {
            return (Self::fit(pixels, &assign), assign);
        }
        let mut order: Vec<usize> = (0..pixels.len()).collect();
        order.sort_by(|a, b| {
            let l = |z: &[f32; 3]| z[0] + z[1] + z[2];
            l(&pixels[*a]).total_cmp(&l(&pixels[*b]))
        });
        let mut centres: Vec<[f32; 3]> =
            (0..COMPONENTS).map(|k| pixels[order[(2 * k + 1) * pixels.len() / (2 * COMPONENTS)]]).collect();
        for _ in 0..5 {
            for (a, z) in assign.iter_mut().zip(pixels) {
                let d = |c: &[f32; 3]| (0..3).map(|i| (z[i] - c[i]).powi(2)).sum::<f32>();
                *a = (0..COMPONENTS).min_by(|x, y| d(&centres[*x]).total_cmp(&d(&centres[*y]))).unwrap_or(0);
            }
            let mut sum = [[0f32; 3]; COMPONENTS];
            let mut n = [0f32; COMPONENTS];
            for (a, z) in assign.iter().zip(pixels) {
                n[*a] += 1.0;
                for i in 0..3 {
                    sum[*a][i] += z[i];
                }
            }
            for k in 0..COMPONENTS {
                if n[k] > 0.0 {
                    centres[k] = [sum[k][0] / n[k], sum[k][1] / n[k], sum[k][2] / n[k]];
                }
            }
        }
        (Self::fit(pixels, &assign), assign)
    }
}

/// Segments the object a box and/or points designate. Points and box are in relative coordinates.
pub fn grabcut(image: &RgbImage, points: &[PromptPoint], bbox: Option<PromptBox>) -> Segmentation {
    let (w0, h0) = image.dimensions();
    let scale = (WORK_SIDE as f32 / w0.max(h0) as f32).min(1.0);
    let (w, h) = (((w0 as f32 * scale).round() as u32).max(1), ((h0 as f32 * scale).round() as u32).max(1));
    let work = if scale < 1.0 { imageops::resize(image, w, h, imageops::FilterType::Triangle) } else { image.clone() };
    let (wu, hu) = (w as usize, h as usize);
    let n = wu * hu;
    let z: Vec<[f32; 3]> = work.pixels().map(|p| [p.0[0] as f32, p.0[1] as f32, p.0[2] as f32]).collect();

    // Trimap.
    let mut label = vec![if bbox.is_some() { Label::ProbFg } else { Label::ProbBg }; n];
    if let Some(b) = bbox {
        let (x0, x1) = ((b.x_min * w as f32).floor() as i64, (b.x_max * w as f32).ceil() as i64);
        let (y0, y1) = ((b.y_min * h as f32).floor() as i64, (b.y_max * h as f32).ceil() as i64);
        for y in 0..hu {
            for x in 0..wu {
                let inside = (x as i64) >= x0 && (x as i64) < x1 && (y as i64) >= y0 && (y as i64) < y1;
                if !inside {
                    label[y * wu + x] = Label::Bg;
                }
            }
        }
    }
    let min_side = w.min(h) as f32;
    let seed_r = (min_side * 0.015).max(1.5);
    let prior_r = min_side * 0.12;
    let disk = |label: &mut Vec<Label>, p: &PromptPoint, r: f32, value: Label, only: Option<Label>| {
        let (cx, cy) = (p.x * w as f32, p.y * h as f32);
        let (xa, xb) = ((cx - r).floor().max(0.0) as usize, ((cx + r).ceil() as usize).min(wu));
        let (ya, yb) = ((cy - r).floor().max(0.0) as usize, ((cy + r).ceil() as usize).min(hu));
        for y in ya..yb {
            for x in xa..xb {
                let d2 = (x as f32 + 0.5 - cx).powi(2) + (y as f32 + 0.5 - cy).powi(2);
                if d2 <= r * r && only.is_none_or(|o| label[y * wu + x] == o) {
                    label[y * wu + x] = value;
                }
            }
        }
    };
    if bbox.is_none() {
        // Points only: the neighbourhood of the foreground clicks starts as probable object.
        for p in points.iter().filter(|p| p.foreground) {
            disk(&mut label, p, prior_r, Label::ProbFg, Some(Label::ProbBg));
        }
    }
    for p in points {
        disk(&mut label, p, seed_r, if p.foreground { Label::Fg } else { Label::Bg }, None);
    }
    if !label.iter().any(|l| l.is_fg()) || label.iter().all(|l| l.is_fg()) {
        let mut mask = GrayImage::new(w, h);
        for (i, l) in label.iter().enumerate() {
            if l.is_fg() {
                mask.put_pixel((i % wu) as u32, (i / wu) as u32, Luma([255]));
            }
        }
        return Segmentation { mask, score: 0.0 };
    }

    // Contrast-sensitive smoothness (8-neighbourhood).
    const NEIGHBOURS: [(i64, i64, f32); 4] =
        [(1, 0, 1.0), (0, 1, 1.0), (1, 1, std::f32::consts::SQRT_2), (-1, 1, std::f32::consts::SQRT_2)];
    let dist2 = |a: usize, b: usize| (0..3).map(|i| (z[a][i] - z[b][i]).powi(2)).sum::<f32>();
    let mut sum = 0f64;
    let mut count = 0usize;
    for y in 0..hu {
        for x in 0..wu {
            for (dx, dy, _) in NEIGHBOURS {
                let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                if nx >= 0 && (nx as usize) < wu && (ny as usize) < hu {
                    sum += dist2(y * wu + x, ny as usize * wu + nx as usize) as f64;
                    count += 1;
                }
            }
        }
    }
    let beta = if sum > 0.0 { (count as f64 / (2.0 * sum)) as f32 } else { 0.0 };
    let hard = 8.0 * GAMMA + 1.0;

    let mut fg_model = Gmm::init(&[]).0;
    let mut bg_model = fg_model.clone();
    for it in 0..ITERATIONS {
        let (fg_px, bg_px): (Vec<usize>, Vec<usize>) = (0..n).partition(|i| label[*i].is_fg());
        let fg_z: Vec<[f32; 3]> = fg_px.iter().map(|i| z[*i]).collect();
        let bg_z: Vec<[f32; 3]> = bg_px.iter().map(|i| z[*i]).collect();
        if it == 0 {
            fg_model = Gmm::init(&fg_z).0;
            bg_model = Gmm::init(&bg_z).0;
        } else {
            let fa: Vec<usize> = fg_z.iter().map(|c| fg_model.best(c)).collect();
            let ba: Vec<usize> = bg_z.iter().map(|c| bg_model.best(c)).collect();
            fg_model = Gmm::fit(&fg_z, &fa);
            bg_model = Gmm::fit(&bg_z, &ba);
        }
        let mut g = FlowGraph::new(n);
        for i in 0..n {
            let (src, snk) = match label[i] {
                Label::Fg => (hard, 0.0),
                Label::Bg => (0.0, hard),
                _ => (-(bg_model.density(&z[i]).max(1e-30)).ln(), -(fg_model.density(&z[i]).max(1e-30)).ln()),
            };
            g.add_terminal(i, src, snk);
            let (x, y) = ((i % wu) as i64, (i / wu) as i64);
            for (dx, dy, d) in NEIGHBOURS {
                let (nx, ny) = (x + dx, y + dy);
                if nx >= 0 && (nx as usize) < wu && (ny as usize) < hu {
                    let j = ny as usize * wu + nx as usize;
                    let wgt = GAMMA * (-beta * dist2(i, j)).exp() / d;
                    g.add_edge(i, j, wgt, wgt);
                }
            }
        }
        g.solve();
        let side = g.source_side();
        let mut changed = 0;
        for i in 0..n {
            let new = match label[i] {
                Label::Fg | Label::Bg => label[i],
                _ if side[i] => Label::ProbFg,
                _ => Label::ProbBg,
            };
            changed += (new != label[i]) as usize;
            label[i] = new;
        }
        if it > 0 && changed * 1000 < n {
            break;
        }
    }
    let mut mask = GrayImage::new(w, h);
    let mut post = 0f64;
    let mut fg = 0usize;
    for i in 0..n {
        if label[i].is_fg() {
            mask.put_pixel((i % wu) as u32, (i / wu) as u32, Luma([255]));
            let (pf, pb) = (fg_model.density(&z[i]) as f64, bg_model.density(&z[i]) as f64);
            post += if pf + pb > 0.0 { pf / (pf + pb) } else { 0.5 };
            fg += 1;
        }
    }
    Segmentation { mask, score: if fg > 0 { (post / fg as f64) as f32 } else { 0.0 } }
}

/// Polygons of a mask: one closed polygon (relative coordinates, first vertex not repeated) per connected
/// component's outer contour, simplified with Douglas–Peucker until it has at most [`MAX_VERTICES`] vertices.
/// Components under `min_area` (a fraction of the image) are dropped; holes are not represented.
pub fn mask_polygons(mask: &GrayImage, min_area: f64) -> Vec<Vec<(f32, f32)>> {
    let (w, h) = mask.dimensions();
    let mut out = Vec::new();
    for c in find_contours::<i32>(mask) {
        if c.border_type != BorderType::Outer || c.points.len() < 3 {
            continue;
        }
        let area = shoelace(&c.points) / (w as f64 * h as f64);
        if area < min_area {
            continue;
        }
        let mut eps = 0.5;
        let mut poly = approximate_polygon_dp(&c.points, eps, true);
        while poly.len() > MAX_VERTICES {
            eps *= 2.0;
            poly = approximate_polygon_dp(&c.points, eps, true);
        }
        if poly.len() > 1 && poly.first() == poly.last() {
            poly.pop();
        }
        if poly.len() < 3 {
            continue;
        }
        out.push(
            poly.iter()
                .map(|p| {
                    (((p.x as f32 + 0.5) / w as f32).clamp(0.0, 1.0), ((p.y as f32 + 0.5) / h as f32).clamp(0.0, 1.0))
                })
                .collect(),
        );
    }
    out
}

fn shoelace(points: &[Point<i32>]) -> f64 {
    let n = points.len();
    let twice: i64 = (0..n)
        .map(|i| {
            let (a, b) = (points[i], points[(i + 1) % n]);
            a.x as i64 * b.y as i64 - b.x as i64 * a.y as i64
        })
        .sum();
    (twice.abs() as f64 / 2.0).max(1.0)
}

/// The mask resized to `width` × `height` (bilinear, thresholded at half), for output at the image's size.
pub fn upsample_mask(mask: &GrayImage, width: u32, height: u32) -> GrayImage {
    let mut up = imageops::resize(mask, width, height, imageops::FilterType::Triangle);
    for p in up.pixels_mut() {
        p.0[0] = if p.0[0] >= 128 { 255 } else { 0 };
    }
    up
}

/// COCO run-length encoding of a mask (uncompressed form): counts of alternating 0/1 runs in column-major
/// order, starting with zeros.
pub fn coco_rle(mask: &GrayImage) -> Vec<u32> {
    let (w, h) = mask.dimensions();
    let mut counts = Vec::new();
    let mut current = false;
    let mut run = 0u32;
    for x in 0..w {
        for y in 0..h {
            let v = mask.get_pixel(x, y).0[0] >= 128;
            if v != current {
                counts.push(run);
                run = 0;
                current = v;
            }
            run += 1;
        }
    }
    counts.push(run);
    counts
}

/// Intersection over union of two masks of the same size.
pub fn mask_iou(a: &GrayImage, b: &GrayImage) -> f64 {
    let (mut inter, mut union) = (0u64, 0u64);
    for (p, q) in a.pixels().zip(b.pixels()) {
        let (x, y) = (p.0[0] >= 128, q.0[0] >= 128);
        inter += (x && y) as u64;
        union += (x || y) as u64;
    }
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// The next click of the standard interactive-segmentation simulator: at the pixel farthest from the
/// boundary of the largest error region (missed object → a foreground click, spill → a background click).
/// `None` when prediction and truth agree. Both masks are the same size.
pub fn next_click(pred: &GrayImage, truth: &GrayImage) -> Option<PromptPoint> {
    use imageproc::distance_transform::{distance_transform, Norm};
    use imageproc::region_labelling::{connected_components, Connectivity};
    let (w, h) = truth.dimensions();
    let mut best: Option<(u32, bool, GrayImage)> = None;
    for missed in [true, false] {
        let err = GrayImage::from_fn(w, h, |x, y| {
            let (p, t) = (pred.get_pixel(x, y).0[0] >= 128, truth.get_pixel(x, y).0[0] >= 128);
            Luma([if (missed && t && !p) || (!missed && p && !t) { 255 } else { 0 }])
        });
        let labels = connected_components(&err, Connectivity::Eight, Luma([0u8]));
        let mut sizes = std::collections::HashMap::<u32, u32>::new();
        for l in labels.pixels().filter(|l| l.0[0] > 0) {
            *sizes.entry(l.0[0]).or_default() += 1;
        }
        if let Some((label, size)) = sizes.into_iter().max_by_key(|(l, s)| (*s, std::cmp::Reverse(*l))) {
            if best.as_ref().is_none_or(|b| size > b.0) {
                let region =
                    GrayImage::from_fn(w, h, |x, y| Luma([if labels.get_pixel(x, y).0[0] == label { 255 } else { 0 }]));
                best = Some((size, missed, region));
            }
        }
    }
    let (_, missed, region) = best?;
    // Distance of each region pixel to the nearest pixel outside it (the image border counts as outside).
    let outside = GrayImage::from_fn(w, h, |x, y| Luma([if region.get_pixel(x, y).0[0] == 0 { 255 } else { 0 }]));
    let dist = distance_transform(&outside, Norm::L1);
    let (mut bx, mut by, mut bd) = (0, 0, 0u32);
    for (x, y, d) in dist.enumerate_pixels() {
        if region.get_pixel(x, y).0[0] > 0 {
            let edge = x.min(y).min(w - 1 - x).min(h - 1 - y) + 1;
            let d = (d.0[0] as u32).min(edge);
            if d > bd {
                (bx, by, bd) = (x, y, d);
            }
        }
    }
    Some(PromptPoint { x: (bx as f32 + 0.5) / w as f32, y: (by as f32 + 0.5) / h as f32, foreground: missed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// A textured red disc on a noisy green-grey background.
    fn disc_image() -> (RgbImage, GrayImage) {
        let (w, h) = (200u32, 150u32);
        let mut truth = GrayImage::new(w, h);
        let img = RgbImage::from_fn(w, h, |x, y| {
            let inside = (x as f32 - 90.0).powi(2) + (y as f32 - 70.0).powi(2) < 45.0f32.powi(2);
            let n = ((x * 31 + y * 17) % 23) as u8;
            if inside {
                truth.put_pixel(x, y, Luma([255]));
                Rgb([200 + n, 40 + n, 30])
            } else {
                Rgb([90 + n, 120 + n / 2, 100])
            }
        });
        (img, truth)
    }

    #[test]
    fn a_box_or_a_click_finds_the_disc() {
        let (img, truth) = disc_image();
        let b = PromptBox { x_min: 0.2, y_min: 0.12, x_max: 0.7, y_max: 0.8 };
        let s = grabcut(&img, &[], Some(b));
        assert!(mask_iou(&upsample_mask(&s.mask, 200, 150), &truth) > 0.9);
        assert!(s.score > 0.5);
        let click = PromptPoint { x: 0.45, y: 0.45, foreground: true };
        let s = grabcut(&img, &[click], None);
        assert!(mask_iou(&upsample_mask(&s.mask, 200, 150), &truth) > 0.85);
        // A background click inside the box carves it out of the object.
        let no = PromptPoint { x: 0.45, y: 0.45, foreground: false };
        let s = grabcut(&img, &[no], Some(b));
        assert_eq!(s.mask.get_pixel(90, 67).0[0], 0);
    }

    #[test]
    fn polygons_are_closed_components_within_bounds() {
        let mut m = GrayImage::new(100, 100);
        for y in 10..40 {
            for x in 10..40 {
                m.put_pixel(x, y, Luma([255]));
            }
        }
        for y in 60..90 {
            for x in 50..95 {
                m.put_pixel(x, y, Luma([255]));
            }
        }
        m.put_pixel(5, 95, Luma([255])); // a speck, dropped
        let polys = mask_polygons(&m, 0.001);
        assert_eq!(polys.len(), 2);
        for p in &polys {
            assert!(p.len() >= 3 && p.len() <= MAX_VERTICES);
            assert_ne!(p.first(), p.last());
            assert!(p.iter().all(|(x, y)| (0.0..=1.0).contains(x) && (0.0..=1.0).contains(y)));
        }
    }

    #[test]
    fn clicks_go_to_the_middle_of_the_largest_error() {
        let mut truth = GrayImage::new(40, 40);
        for y in 10..30 {
            for x in 10..30 {
                truth.put_pixel(x, y, Luma([255]));
            }
        }
        let empty = GrayImage::new(40, 40);
        let c = next_click(&empty, &truth).expect("a click");
        assert!(c.foreground && (c.x - 0.5).abs() < 0.05 && (c.y - 0.5).abs() < 0.05, "{c:?}");
        assert_eq!(next_click(&truth, &truth), None);
        let mut spill = truth.clone();
        for y in 0..40 {
            for x in 32..40 {
                spill.put_pixel(x, y, Luma([255]));
            }
        }
        assert!(!next_click(&spill, &truth).expect("a click").foreground);
    }

    #[test]
    fn rle_counts_cover_the_image_column_major() {
        let mut m = GrayImage::new(3, 2);
        m.put_pixel(1, 0, Luma([255]));
        m.put_pixel(1, 1, Luma([255]));
        assert_eq!(coco_rle(&m), vec![2, 2, 2]);
        assert_eq!(coco_rle(&m).iter().sum::<u32>(), 6);
    }
}
