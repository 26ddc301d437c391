//! The CPU kernels the backbone runs on, by concern: which instruction sets this CPU has (checked at run time:
//! every kernel has a portable build and an AVX2 + FMA one, some an AVX-512 one), the element-wise bias and
//! ReLU6 step, the depthwise convolutions ([`depthwise`]), the 1×1 products ([`pointwise`], [`products`]), the
//! fully connected layer ([`dense`]), the fused inverted-residual block and stem ([`mbconv`]), and the team of
//! spinning threads and aligned buffers they share.

pub(crate) mod aligned;
pub(crate) mod buffers;
pub(crate) mod dense;
pub mod depthwise;
pub mod mbconv;
pub mod pointwise;
pub(crate) mod products;
pub(crate) mod team;

/// TensorFlow "SAME" padding: output size and (before, after) padding; the extra pixel goes after.
pub fn same_padding(size: usize, k: usize, stride: usize) -> (usize, usize, usize) {
    let out = size.div_ceil(stride);
    let total = ((out - 1) * stride + k).saturating_sub(size);
    (out, total / 2, total - total / 2)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tensorflow() {
        assert_eq!(same_padding(224, 3, 2), (112, 0, 1));
        assert_eq!(same_padding(112, 3, 1), (112, 1, 1));
        assert_eq!(same_padding(28, 5, 2), (14, 1, 2));
        assert_eq!(same_padding(7, 5, 1), (7, 2, 2));
    }
}
