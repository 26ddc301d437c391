//! The backbone's inverted-residual (MBConv) blocks executed on plain buffers, one image at a time.
//!
//! A block is expand (1×1) → depthwise (k×k) → project (1×1) with a skip connection. Run as separate
//! tensor operations, every step allocates its output, fans out to the thread pool and waits for it; here a
//! block is two parallel passes over one image in NCHW order:
//! 1. **per group of expanded channels**: the expand product for just those channels (bias and ReLU6 applied
//!    while the rows are in cache), then the depthwise convolution of each of them. The expanded tensor is
//!    never materialised whole, and no thread waits for another between the two steps, because depthwise
//!    convolution works channel by channel.
//! 2. **per group of output channels**: the project product over all depthwise channels, with bias and the
//!    skip connection folded in.
//!
//! The blocks at the top of the network (28 × 28 inputs and smaller, hundreds of channels) run the same two
//! passes channels-last ([`MbConv::forward_nhwc`]): there a plane is at most a few dozen vectors while the
//! channel counts are multiples of 16, so vectors run across channels instead.
//!
//! The 1×1 products are [`Pointwise`]'s (in [`super::pointwise`]: with AVX-512 on our own kernels, otherwise
//! on the `gemm` crate), single-threaded per call: the parallelism is ours, over channel groups or runs of
//! pixels.
//!
//! The stem (a strided 3×3 convolution of the three colour planes) is here too, as [`Im2colConv`]: the
//! unfolded input is only 27 rows, so one matrix product over all pixels does it.

use super::aligned::Buffer;
pub use super::buffers::transpose;
use super::buffers::{init_rows, with_block_scratch, BandOutput};
use super::depthwise::{strided_copy, Depthwise, Scratch};
use super::pointwise::{channel_group, channel_group_nhwc, even_split, pixel_group, Pointwise};
use super::same_padding;
use super::team::{for_each_chunk, for_each_index};

/// Buffers one pass through the network reuses from block to block (and each pool thread from pass to
/// pass): allocating and zero-filling a fresh output and depthwise buffer for every block cost 5 % of a pass.
#[derive(Debug, Default)]
pub struct Workspace {
    /// The current activations (the input of the next block).
    pub(crate) cur: Buffer,
    /// The next block's output; swapped with `cur` after each block.
    next: Buffer,
    /// A block's depthwise output.
    dw: Buffer,
}

impl Workspace {
    /// Turns the current activations, `c` planes of `p` pixels, into `p` pixels of `c` channels, keeping
    /// both buffers.
    /// Parallel over runs of pixels: on one thread this transpose was the longest stretch of a pass in which
    /// the other threads had nothing to do.
    pub(crate) fn make_channels_last(&mut self, c: usize, p: usize) {
        let src = &self.cur[..c * p];
        let run = even_split(p, 16, usize::MAX).next_multiple_of(16);
        for_each_chunk(self.next.sized(c * p), run * c, |g, out| {
            let (p0, n) = (g * run, out.len() / c.max(1));
            for r0 in (0..c).step_by(16) {
                for i0 in (0..n).step_by(16) {
                    for r in r0..(r0 + 16).min(c) {
                        let row = &src[r * p + p0..r * p + p0 + n];
                        for i in i0..(i0 + 16).min(n) {
                            out[i * c + r] = row[i];
                        }
                    }
                }
            }
        });
        std::mem::swap(&mut self.cur, &mut self.next);
    }
}

/// A k×k strided convolution with TensorFlow "SAME" padding over a few input channels (the stem): the input is
/// unfolded into `cin·k·k` rows of output pixels (im2col), then one [`Pointwise`] product.
#[derive(Debug, Clone)]
pub struct Im2colConv {
    product: Pointwise,
    cin: usize,
    k: usize,
    stride: usize,
}

impl Im2colConv {
    /// From the (out × in × k × k) weight, flattened row-major, and per-output bias.
    pub fn new(
        weight: Vec<f32>,
        bias: Vec<f32>,
        cin: usize,
        k: usize,
        stride: usize,
        relu6: bool,
    ) -> Result<Self, String> {
        if k == 0 || stride == 0 {
            return Err(format!("convolution: kernel {k}, stride {stride}"));
        }
        Ok(Self { product: Pointwise::new(weight, bias, cin * k * k, relu6)?, cin, k, stride })
    }

