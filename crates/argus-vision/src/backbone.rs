//! EfficientNet-Lite0 (lukemelas EfficientNet-PyTorch layout, Lite variant: ReLU6, no squeeze-excite,
//! BatchNorm eps 1e-3, TensorFlow "SAME" padding) as a frozen feature extractor on candle.
//!
//! At load time every BatchNorm is folded into the convolution before it. The stem (im2col + one product),
//! the sixteen inverted-residual blocks and the head run on plain buffers in [`crate::mbconv`] (products
//! through `gemm`, depthwise convolutions in [`Depthwise`], a dedicated kernel with bias and ReLU6 fused,
//! instead of candle's one-convolution-per-group path); candle holds the weights and the classifier layer.

use std::collections::HashMap;

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};

use crate::aligned::Buffer;
use crate::mbconv::{transpose, Im2colConv, MbConv, Pointwise, Workspace};
use rayon::prelude::*;

/// Input normalisation: `(x - 127) / 128`.
pub const INPUT_MEAN: f32 = 127.0;
/// Input normalisation scale.
pub const INPUT_SCALE: f32 = 128.0;
/// Channels of the final feature map (and of pooled features).
pub const FEATURE_DIM: usize = 1280;
const BN_EPS: f64 = 1e-3;
/// Blocks whose input has at most this many pixels (28 × 28 and smaller: from the second 5 × 5 block on) run
/// channels-last ([`MbConv::forward_nhwc`]): there the planar layout wastes vector lanes on short planes (and
/// pads every 28 × 28 plane for its depthwise convolution), while their channel counts are multiples of 16.
/// Measured when the switch moved from 14 × 14 outputs to 28 × 28 inputs: blocks 4 and 5 together 0.52 → 0.38
/// ms on two threads, 0.87 → 0.72 ms on one. Switching one block earlier still (the stride-2 block into
/// 28 × 28) lost as much in that block, whose 56 × 56 input is four times the size to transpose.
const CHANNELS_LAST_MAX_PIXELS: usize = 784;

/// Stride of the first block of each of the seven stages of every EfficientNet-Lite (the later blocks of a stage
/// have stride 1).
const STAGE_STRIDES: [usize; 7] = [1, 2, 2, 2, 1, 2, 1];

/// One block of a checkpoint: (kernel, stride, has an expansion, in, out, stage).
pub(crate) type BlockPlan = (usize, usize, bool, usize, usize, usize);

/// The blocks a checkpoint holds, as [`BlockPlan`]s: read off the weights, so one
/// loader serves Lite0 and its wider, deeper siblings. A stage starts where a block's output channels differ from
/// its input's (every stage changes the width); its first block takes the stage's stride.
pub(crate) fn block_plan(w: &Weights) -> candle_core::Result<Vec<BlockPlan>> {
    let mut plan = Vec::new();
    let mut stage: Option<usize> = None;
    let mut channels = get(w, "_conv_stem.weight")?.dim(0)?;
    for i in 0.. {
        let p = format!("_blocks.{i}");
        let Some(dw) = w.get(&format!("{p}._depthwise_conv.weight")) else { break };
        let k = dw.dim(2)?;
        let out = get(w, &format!("{p}._project_conv.weight"))?.dim(0)?;
        let expand = w.contains_key(&format!("{p}._expand_conv.weight"));
        let first = stage.is_none() || out != channels;
        if first {
            stage = Some(stage.map_or(0, |s| s + 1));
        }
        let s = stage.unwrap_or(0);
        let stride = match (first, STAGE_STRIDES.get(s)) {
            (true, Some(stride)) => *stride,
            (true, None) => candle_core::bail!("block {i} starts an eighth stage; not an EfficientNet-Lite"),
            (false, _) => 1,
        };
        plan.push((k, stride, expand, channels, out, s));
        channels = out;
    }
    if plan.is_empty() {
        candle_core::bail!("the checkpoint holds no blocks");
    }
    Ok(plan)
}

pub(crate) type Weights = HashMap<String, Tensor>;

fn get(w: &Weights, name: &str) -> candle_core::Result<Tensor> {
    w.get(name).cloned().ok_or_else(|| candle_core::Error::Msg(format!("weight {name} is missing")))
}

/// TensorFlow "SAME" padding: output size and (before, after) padding; the extra pixel goes after.
pub fn same_padding(size: usize, k: usize, stride: usize) -> (usize, usize, usize) {
    let out = size.div_ceil(stride);
    let total = ((out - 1) * stride + k).saturating_sub(size);
    (out, total / 2, total - total / 2)
}

/// Folds BatchNorm `bn` into a convolution weight of shape (out, …): returns (weight, bias).
pub(crate) fn fold(w: &Weights, conv: &str, bn: &str) -> candle_core::Result<(Tensor, Tensor)> {
    let weight = get(w, &format!("{conv}.weight"))?;
    let gamma = get(w, &format!("{bn}.weight"))?;
    let beta = get(w, &format!("{bn}.bias"))?;
    let mean = get(w, &format!("{bn}.running_mean"))?;
    let var = get(w, &format!("{bn}.running_var"))?;
    let scale = (gamma / (var + BN_EPS)?.sqrt()?)?;
    let bias = (beta - (mean * &scale)?)?;
    let dims = weight.dims().len();
    let mut shape = vec![scale.dims1()?];
    shape.extend(std::iter::repeat_n(1, dims - 1));
    let weight = weight.broadcast_mul(&scale.reshape(shape)?)?;
    Ok((weight.contiguous()?, bias.contiguous()?))
}

/// A convolution with folded BatchNorm and optional ReLU6.
#[derive(Debug, Clone)]
struct ConvBn {
    weight: Tensor,
    bias_vec: Vec<f32>,
    k: usize,
    stride: usize,
    relu6: bool,
}

impl ConvBn {
    fn load(w: &Weights, conv: &str, bn: &str, stride: usize, relu6: bool) -> candle_core::Result<Self> {
        let (weight, bias) = fold(w, conv, bn)?;
        let k = weight.dim(3)?;
        Ok(Self { weight, bias_vec: bias.to_vec1()?, k, stride, relu6 })
    }

    /// This convolution as an [`Im2colConv`] (for the stem).
    fn im2col(&self) -> candle_core::Result<Im2colConv> {
        let (_, i, _, _) = self.weight.dims4()?;
        Im2colConv::new(
            self.weight.flatten_all()?.to_vec1()?,
            self.bias_vec.clone(),
            i,
            self.k,
            self.stride,
            self.relu6,
        )
        .map_err(candle_core::Error::Msg)
    }

    /// This convolution as a [`Pointwise`] one (it must be 1×1, stride 1).
    fn pointwise(&self) -> candle_core::Result<Pointwise> {
        let (o, i, _, _) = self.weight.dims4()?;
        if self.k != 1 || self.stride != 1 {
            candle_core::bail!("{o}×{i} convolution is {}×{} stride {}, not pointwise", self.k, self.k, self.stride);
        }
        Pointwise::new(self.weight.flatten_all()?.to_vec1()?, self.bias_vec.clone(), i, self.relu6)
            .map_err(candle_core::Error::Msg)
    }
}

/// Whether this CPU runs the AVX2 + FMA builds of the element-wise kernels (checked once per call site; the
/// portable build is the SSE2 baseline).
pub(crate) fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU also runs the AVX-512 builds of the kernels — depthwise, the planar 1×1 product, the
/// stride-2 phase split — (16 lanes a vector; on cores with full-width AVX-512 units, such as AMD Zen 5, twice
/// the multiply-adds of AVX2 a cycle).
pub(crate) fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx2() && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[inline(always)]
fn bias_act(o: &mut [f32], bias: f32, relu6: bool) {
    if relu6 {
        o.iter_mut().for_each(|v| *v = (*v + bias).clamp(0.0, 6.0));
    } else {
        o.iter_mut().for_each(|v| *v += bias);
    }
}

/// [`bias_act`] compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2 and FMA ([`avx2`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn bias_act_avx2(o: &mut [f32], bias: f32, relu6: bool) {
    bias_act(o, bias, relu6)
}

/// Adds `bias` to every value of `o` (then clamps with ReLU6 when asked), in the AVX2 build when `wide`.
pub(crate) fn bias_act_dispatch(o: &mut [f32], bias: f32, relu6: bool, wide: bool) {
    #[cfg(target_arch = "x86_64")]
    if wide {
        // SAFETY: `wide` is only true when `avx2()` found AVX2 and FMA on this CPU.
        unsafe { bias_act_avx2(o, bias, relu6) };
        return;
    }
    let _ = wide;
    bias_act(o, bias, relu6)
}

/// Adds `bias[j]` to (and optionally clamps with ReLU6) the `j`-th run of `plane` values of `o`.
pub(crate) fn bias_act_rows(o: &mut [f32], plane: usize, bias: &[f32], relu6: bool, wide: bool) {
    for (row, b) in o.chunks_mut(plane.max(1)).zip(bias) {
        bias_act_dispatch(row, *b, relu6, wide);
    }
}

/// Depthwise k×k convolution with TF "SAME" padding, bias and ReLU6 fused; NCHW, f32, CPU.
#[derive(Debug, Clone)]
pub struct Depthwise {
    weight: Vec<f32>,
    /// The same weights tap-major (k·k × channels), for the channels-last kernel.
    weight_taps: Vec<f32>,
    bias: Vec<f32>,
    k: usize,
    stride: usize,
}

impl Depthwise {
    /// A kernel over per-channel `weight` (channels × k × k) and `bias`.
    pub fn new(weight: Vec<f32>, bias: Vec<f32>, k: usize, stride: usize) -> Self {
        let (c, taps) = (bias.len(), k * k);
        let weight_taps = (0..taps * c).map(|i| weight.get((i % c) * taps + i / c).copied().unwrap_or(0.0)).collect();
        Self { weight, weight_taps, bias, k, stride }
    }

