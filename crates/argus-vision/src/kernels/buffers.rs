//! Buffer helpers the kernels share: rows initialised to a bias, ReLU6 in place, the transposition between the
//! planar and channels-last layouts, an output written by parallel parts, and each thread's block scratch.

use super::aligned::Buffer;
use super::depthwise::Scratch;

/// Rows of `m` values set to `bias` (plus the same row of `skip`).
pub(crate) fn init_rows(out: &mut [f32], m: usize, bias: &[f32], skip: Option<&[f32]>) {
    match skip {
        Some(s) => out.chunks_mut(m.max(1)).zip(s.chunks(m.max(1))).for_each(|(o, s)| {
            o.iter_mut().zip(s).zip(bias).for_each(|((o, s), b)| *o = s + b);
        }),
        None => out.chunks_mut(m.max(1)).for_each(|o| o.copy_from_slice(bias)),
    }
}

/// ReLU6 in place.
pub(crate) fn relu6(v: &mut [f32]) {
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
pub(crate) fn transpose_into(src: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
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
        std::cell::RefCell::new((Scratch::new(crate::kernels::avx2()), Buffer::default()));
}

/// Runs `f` with this thread's [`BLOCK_SCRATCH`] (or a fresh set, should the thread already be using its own).
pub(crate) fn with_block_scratch<R>(f: impl FnOnce(&mut (Scratch, Buffer)) -> R) -> R {
    BLOCK_SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => f(&mut bufs),
        // Not reached (nothing run here re-enters the thread pool); a fresh set keeps it correct anyway.
        Err(_) => f(&mut (Scratch::new(crate::kernels::avx2()), Buffer::default())),
    })
}
