//! Depthwise k×k convolutions with TensorFlow "SAME" padding, bias and ReLU6 fused: a planar kernel per
//! channel (with a phase split for stride 2) and a channels-last kernel across channels, in portable, AVX2 and
//! AVX-512 builds, and the microbenchmark behind their tuning.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use rayon::prelude::*;

use super::aligned::Buffer;
use super::{avx2, avx512, same_padding};

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

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

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