    /// Channels this kernel convolves.
    pub fn channels(&self) -> usize {
        self.bias.len()
    }

    /// The folded per-channel weights (channels × k × k).
    pub fn weight(&self) -> &[f32] {
        &self.weight
    }

    /// The folded per-channel bias.
    pub fn bias(&self) -> &[f32] {
        &self.bias
    }

    /// Kernel side and stride.
    pub fn shape(&self) -> (usize, usize) {
        (self.k, self.stride)
    }

    /// Output (height, width) for an input of h × w.
    pub fn output_size(&self, h: usize, w: usize) -> (usize, usize) {
        (same_padding(h, self.k, self.stride).0, same_padding(w, self.k, self.stride).0)
    }

    /// Convolves channel `ch`: `inp` is its h × w plane, `out` receives the output plane.
    pub(crate) fn channel(&self, ch: usize, inp: &[f32], h: usize, w: usize, out: &mut [f32], bufs: &mut Scratch) {
        #[cfg(target_arch = "x86_64")]
        if bufs.wide {
            // SAFETY: `bufs.wide` is only true when `avx2()` found AVX2 and FMA on this CPU.
            unsafe { self.channel_avx2(ch, inp, h, w, out, bufs) };
            return;
        }
        self.channel_portable::<false>(ch, inp, h, w, out, bufs)
    }

    /// [`Depthwise::channel_portable`] compiled for AVX2.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA ([`avx2`]).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn channel_avx2(&self, ch: usize, inp: &[f32], h: usize, w: usize, out: &mut [f32], bufs: &mut Scratch) {
        self.channel_portable::<true>(ch, inp, h, w, out, bufs)
    }

    /// One channel. The input is copied once into a zero-padded plane — for stride 2 split into its four
    /// (row parity, column parity) phases — so that every tap of the kernel reads one contiguous run of it
    /// for the whole output computed at the plane's width (the few extra columns are dropped when the result
    /// is cropped). The output is summed in register-sized chunks, all k² taps per chunk, bias and ReLU6
    /// applied before the one store per output; the plane carries a chunk of zeros at its end so the last
    /// chunk needs no bounds logic either.
    ///
    /// The padding is zeroed, and the taps' offsets into the plane computed, only when the plane's shape
    /// changes: the copy writes the interior alone, and consecutive channels of a block share one shape.
    ///
    /// `FMA`: multiply-adds as fused instructions (only where the CPU has them: without hardware FMA,
    /// `mul_add` is a slow library call).
    #[inline(always)]
    fn channel_portable<const FMA: bool>(
        &self,
        ch: usize,
        inp: &[f32],
        h: usize,
        w: usize,
        out: &mut [f32],
        bufs: &mut Scratch,
    ) {
        let (k, s) = (self.k, self.stride);
        let (oh, pt, pb) = same_padding(h, k, s);
        let (ow, pl, pr) = same_padding(w, k, s);
        let (ph, pw) = (h + pt + pb, w + pl + pr);
        let wk = &self.weight[ch * k * k..(ch + 1) * k * k];
        #[cfg(target_arch = "x86_64")]
        {
            if FMA && s <= 2 && bufs.wide512 && k <= MAX_SIDE && pl <= PHASE_MARGIN {
                let plane = PhasePlane { inp, h, w, wk, k, pt, pl, bias: self.bias[ch], oh, ow, stride: s };
                // SAFETY: `wide512` is only true when `avx512()` found AVX-512F.
                unsafe { plane.run(&mut bufs.phase_rows, &mut bufs.phase_shape, out) };
                return;
            }
        }
        // Phase planes: qh rows (one spare) of qw columns each.
        let (qh, qw) = if s == 1 { (ph + 1, pw) } else { (ph.div_ceil(2) + 1, pw.div_ceil(2)) };
        let phases = if s == 1 { 1 } else { 4 };
        let plane = qh * qw;
        let Scratch { padded, acc, starts, shape, wide512, .. } = bufs;
        if *shape != (h, w, k, s) {
            padded.sized(phases * plane + 4 * CHUNK).fill(0.0);
            // Where each tap's input run starts in `padded`.
            starts.clear();
            starts.extend((0..k * k).map(|t| {
                let (ky, kx) = (t / k, t % k);
                if s == 1 {
                    ky * qw + kx
                } else {
                    ((ky % 2) * 2 + kx % 2) * plane + (ky / 2) * qw + kx / 2
                }
            }));
            *shape = (h, w, k, s);
        }
        for y in 0..h {
            let py = y + pt;
            let row = &inp[y * w..(y + 1) * w];
            if s == 1 {
                padded[py * qw + pl..py * qw + pl + w].copy_from_slice(row);
            } else {
                // Column x lands in column (x + pl) / 2 of the phase of its parity: the even columns of the row
                // go to one phase plane and the odd ones to the other, each a contiguous run.
                let row_at = |phase_col: usize| ((py % 2) * 2 + phase_col) * plane + (py / 2) * qw;
                let even = row_at(pl % 2) + pl / 2;
                let odd = row_at((pl + 1) % 2) + pl.div_ceil(2);
                // The two runs lie in different phase planes, so they are disjoint.
                let (evens, odds) = if even < odd {
                    let (a, b) = padded.split_at_mut(odd);
                    (&mut a[even..even + w.div_ceil(2)], &mut b[..w / 2])
                } else {
                    let (a, b) = padded.split_at_mut(even);
                    (&mut b[..w.div_ceil(2)], &mut a[odd..odd + w / 2])
                };
                deinterleave(row, evens, odds, *wide512);
            }
        }
        let span = oh * qw;
        // A multiple of four chunks: the AVX2 kernel sums two at a time, the AVX-512 one four.
        let chunks = span.div_ceil(CHUNK).next_multiple_of(4);
        let acc = acc.sized(chunks * CHUNK);
        let madd = |a: f32, x: f32, wv: f32| if FMA { x.mul_add(wv, a) } else { a + wv * x };
        // The output is walked in register-sized chunks with every tap summed into the chunk before it is
        // stored: one store per output instead of one load and one store per tap. Runs of the last chunks may
        // reach past their phase plane into the next one (or the trailing zeros): those outputs lie beyond
        // `span` and are never read.
        #[cfg(target_arch = "x86_64")]
        if FMA {
            let acc = &mut acc[..chunks * CHUNK];
            if *wide512 {
                // SAFETY: `wide512` is only true when `avx512()` found AVX-512F (besides AVX2 and FMA).
                unsafe { planar_chunks_avx512(padded, starts, wk, self.bias[ch], acc) };
            } else {
                // SAFETY: FMA is only true in the AVX2 + FMA build (`channel_avx2`).
                unsafe { planar_chunks_avx2(padded, starts, wk, self.bias[ch], acc) };
            }
            for oy in 0..oh {
                out[oy * ow..(oy + 1) * ow].copy_from_slice(&acc[oy * qw..oy * qw + ow]);
            }
            return;
        }
        for (c, out) in acc[..chunks * CHUNK].chunks_exact_mut(CHUNK).enumerate() {
            let base = c * CHUNK;
            let mut sum = [self.bias[ch]; CHUNK];
            for (&start, &wv) in starts.iter().zip(wk) {
                let run = &padded[base + start..base + start + CHUNK];
                for i in 0..CHUNK {
                    sum[i] = madd(sum[i], run[i], wv);
                }
            }
            for (o, v) in out.iter_mut().zip(sum) {
                *o = v.clamp(0.0, 6.0);
            }
        }
        for oy in 0..oh {
            out[oy * ow..(oy + 1) * ow].copy_from_slice(&acc[oy * qw..oy * qw + ow]);
        }
    }
}