    /// Output channels.
    pub fn cout(&self) -> usize {
        self.product.cout()
    }

    /// Runs the convolution on one image of `cin` planes of h × w; returns the output planes and their size.
    pub fn forward(&self, x: &[f32], h: usize, w: usize) -> (Vec<f32>, usize, usize) {
        let mut ws = Workspace::default();
        let (oh, ow) = self.forward_into(x, h, w, &mut ws);
        (ws.cur[..self.cout() * oh * ow].to_vec(), oh, ow)
    }

    /// [`Im2colConv::forward`] into the workspace's current activations; returns the output size.
    ///
    /// Bands of output rows run in parallel, each unfolding just its own rows (about [`STEM_BAND`] pixels, so
    /// the unfolded band stays in the core's cache) and multiplying them by all the filters at once. Unfolding
    /// the whole image first made a 27-row matrix larger than the cache that each channel group streamed again.
    pub fn forward_into(&self, x: &[f32], h: usize, w: usize, ws: &mut Workspace) -> (usize, usize) {
        let (k, s) = (self.k, self.stride);
        let (oh, pt, _) = same_padding(h, k, s);
        let (ow, pl, _) = same_padding(w, k, s);
        let op = oh * ow;
        let rows = self.cin * k * k;
        assert!(x.len() >= self.cin * h * w, "convolution: input size");
        let out = ws.cur.sized(self.cout() * op);
        let band = (STEM_BAND / ow.max(1)).max(1);
        let dst = BandOutput(out.as_mut_ptr());
        for_each_index(oh.div_ceil(band), |b| {
            let (oy0, oy1) = (b * band, ((b + 1) * band).min(oh));
            let n = (oy1 - oy0) * ow;
            let unfold = |cols: &mut Buffer| {
                let cols = cols.sized(rows * n);
                for (r, row) in cols.chunks_mut(n.max(1)).enumerate() {
                    let (c, ky, kx) = (r / (k * k), (r / k) % k, r % k);
                    let plane = &x[c * h * w..(c + 1) * h * w];
                    // Output columns whose input column (ox·s + kx − pl) falls inside the image.
                    let first = pl.saturating_sub(kx).div_ceil(s).min(ow);
                    let end = ((w + pl).saturating_sub(kx)).div_ceil(s).min(ow).max(first);
                    for (i, d) in row.chunks_mut(ow).enumerate() {
                        let iy = (oy0 + i) * s + ky;
                        if iy < pt || iy - pt >= h || first >= end {
                            d.fill(0.0);
                            continue;
                        }
                        d[..first].fill(0.0);
                        d[end..].fill(0.0);
                        let src = &plane[(iy - pt) * w + first * s + kx - pl..(iy - pt + 1) * w];
                        strided_copy(&mut d[first..end], src, s);
                    }
                }
                // SAFETY: the output holds cout planes of op values, and this band writes only columns
                // oy0·ow .. oy1·ow of each, which no other band touches.
                unsafe { self.product.planes_into(cols, n, dst.at(oy0 * ow), op) };
            };
            with_block_scratch(|bufs| unfold(&mut bufs.1));
        });
        (oh, ow)
    }
}

/// Output pixels per band of the stem.
const STEM_BAND: usize = 1024;

/// One inverted-residual block: optional expand, depthwise (with its stride), project, optional skip.
#[derive(Debug, Clone)]
pub struct MbConv {
    /// The 1×1 expansion with ReLU6 (absent when the expand ratio is 1).
    pub expand: Option<Pointwise>,
    /// The k×k depthwise convolution with ReLU6.
    pub depthwise: Depthwise,
    /// The linear 1×1 projection.
    pub project: Pointwise,
    /// Whether the input is added to the output.
    pub skip: bool,
}

impl MbConv {
    /// Runs the block on one image of `cin` planes of h × w; returns the output planes and their size.
    pub fn forward(&self, x: &[f32], h: usize, w: usize) -> (Vec<f32>, usize, usize) {
        self.forward_fresh(x, h, w, false)
    }

    /// Runs the block channels-last: `x` is h·w pixels of `cin` channels; returns op pixels of `cout`.
    pub fn forward_nhwc(&self, x: &[f32], h: usize, w: usize) -> (Vec<f32>, usize, usize) {
        self.forward_fresh(x, h, w, true)
    }

