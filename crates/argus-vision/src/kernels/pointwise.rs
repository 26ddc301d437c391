//! 1×1 convolutions as matrix products with folded bias and optional ReLU6: planar (`Tiled`, on our AVX-512
//! kernel or the `gemm` crate) and channels-last (`products::Columns`, or `gemm` over the transposed matrix),
//! each single-threaded per call (the parallelism is the caller's, over channel groups or runs of pixels), and
//! the helpers that split that work evenly over threads.

use std::sync::OnceLock;

use gemm::Parallelism;

use super::buffers::{init_rows, relu6, transpose, transpose_into, with_block_scratch, BandOutput};
use super::products::{Columns, Strips};
use super::team::{for_each_chunk, for_each_index};
use super::{bias_act_dispatch, bias_act_rows};

/// A 1×1 convolution as a row-major (out × in) matrix with its folded bias, optionally followed by ReLU6.
#[derive(Debug, Clone)]
pub struct Pointwise {
    weight: Vec<f32>,
    /// The same matrix transposed (in × out), for the channels-last products without AVX-512: read down its
    /// columns, so gemm streams it without packing. Built on first use, like `strips`: a layer keeps only the
    /// copies its runs read (each is as large as the layer, 13 MB for the backbone's 1×1 layers together).
    weight_t: OnceLock<Vec<f32>>,
    /// The same matrix in strips for the AVX-512 channels-last product (built on the first channels-last run
    /// with AVX-512).
    strips: OnceLock<Strips>,
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
        Ok(Self { weight, weight_t: OnceLock::new(), strips: OnceLock::new(), bias, cin, cout, relu6 })
    }

    /// The transposed matrix (built on first use).
    fn weight_t(&self) -> &[f32] {
        self.weight_t.get_or_init(|| transpose(&self.weight, self.cout, self.cin))
    }

    /// The matrix in 16-channel strips, or an empty set without AVX-512 (built on first use).
    fn strips(&self) -> &Strips {
        self.strips.get_or_init(|| {
            if crate::kernels::avx512() {
                Strips::new(&self.weight, self.cout, self.cin)
            } else {
                Strips::default()
            }
        })
    }

    /// Input channels.
    pub fn cin(&self) -> usize {
        self.cin
    }

    /// Output channels.
    pub fn cout(&self) -> usize {
        self.cout
    }

    /// The folded per-output bias.
    pub fn bias(&self) -> &[f32] {
        &self.bias
    }

    /// Output channels `c0 .. c0 + m` over `p` pixels: `out[j] = act(bias + W[c0 + j] · x (+ skip[j]))`.
    /// `x` holds `cin` planes of `p` pixels; `out` (and `skip`) hold `m` planes.
    pub(crate) fn rows(&self, c0: usize, x: &[f32], p: usize, out: &mut [f32], skip: Option<&[f32]>, wide: bool) {
        let m = out.len() / p;
        let k = self.cin;
        assert!(c0 + m <= self.cout && out.len() == m * p && x.len() >= k * p, "pointwise: buffer sizes");
        let tiled = Tiled {
            w: &self.weight[c0 * k..(c0 + m) * k],
            bias: &self.bias[c0..c0 + m],
            x,
            ldx: p,
            k,
            p,
            skip: skip.map(|s| &s[..m * p]),
            relu6: self.relu6,
        };
        if wide && tiled.run(out) {
            return;
        }
        if let Some(s) = skip {
            out.copy_from_slice(&s[..m * p]);
        }
        let lhs = &self.weight[c0 * k..(c0 + m) * k];
        // SAFETY: dst is m×p (row stride p), lhs is m×k (row stride k) and rhs is k×p (row stride p), all
        // within the slices checked above; the three do not overlap (distinct borrows).
        unsafe {
            product(
                m,
                p,
                k,
                out.as_mut_ptr(),
                p as isize,
                skip.is_some(),
                lhs.as_ptr(),
                1,
                k as isize,
                x.as_ptr(),
                1,
                p as isize,
            )
        };
        bias_act_rows(out, p, &self.bias[c0..c0 + m], self.relu6, wide);
    }

    /// Channels-last: output channels `c0 .. c0 + m` of `p` pixels into `out` (p × m, `m = out.len() / p`),
    /// `out[i·m + j] = act(bias[c0 + j] + W[c0 + j] · x_i)`. `x` holds `p` pixels of `cin` channels. The bias
    /// initialises `out` and the product accumulates onto it.
    pub(crate) fn columns(&self, c0: usize, x: &[f32], p: usize, out: &mut [f32]) {
        let m = out.len() / p.max(1);
        let k = self.cin;
        assert!(c0 + m <= self.cout && out.len() == m * p && x.len() >= k * p, "pointwise: buffer sizes");
        init_rows(out, m, &self.bias[c0..c0 + m], None);
        let tiled = Columns { x, ldx: k, w: self.strips(), j0: c0, k0: 0, k, m, relu6: self.relu6 };
        if tiled.run(out, m) {
            return;
        }
        // SAFETY: dst is p×m (row stride m), lhs is p×k (row stride k) and rhs is Wᵀ's columns c0 .. c0 + m,
        // k×m with row stride cout, inside `weight_t` because c0 + m ≤ cout; no overlap.
        unsafe {
            product(
                p,
                m,
                k,
                out.as_mut_ptr(),
                m as isize,
                true,
                x.as_ptr(),
                1,
                k as isize,
                self.weight_t()[c0..].as_ptr(),
                1,
                self.cout as isize,
            )
        };
        if self.relu6 {
            relu6(out);
        }
    }

    /// Channels-last product accumulated onto `out` (p × cout) from input channels `k0 .. k0 + kn` held in
    /// `x` as p × kn (one channel group of a block's depthwise output).
    pub(crate) fn accumulate_columns(&self, k0: usize, x: &[f32], p: usize, out: &mut [f32]) {
        let (m, k) = (self.cout, self.cin);
        let kn = x.len() / p.max(1);
        assert!(k0 + kn <= k && out.len() == m * p && x.len() == kn * p, "pointwise: buffer sizes");
        if (Columns { x, ldx: kn, w: self.strips(), j0: 0, k0, k: kn, m, relu6: false }).run(out, m) {
            return;
        }
        // SAFETY: dst is p×m (row stride m), lhs is p×kn (row stride kn), rhs is rows k0 .. k0 + kn of Wᵀ
        // (kn×m, row stride m), inside `weight_t` because k0 + kn ≤ k; no overlap.
        unsafe {
            product(
                p,
                m,
                kn,
                out.as_mut_ptr(),
                m as isize,
                true,
                x.as_ptr(),
                1,
                kn as isize,
                self.weight_t()[k0 * m..].as_ptr(),
                1,
                m as isize,
            )
        };
    }

    /// All output channels over `n` pixels into planes of stride `plane`: for every output channel `j`,
    /// `dst[j·plane + i] = act(bias[j] + W[j] · x_i)` for `i < n`, where `x` holds `cin` rows of `n` values.
    ///
    /// # Safety
    /// `dst` must be valid for writes at `j·plane + i` for every `j < cout`, `i < n`, with nothing else
    /// reading or writing those places meanwhile; `n ≤ plane`.
    pub(crate) unsafe fn planes_into(&self, x: &[f32], n: usize, dst: *mut f32, plane: usize) {
        let k = self.cin;
        assert!(x.len() >= k * n && n <= plane, "pointwise: buffer sizes");
        let tiled = Tiled { w: &self.weight, bias: &self.bias, x, ldx: n, k, p: n, skip: None, relu6: self.relu6 };
        // SAFETY: the caller's promise: dst holds cout planes of stride `plane` ≥ n, to write n values of each.
        if unsafe { tiled.run_strided(dst, plane) } {
            return;
        }
        // SAFETY: dst is cout×n with row stride `plane` (the caller's promise), lhs is W (cout×k, row stride
        // k), rhs is x (k×n, row stride n); they do not overlap.
        unsafe {
            product(
                self.cout,
                n,
                k,
                dst,
                plane as isize,
                false,
                self.weight.as_ptr(),
                1,
                k as isize,
                x.as_ptr(),
                1,
                n as isize,
            )
        };
        let wide = crate::kernels::avx2();
        for (j, b) in self.bias.iter().enumerate() {
            // SAFETY: row j's first n values, inside the caller's promised region and touched by no one else.
            let row = unsafe { std::slice::from_raw_parts_mut(dst.add(j * plane), n) };
            bias_act_dispatch(row, *b, self.relu6, wide);
        }
    }

    /// The whole product over `p` pixels, parallel over groups of output channels.
    pub fn forward(&self, x: &[f32], p: usize, skip: Option<&[f32]>) -> Vec<f32> {
        let mut out = vec![0f32; self.cout * p];
        self.forward_into(x, p, skip, &mut out);
        out
    }

    /// From channels-last to planes: `x` holds `p` pixels of `cin` channels; returns `cout` planes of `p` pixels.
    /// Parallel over groups of output channels, each group's product (p × group, in the thread's own buffer)
    /// transposed into its planes: so each thread reads only its group's weights (split over pixels instead, two
    /// threads each streamed all 1.6 MB of the head's weights, and the head ran 1.27× faster on two than on one).
    pub fn forward_nhwc_to_planes(&self, x: &[f32], p: usize) -> Vec<f32> {
        assert!(x.len() >= self.cin * p, "pointwise: buffer sizes");
        let mut out = vec![0f32; self.cout * p];
        let group = channel_group_nhwc(self.cout);
        for_each_chunk(&mut out, group * p, |g, planes| {
            let n = planes.len() / p.max(1);
            with_block_scratch(|(_, buf)| {
                let columns = buf.sized(n * p);
                self.columns(g * group, x, p, columns);
                transpose_into(columns, p, n, planes);
            });
        });
        out
    }

    /// From channels-last straight to each output channel's mean and maximum over the `p` pixels (after the
    /// activation): `x` holds `p` pixels of `cin` channels. Parallel over groups of output channels like
    /// [`Pointwise::forward_nhwc_to_planes`], each group pooled from its product while in cache — a classifier
    /// wants only these, and transposing the whole map into planes first was a fifth of the head's time.
    pub fn forward_nhwc_pooled(&self, x: &[f32], p: usize) -> (Vec<f32>, Vec<f32>) {
        assert!(x.len() >= self.cin * p && p > 0, "pointwise: buffer sizes");
        let (mut mean, mut max) = (vec![0f32; self.cout], vec![0f32; self.cout]);
        let group = channel_group_nhwc(self.cout);
        let maxes = BandOutput(max.as_mut_ptr());
        for_each_chunk(&mut mean, group, |g, means| {
            let n = means.len();
            // SAFETY: `max` holds cout values, and this group writes only its own n of them, from g·group.
            let maxes = unsafe { std::slice::from_raw_parts_mut(maxes.at(g * group), n) };
            with_block_scratch(|(_, buf)| {
                let columns = buf.sized(n * p);
                self.columns(g * group, x, p, columns);
                pool_rows(columns, means, maxes);
            });
        });
        (mean, max)
    }

    /// [`Pointwise::forward`] into `out` (cout × p; every value is written).
    ///
    /// With AVX-512, parallel over runs of pixels, all output channels each: every thread then reads its part of
    /// the input planes only (split over output channels, each thread read all of them: the depthwise output of
    /// a 56 × 56 block is 1.8 MB), and the planar kernel reuses each tile of input for more output channels.
    pub(crate) fn forward_into(&self, x: &[f32], p: usize, skip: Option<&[f32]>, out: &mut [f32]) {
        assert!(x.len() >= self.cin * p && out.len() == self.cout * p, "pointwise: buffer sizes");
        if crate::kernels::avx512() {
            // Runs start on a cache line of every plane: 784 pixels split 392 + 392 made each load of the
            // second run straddle two lines, and that run the step's last to finish.
            let part = even_split(p, 16, usize::MAX).next_multiple_of(16);
            let dst = BandOutput(out.as_mut_ptr());
            for_each_index(p.div_ceil(part.max(1)), |t| {
                let (i0, n) = (t * part, part.min(p - t * part));
                let (k, relu6) = (self.cin, self.relu6);
                let skip = skip.map(|s| &s[i0..]);
                let tiled = Tiled { w: &self.weight, bias: &self.bias, x: &x[i0..], ldx: p, k, p: n, skip, relu6 };
                // SAFETY: `out` holds cout planes of p values, and this run writes only pixels i0 .. i0 + n of
                // each, which no other run touches.
                let done = unsafe { tiled.run_strided(dst.at(i0), p) };
                debug_assert!(done, "AVX-512 was found");
            });
            return;
        }
        let wide = crate::kernels::avx2();
        let group = channel_group(self.cout, p);
        for_each_chunk(out, group * p, |g, o| {
            let c0 = g * group;
            let s = skip.map(|s| &s[c0 * p..]);
            self.rows(c0, x, p, o, s, wide);
        });
    }
}