impl Depthwise {
    /// Channels-last ("NHWC") convolution of the `m` channels `c0 .. c0 + m`: pixel `i`'s channel `j` is
    /// `inp[i · ld + j]` (h × w pixels); output pixel `i`'s channel `j` goes to `out[i · m + j]`, `out`
    /// holding exactly the output pixels' `m` channels.
    ///
    /// Every output pixel sums its in-image taps (the padding is skipped, not stored) over runs of channels
    /// held in registers: the weights of a tap are contiguous across channels, as are the inputs of a pixel,
    /// so nothing is copied or re-laid out, and no lane is wasted on small planes (7 × 7 at the top of the
    /// network, where the channel-planar kernel computes a padded plane's width per row).
    pub(crate) fn nhwc(&self, c0: usize, inp: &[f32], ld: usize, h: usize, w: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: `avx2()` found AVX2 and FMA on this CPU.
            unsafe { self.nhwc_avx2(c0, inp, ld, h, w, out) };
            return;
        }
        self.nhwc_portable::<false>(c0, inp, ld, h, w, out)
    }

    /// [`Depthwise::nhwc_portable`] compiled for AVX2.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA ([`avx2`]).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn nhwc_avx2(&self, c0: usize, inp: &[f32], ld: usize, h: usize, w: usize, out: &mut [f32]) {
        self.nhwc_portable::<true>(c0, inp, ld, h, w, out)
    }

    #[inline(always)]
    fn nhwc_portable<const FMA: bool>(&self, c0: usize, inp: &[f32], ld: usize, h: usize, w: usize, out: &mut [f32]) {
        let (k, s, c) = (self.k, self.stride, self.channels());
        let (oh, pt, _) = same_padding(h, k, s);
        let (ow, pl, _) = same_padding(w, k, s);
        let m = out.len() / (oh * ow).max(1);
        assert!(c0 + m <= c && m <= ld && out.len() >= oh * ow * m, "depthwise: buffer sizes");
        assert!(k * k <= MAX_TAPS, "depthwise: channels-last kernel up to 7 × 7");
        assert!(h * w == 0 || inp.len() >= (h * w - 1) * ld + m, "depthwise: input size");
        let bias = &self.bias[c0..c0 + m];
        let weights = &self.weight_taps;
        // Output columns whose whole k-wide window lies inside the image: their taps differ only by a shift.
        let inner_lo = pl.div_ceil(s).min(ow);
        let inner_hi = if w + pl >= k { ((w + pl - k) / s + 1).min(ow) } else { 0 }.max(inner_lo);
        let mut taps = [(0usize, 0usize); MAX_TAPS];
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
        let wide512 = FMA && avx512();
        for oy in 0..oh {
            // Taps whose input row (oy·s + ky − pt) lies inside the image.
            let y0 = oy * s;
            let rows = pt.saturating_sub(y0)..(h + pt).saturating_sub(y0).min(k);
            // (input offset, weight offset) of channel 0 for each in-image tap of the pixel whose window
            // starts at input column x0 − pl (offsets relative to that column when `inner`).
            let fill = |taps: &mut [(usize, usize); MAX_TAPS], x0: usize, inner: bool| {
                let cols = if inner { 0..k } else { pl.saturating_sub(x0)..(w + pl).saturating_sub(x0).min(k) };
                let mut n = 0;
                for ky in rows.clone() {
                    for kx in cols.clone() {
                        let ix = if inner { kx } else { x0 + kx - pl };
                        if n < MAX_TAPS {
                            taps[n] = (((y0 + ky - pt) * w + ix) * ld, (ky * k + kx) * c + c0);
                            n += 1;
                        }
                    }
                }
                n
            };
            let row_out = &mut out[oy * ow * m..(oy + 1) * ow * m];
            let mut ox = 0;
            while ox < ow {
                if ox >= inner_lo && ox + PIXELS <= inner_hi {
                    // PIXELS neighbours at once: each weight load serves them all.
                    let n = fill(&mut taps, 0, true);
                    let inp = &inp[(ox * s - pl) * ld..];
                    let o = &mut row_out[ox * m..(ox + PIXELS) * m];
                    let run = PixelRun { m, bias, inp, step: s * ld, weights, taps: &taps[..n] };
                    #[cfg(not(target_arch = "x86_64"))]
                    let j = dw_run::<16, PIXELS, FMA>(0, &run, o);
                    #[cfg(target_arch = "x86_64")]
                    let j = if wide512 && s == 1 && k == 5 {
                        // SAFETY: `avx512()` found AVX-512F on this CPU; the taps are whole rows (inner pixels).
                        unsafe { dw_rows_avx512::<1, 5>(dw_rows_avx512::<2, 5>(0, &run, o), &run, o) }
                    } else if wide512 && s == 1 && k == 3 {
                        // SAFETY: as above.
                        unsafe { dw_rows_avx512::<1, 3>(dw_rows_avx512::<2, 3>(0, &run, o), &run, o) }
                    } else if wide512 {
                        // SAFETY: `avx512()` found AVX-512F on this CPU.
                        unsafe { dw_run_avx512::<1, PIXELS>(dw_run_avx512::<2, PIXELS>(0, &run, o), &run, o) }
                    } else if FMA {
                        // SAFETY: FMA is only true in the AVX2 + FMA build (`nhwc_avx2`).
                        unsafe { dw_run_avx2::<2, PIXELS>(0, &run, o) }
                    } else {
                        dw_run::<16, PIXELS, FMA>(0, &run, o)
                    };
                    let j = dw_run::<8, PIXELS, FMA>(j, &run, o);
                    dw_run::<1, PIXELS, FMA>(j, &run, o);
                    ox += PIXELS;
                } else {
                    let n = fill(&mut taps, ox * s, false);
                    let o = &mut row_out[ox * m..(ox + 1) * m];
                    let run = PixelRun { m, bias, inp, step: 0, weights, taps: &taps[..n] };
                    #[cfg(not(target_arch = "x86_64"))]
                    let j = 0;
                    #[cfg(target_arch = "x86_64")]
                    let j = if wide512 {
                        // SAFETY: `avx512()` found AVX-512F on this CPU.
                        unsafe { dw_run_avx512::<1, 1>(dw_run_avx512::<4, 1>(0, &run, o), &run, o) }
                    } else if FMA {
                        // SAFETY: FMA is only true in the AVX2 + FMA build (`nhwc_avx2`).
                        unsafe { dw_run_avx2::<8, 1>(0, &run, o) }
                    } else {
                        0
                    };
                    let j = dw_run::<32, 1, FMA>(j, &run, o);
                    let j = dw_run::<8, 1, FMA>(j, &run, o);
                    dw_run::<1, 1, FMA>(j, &run, o);
                    ox += 1;
                }
            }
        }
    }
}

/// What [`dw_run`] sums for a run of neighbouring output pixels: `m` channels, their `bias`, the input from the
/// first pixel's window (`step` further for each next pixel), the tap-major `weights`, and each tap's (input
/// offset, weight offset) of channel 0.
#[derive(Clone, Copy)]
struct PixelRun<'a> {
    m: usize,
    bias: &'a [f32],
    inp: &'a [f32],
    step: usize,
    weights: &'a [f32],
    taps: &'a [(usize, usize)],
}

/// Output pixels the channels-last depthwise kernel computes together inside the image.
const PIXELS: usize = 4;

/// Channels `j ..` of `P` neighbouring output pixels of [`Depthwise::nhwc`] in runs of `L` channels while a
/// whole run fits in `m`. `out` holds the `P` pixels' `m` channels. Returns where it stopped.
#[inline(always)]
fn dw_run<const L: usize, const P: usize, const FMA: bool>(mut j: usize, run: &PixelRun, out: &mut [f32]) -> usize {
    let PixelRun { m, bias, inp, step, weights, taps } = *run;
    while j + L <= m {
        let mut acc = [[0f32; L]; P];
        for a in acc.iter_mut() {
            a.copy_from_slice(&bias[j..j + L]);
        }
        for &(xi, wi) in taps {
            let wv: &[f32; L] = weights[wi + j..wi + j + L].try_into().expect("L weights");
            for (q, a) in acc.iter_mut().enumerate() {
                let at = xi + q * step + j;
                let x: &[f32; L] = inp[at..at + L].try_into().expect("L inputs");
                for i in 0..L {
                    a[i] = if FMA { x[i].mul_add(wv[i], a[i]) } else { a[i] + x[i] * wv[i] };
                }
            }
        }
        for (q, a) in acc.iter().enumerate() {
            for (o, v) in out[q * m + j..q * m + j + L].iter_mut().zip(a) {
                *o = v.clamp(0.0, 6.0);
            }
        }
        j += L;
    }
    j
}

/// [`dw_run_avx512`] for a stride-1 `K × K` kernel, reusing loads along the row: the `PIXELS` neighbours' taps
/// in one kernel row read only `PIXELS + K − 1` distinct input pixels, so each is loaded once (with the row's `K`
/// weight vectors held in registers) instead of once per tap — 13 loads for 20 multiply-adds at K = 5 instead of
/// 25, where the loads had been the limit. `run.taps` must be whole kernel rows, each `K` taps one pixel (`step`)
/// apart, as [`Depthwise::nhwc`] lists them for pixels inside the image.
///
/// # Safety
/// The CPU must support AVX-512F ([`avx512`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dw_rows_avx512<const V: usize, const K: usize>(mut j: usize, run: &PixelRun, out: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    const P: usize = PIXELS;
    let PixelRun { m, bias, inp, step, weights, taps } = *run;
    let l = 16 * V;
    assert!(
        K <= MAX_SIDE && taps.len().is_multiple_of(K) && bias.len() >= m && out.len() >= P * m,
        "depthwise: row run sizes"
    );
    for row in taps.chunks_exact(K) {
        assert!(row[0].0 + (P + K - 2) * step + m <= inp.len(), "depthwise: row run inputs");
        for (kx, &(xi, wi)) in row.iter().enumerate() {
            assert!(xi == row[0].0 + kx * step && wi + m <= weights.len(), "depthwise: row run taps");
        }
    }
    let (zero, six) = (_mm512_setzero_ps(), _mm512_set1_ps(6.0));
    while j + l <= m {
        let mut acc = [[zero; V]; P];
        for a in acc.iter_mut() {
            for (v, r) in a.iter_mut().enumerate() {
                // SAFETY: j + l ≤ m ≤ bias.len().
                *r = _mm512_loadu_ps(bias.as_ptr().add(j + 16 * v));
            }
        }
        for row in taps.chunks_exact(K) {
            // SAFETY (loads): input pixels 0 .. P + K − 1 of the row lie below row[0].0 + (P + K − 2)·step + m ≤
            // inp.len(), and each tap's weights below wi + m ≤ weights.len() (asserted above).
            let x0 = inp.as_ptr().add(row[0].0 + j);
            let mut xv = [[zero; V]; P + MAX_SIDE - 1];
            for (i, x) in xv.iter_mut().enumerate().take(P + K - 1) {
                for (v, r) in x.iter_mut().enumerate() {
                    *r = _mm512_loadu_ps(x0.add(i * step + 16 * v));
                }
            }
            // Counted to the constant K (not over `row`), so the loop unrolls and `xv` stays in registers.
            #[allow(clippy::needless_range_loop)]
            for kx in 0..K {
                let wi = row[kx].1;
                let mut wv = [zero; V];
                for (v, r) in wv.iter_mut().enumerate() {
                    *r = _mm512_loadu_ps(weights.as_ptr().add(wi + j + 16 * v));
                }
                // Output pixel q takes input pixel q + kx through this tap.
                for (q, a) in acc.iter_mut().enumerate() {
                    for (v, r) in a.iter_mut().enumerate() {
                        *r = _mm512_fmadd_ps(xv[q + kx][v], wv[v], *r);
                    }
                }
            }
        }
        for (q, a) in acc.iter().enumerate() {
            for (v, r) in a.iter().enumerate() {
                // SAFETY: q·m + j + l ≤ P·m ≤ out.len().
                _mm512_storeu_ps(out.as_mut_ptr().add(q * m + j + 16 * v), _mm512_min_ps(_mm512_max_ps(*r, zero), six));
            }
        }
        j += l;
    }
    j
}

