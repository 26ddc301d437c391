//! The fully connected layer (the ImageNet classifier) as one dot product per output and image, its rows
//! shared among a pass's team of threads.

use candle_core::{Device, Tensor};

use super::aligned::Buffer;
use super::avx2;

/// A fully connected layer (the ImageNet classifier) as one dot product per output and image.
///
/// candle's `Linear` went through a general matrix product for what is, per image, a matrix–vector product: at
/// batch 1 it cost about as much as a network block. Its 5 MB of weights are read once per pass, from the last
/// level cache at best, so the rows are split among the pass's team of threads, and every image of a slice
/// reuses a group of rows while they are in L1.
#[derive(Debug, Clone)]
pub(crate) struct Dense {
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
    pub(crate) fn new(weight: &[f32], bias: Vec<f32>) -> candle_core::Result<Self> {
        if bias.is_empty() || !weight.len().is_multiple_of(bias.len()) {
            candle_core::bail!("dense: {} weights for {} outputs", weight.len(), bias.len());
        }
        Ok(Self { cin: weight.len() / bias.len(), weight: Buffer::from_slice(weight), bias })
    }

    /// `bias + W · x` for each row of `x` (N × in), as (N, out).
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (n, cin) = x.dims2()?;
        if cin != self.cin {
            candle_core::bail!("dense: {cin} inputs for a layer of {}", self.cin);
        }
        let x = x.flatten_all()?.to_vec1::<f32>()?;
        let cout = self.bias.len();
        let mut out = vec![0f32; n * cout];
        let dst = super::buffers::BandOutput(out.as_mut_ptr());
        let wide = avx2();
        crate::kernels::team::for_each_index(cout.div_ceil(DENSE_PART), |part| {
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

#[cfg(test)]
mod tests {
    use candle_core::DType;

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
                pool.install(|| crate::kernels::team::with_team(|| dense.forward(&xt))).expect("team forward"),
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
}