/// The mean and the maximum of each column of `rows` (rows of `means.len()` values) into `means` and `maxes`.
pub(crate) fn pool_rows(rows: &[f32], means: &mut [f32], maxes: &mut [f32]) {
    let n = means.len();
    means.fill(0.0);
    maxes.fill(f32::NEG_INFINITY);
    let mut count = 0usize;
    for row in rows.chunks_exact(n.max(1)) {
        for ((s, m), v) in means.iter_mut().zip(maxes.iter_mut()).zip(row) {
            *s += v;
            *m = m.max(*v);
        }
        count += 1;
    }
    let count = count.max(1) as f32;
    means.iter_mut().for_each(|s| *s /= count);
}

/// Pixels of one tile of [`Tiled`]: four AVX-512 vectors.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const TILE_PIXELS: usize = 64;

/// Output channels of one register block of [`Tiled`] (with four vectors each, 24 accumulators).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const TILE_CHANNELS: usize = 6;

/// The planar 1×1 convolution with AVX-512 registers:
/// `out[j·p + i] = act(bias[j] + Σ_c w[j·k + c] · x[c·p + i] (+ skip[j·p + i]))` for the `m = bias.len()`
/// output channels `j` and the `p` pixels `i`.
///
/// An input plane's pixels are contiguous, so nothing needs packing: the product walks tiles of 64 pixels and,
/// for each, blocks of six output channels — 24 accumulators; each input channel's four vectors are loaded once
/// for the six and each weight is broadcast once for the four — and writes each finished block once, bias,
/// skip and activation applied in registers (with gemm, the product was written, then read again to add the
/// bias and clamp). A tile's inputs (k × 64 values) stay in the core's cache for all of the output channels.
/// The last tile's pixels are masked.
///
/// The channels-last products have a kernel of their own (`products::Columns`): this one with rows
/// and lanes swapped measured slower there (output channels 80 and 112 leave most of a 64-lane tile empty).
struct Tiled<'a> {
    /// Row-major (m × k).
    w: &'a [f32],
    bias: &'a [f32],
    /// k planes of (at least) p pixels, `ldx` apart.
    x: &'a [f32],
    /// Plane stride of `x` and `skip`.
    ldx: usize,
    k: usize,
    p: usize,
    /// m planes of p pixels (`ldx` apart), added before the activation.
    skip: Option<&'a [f32]>,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    relu6: bool,
}