/// The two explicit-register depthwise kernels for one vector width: `$dw_run`, [`dw_run`] in runs of
/// `$lanes·V` channels for `P` pixels (`V·P` accumulators; each tap's weight vectors loaded once for all `P`
/// pixels), and `$planar`, the planar kernel's sums `acc[i] = relu6(bias + Σ_t wk[t] · padded[starts[t] + i])`
/// in blocks of eight vectors (eight accumulators, enough to hide the multiply-add latency; `acc.len()` must be
/// a multiple of `8·$lanes`). Every offset is checked before the loops. One body, instantiated for AVX2 (8 lanes)
/// and AVX-512 (16 lanes), so the two builds cannot drift apart.
macro_rules! depthwise_simd {
    (
        $dw_run:ident, $planar:ident, $feature:literal, $lanes:literal, $check:literal,
        $zero:ident, $set1:ident, $load:ident, $store:ident, $fmadd:ident, $min:ident, $max:ident
    ) => {
        #[doc = concat!("[`dw_run`] in ", stringify!($lanes), "-lane registers (see [`depthwise_simd`]).")]
        ///
        /// # Safety
        #[doc = concat!("The CPU must support ", $feature, " ([`", $check, "`]).")]
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        unsafe fn $dw_run<const V: usize, const P: usize>(mut j: usize, run: &PixelRun, out: &mut [f32]) -> usize {
            use std::arch::x86_64::*;
            let PixelRun { m, bias, inp, step, weights, taps } = *run;
            let l = $lanes * V;
            assert!(bias.len() >= m && out.len() >= P * m, "depthwise: run sizes");
            for &(xi, wi) in taps {
                assert!(xi + (P - 1) * step + m <= inp.len() && wi + m <= weights.len(), "depthwise: run offsets");
            }
            let (zero, six) = ($zero(), $set1(6.0));
            while j + l <= m {
                let mut acc = [[zero; V]; P];
                for a in acc.iter_mut() {
                    for (v, r) in a.iter_mut().enumerate() {
                        // SAFETY: j + l ≤ m ≤ bias.len().
                        *r = $load(bias.as_ptr().add(j + $lanes * v));
                    }
                }
                for &(xi, wi) in taps {
                    // SAFETY: wi + j + l ≤ wi + m ≤ weights.len(), and xi + q·step + j + l ≤ inp.len() for
                    // q < P (asserted above).
                    let mut wv = [zero; V];
                    for (v, r) in wv.iter_mut().enumerate() {
                        *r = $load(weights.as_ptr().add(wi + j + $lanes * v));
                    }
                    for (q, a) in acc.iter_mut().enumerate() {
                        let x = inp.as_ptr().add(xi + q * step + j);
                        for (v, r) in a.iter_mut().enumerate() {
                            *r = $fmadd($load(x.add($lanes * v)), wv[v], *r);
                        }
                    }
                }
                for (q, a) in acc.iter().enumerate() {
                    for (v, r) in a.iter().enumerate() {
                        // SAFETY: q·m + j + l ≤ P·m ≤ out.len().
                        $store(out.as_mut_ptr().add(q * m + j + $lanes * v), $min($max(*r, zero), six));
                    }
                }
                j += l;
            }
            j
        }

        #[doc = concat!("The planar kernel's sums in ", stringify!($lanes), "-lane registers (see [`depthwise_simd`]).")]
        ///
        /// # Safety
        #[doc = concat!("The CPU must support ", $feature, " ([`", $check, "`]).")]
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        unsafe fn $planar(padded: &[f32], starts: &[usize], wk: &[f32], bias: f32, acc: &mut [f32]) {
            use std::arch::x86_64::*;
            const W: usize = 8 * $lanes;
            let furthest = starts.iter().copied().max().unwrap_or(0);
            assert!(
                acc.len().is_multiple_of(W) && acc.len() + furthest <= padded.len() && starts.len() == wk.len(),
                "depthwise: runs"
            );
            let (zero, six, b) = ($zero(), $set1(6.0), $set1(bias));
            for base in (0..acc.len()).step_by(W) {
                let mut sum = [b; 8];
                for (&start, &wv) in starts.iter().zip(wk) {
                    let wv = $set1(wv);
                    // SAFETY: base + start + W ≤ acc.len() + furthest ≤ padded.len() (asserted above).
                    let run = padded.as_ptr().add(base + start);
                    for (i, s) in sum.iter_mut().enumerate() {
                        *s = $fmadd($load(run.add($lanes * i)), wv, *s);
                    }
                }
                for (i, s) in sum.iter().enumerate() {
                    // SAFETY: base + W ≤ acc.len().
                    $store(acc.as_mut_ptr().add(base + $lanes * i), $min($max(*s, zero), six));
                }
            }
        }
    };
}

depthwise_simd!(
    dw_run_avx2,
    planar_chunks_avx2,
    "avx2,fma",
    8,
    "avx2",
    _mm256_setzero_ps,
    _mm256_set1_ps,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_fmadd_ps,
    _mm256_min_ps,
    _mm256_max_ps
);
depthwise_simd!(
    dw_run_avx512,
    planar_chunks_avx512,
    "avx512f",
    16,
    "avx512",
    _mm512_setzero_ps,
    _mm512_set1_ps,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_fmadd_ps,
    _mm512_min_ps,
    _mm512_max_ps
);

/// Zeros on each side of a phase row of [`PhasePlane`]: one vector, so rows start on a cache line and
/// taps reaching left of the image read zeros.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const PHASE_MARGIN: usize = 16;

/// A planar depthwise convolution (ReLU6 after the bias) into the output plane, with AVX-512 registers. At
/// stride 2 each input row is split once into its even and odd columns (two permutes per 32 values), at
/// stride 1 copied whole, each such phase row with zeros on both sides; then every tap of 16 neighbouring
/// outputs is one plain load from a phase row, and the output is written once.
///
/// Measured against what it replaced (one thread, in a pass): at stride 2, four zero-padded (row parity,
/// column parity) phase planes summed over their whole padded width and copied out: block 1 1.07 → 0.91 ms
/// (its depthwise had run at 3.7 GMAC/s); at stride 1, a kernel reading the input plane directly and masking
/// the vectors at the ends of each row: block 2 (56 × 56, two of four vectors masked) 0.84 → 0.68 ms, block 0
/// (112 × 112) the same or slightly faster, so the masked kernel went.
///
/// Blocks of `R` rows × `G` vectors of 16 outputs (`R·G` ≥ 8 accumulators, to hide the multiply-add latency);
/// a tap's row outside the image is skipped, its columns outside the image read the phase rows' zeros.
#[cfg(target_arch = "x86_64")]
struct PhasePlane<'a> {
    /// The h × w input plane.
    inp: &'a [f32],
    h: usize,
    w: usize,
    /// The k × k weights, row-major.
    wk: &'a [f32],
    k: usize,
    /// Padding above and to the left ("SAME").
    pt: usize,
    pl: usize,
    bias: f32,
    /// Output size.
    oh: usize,
    ow: usize,
    /// 2, or 1: each row copied whole between its margins (one phase).
    stride: usize,
}

