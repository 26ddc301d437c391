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
//! Matrix products go to the `gemm` crate (the kernels candle itself uses), single-threaded per call: the
//! parallelism is ours, over channel groups.
//!
//! The stem (a strided 3×3 convolution of the three colour planes) is here too, as [`Im2colConv`]: the
//! unfolded input is only 27 rows, so one matrix product over all pixels does it.

use gemm::Parallelism;
use rayon::prelude::*;

use crate::backbone::{bias_act_rows, same_padding, strided_copy, Depthwise, Scratch};

/// A 1×1 convolution as a row-major (out × in) matrix with its folded bias, optionally followed by ReLU6.
#[derive(Debug, Clone)]
pub struct Pointwise {
    weight: Vec<f32>,
    bias: Vec<f32>,
    cin: usize,
    cout: usize,
    relu6: bool,
}

impl Pointwise {
    /// A pointwise convolution from its (out × in) weight matrix and per-output bias.
    pub fn new(weight: Vec<f32>, bias: Vec<f32>, cin: usize, relu6: bool) -> Result<Self, String> {
        let cout = bias.len();
        if weight.len() != cout * cin || cin == 0 {
            return Err(format!("pointwise: {} weights for {cout} × {cin}", weight.len()));
        }
        Ok(Self { weight, bias, cin, cout, relu6 })
    }

    /// Input channels.
    pub fn cin(&self) -> usize {
        self.cin
    }

    /// Output channels.
    pub fn cout(&self) -> usize {
        self.cout
    }

    /// Output channels `c0 .. c0 + m` over `p` pixels: `out[j] = act(bias + W[c0 + j] · x (+ skip[j]))`.
    /// `x` holds `cin` planes of `p` pixels; `out` (and `skip`) hold `m` planes.
    fn rows(&self, c0: usize, x: &[f32], p: usize, out: &mut [f32], skip: Option<&[f32]>, wide: bool) {
        let m = out.len() / p;
        let k = self.cin;
        assert!(c0 + m <= self.cout && out.len() == m * p && x.len() >= k * p, "pointwise: buffer sizes");
        if let Some(s) = skip {
            out.copy_from_slice(&s[..m * p]);
        }
        let lhs = &self.weight[c0 * k..(c0 + m) * k];
        // SAFETY: dst is m×p (row stride p), lhs is m×k (row stride k) and rhs is k×p (row stride p), all
        // within the slices checked above; the three do not overlap (distinct borrows).
        unsafe {
            gemm::gemm(
                m,
                p,
                k,
                out.as_mut_ptr(),
                1,
                p as isize,
                skip.is_some(),
                lhs.as_ptr(),
                1,
                k as isize,
                x.as_ptr(),
                1,
                p as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                Parallelism::None,
            )
        };
        bias_act_rows(out, p, &self.bias[c0..c0 + m], self.relu6, wide);
    }

    /// The whole product over `p` pixels, parallel over groups of output channels.
    pub fn forward(&self, x: &[f32], p: usize, skip: Option<&[f32]>) -> Vec<f32> {
        let mut out = vec![0f32; self.cout * p];
        let wide = crate::backbone::avx2();
        let group = channel_group(self.cout, p);
        out.par_chunks_mut(group * p).enumerate().for_each(|(g, o)| {
            let c0 = g * group;
            let s = skip.map(|s| &s[c0 * p..]);
            self.rows(c0, x, p, o, s, wide);
        });
        out
    }
}

/// Channels per parallel task: enough tasks to keep every thread busy (two each, so that uneven tasks even
/// out), small enough that a group of `p`-pixel planes stays in the core's cache, and a multiple of 6 — the
/// width of gemm's AVX2 micro-kernel along this dimension (the product is computed transposed).
fn channel_group(channels: usize, p: usize) -> usize {
    const KERNEL: usize = 6;
    let threads = rayon::current_num_threads().max(1);
    let by_threads = channels.div_ceil(threads * 2);
    let by_cache = 64 * 1024 / p.max(1);
    let g = by_threads.min(by_cache).max(1);
    (g.div_ceil(KERNEL) * KERNEL).min(channels)
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
        let (k, s) = (self.k, self.stride);
        let (oh, pt, _) = same_padding(h, k, s);
        let (ow, pl, _) = same_padding(w, k, s);
        let op = oh * ow;
        assert!(x.len() >= self.cin * h * w, "convolution: input size");
        let mut cols = vec![0f32; self.cin * k * k * op];
        cols.par_chunks_mut(op).enumerate().for_each(|(r, row)| {
            let (c, ky, kx) = (r / (k * k), (r / k) % k, r % k);
            let plane = &x[c * h * w..(c + 1) * h * w];
            // Output columns whose input column (ox·s + kx − pl) falls inside the image.
            let first = pl.saturating_sub(kx).div_ceil(s);
            let end = ((w + pl).saturating_sub(kx)).div_ceil(s).min(ow);
            for (oy, dst) in row.chunks_mut(ow).enumerate() {
                let iy = oy * s + ky;
                if iy < pt || iy - pt >= h || first >= end {
                    continue;
                }
                strided_copy(&mut dst[first..end], &plane[(iy - pt) * w + first * s + kx - pl..(iy - pt + 1) * w], s);
            }
        });
        (self.product.forward(&cols, op, None), oh, ow)
    }
}

thread_local! {
    /// Each worker thread's depthwise buffers and expanded planes, kept between tasks and passes: allocating
    /// and zero-filling them per task cost more than some blocks' arithmetic.
    static BLOCK_SCRATCH: std::cell::RefCell<(Scratch, Vec<f32>)> =
        std::cell::RefCell::new((Scratch::new(crate::backbone::avx2()), Vec::new()));
}

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
        let p = h * w;
        let (oh, ow) = self.depthwise.output_size(h, w);
        let op = oh * ow;
        let channels = self.depthwise.channels();
        let wide = crate::backbone::avx2();
        let mut dw = vec![0f32; channels * op];
        let group = channel_group(channels, p);
        dw.par_chunks_mut(group * op).enumerate().for_each(|(g, out)| {
            let c0 = g * group;
            let m = out.len() / op;
            let mut run = |(scratch, expanded): &mut (Scratch, Vec<f32>)| {
                let planes: &[f32] = match &self.expand {
                    Some(e) => {
                        if expanded.len() < m * p {
                            expanded.resize(m * p, 0.0);
                        }
                        let expanded = &mut expanded[..m * p];
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
            BLOCK_SCRATCH.with(|cell| match cell.try_borrow_mut() {
                Ok(mut bufs) => run(&mut bufs),
                // Not reached (nothing in `run` re-enters the thread pool); a fresh set keeps it correct anyway.
                Err(_) => run(&mut (Scratch::new(wide), Vec::new())),
            });
        });
        let y = self.project.forward(&dw, op, self.skip.then_some(x));
        (y, oh, ow)
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
        ] {
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
    fn pointwise_weights_must_match_their_shape() {
        assert!(Pointwise::new(vec![0.0; 10], vec![0.0; 3], 4, false).is_err());
        assert!(Pointwise::new(vec![0.0; 12], vec![0.0; 3], 4, false).is_ok());
    }
}