impl Tiled<'_> {
    /// Runs the product into `out` (m planes of p pixels; every slice's extent is checked first) when this CPU
    /// has AVX-512; returns false, touching nothing, when it has not.
    fn run(&self, out: &mut [f32]) -> bool {
        assert!(out.len() == self.bias.len() * self.p, "pointwise: buffer sizes");
        // SAFETY: `out` holds m planes of p values.
        unsafe { self.run_strided(out.as_mut_ptr(), self.p) }
    }

    /// [`Tiled::run`] into planes `ldo` values apart (the stem's bands write a part of each plane).
    ///
    /// # Safety
    /// `out` must be valid for writes at `j·ldo + i` for every output channel `j < m` and pixel `i < p`, with
    /// nothing else reading or writing those places meanwhile; `ldo ≥ p`.
    unsafe fn run_strided(&self, out: *mut f32, ldo: usize) -> bool {
        if !crate::kernels::avx512() {
            return false;
        }
        let (m, k, p) = (self.bias.len(), self.k, self.p);
        let planes = |len: usize, n: usize| n == 0 || (n - 1) * self.ldx + p <= len;
        assert!(
            k > 0
                && ldo >= p
                && self.ldx >= p
                && self.w.len() == m * k
                && planes(self.x.len(), k)
                && self.skip.is_none_or(|s| planes(s.len(), m)),
            "pointwise: buffer sizes"
        );
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `avx512()` found AVX-512F on this CPU, the operands' extents were checked above, the output's
        // is the caller's promise.
        unsafe {
            self.tiles(out, ldo)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = out;
        true
    }

    /// The tiles of [`Tiled::run_strided`].
    ///
    /// # Safety
    /// The CPU must support AVX-512F, the slices must have the sizes `run_strided` checks, and `out` must hold m
    /// planes `ldo` apart as it requires.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn tiles(&self, out: *mut f32, ldo: usize) {
        let rows = self.bias.len();
        for l0 in (0..self.p).step_by(TILE_PIXELS) {
            let n = (self.p - l0).min(TILE_PIXELS);
            // Pixels of each of the tile's four vectors that lie inside the plane.
            let masks: [u16; 4] = std::array::from_fn(|v| ((1u32 << n.saturating_sub(16 * v).min(16)) - 1) as u16);
            let mut r = 0;
            while r < rows {
                let block = (rows - r).min(TILE_CHANNELS);
                // SAFETY: channels r .. r + block and pixels l0 .. l0 + n (masked) lie inside the checked sizes.
                unsafe {
                    match block {
                        6 => self.block::<6>(r, l0, masks, out, ldo),
                        5 => self.block::<5>(r, l0, masks, out, ldo),
                        4 => self.block::<4>(r, l0, masks, out, ldo),
                        3 => self.block::<3>(r, l0, masks, out, ldo),
                        2 => self.block::<2>(r, l0, masks, out, ldo),
                        _ => self.block::<1>(r, l0, masks, out, ldo),
                    }
                }
                r += block;
            }
        }
    }

    /// Output channels `r0 .. r0 + R` of the tile of pixels from `l0` (`masks`: the pixels of each vector inside
    /// the plane).
    ///
    /// # Safety
    /// The CPU must support AVX-512F; the channels and masked pixels must lie inside the sizes `run_strided`
    /// checks and requires.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn block<const R: usize>(&self, r0: usize, l0: usize, masks: [u16; 4], out: *mut f32, ldo: usize) {
        use std::arch::x86_64::*;
        // SAFETY (every load and store below): row r of `w` holds k weights from r·k; plane c of `x`, plane r of
        // `skip` and of `out` hold the tile's pixels from c·ldx + l0, r·ldx + l0 and r·ldo + l0, and pixels past
        // p are masked off (a masked load costs no more than a plain one).
        let (k, ldx) = (self.k, self.ldx);
        // (Loops rather than closures here: a closure would not inherit this function's AVX-512 and would be
        // called, not inlined.)
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        for (r, sums) in acc.iter_mut().enumerate() {
            *sums = [_mm512_set1_ps(self.bias[r0 + r]); 4];
        }
        let w = self.w.as_ptr().add(r0 * k);
        let mut b = self.x.as_ptr().add(l0);
        for c in 0..k {
            let bv = [
                _mm512_maskz_loadu_ps(masks[0], b),
                _mm512_maskz_loadu_ps(masks[1], b.add(16)),
                _mm512_maskz_loadu_ps(masks[2], b.add(32)),
                _mm512_maskz_loadu_ps(masks[3], b.add(48)),
            ];
            for (r, sums) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*w.add(r * k + c));
                for (q, sum) in sums.iter_mut().enumerate() {
                    *sum = _mm512_fmadd_ps(bv[q], av, *sum);
                }
            }
            b = b.add(ldx);
        }
        let (zero, six) = (_mm512_setzero_ps(), _mm512_set1_ps(6.0));
        for (r, sums) in acc.iter().enumerate() {
            let at = (r0 + r) * ldx + l0;
            for (q, sum) in sums.iter().enumerate() {
                let mut v = *sum;
                if let Some(skip) = self.skip {
                    v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(masks[q], skip.as_ptr().add(at + 16 * q)));
                }
                if self.relu6 {
                    v = _mm512_min_ps(_mm512_max_ps(v, zero), six);
                }
                _mm512_mask_storeu_ps(out.add((r0 + r) * ldo + l0 + 16 * q), masks[q], v);
            }
        }
    }
}