#[cfg(target_arch = "x86_64")]
impl PhasePlane<'_> {
    /// Values of one phase row: the margins, then room for every output vector's furthest tap.
    fn phase_len(&self) -> usize {
        (PHASE_MARGIN + self.ow.div_ceil(16) * 16 + self.k).next_multiple_of(16) + PHASE_MARGIN
    }

    /// Convolves into `out` (oh × ow; every value is written), splitting the plane's rows into `phases`.
    ///
    /// # Safety
    /// The CPU must support AVX-512F ([`avx512`]).
    #[target_feature(enable = "avx512f")]
    unsafe fn run(&self, phases: &mut Buffer, shape: &mut (usize, usize, usize), out: &mut [f32]) {
        let (h, w, k) = (self.h, self.w, self.k);
        let len = self.phase_len();
        assert!(
            self.inp.len() >= h * w
                && out.len() >= self.oh * self.ow
                && self.wk.len() == k * k
                && k <= MAX_SIDE
                && self.pl <= PHASE_MARGIN
                && (self.stride == 1 || self.stride == 2)
                && self.ow <= w.div_ceil(self.stride),
            "depthwise: phase plane sizes"
        );
        if self.oh == 0 || self.ow == 0 {
            return;
        }
        // Row iy's even columns at [2·iy·len + M ..), its odd ones at [(2·iy + 1)·len + M ..); zeros elsewhere,
        // laid down when the plane's shape changes (the values are rewritten in the same places every time).
        let s = self.stride;
        if *shape != (h, w, s * len) {
            phases.sized(s * h * len).fill(0.0);
            *shape = (h, w, s * len);
        }
        let rows = phases.sized(s * h * len);
        for (iy, pair) in rows.chunks_exact_mut(s * len).enumerate() {
            let src = &self.inp[iy * w..(iy + 1) * w];
            if s == 1 {
                pair[PHASE_MARGIN..PHASE_MARGIN + w].copy_from_slice(src);
                continue;
            }
            let (evens, odds) = pair.split_at_mut(len);
            deinterleave(
                src,
                &mut evens[PHASE_MARGIN..PHASE_MARGIN + w.div_ceil(2)],
                &mut odds[PHASE_MARGIN..PHASE_MARGIN + w / 2],
                true,
            );
        }
        // Where output column 0 of each tap column kx reads, from the start of its input row's phases: input
        // column kx − pl, which is in phase (kx − pl) mod s at ⌊(kx − pl) / s⌋.
        let mut columns = [0isize; MAX_SIDE];
        for (kx, c) in columns.iter_mut().enumerate().take(k) {
            let t = kx as isize - self.pl as isize;
            let (phase, shift) = (t.rem_euclid(s as isize), t.div_euclid(s as isize));
            *c = phase * len as isize + PHASE_MARGIN as isize + shift;
        }
        let columns = &columns[..k];
        let vectors = self.ow.div_ceil(16);
        let mut v = 0;
        while v < vectors {
            let g = (vectors - v).min(4);
            // SAFETY (every call): vectors v .. v + g of every output row; the phase rows hold every tap.
            unsafe {
                match g {
                    4 => self.rows::<2, 4>(rows, len, columns, v, out),
                    3 => self.rows::<3, 3>(rows, len, columns, v, out),
                    2 => self.rows::<4, 2>(rows, len, columns, v, out),
                    _ => self.rows::<8, 1>(rows, len, columns, v, out),
                }
            }
            v += g;
        }
    }

    /// The `G` vectors from `v0` of every output row, `R` rows at a time, then the last rows one by one.
    ///
    /// # Safety
    /// As [`PhasePlane::run`], after its checks; `phases` holds the plane's phase rows.
    #[target_feature(enable = "avx512f")]
    unsafe fn rows<const R: usize, const G: usize>(
        &self,
        phases: &[f32],
        len: usize,
        columns: &[isize],
        v0: usize,
        out: &mut [f32],
    ) {
        let mut y = 0;
        while y + R <= self.oh {
            // SAFETY: output rows y .. y + R exist.
            unsafe { self.block::<R, G>(phases, len, columns, y, v0, out) };
            y += R;
        }
        while y < self.oh {
            // SAFETY: output row y exists.
            unsafe { self.block::<1, G>(phases, len, columns, y, v0, out) };
            y += 1;
        }
    }

    /// Output rows `y0 .. y0 + R`, columns `16·v0 .. 16·(v0 + G)` (those inside the row).
    ///
    /// # Safety
    /// As [`PhasePlane::rows`]; the output rows must exist.
    #[target_feature(enable = "avx512f")]
    unsafe fn block<const R: usize, const G: usize>(
        &self,
        phases: &[f32],
        len: usize,
        columns: &[isize],
        y0: usize,
        v0: usize,
        out: &mut [f32],
    ) {
        use std::arch::x86_64::*;
        let (h, k, ow) = (self.h, self.k, self.ow);
        let mut acc = [[_mm512_set1_ps(self.bias); G]; R];
        for ky in 0..k {
            for (r, sums) in acc.iter_mut().enumerate() {
                // Input row s·(y0 + r) + ky − pt; rows in the padding add nothing.
                let s = self.stride;
                let Some(iy) = (s * (y0 + r) + ky).checked_sub(self.pt).filter(|&iy| iy < h) else { continue };
                for (&tap, &offset) in self.wk[ky * k..(ky + 1) * k].iter().zip(columns) {
                    let start = (s * iy * len) as isize + offset;
                    let wv = _mm512_set1_ps(tap);
                    for (g, sum) in sums.iter_mut().enumerate() {
                        // SAFETY: start + 16·(v0 + g) ≥ row start (shift ≥ −M), and its 16 values end before the
                        // row's (phase_len leaves room for the furthest tap of the last vector).
                        let xv = _mm512_loadu_ps(phases.as_ptr().offset(start + (16 * (v0 + g)) as isize));
                        *sum = _mm512_fmadd_ps(xv, wv, *sum);
                    }
                }
            }
        }
        let (zero, six) = (_mm512_setzero_ps(), _mm512_set1_ps(6.0));
        for (r, sums) in acc.iter().enumerate() {
            let row = out.as_mut_ptr().add((y0 + r) * ow);
            for (g, sum) in sums.iter().enumerate() {
                let x0 = 16 * (v0 + g);
                let mask = if x0 + 16 <= ow { u16::MAX } else { ((1u32 << (ow - x0)) - 1) as u16 };
                // SAFETY: the lanes kept lie inside output row y0 + r.
                _mm512_mask_storeu_ps(row.add(x0), mask, _mm512_min_ps(_mm512_max_ps(*sum, zero), six));
            }
        }
    }
}

/// `evens[i] = src[2i]`, `odds[i] = src[2i + 1]` (`evens` holding ⌈n/2⌉ and `odds` ⌊n/2⌋ values of the `n` in
/// `src`): the stride-2 depthwise kernel's split of a row into its column phases. With AVX-512 (`wide512`),
/// two permutes split each 32 values; the plain loops left this at a few values a cycle, a quarter of the
/// stride-2 layers' time.
fn deinterleave(src: &[f32], evens: &mut [f32], odds: &mut [f32], wide512: bool) {
    assert!(evens.len() == src.len().div_ceil(2) && odds.len() == src.len() / 2, "deinterleave: sizes");
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if wide512 {
        // SAFETY: `wide512` is only true when `avx512()` found AVX-512F on this CPU.
        done = unsafe { deinterleave_avx512(src, evens, odds) };
    }
    let _ = wide512;
    strided_copy(&mut evens[done / 2..], &src[done..], 2);
    if src.len() > done + 1 {
        strided_copy(&mut odds[done / 2..], &src[done + 1..], 2);
    }
}

/// The whole 32-value blocks of [`deinterleave`]; returns how many values of `src` it split.
///
/// # Safety
/// The CPU must support AVX-512F ([`avx512`]); the sizes must be as [`deinterleave`] asserts.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn deinterleave_avx512(src: &[f32], evens: &mut [f32], odds: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    let even_idx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd_idx = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let blocks = src.len() / 32;
    for b in 0..blocks {
        // SAFETY: values 32b .. 32b + 32 lie in `src`; 16b .. 16b + 16 in `evens` and `odds` (each holds at
        // least ⌊n/2⌋ ≥ 16·blocks values).
        let lo = _mm512_loadu_ps(src.as_ptr().add(32 * b));
        let hi = _mm512_loadu_ps(src.as_ptr().add(32 * b + 16));
        _mm512_storeu_ps(evens.as_mut_ptr().add(16 * b), _mm512_permutex2var_ps(lo, even_idx, hi));
        _mm512_storeu_ps(odds.as_mut_ptr().add(16 * b), _mm512_permutex2var_ps(lo, odd_idx, hi));
    }
    32 * blocks
}

/// `dst[i] = src[i · s]`; the common strides get loops without index arithmetic, which the compiler vectorises.
/// `src` must reach index (dst.len() − 1) · s.
pub(crate) fn strided_copy(dst: &mut [f32], src: &[f32], s: usize) {
    let Some(last) = dst.len().checked_sub(1) else { return };
    match s {
        1 => dst.copy_from_slice(&src[..dst.len()]),
        2 => {
            for (d, pair) in dst[..last].iter_mut().zip(src.chunks_exact(2)) {
                *d = pair[0];
            }
            dst[last] = src[last * 2];
        }
        _ => dst.iter_mut().zip(src.iter().step_by(s)).for_each(|(d, v)| *d = *v),
    }
}

/// Taps of the largest depthwise kernel the channels-last path takes (7 × 7); larger kernels must use
/// [`Depthwise::channel`].
const MAX_TAPS: usize = 49;

/// The largest kernel side of the planar AVX-512 kernel ([`PhasePlane`]) and of the row-reusing one.
#[cfg(target_arch = "x86_64")]
const MAX_SIDE: usize = 7;

/// Outputs the depthwise kernel sums in registers at a time (four AVX2 vectors).
const CHUNK: usize = 32;

/// Per-thread buffers of the depthwise kernel, and whether the AVX2 build may run.
pub(crate) struct Scratch {
    padded: Buffer,
    acc: Buffer,
    starts: Vec<usize>,
    /// (h, w, k, stride) of the plane whose padding `padded` holds zeroed and whose tap offsets `starts` holds.
    shape: (usize, usize, usize, usize),
    /// The phase rows of a plane for [`PhasePlane`] (column phases at stride 2, whole rows at stride 1), zero
    /// around the values it writes.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    phase_rows: Buffer,
    /// (h, w, phase row length) of the plane whose margins `phase_rows` holds zeroed.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    phase_shape: (usize, usize, usize),
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    wide: bool,
    /// Whether the AVX-512 build of the summing kernel may run ([`avx512`]).
    wide512: bool,
}

impl Scratch {
    /// Empty buffers; `wide` must come from [`avx2`].
    pub(crate) fn new(wide: bool) -> Self {
        Self {
            padded: Buffer::default(),
            acc: Buffer::default(),
            starts: Vec::new(),
            shape: (0, 0, 0, 0),
            phase_rows: Buffer::default(),
            phase_shape: (0, 0, 0),
            wide,
            wide512: wide && avx512(),
        }
    }
}

impl CustomOp1 for Depthwise {
    fn name(&self) -> &'static str {
        "depthwise-relu6"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else { candle_core::bail!("depthwise: f32 input expected") };
        let Some((a, b)) = layout.contiguous_offsets() else {
            candle_core::bail!("depthwise: contiguous input expected")
        };
        let data = &data[a..b];
        let (n, c, h, w) = layout.shape().dims4()?;
        if self.bias.len() != c || self.weight.len() != c * self.k * self.k {
            candle_core::bail!("depthwise: {c} channels but weights for {}", self.bias.len());
        }
        let (oh, _, _) = same_padding(h, self.k, self.stride);
        let (ow, _, _) = same_padding(w, self.k, self.stride);
        let mut out = vec![0f32; n * c * oh * ow];
        let wide = avx2();
        let scratch = || Scratch::new(wide);
        out.par_chunks_mut(oh * ow).enumerate().for_each_init(scratch, |bufs, (nc, o)| {
            self.channel(nc % c, &data[nc * h * w..(nc + 1) * h * w], h, w, o, bufs);
        });
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }
}

thread_local! {
    /// Each thread's buffers for passes through the network, kept from pass to pass.
    static WORKSPACE: std::cell::RefCell<Workspace> = std::cell::RefCell::new(Workspace::default());
}

/// Runs `f` with this thread's [`WORKSPACE`] (or a fresh one when the thread is already inside a pass: it took
/// another batch slice while waiting).
fn with_workspace<R>(f: impl FnOnce(&mut Workspace) -> R) -> R {
    WORKSPACE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut ws) => f(&mut ws),
        Err(_) => f(&mut Workspace::default()),
    })
}