    fn forward_fresh(&self, x: &[f32], h: usize, w: usize, channels_last: bool) -> (Vec<f32>, usize, usize) {
        let mut ws = Workspace { cur: Buffer::from_slice(x), ..Workspace::default() };
        let (oh, ow) = self.forward_into(h, w, channels_last, &mut ws);
        (ws.cur[..self.project.cout() * oh * ow].to_vec(), oh, ow)
    }

    /// Runs the block on the workspace's current activations (h × w, planar or channels-last), which its
    /// output then replaces; returns the output size.
    pub fn forward_into(&self, h: usize, w: usize, channels_last: bool, ws: &mut Workspace) -> (usize, usize) {
        let Workspace { cur, next, dw, .. } = ws;
        let size =
            if channels_last { self.channels_last(cur, h, w, dw, next) } else { self.planar(cur, h, w, dw, next) };
        std::mem::swap(cur, next);
        size
    }

    /// The planar block: `x` holds `cin` planes of h × w; `y` receives `cout` planes.
    fn planar(&self, x: &[f32], h: usize, w: usize, dw: &mut Buffer, y: &mut Buffer) -> (usize, usize) {
        let p = h * w;
        let (oh, ow) = self.depthwise.output_size(h, w);
        let op = oh * ow;
        let channels = self.depthwise.channels();
        let wide = crate::kernels::avx2();
        let dw = dw.sized(channels * op);
        let group = channel_group(channels, p);
        for_each_chunk(dw, group * op, |g, out| {
            let c0 = g * group;
            let m = out.len() / op;
            let run = |(scratch, expanded): &mut (Scratch, Buffer)| {
                let planes: &[f32] = match &self.expand {
                    Some(e) => {
                        let expanded = expanded.sized(m * p);
                        e.rows(c0, x, p, expanded, None, wide);
                        expanded
                    }
                    None => &x[c0 * p..(c0 + m) * p],
                };
                for j in 0..m {
                    let plane = &planes[j * p..(j + 1) * p];
                    self.depthwise.channel(c0 + j, plane, h, w, &mut out[j * op..(j + 1) * op], scratch);
                }
            };
            with_block_scratch(run);
        });
        let cout = self.project.cout();
        self.project.forward_into(dw, op, self.skip.then_some(x), y.sized(cout * op));
        (oh, ow)
    }

