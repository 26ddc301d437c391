//! The channels-last 1×1 convolution as an AVX-512 matrix product without packing.
//!
//! At the top of the network (28 × 28 planes and smaller) a 1×1 convolution is a product of a few hundred
//! pixels by a few hundred channels. `gemm` packs both operands into its own layout first: on these small products
//! that packing cost a quarter of the product's time (`perf`: `gemm_common::…::vectorize` at 9 % of a pass
//! beside 25 % in the micro-kernels). Here the activations are read where they lie — a pixel's input channels,
//! each broadcast in turn — and the weights from [`Strips`], laid out once when the network loads, so a register
//! block of `R` pixels × `V` vectors of output channels needs no packing.

// The kernels are AVX-512 (x86-64) only; elsewhere `run` declines and the callers use `gemm`.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

use crate::kernels::aligned::{Buffer, LINE};

/// `out[i·ldo + j] = act(out[i·ldo + j] + Σ_c x[i·ldx + c] · W[j0 + j][k0 + c])` for `i < p`, `j < m`,
/// `c < k`, where `act` is ReLU6 when `relu6` and nothing otherwise: a channels-last product accumulated onto
/// what `out` holds (the caller's bias, skip connection or earlier partial sums), with the weights `W` in
/// [`Strips`].
pub(crate) struct Columns<'a> {
    /// p rows of (at least) k input channels, row stride `ldx`.
    pub x: &'a [f32],
    /// Row stride of `x`.
    pub ldx: usize,
    /// The weights.
    pub w: &'a Strips,
    /// First output channel (a multiple of 16).
    pub j0: usize,
    /// First input channel.
    pub k0: usize,
    /// Input channels summed.
    pub k: usize,
    /// Output channels.
    pub m: usize,
    /// Whether ReLU6 follows the sum.
    pub relu6: bool,
}

/// A 1×1 convolution's (out × in) weights laid out for [`Columns`]: strips of 16 output channels, each strip
/// every input channel's 16 weights in turn (`[⌈out/16⌉][in][16]`, the last strip zero-filled). A tile of
/// output channels then reads one sequential stream per vector; read from the transposed matrix instead, each
/// input channel's weights lie a row (up to 4.6 KB) further on, past where the hardware prefetcher follows,
/// and the top blocks ran 30–45 % slower than with `gemm`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Strips {
    /// Cache-line aligned, so that no vector load straddles two lines.
    values: Buffer,
    cin: usize,
    cout: usize,
}

impl Strips {
    /// The strips of a row-major (cout × cin) matrix.
    pub fn new(weight: &[f32], cout: usize, cin: usize) -> Self {
        assert_eq!(weight.len(), cout * cin, "strips: weight size");
        let mut values = Buffer::default();
        let strips = values.sized(cout.div_ceil(LANES) * cin * LANES);
        for (j, row) in weight.chunks(cin.max(1)).enumerate() {
            let strip = (j / LANES) * cin * LANES;
            for (c, v) in row.iter().enumerate() {
                strips[strip + c * LANES + j % LANES] = *v;
            }
        }
        Self { values, cin, cout }
    }
}

/// Output channels per vector.
const LANES: usize = LINE;

/// Values of a tile's weights one pass over the pixels reads: 24 KB, half the first-level data cache of current
/// cores.
const L1_WEIGHTS: usize = 24 * 1024 / 4;

/// A tile of [`Columns`]: output channels from `j0` in vectors (`masks`: their lanes inside m), input channels
/// `c0 .. c1`, and whether ReLU6 follows (on the last input channels only).
#[derive(Clone, Copy)]
struct Tile {
    j0: usize,
    masks: [u16; 8],
    c0: usize,
    c1: usize,
    relu6: bool,
}