/// One line of [`depthwise_kernel_speeds`]: a depthwise layer's shape and each kernel's throughput on it.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthwiseSpeed {
    /// Channels, kernel size, stride and (square) input side.
    pub shape: (usize, usize, usize, usize),
    /// The planar kernel ([`Depthwise::channel`] over every channel), in GMAC/s.
    pub planar_gmacs: f64,
    /// The channels-last kernel ([`Depthwise::nhwc`] over all channels at once), in GMAC/s.
    pub channels_last_gmacs: f64,
}

/// Times both depthwise kernels, one thread, on the depthwise layers of EfficientNet-Lite0 at 224 px (the
/// fastest of `passes` passes each, synthetic values): the microbenchmark behind the kernels' tuning.
pub fn depthwise_kernel_speeds(passes: usize) -> Vec<DepthwiseSpeed> {
    let best = |f: &mut dyn FnMut()| {
        (0..passes.max(1))
            .map(|_| {
                let t = std::time::Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::MAX, f64::min)
    };
    let shapes = [
        (32, 3, 1, 112),
        (96, 3, 2, 112),
        (144, 3, 1, 56),
        (144, 5, 2, 56),
        (240, 5, 1, 28),
        (480, 5, 1, 14),
        (672, 5, 1, 14),
        (672, 5, 2, 14),
        (1152, 5, 1, 7),
    ];
    shapes
        .into_iter()
        .map(|(c, k, s, h)| {
            let dw = Depthwise::new((0..c * k * k).map(|i| (i % 7) as f32 * 0.01).collect(), vec![0.1; c], k, s);
            let x: Vec<f32> = (0..c * h * h).map(|i| (i % 13) as f32 * 0.1).collect();
            let (oh, ow) = dw.output_size(h, h);
            let mut out = vec![0f32; c * oh * ow];
            let mut scratch = Scratch::new(avx2());
            let planar = best(&mut || {
                for (ch, o) in out.chunks_mut(oh * ow).enumerate() {
                    dw.channel(ch, &x[ch * h * h..(ch + 1) * h * h], h, h, o, &mut scratch);
                }
            });
            let last = best(&mut || dw.nhwc(0, &x, c, h, h, &mut out));
            let macs = (c * oh * ow * k * k) as f64 / 1e9;
            DepthwiseSpeed { shape: (c, k, s, h), planar_gmacs: macs / planar, channels_last_gmacs: macs / last }
        })
        .collect()
}

/// The EfficientNet-Lite0 network with its ImageNet classifier.
#[derive(Debug, Clone)]
pub struct EfficientNetLite0 {
    stem: Im2colConv,
    blocks: Vec<MbConv>,
    /// The block whose output is the stride-16 feature map.
    s16_block: usize,
    head: Pointwise,
    fc: Dense,
}

/// A fully connected layer (the ImageNet classifier) as one dot product per output and image.
///
/// candle's `Linear` went through a general matrix product for what is, per image, a matrix–vector product: at
/// batch 1 it cost about as much as a network block. Its 5 MB of weights are read once per pass, from the last
/// level cache at best, so the rows are split among the pass's team of threads, and every image of a slice
/// reuses a group of rows while they are in L1.
#[derive(Debug, Clone)]
struct Dense {
    /// Row-major (out × in), each row starting on a cache line when `in` is a multiple of 16.
    weight: Buffer,
    bias: Vec<f32>,
    cin: usize,
}

/// Output rows one part of the classifier's parallel step computes (`DENSE_PART` × 1280 × 4 bytes = 640 KB of
/// weights: enough parts for two to four threads to share the step without one waiting on another's last).
const DENSE_PART: usize = 128;

/// Output rows computed together, sharing each load of the input.
const DENSE_ROWS: usize = 8;

impl Dense {
    /// A layer from row-major (out × in) weights and its `out` biases.
    fn new(weight: &[f32], bias: Vec<f32>) -> candle_core::Result<Self> {
        if bias.is_empty() || !weight.len().is_multiple_of(bias.len()) {
            candle_core::bail!("dense: {} weights for {} outputs", weight.len(), bias.len());
        }
        Ok(Self { cin: weight.len() / bias.len(), weight: Buffer::from_slice(weight), bias })
    }

    /// `bias + W · x` for each row of `x` (N × in), as (N, out).
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (n, cin) = x.dims2()?;
        if cin != self.cin {
            candle_core::bail!("dense: {cin} inputs for a layer of {}", self.cin);
        }
        let x = x.flatten_all()?.to_vec1::<f32>()?;
        let cout = self.bias.len();
        let mut out = vec![0f32; n * cout];
        let dst = crate::mbconv::BandOutput(out.as_mut_ptr());
        let wide = avx2();
        crate::team::for_each_index(cout.div_ceil(DENSE_PART), |part| {
            let (r0, r1) = (part * DENSE_PART, ((part + 1) * DENSE_PART).min(cout));
            for g in (r0..r1).step_by(DENSE_ROWS) {
                let rows = DENSE_ROWS.min(r1 - g);
                let w = &self.weight[g * cin..(g + rows) * cin];
                for (i, xi) in x.chunks_exact(cin).enumerate() {
                    let sums = dot_rows_dispatch(w, xi, wide);
                    for (r, v) in sums.iter().take(rows).enumerate() {
                        // SAFETY: `out` holds n × cout values, and output (i, g + r) belongs to this part's rows
                        // alone.
                        unsafe { *dst.at(i * cout + g + r) = self.bias[g + r] + v };
                    }
                }
            }
        });
        Tensor::from_vec(out, (n, cout), &Device::Cpu)
    }
}

/// The dot products of `x` with each of the (up to [`DENSE_ROWS`]) rows of `w` (`w.len()` a multiple of
/// `x.len()`), over 16 independent lanes per row (so the compiler keeps them in vector registers); rows past
/// the last are 0.
#[inline(always)]
fn dot_rows(w: &[f32], x: &[f32]) -> [f32; DENSE_ROWS] {
    const L: usize = 16;
    let k = x.len();
    let mut out = [0f32; DENSE_ROWS];
    if k == 0 {
        return out;
    }
    let rows = (w.len() / k).min(DENSE_ROWS);
    if rows < DENSE_ROWS {
        for (o, row) in out.iter_mut().zip(w.chunks_exact(k)) {
            *o = row.iter().zip(x).map(|(a, b)| a * b).sum();
        }
        return out;
    }
    let mut acc = [[0f32; L]; DENSE_ROWS];
    let body = k / L * L;
    for c in (0..body).step_by(L) {
        let xv = &x[c..c + L];
        for (r, a) in acc.iter_mut().enumerate() {
            let wv = &w[r * k + c..r * k + c + L];
            for l in 0..L {
                a[l] += wv[l] * xv[l];
            }
        }
    }
    for (r, o) in out.iter_mut().enumerate() {
        let tail: f32 = w[r * k + body..(r + 1) * k].iter().zip(&x[body..]).map(|(a, b)| a * b).sum();
        *o = acc[r].iter().sum::<f32>() + tail;
    }
    out
}

/// [`dot_rows`] compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2 and FMA ([`avx2`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_rows_avx2(w: &[f32], x: &[f32]) -> [f32; DENSE_ROWS] {
    dot_rows(w, x)
}

/// [`dot_rows`], in the AVX2 build when `wide`.
fn dot_rows_dispatch(w: &[f32], x: &[f32], wide: bool) -> [f32; DENSE_ROWS] {
    #[cfg(target_arch = "x86_64")]
    if wide {
        // SAFETY: `wide` is only true when `avx2()` found AVX2 and FMA on this CPU.
        return unsafe { dot_rows_avx2(w, x) };
    }
    let _ = wide;
    dot_rows(w, x)
}

impl EfficientNetLite0 {
    /// Builds the network from converted weights (BatchNorm folded here).
    pub fn load(w: &Weights) -> candle_core::Result<Self> {
        let stem = ConvBn::load(w, "_conv_stem", "_bn0", 2, true)?.im2col()?;
        let mut blocks = Vec::new();
        let plan = block_plan(w)?;
        // The stride-16 map is the output of the last block before the stride-2 stage 5 (block 10 in Lite0).
        let s16_block = plan.iter().rposition(|b| b.5 < 5).unwrap_or(0);
        for (i, (k, s, expand, inp, cout, _)) in plan.into_iter().enumerate() {
            {
                let p = format!("_blocks.{i}");
                let expand_conv = if expand {
                    Some(ConvBn::load(w, &format!("{p}._expand_conv"), &format!("{p}._bn0"), 1, true)?.pointwise()?)
                } else {
                    None
                };
                let (dw, db) = fold(w, &format!("{p}._depthwise_conv"), &format!("{p}._bn1"))?;
                let depthwise = Depthwise::new(dw.flatten_all()?.to_vec1()?, db.to_vec1()?, k, s);
                let project = ConvBn::load(w, &format!("{p}._project_conv"), &format!("{p}._bn2"), 1, false)?;
                let project = project.pointwise()?;
                blocks.push(MbConv { expand: expand_conv, depthwise, project, skip: s == 1 && inp == cout });
            }
        }
        let head = ConvBn::load(w, "_conv_head", "_bn1", 1, true)?.pointwise()?;
        let fc = Dense::new(&get(w, "_fc.weight")?.flatten_all()?.to_vec1()?, get(w, "_fc.bias")?.to_vec1()?)?;
        Ok(Self { stem, blocks, s16_block, head, fc })
    }