    /// The channels-last block: `x` is h·w pixels of `cin` channels; `y` receives op pixels of `cout`.
    ///
    /// Pass 1, per group of expanded channels: their expand product over all pixels into a per-thread buffer,
    /// then their depthwise convolution into the group's own p × m slab of the depthwise output. Pass 2, per
    /// run of output pixels: the bias and skip, then one product per slab accumulated onto them.
    fn channels_last(&self, x: &[f32], h: usize, w: usize, dw: &mut Buffer, y: &mut Buffer) -> (usize, usize) {
        let p = h * w;
        let (oh, ow) = self.depthwise.output_size(h, w);
        let op = oh * ow;
        let channels = self.depthwise.channels();
        let cin = self.expand.as_ref().map_or(channels, Pointwise::cin);
        let group = channel_group_nhwc(channels);
        let dw = dw.sized(channels * op);
        for_each_chunk(dw, group * op, |g, out| {
            let c0 = g * group;
            let m = out.len() / op.max(1);
            let mut run = |expanded: &mut Buffer| match &self.expand {
                Some(e) => {
                    let expanded = expanded.sized(m * p);
                    e.columns(c0, x, p, expanded);
                    self.depthwise.nhwc(c0, expanded, m, h, w, out);
                }
                None => self.depthwise.nhwc(c0, &x[c0..], cin, h, w, out),
            };
            with_block_scratch(|bufs| run(&mut bufs.1));
        });
        let cout = self.project.cout();
        let y = y.sized(cout * op);
        let rows = pixel_group(op);
        for_each_chunk(y, rows * cout, |g, o| {
            let (r0, n) = (g * rows, o.len() / cout);
            let skip = self.skip.then(|| &x[r0 * cout..(r0 + n) * cout]);
            init_rows(o, cout, self.project.bias(), skip);
            for (slab, k0) in dw.chunks(group * op).zip((0..).step_by(group)) {
                let m = slab.len() / op;
                self.project.accumulate_columns(k0, &slab[r0 * m..(r0 + n) * m], n, o);
            }
        });
        (oh, ow)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    fn random(shape: &[usize], std: f32) -> Tensor {
        Tensor::randn(0f32, std, shape, &Device::Cpu).expect("random tensor")
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().and_then(|t| t.to_vec1()).expect("values")
    }

    /// 1×1 convolution with bias and optional ReLU6, as candle tensor operations.
    fn pointwise_reference(x: &Tensor, w: &Tensor, b: &Tensor, relu6: bool) -> Tensor {
        let c = b.dims1().expect("bias");
        let y = x.conv2d(w, 0, 1, 1, 1).and_then(|y| y.broadcast_add(&b.reshape((1, c, 1, 1))?)).expect("conv");
        if relu6 {
            y.clamp(0f32, 6f32).expect("clamp")
        } else {
            y
        }
    }

    #[test]
    fn a_fused_block_equals_its_operations_one_by_one() {
        // (in, expanded, out, k, stride, h, w): with and without expansion, strides 1 and 2, channel counts
        // that are and are not multiples of the product kernel's width, planes from 1×1 up.
        for (cin, cexp, cout, k, s, h, w) in [
            (8, 48, 8, 3, 1, 11, 9),
            (16, 96, 24, 3, 2, 20, 17),
            (24, 144, 40, 5, 2, 12, 12),
            (40, 240, 40, 5, 1, 7, 7),
            (10, 10, 14, 3, 1, 5, 6),
            (12, 72, 12, 5, 1, 1, 1),
            (112, 672, 192, 5, 2, 14, 14),
            (20, 20, 20, 3, 1, 4, 5),
            (24, 100, 24, 5, 1, 7, 7),
            (40, 240, 40, 5, 1, 14, 14),
            (16, 56, 16, 5, 1, 9, 13),
            (40, 240, 40, 5, 1, 28, 28),
        ] {
            let three = rayon::ThreadPoolBuilder::new().num_threads(3).build().expect("thread pool");
            let x = random(&[1, cin, h, w], 1.0);
            let (we, be) = (random(&[cexp, cin, 1, 1], 0.3), random(&[cexp], 0.3));
            let (wd, bd) = (random(&[cexp, 1, k, k], 0.3), random(&[cexp], 0.3));
            let (wp, bp) = (random(&[cout, cexp, 1, 1], 0.3), random(&[cout], 0.3));
            let expand = cexp != cin;
            let skip = s == 1 && cin == cout;

            let mut r = x.clone();
            if expand {
                r = pointwise_reference(&r, &we, &be, true);
            }
            let (_, pt, pb) = same_padding(h, k, s);
            let (_, pl, pr) = same_padding(w, k, s);
            r = r
                .pad_with_zeros(2, pt, pb)
                .and_then(|t| t.pad_with_zeros(3, pl, pr))
                .and_then(|t| t.conv2d(&wd, 0, s, 1, cexp))
                .and_then(|t| t.broadcast_add(&bd.reshape((1, cexp, 1, 1))?))
                .and_then(|t| t.clamp(0f32, 6f32))
                .expect("depthwise reference");
            r = pointwise_reference(&r, &wp, &bp, false);
            if skip {
                r = (r + &x).expect("skip");
            }

            let block = MbConv {
                expand: expand.then(|| Pointwise::new(values(&we), values(&be), cin, true).expect("expand")),
                depthwise: Depthwise::new(values(&wd), values(&bd), k, s),
                project: Pointwise::new(values(&wp), values(&bp), cexp, false).expect("project"),
                skip,
            };
            let (ours, oh, ow) = block.forward(&values(&x), h, w);
            let (_, _, rh, rw) = r.dims4().expect("dims");
            assert_eq!((oh, ow), (rh, rw));
            let reference = values(&r);
            assert_eq!(ours.len(), reference.len());
            let diff = ours.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff < 1e-3, "block {cin}→{cexp}→{cout} k{k} s{s} {h}×{w}: max difference {diff}");

            // The channels-last path on the same block and input, also on three threads (channel groups that do
            // not divide the channels evenly).
            let nhwc = transpose(&values(&x), cin, h * w);
            for (threads, (last, lh, lw)) in
                [(0, block.forward_nhwc(&nhwc, h, w)), (3, three.install(|| block.forward_nhwc(&nhwc, h, w)))]
            {
                assert_eq!((lh, lw), (rh, rw));
                let last = transpose(&last, lh * lw, cout);
                let diff = last.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(
                    diff < 1e-3,
                    "channels-last block {cin}→{cexp}→{cout} k{k} s{s} {h}×{w} ({threads} threads): max difference \
                     {diff}"
                );
            }
        }
    }