impl Columns<'_> {
    /// Runs the product into `out` (p rows of m values, row stride `ldo`, `p = ⌈out.len() / ldo⌉`; every
    /// extent is checked first) when this CPU has AVX-512 and `j0` starts a strip; returns false, touching
    /// nothing, otherwise.
    pub fn run(&self, out: &mut [f32], ldo: usize) -> bool {
        if !crate::kernels::avx512() || !self.j0.is_multiple_of(LANES) {
            return false;
        }
        let (k, m) = (self.k, self.m);
        let p = out.len().div_ceil(ldo.max(1));
        let fits = |len: usize, rows: usize, ld: usize, cols: usize| rows == 0 || (rows - 1) * ld + cols <= len;
        assert!(
            m <= ldo
                && k <= self.ldx
                && fits(out.len(), p, ldo, m)
                && fits(self.x.len(), p, self.ldx, k)
                && self.j0 + m <= self.w.cout
                && self.k0 + k <= self.w.cin,
            "channels-last product: buffer sizes"
        );
        if p == 0 || m == 0 {
            return true;
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `avx512()` found AVX-512F on this CPU, and the extents were checked above.
        unsafe {
            self.tiles(out.as_mut_ptr(), ldo, p)
        };
        true
    }

    /// Splits the output channels into tiles of `V` vectors — a `V` that divides the vector count where one of
    /// 4 to 7 does, so no tile is left mostly empty (80 channels: one tile of 5 vectors) — and each tile's pixels
    /// into register blocks of `R` (`R·V` accumulators, at most 24).
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `out` must hold `p` rows of `ldo` values and the operands the sizes `run`
    /// checks.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn tiles(&self, out: *mut f32, ldo: usize, p: usize) {
        let vectors = self.m.div_ceil(LANES);
        let width = [6, 5, 7, 4].into_iter().find(|v| vectors.is_multiple_of(*v)).unwrap_or(6).min(vectors);
        let mut v0 = 0;
        while v0 < vectors {
            let v = (vectors - v0).min(width);
            let j0 = v0 * LANES;
            // Lanes of each of the tile's vectors that lie inside the m output channels.
            let mut masks = [0u16; 8];
            for (q, mask) in masks.iter_mut().enumerate().take(v) {
                let n = (self.m - j0).saturating_sub(q * LANES).min(LANES);
                *mask = ((1u32 << n) - 1) as u16;
            }
            // Input channels per pass over the pixels: the tile's weights for them (kc × v vectors) stay in the
            // core's first-level cache while every pixel block reads them.
            let kc = (L1_WEIGHTS / (v * LANES)).max(1);
            for c0 in (0..self.k).step_by(kc) {
                let c1 = (c0 + kc).min(self.k);
                let tile = Tile { j0, masks, c0, c1, relu6: self.relu6 && c1 == self.k };
                // SAFETY (every call): pixels i0 .. i0 + R, the tile's masked channels and its input channels lie
                // inside the checked sizes.
                unsafe {
                    match v {
                        7 => self.pixels::<3, 7>(out, ldo, p, &tile),
                        6 => self.pixels::<4, 6>(out, ldo, p, &tile),
                        5 => self.pixels::<4, 5>(out, ldo, p, &tile),
                        4 => self.pixels::<6, 4>(out, ldo, p, &tile),
                        3 => self.pixels::<8, 3>(out, ldo, p, &tile),
                        2 => self.pixels::<8, 2>(out, ldo, p, &tile),
                        _ => self.pixels::<8, 1>(out, ldo, p, &tile),
                    }
                }
            }
            v0 += v;
        }
    }

    /// All `p` pixels of the tile of `V` vectors from channel `j0`: blocks of `R` pixels, then the last few.
    ///
    /// # Safety
    /// As [`Columns::tiles`]; the tile's masked channels must lie inside m.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn pixels<const R: usize, const V: usize>(&self, out: *mut f32, ldo: usize, p: usize, tile: &Tile) {
        let mut i0 = 0;
        while i0 + R <= p {
            // SAFETY: the caller's promise, for pixels i0 .. i0 + R < p.
            unsafe { self.block::<R, V>(out, ldo, i0, tile) };
            i0 += R;
        }
        // The last few pixels in blocks of 4, 2 and 1 (fewer than R remain): a pixel on its own has only V
        // accumulators, too few to hide the multiply-add latency (49 pixels in blocks of 4 left one: 6 % of the
        // product's time).
        while i0 < p {
            let n = p - i0;
            // SAFETY: as above, for pixels i0 .. i0 + step ≤ p.
            let step = unsafe {
                if n >= 4 && R > 4 {
                    self.block::<4, V>(out, ldo, i0, tile);
                    4
                } else if n >= 2 && R > 2 {
                    self.block::<2, V>(out, ldo, i0, tile);
                    2
                } else {
                    self.block::<1, V>(out, ldo, i0, tile);
                    1
                }
            };
            i0 += step;
        }
    }

    /// Pixels `i0 .. i0 + R` × the tile's `V` vectors of channels, summed over its input channels.
    ///
    /// # Safety
    /// As [`Columns::pixels`]; pixels `i0 .. i0 + R` must lie inside p.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn block<const R: usize, const V: usize>(&self, out: *mut f32, ldo: usize, i0: usize, tile: &Tile) {
        use std::arch::x86_64::*;
        let Tile { j0, masks, c0, c1, relu6 } = *tile;
        // SAFETY (every load and store below): row i of `out` and `x` start at i·ldo and i·ldx; the channels
        // j0 + 16q + lane with their mask bit set lie below m, so their strips (whole, zero-filled) lie below
        // ⌈cout/16⌉; k0 + c < cin.
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for (r, sums) in acc.iter_mut().enumerate() {
            let row = out.add((i0 + r) * ldo + j0);
            for (q, sum) in sums.iter_mut().enumerate() {
                *sum = _mm512_maskz_loadu_ps(masks[q], row.add(q * LANES));
            }
        }
        let x = self.x.as_ptr().add(i0 * self.ldx);
        // Strip s holds channels 16s .. 16s + 16 (zero past cout), input channel c's 16 weights at (s·cin + c)·16.
        let strip = self.w.cin * LANES;
        let mut w = self.w.values.as_ptr().add((self.j0 + j0) / LANES * strip + (self.k0 + c0) * LANES);
        for c in c0..c1 {
            let mut wv = [_mm512_setzero_ps(); V];
            for (q, v) in wv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(w.add(q * strip));
            }
            for (r, sums) in acc.iter_mut().enumerate() {
                let xv = _mm512_set1_ps(*x.add(r * self.ldx + c));
                for (q, sum) in sums.iter_mut().enumerate() {
                    *sum = _mm512_fmadd_ps(xv, wv[q], *sum);
                }
            }
            w = w.add(LANES);
        }
        let (zero, six) = (_mm512_setzero_ps(), _mm512_set1_ps(6.0));
        for (r, sums) in acc.iter().enumerate() {
            let row = out.add((i0 + r) * ldo + j0);
            for (q, sum) in sums.iter().enumerate() {
                let v = if relu6 { _mm512_min_ps(_mm512_max_ps(*sum, zero), six) } else { *sum };
                _mm512_mask_storeu_ps(row.add(q * LANES), masks[q], v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product by definition, in f64, from the row-major weights.
    fn reference(c: &Columns, weight: &[f32], out: &[f32], ldo: usize) -> Vec<f32> {
        let (p, cin) = (out.len().div_ceil(ldo), c.w.cin);
        let mut want = out.to_vec();
        for i in 0..p {
            for j in 0..c.m {
                let mut s = f64::from(out[i * ldo + j]);
                for ch in 0..c.k {
                    s += f64::from(c.x[i * c.ldx + ch]) * f64::from(weight[(c.j0 + j) * cin + c.k0 + ch]);
                }
                let s = s as f32;
                want[i * ldo + j] = if c.relu6 { s.clamp(0.0, 6.0) } else { s };
            }
        }
        want
    }

    #[test]
    fn channels_last_products_match_their_definition() {
        if !crate::kernels::avx512() {
            eprintln!("no AVX-512 on this CPU: the portable path (gemm) is tested by the block tests");
            return;
        }
        // (pixels, input channels summed, output channels, first output channel, first input channel): every
        // tile width, pixel tails, masked channel tails, offsets into the weights, strides wider than the rows.
        let cases = [
            (49, 192, 80, 0, 0),
            (25, 112, 112, 16, 30),
            (196, 80, 240, 32, 0),
            (7, 3, 17, 0, 2),
            (13, 40, 336, 0, 40),
            (1, 5, 8, 48, 0),
            (14, 8, 96, 0, 0),
            (31, 9, 64, 0, 3),
        ];
        for &(p, k, m, j0, k0) in &cases {
            let (cout, cin) = (j0 + m + 3, k0 + k + 1);
            let weight: Vec<f32> = (0..cout * cin).map(|i| ((i * 53 % 89) as f32 - 44.0) / 88.0).collect();
            let strips = Strips::new(&weight, cout, cin);
            let (ldx, ldo) = (k + 3, m + 2);
            let x: Vec<f32> = (0..p * ldx).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let out: Vec<f32> = (0..(p - 1) * ldo + m).map(|i| (i % 7) as f32 - 3.0).collect();
            for relu6 in [false, true] {
                let c = Columns { x: &x, ldx, w: &strips, j0, k0, k, m, relu6 };
                let want = reference(&c, &weight, &out, ldo);
                let mut got = out.clone();
                assert!(c.run(&mut got, ldo));
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    // Values between rows (past m) are untouched; sums agree to rounding.
                    assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "p {p} k {k} m {m} at {i}: {g} vs {w}");
                }
            }
        }
    }
}