    /// Loads converted weights from a safetensors file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, crate::weights::WeightsError> {
        let w = crate::weights::load_safetensors(path)?;
        Ok(Self::load(&w)?)
    }

    /// Feature maps at stride 16 (112 channels, after block 10) and stride 32 (1280 channels, after the head).
    pub fn feature_maps(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let mut parts = self.per_slice(x, |s| self.feature_maps_serial(s))?;
        if parts.len() == 1 {
            if let Some(maps) = parts.pop() {
                return Ok(maps);
            }
        }
        let (s16, top): (Vec<Tensor>, Vec<Tensor>) = parts.into_iter().unzip();
        Ok((Tensor::cat(&s16, 0)?, Tensor::cat(&top, 0)?))
    }

    /// `f` on slices of the batch `x`, in order.
    ///
    /// A batch is split into one slice per thread, each run through the whole network: the threads then
    /// synchronise once per batch instead of once per operation (the ops inside still share idle threads). A
    /// single image is handed to the thread pool once as a whole: called from outside it, every parallel step of
    /// the pass would otherwise wake a pool thread and put this one to sleep (some thirty round trips an image).
    /// It runs on a team of spinning threads (crate::team): a worker put to sleep between two steps of the pass
    /// costs more to wake than some steps take.
    fn per_slice<T: Send>(
        &self,
        x: &Tensor,
        f: impl Fn(&Tensor) -> candle_core::Result<T> + Sync,
    ) -> candle_core::Result<Vec<T>> {
        let n = x.dim(0)?;
        let threads = rayon::current_num_threads();
        if n >= 2 && threads >= 2 {
            let per = n.div_ceil(threads);
            return (0..n.div_ceil(per))
                .into_par_iter()
                .map(|i| f(&x.narrow(0, i * per, per.min(n - i * per))?))
                .collect();
        }
        Ok(vec![rayon::scope(|_| crate::team::with_team(|| f(x)))?])
    }

    /// Both feature maps of one slice of a batch, inside its pass.
    fn feature_maps_serial(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let (mut s16, mut top) = (Vec::new(), Vec::new());
        for t in self.tops_serial(x, TopAs::Maps)? {
            if let Top::Maps(a, b) = t {
                s16.push(a);
                top.push(b);
            }
        }
        Ok((Tensor::cat(&s16, 0)?, Tensor::cat(&top, 0)?))
    }

    /// The top feature map's global mean and global maximum, (N, 1280) each, for one slice of a batch inside
    /// its pass.
    fn pooled_serial(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let (mut means, mut maxes) = (Vec::new(), Vec::new());
        for t in self.tops_serial(x, TopAs::Pooled)? {
            if let Top::Pooled(mean, max) = t {
                means.extend(mean);
                maxes.extend(max);
            }
        }
        let c = self.head.cout();
        let n = means.len() / c;
        Ok((Tensor::from_vec(means, (n, c), &Device::Cpu)?, Tensor::from_vec(maxes, (n, c), &Device::Cpu)?))
    }

    /// What each image of one slice of a batch leaves at the top of the network, as `top_as` asks.
    fn tops_serial(&self, x: &Tensor, top_as: TopAs) -> candle_core::Result<Vec<Top>> {
        let (n, c, h, w) = x.dims4()?;
        let data = x.flatten_all()?.to_vec1::<f32>()?;
        let mut tops = Vec::with_capacity(n);
        let pass = |ws: &mut Workspace| -> candle_core::Result<()> {
            for image in data.chunks(c * h * w) {
                let (sh, sw) = self.stem.forward_into(image, h, w, ws);
                tops.push(self.run_blocks(ws, self.stem.cout(), sh, sw, top_as, None)?);
            }
            Ok(())
        };
        with_workspace(pass)?;
        Ok(tops)
    }

    /// The blocks and the head on one image's stem output (`c` planes of h × w): the stride-16 and stride-32
    /// feature maps as (1, C, H, W) tensors, or the stride-32 map's pooled values, as `top_as` asks. `times`
    /// collects each stage's wall time.
    fn run_blocks(
        &self,
        ws: &mut Workspace,
        c: usize,
        h: usize,
        w: usize,
        top_as: TopAs,
        mut times: Option<&mut Vec<(String, f64)>>,
    ) -> candle_core::Result<Top> {
        let (mut c, mut h, mut w) = (c, h, w);
        let mut s16 = None;
        // Channels-planar while planes are large; channels-last from the first block whose input is small.
        let mut channels_last = false;
        for (i, b) in self.blocks.iter().enumerate() {
            let t = std::time::Instant::now();
            if !channels_last && h * w <= CHANNELS_LAST_MAX_PIXELS {
                channels_last = true;
                ws.make_channels_last(c, h * w);
            }
            (h, w) = b.forward_into(h, w, channels_last, ws);
            c = b.project.cout();
            if let Some(times) = times.as_deref_mut() {
                times.push((format!("block {i}"), t.elapsed().as_secs_f64() * 1e3));
            }
            if i == self.s16_block && top_as == TopAs::Maps {
                let y = &ws.cur[..c * h * w];
                s16 = Some((if channels_last { transpose(y, h * w, c) } else { y.to_vec() }, c, h, w));
            }
        }
        let t = std::time::Instant::now();
        let data = &ws.cur[..c * h * w];
        let p = h * w;
        let top = match top_as {
            // Wanted planar: after a channels-last product (on 7 × 7 planes the planar one leaves a quarter of its
            // 64-pixel tiles empty), the 1280 channels go back to planes.
            TopAs::Maps => {
                let planes = if channels_last {
                    self.head.forward_nhwc_to_planes(data, p)
                } else {
                    self.head.forward(data, p, None)
                };
                let tensor =
                    |(d, c, h, w): (Vec<f32>, usize, usize, usize)| Tensor::from_vec(d, (1, c, h, w), &Device::Cpu);
                let top = (planes, self.head.cout(), h, w);
                let s16 = s16.unwrap_or_else(|| top.clone());
                Top::Maps(tensor(s16)?, tensor(top)?)
            }
            TopAs::Pooled if channels_last => {
                let (mean, max) = self.head.forward_nhwc_pooled(data, p);
                Top::Pooled(mean, max)
            }
            TopAs::Pooled => {
                // Planes (an input so large that the head's is over 28 × 28): each plane is a column of its
                // transpose.
                let planes = transpose(&self.head.forward(data, p, None), self.head.cout(), p);
                let (mut mean, mut max) = (vec![0f32; self.head.cout()], vec![0f32; self.head.cout()]);
                crate::mbconv::pool_rows(&planes, &mut mean, &mut max);
                Top::Pooled(mean, max)
            }
        };
        if let Some(times) = times {
            times.push(("head".to_string(), t.elapsed().as_secs_f64() * 1e3));
        }
        Ok(top)
    }

    /// The number of MBConv blocks.
    pub fn block_count(&self) -> usize {
        self.blocks.len()
    }

    /// The activations entering block `from` (the output of the stem and blocks `0..from`), (N, C, H, W):
    /// what a fine-tuned top of the network ([`crate::finetune`]) is trained on.
    pub fn block_inputs(&self, x: &Tensor, from: usize) -> candle_core::Result<Tensor> {
        if from > self.blocks.len() {
            candle_core::bail!("block {from} of a network of {}", self.blocks.len());
        }
        let parts = self.per_slice(x, |s| {
            let (n, c, h, w) = s.dims4()?;
            let data = s.flatten_all()?.to_vec1::<f32>()?;
            let mut out = Vec::new();
            let mut dims = (0, 0, 0);
            with_workspace(|ws| {
                for image in data.chunks(c * h * w) {
                    let (mut h, mut w) = self.stem.forward_into(image, h, w, ws);
                    let mut c = self.stem.cout();
                    let mut channels_last = false;
                    for b in &self.blocks[..from] {
                        if !channels_last && h * w <= CHANNELS_LAST_MAX_PIXELS {
                            channels_last = true;
                            ws.make_channels_last(c, h * w);
                        }
                        (h, w) = b.forward_into(h, w, channels_last, ws);
                        c = b.project.cout();
                    }
                    let y = &ws.cur[..c * h * w];
                    out.extend(if channels_last { transpose(y, h * w, c) } else { y.to_vec() });
                    dims = (c, h, w);
                }
            });
            Tensor::from_vec(out, (n, dims.0, dims.1, dims.2), &Device::Cpu)
        })?;
        Tensor::cat(&parts, 0)
    }

    /// Blocks `from..` and the head conv: the part of the network a fine-tuned top replaces.
    pub fn top(&self, from: usize) -> (&[MbConv], &Pointwise) {
        (&self.blocks[from.min(self.blocks.len())..], &self.head)
    }

    /// This network with blocks `from..` and the head conv replaced (a fine-tuned top); the shapes must match.
    pub fn with_top(&self, from: usize, blocks: Vec<MbConv>, head: Pointwise) -> candle_core::Result<Self> {
        let old = self.top(from);
        let same = |a: &MbConv, b: &MbConv| {
            a.project.cin() == b.project.cin()
                && a.project.cout() == b.project.cout()
                && a.depthwise.shape() == b.depthwise.shape()
                && a.depthwise.channels() == b.depthwise.channels()
                && a.expand.as_ref().map(|e| e.cin()) == b.expand.as_ref().map(|e| e.cin())
                && a.skip == b.skip
        };
        if old.0.len() != blocks.len()
            || !old.0.iter().zip(&blocks).all(|(a, b)| same(a, b))
            || old.1.cin() != head.cin()
            || old.1.cout() != head.cout()
        {
            candle_core::bail!("the fine-tuned top does not fit this network from block {from}");
        }
        let mut net = self.clone();
        net.blocks.truncate(from);
        net.blocks.extend(blocks);
        net.head = head;
        Ok(net)
    }

    /// Wall time of each stage for one input, in milliseconds: stem, the 16 blocks, head (with the pooling) and
    /// the ImageNet classifier (profiling aid).
    pub fn stage_times(&self, x: &Tensor) -> candle_core::Result<Vec<(String, f64)>> {
        let mut out = Vec::new();
        let t = std::time::Instant::now();
        let (_, _, h, w) = x.dims4()?;
        let image = x.narrow(0, 0, 1)?.flatten_all()?.to_vec1::<f32>()?;
        let ms = |t: std::time::Instant| t.elapsed().as_secs_f64() * 1e3;
        // Inside the pool and on a team, as a real pass runs.
        rayon::scope(|_| {
            crate::team::with_team(|| {
                let top = with_workspace(|ws| {
                    let (sh, sw) = self.stem.forward_into(&image, h, w, ws);
                    out.push(("stem".to_string(), ms(t)));
                    self.run_blocks(ws, self.stem.cout(), sh, sw, TopAs::Pooled, Some(&mut out))
                })?;
                if let Top::Pooled(mean, _) = top {
                    let t = std::time::Instant::now();
                    let n = mean.len();
                    self.fc.forward(&Tensor::from_vec(mean, (1, n), &Device::Cpu)?)?;
                    out.push(("classifier".to_string(), ms(t)));
                }
                Ok::<_, candle_core::Error>(())
            })
        })?;
        Ok(out)
    }

    /// Globally average-pooled features, (N, 1280).
    pub fn pooled(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let parts = self.per_slice(x, |s| Ok(self.pooled_serial(s)?.0))?;
        Tensor::cat(&parts, 0)
    }

    /// Global average and global maximum of the top feature map side by side, (N, 2 × 1280).
    pub fn pooled_mean_max(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let parts = self.per_slice(x, |s| {
            let (mean, max) = self.pooled_serial(s)?;
            Tensor::cat(&[mean, max], 1)
        })?;
        Tensor::cat(&parts, 0)
    }

    /// ImageNet-1k logits, (N, 1000).
    pub fn imagenet_logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        // The classifier runs inside each slice's pass: on its team of threads for a single image.
        let parts = self.per_slice(x, |s| self.fc.forward(&self.pooled_serial(s)?.0))?;
        Tensor::cat(&parts, 0)
    }
}