    #[test]
    fn the_stem_convolution_equals_candles() {
        // (in, out, k, stride, h, w): the stem's own shape, odd sizes, a 1-pixel image, stride 1.
        for (cin, cout, k, s, h, w) in
            [(3, 32, 3, 2, 32, 32), (3, 16, 3, 2, 17, 23), (3, 8, 3, 2, 1, 1), (2, 6, 5, 1, 9, 7), (3, 4, 3, 3, 10, 11)]
        {
            let x = random(&[1, cin, h, w], 1.0);
            let (wt, b) = (random(&[cout, cin, k, k], 0.3), random(&[cout], 0.3));
            let (_, pt, pb) = same_padding(h, k, s);
            let (_, pl, pr) = same_padding(w, k, s);
            let r = x
                .pad_with_zeros(2, pt, pb)
                .and_then(|t| t.pad_with_zeros(3, pl, pr))
                .and_then(|t| t.conv2d(&wt, 0, s, 1, 1))
                .and_then(|t| t.broadcast_add(&b.reshape((1, cout, 1, 1))?))
                .and_then(|t| t.clamp(0f32, 6f32))
                .expect("reference");
            let conv = Im2colConv::new(values(&wt), values(&b), cin, k, s, true).expect("conv");
            let (ours, oh, ow) = conv.forward(&values(&x), h, w);
            let (_, _, rh, rw) = r.dims4().expect("dims");
            assert_eq!((oh, ow), (rh, rw));
            let diff = ours.iter().zip(&values(&r)).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff < 1e-4, "{cin}→{cout} k{k} s{s} {h}×{w}: max difference {diff}");
        }
    }

    #[test]
    fn reused_buffers_do_not_leak_into_results() {
        // The stem over inputs of changing shape through one workspace equals fresh runs.
        let conv = Im2colConv::new(values(&random(&[8, 3, 3, 3], 0.3)), values(&random(&[8], 0.3)), 3, 3, 2, true)
            .expect("conv");
        let mut ws = Workspace::default();
        for (h, w) in [(32, 32), (17, 23), (40, 8), (32, 32)] {
            let x = values(&random(&[1, 3, h, w], 1.0));
            let (fresh, fh, fw) = conv.forward(&x, h, w);
            let (oh, ow) = conv.forward_into(&x, h, w, &mut ws);
            assert_eq!((oh, ow), (fh, fw));
            assert_eq!(&ws.cur[..fresh.len()], &fresh[..], "stem {h}×{w} through a reused workspace");
        }
        // A block whose workspace holds garbage from a larger pass, both layouts.
        let block = MbConv {
            expand: Some(
                Pointwise::new(values(&random(&[48, 16], 0.3)), values(&random(&[48], 0.3)), 16, true).expect("e"),
            ),
            depthwise: Depthwise::new(values(&random(&[48, 1, 3, 3], 0.3)), values(&random(&[48], 0.3)), 3, 1),
            project: Pointwise::new(values(&random(&[16, 48], 0.3)), values(&random(&[16], 0.3)), 48, false)
                .expect("p"),
            skip: true,
        };
        for channels_last in [false, true] {
            let x = values(&random(&[1, 16, 9, 7], 1.0));
            let (fresh, _, _) = block.forward_fresh(&x, 9, 7, channels_last);
            let nans = Buffer::from_slice(&[f32::NAN; 5000]);
            let mut ws = Workspace { next: nans.clone(), dw: nans, ..Workspace::default() };
            ws.cur = Buffer::from_slice(&[&x[..], &[f32::NAN; 100]].concat());
            block.forward_into(9, 7, channels_last, &mut ws);
            assert_eq!(&ws.cur[..fresh.len()], &fresh[..], "block, channels-last {channels_last}");
        }
    }
}