/// `dst (m × n) = Σ lhs (m × k) · rhs (k × n)`, added to what `dst` holds when `read_dst`, single-threaded
/// (the parallelism is ours); `dst`'s columns are adjacent, every other stride is given.
///
/// # Safety
/// The three matrices must lie inside their allocations for the given sizes and strides, and `dst` must not
/// overlap the other two nor be accessed by anyone else meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn product(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    read_dst: bool,
    lhs: *const f32,
    lhs_cs: isize,
    lhs_rs: isize,
    rhs: *const f32,
    rhs_cs: isize,
    rhs_rs: isize,
) {
    // SAFETY: the caller's promise.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs,
            read_dst,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

/// Channels per parallel task: enough tasks to keep every thread busy, small enough that a group of
/// `p`-pixel planes stays in the core's cache, and a multiple of 6 — the width of gemm's AVX2 micro-kernel along
/// this dimension (the product is computed transposed) — where that keeps the split even.
pub(crate) fn channel_group(channels: usize, p: usize) -> usize {
    even_split(channels, 6, 64 * 1024 / p.max(1))
}

/// Pixels per parallel task of a channels-last product.
pub(crate) fn pixel_group(p: usize) -> usize {
    even_split(p, 6, usize::MAX)
}

/// Channels per parallel task of a channels-last block: a multiple of 16 (or at least 8) where that keeps the
/// split even, so that the depthwise kernel's and the products' vectors are full. With AVX-512 always a
/// multiple of 16 (1280 channels on three threads: 432 + 432 + 416): the channels-last product starts its
/// 16-channel weight strips there, and any other start would fall back to `gemm` on a transposed copy.
pub(crate) fn channel_group_nhwc(channels: usize) -> usize {
    let g = even_split(channels, 16, usize::MAX);
    if g.is_multiple_of(16) {
        g
    } else if crate::kernels::avx512() {
        g.next_multiple_of(16)
    } else {
        even_split(channels, 8, usize::MAX)
    }
}

/// The size of the parts `n` items are split into for the thread pool: the fewest parts, a multiple of the
/// thread count, no larger than `max` (a soft bound: rounded up to `align`), and all of nearly one size —
/// rounded up to a multiple of `align` only where the last part then falls short by less than `align`.
///
/// One part per thread where the bound allows: a block's step lasts as long as its slowest thread, and
/// splits like 12 + 12 + 12 + 4 channels on two threads (24 against 16) cost more than the few spare lanes of
/// an unaligned part (measured on the 7 × 7 blocks' products: 25 + 24 pixels rather than 18 + 18 + 13).
pub(crate) fn even_split(n: usize, align: usize, max: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let (n, align) = (n.max(1), align.max(1));
    let cap = max.max(1).checked_next_multiple_of(align).unwrap_or(usize::MAX);
    let mut parts = threads;
    loop {
        let g = n.div_ceil(parts);
        let aligned = g.next_multiple_of(align);
        if g <= 1 || aligned <= cap {
            return if aligned * parts - n < align && n.div_ceil(aligned) == parts { aligned } else { g };
        }
        parts += threads;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_splits_evenly_over_the_threads() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("thread pool");
        pool.install(|| {
            // (items, alignment, soft maximum) → part size, on two threads.
            for (n, align, max, want) in [
                (49, 6, usize::MAX, 25),  // 7 × 7 pixels: 25 + 24, not 18 + 18 + 13
                (196, 6, usize::MAX, 98), // unaligned, because 102 + 94 is uneven
                (40, 6, 83, 20),          // not 12 + 12 + 12 + 4
                (1280, 6, 1337, 642),     // aligned: 642 + 638
                (96, 6, 5, 6),            // the cache bound: 16 parts of 6
                (1152, 16, usize::MAX, 576),
                (1, 6, usize::MAX, 1),
            ] {
                assert_eq!(even_split(n, align, max), want, "{n} items, align {align}, max {max}");
            }
            // 240 channels: 120 + 120 where any start will do, 128 + 112 for the AVX-512 strips.
            assert_eq!(channel_group_nhwc(240), if crate::kernels::avx512() { 128 } else { 120 });
            assert_eq!(channel_group_nhwc(672), 336);
        });
        // On three threads the 1280 head channels split 427 + 427 + 426, except with AVX-512, whose product
        // starts its weight strips at multiples of 16 only.
        let three = rayon::ThreadPoolBuilder::new().num_threads(3).build().expect("thread pool");
        let want = if crate::kernels::avx512() { 432 } else { 427 };
        assert_eq!(three.install(|| channel_group_nhwc(1280)), want);
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("thread pool");
        assert_eq!(one.install(|| even_split(1152, 16, usize::MAX)), 1152);
    }

    #[test]
    fn pointwise_weights_must_match_their_shape() {
        assert!(Pointwise::new(vec![0.0; 10], vec![0.0; 3], 4, false).is_err());
        assert!(Pointwise::new(vec![0.0; 12], vec![0.0; 3], 4, false).is_ok());
    }
}
