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
//! With AVX-512 the 1×1 products run on our own kernels — `Tiled` here for planes, `products::Columns`
//! channels-last — and otherwise on the `gemm` crate (the kernels candle itself uses),
//! single-threaded per call: the parallelism is ours, over channel groups or runs of pixels.
//!
//! The stem (a strided 3×3 convolution of the three colour planes) is here too, as [`Im2colConv`]: the
//! unfolded input is only 27 rows, so one matrix product over all pixels does it.

use std::sync::OnceLock;

use crate::aligned::Buffer;
use crate::products::{Columns, Strips};
use crate::team::{for_each_chunk, for_each_index};
use gemm::Parallelism;

use crate::backbone::{bias_act_dispatch, bias_act_rows, same_padding, strided_copy, Depthwise, Scratch};

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
            if crate::backbone::avx512() {
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

    /// The folded (out × in) weight matrix, row-major.
    pub fn weight(&self) -> &[f32] {
        &self.weight
    }

    /// Whether ReLU6 follows the product.
    pub fn relu6(&self) -> bool {
        self.relu6
    }

    /// Output channels `c0 .. c0 + m` over `p` pixels: `out[j] = act(bias + W[c0 + j] · x (+ skip[j]))`.
    /// `x` holds `cin` planes of `p` pixels; `out` (and `skip`) hold `m` planes.
    fn rows(&self, c0: usize, x: &[f32], p: usize, out: &mut [f32], skip: Option<&[f32]>, wide: bool) {
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
    fn columns(&self, c0: usize, x: &[f32], p: usize, out: &mut [f32]) {
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
    fn accumulate_columns(&self, k0: usize, x: &[f32], p: usize, out: &mut [f32]) {
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
    unsafe fn planes_into(&self, x: &[f32], n: usize, dst: *mut f32, plane: usize) {
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
        let wide = crate::backbone::avx2();
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
    fn forward_into(&self, x: &[f32], p: usize, skip: Option<&[f32]>, out: &mut [f32]) {
        assert!(x.len() >= self.cin * p && out.len() == self.cout * p, "pointwise: buffer sizes");
        if crate::backbone::avx512() {
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
        let wide = crate::backbone::avx2();
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
        if !crate::backbone::avx512() {
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
fn channel_group(channels: usize, p: usize) -> usize {
    even_split(channels, 6, 64 * 1024 / p.max(1))
}

/// Pixels per parallel task of a channels-last product.
fn pixel_group(p: usize) -> usize {
    even_split(p, 6, usize::MAX)
}

/// Channels per parallel task of a channels-last block: a multiple of 16 (or at least 8) where that keeps the
/// split even, so that the depthwise kernel's and the products' vectors are full. With AVX-512 always a
/// multiple of 16 (1280 channels on three threads: 432 + 432 + 416): the channels-last product starts its
/// 16-channel weight strips there, and any other start would fall back to `gemm` on a transposed copy.
fn channel_group_nhwc(channels: usize) -> usize {
    let g = even_split(channels, 16, usize::MAX);
    if g.is_multiple_of(16) {
        g
    } else if crate::backbone::avx512() {
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
fn even_split(n: usize, align: usize, max: usize) -> usize {
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

/// Rows of `m` values set to `bias` (plus the same row of `skip`).
fn init_rows(out: &mut [f32], m: usize, bias: &[f32], skip: Option<&[f32]>) {
    match skip {
        Some(s) => out.chunks_mut(m.max(1)).zip(s.chunks(m.max(1))).for_each(|(o, s)| {
            o.iter_mut().zip(s).zip(bias).for_each(|((o, s), b)| *o = s + b);
        }),
        None => out.chunks_mut(m.max(1)).for_each(|o| o.copy_from_slice(bias)),
    }
}

/// ReLU6 in place.
fn relu6(v: &mut [f32]) {
    v.iter_mut().for_each(|x| *x = x.clamp(0.0, 6.0));
}

/// `rows × cols` row-major → `cols × rows` row-major (between the planar and the channels-last layouts).
pub fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    transpose_into(src, rows, cols, &mut out);
    out
}

/// [`transpose`] into `out` (at least rows × cols values), in tiles of 16 × 16 values (going down whole columns
/// instead, every write of a transposed 40-channel plane touched a new cache line).
fn transpose_into(src: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
    const TILE: usize = 16;
    assert!(src.len() >= rows * cols && out.len() >= rows * cols, "transpose: sizes");
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    out[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
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

/// An output written by parallel parts into disjoint places of it (the stem's bands, a product's runs of
/// pixels, the classifier's rows).
pub(crate) struct BandOutput(pub(crate) *mut f32);

// SAFETY: the bands write disjoint ranges through the pointer, and the buffer outlives the parallel loop.
unsafe impl Sync for BandOutput {}

impl BandOutput {
    /// The pointer `offset` values in.
    pub(crate) fn at(&self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

thread_local! {
    /// Each worker thread's depthwise buffers and expanded planes, kept between tasks and passes: allocating
    /// and zero-filling them per task cost more than some blocks' arithmetic.
    static BLOCK_SCRATCH: std::cell::RefCell<(Scratch, Buffer)> =
        std::cell::RefCell::new((Scratch::new(crate::backbone::avx2()), Buffer::default()));
}

/// Runs `f` with this thread's [`BLOCK_SCRATCH`] (or a fresh set, should the thread already be using its own).
fn with_block_scratch<R>(f: impl FnOnce(&mut (Scratch, Buffer)) -> R) -> R {
    BLOCK_SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => f(&mut bufs),
        // Not reached (nothing run here re-enters the thread pool); a fresh set keeps it correct anyway.
        Err(_) => f(&mut (Scratch::new(crate::backbone::avx2()), Buffer::default())),
    })
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
        let wide = crate::backbone::avx2();
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
            assert_eq!(channel_group_nhwc(240), if crate::backbone::avx512() { 128 } else { 120 });
            assert_eq!(channel_group_nhwc(672), 336);
        });
        // On three threads the 1280 head channels split 427 + 427 + 426, except with AVX-512, whose product
        // starts its weight strips at multiples of 16 only.
        let three = rayon::ThreadPoolBuilder::new().num_threads(3).build().expect("thread pool");
        let want = if crate::backbone::avx512() { 432 } else { 427 };
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