/// What a pass keeps of the top of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TopAs {
    /// The stride-16 and stride-32 feature maps (detection, region proposals).
    Maps,
    /// The stride-32 map's global mean and maximum per channel (classification).
    Pooled,
}

/// What a pass left at the top of the network for one image.
enum Top {
    /// The stride-16 and stride-32 feature maps, (1, C, H, W) each.
    Maps(Tensor, Tensor),
    /// The stride-32 map's mean and maximum per channel.
    Pooled(Vec<f32>, Vec<f32>),
}

/// Normalised (1, 3, size, size) input from an RGB image, resized with a triangle filter.
pub fn preprocess(img: &image::RgbImage, size: u32) -> candle_core::Result<Tensor> {
    let resized = image::imageops::resize(img, size, size, image::imageops::FilterType::Triangle);
    tensor_from_rgb(&resized)
}

/// Normalised (1, 3, H, W) input from an RGB image at its own size.
pub fn tensor_from_rgb(img: &image::RgbImage) -> candle_core::Result<Tensor> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut data = vec![0f32; 3 * h * w];
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            data[c * h * w + y as usize * w + x as usize] = (p.0[c] as f32 - INPUT_MEAN) / INPUT_SCALE;
        }
    }
    Tensor::from_vec(data, (1, 3, h, w), &Device::Cpu)?.to_dtype(DType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classifier_layer_matches_its_definition() {
        // Inputs that are and are not a multiple of the 16 lanes, outputs that end inside a group of rows and
        // inside a part, one image and several, on one thread and on a pass's team.
        for (n, cin, cout) in [(1usize, 1280usize, 1000usize), (3, 37, 9), (2, 16, 261), (1, 5, 3), (4, 64, 128)] {
            let w: Vec<f32> = (0..cin * cout).map(|i| ((i * 7919) % 1013) as f32 / 1013.0 - 0.5).collect();
            let b: Vec<f32> = (0..cout).map(|o| o as f32 * 0.01).collect();
            let x: Vec<f32> = (0..n * cin).map(|i| ((i * 104729) % 997) as f32 / 997.0 - 0.3).collect();
            let dense = Dense::new(&w, b.clone()).expect("layer");
            let xt = Tensor::from_vec(x.clone(), (n, cin), &Device::Cpu).expect("x");
            let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("pool");
            for y in [
                dense.forward(&xt).expect("forward"),
                pool.install(|| crate::team::with_team(|| dense.forward(&xt))).expect("team forward"),
            ] {
                assert_eq!(y.dims(), &[n, cout]);
                let y: Vec<f32> = y.flatten_all().and_then(|t| t.to_vec1()).expect("values");
                for i in 0..n {
                    for o in 0..cout {
                        let want: f64 =
                            b[o] as f64 + (0..cin).map(|k| w[o * cin + k] as f64 * x[i * cin + k] as f64).sum::<f64>();
                        let got = y[i * cout + o] as f64;
                        assert!((got - want).abs() < 1e-4 * (1.0 + want.abs()), "{n}x{cin}->{cout} ({i}, {o})");
                    }
                }
            }
        }
        assert!(Dense::new(&[1.0; 10], vec![0.0; 3]).is_err());
        let dense = Dense::new(&[1.0; 12], vec![0.0; 3]).expect("layer");
        assert!(dense.forward(&Tensor::zeros((1, 5), DType::F32, &Device::Cpu).expect("x")).is_err());
    }

    #[test]
    fn rows_split_into_their_column_phases() {
        for n in [0usize, 1, 2, 3, 31, 32, 33, 63, 64, 65, 112, 113, 225] {
            let src: Vec<f32> = (0..n).map(|i| i as f32).collect();
            for wide512 in [false, avx512()] {
                let (mut evens, mut odds) = (vec![-1.0; n.div_ceil(2)], vec![-1.0; n / 2]);
                deinterleave(&src, &mut evens, &mut odds, wide512);
                assert!(evens.iter().enumerate().all(|(i, &v)| v == (2 * i) as f32), "evens of {n}: {evens:?}");
                assert!(odds.iter().enumerate().all(|(i, &v)| v == (2 * i + 1) as f32), "odds of {n}: {odds:?}");
            }
        }
    }

    #[test]
    fn same_padding_matches_tensorflow() {
        assert_eq!(same_padding(224, 3, 2), (112, 0, 1));
        assert_eq!(same_padding(112, 3, 1), (112, 1, 1));
        assert_eq!(same_padding(28, 5, 2), (14, 1, 2));
        assert_eq!(same_padding(7, 5, 1), (7, 2, 2));
    }

    #[test]
    fn depthwise_kernel_matches_candle_grouped_conv() {
        let dev = Device::Cpu;
        // One scratch through every shape, as a pool thread's goes from block to block: nothing of one plane's
        // padding or phases may leak into the next.
        let mut shared = Scratch::new(avx2());
        for (k, s, h, w) in [
            (3, 1, 9, 7),
            (3, 2, 10, 9),
            (5, 2, 11, 12),
            (5, 1, 6, 8),
            (3, 2, 112, 112),
            (5, 2, 14, 14),
            (5, 1, 7, 7),
            (3, 1, 1, 1),
            (5, 2, 2, 3),
            (3, 1, 56, 56),
            (5, 1, 28, 28),
            (3, 1, 20, 150),
            (5, 1, 3, 17),
            (3, 1, 5, 16),
            (5, 2, 56, 56),
            (3, 2, 113, 37),
            (3, 2, 1, 1),
            (5, 2, 29, 70),
            (7, 2, 9, 40),
        ] {
            let c = 3;
            let x = Tensor::randn(0f32, 1.0, (2, c, h, w), &dev).expect("x");
            let wt = Tensor::randn(0f32, 0.5, (c, 1, k, k), &dev).expect("w");
            let bias = Tensor::randn(0f32, 0.5, c, &dev).expect("b");
            let op = Depthwise::new(wt.flatten_all().unwrap().to_vec1().unwrap(), bias.to_vec1().unwrap(), k, s);
            let ours = x.apply_op1_no_bwd(&op).expect("ours");
            let (_, pt, pb) = same_padding(h, k, s);
            let (_, pl, pr) = same_padding(w, k, s);
            let reference = x
                .pad_with_zeros(2, pt, pb)
                .and_then(|t| t.pad_with_zeros(3, pl, pr))
                .and_then(|t| t.conv2d(&wt, 0, s, 1, c))
                .and_then(|t| t.broadcast_add(&bias.reshape((1, c, 1, 1))?))
                .and_then(|t| t.clamp(0f32, 6f32))
                .expect("reference");
            assert_eq!(ours.dims(), reference.dims());
            // The portable build (CPUs without AVX2/FMA) on one channel of the same input.
            let (oh, ow) = op.output_size(h, w);
            let mut portable = vec![0f32; oh * ow];
            let plane: Vec<f32> =
                x.get(1).and_then(|t| t.get(2)).and_then(|t| t.flatten_all()?.to_vec1()).expect("plane");
            op.channel(2, &plane, h, w, &mut portable, &mut Scratch::new(false));
            let wide: Vec<f32> =
                ours.get(1).and_then(|t| t.get(2)).and_then(|t| t.flatten_all()?.to_vec1()).expect("ours");
            let gap = portable.iter().zip(&wide).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(gap < 1e-4, "portable k{k} s{s}: {gap}");
            // The AVX2 build where AVX-512 would be picked (a CPU with AVX2 but not AVX-512).
            let mut avx2_only = vec![0f32; oh * ow];
            op.channel(2, &plane, h, w, &mut avx2_only, &mut Scratch { wide512: false, ..Scratch::new(avx2()) });
            let gap = avx2_only.iter().zip(&wide).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(gap < 1e-4, "AVX2 k{k} s{s}: {gap}");
            let mut reused = vec![0f32; oh * ow];
            op.channel(2, &plane, h, w, &mut reused, &mut shared);
            let gap = reused.iter().zip(&wide).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(gap < 1e-4, "shared scratch k{k} s{s} {h}×{w}: {gap}");
            let diff: f32 = (ours - reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
            assert!(diff < 1e-4, "k{k} s{s}: {diff}");
        }
    }
}
