//! EfficientNet-Lite0 (lukemelas EfficientNet-PyTorch layout, Lite variant: ReLU6, no squeeze-excite,
//! BatchNorm eps 1e-3, TensorFlow "SAME" padding) as a frozen feature extractor on candle.
//!
//! At load time every BatchNorm is folded into the convolution before it. Pointwise (1×1) convolutions run
//! as matrix products; depthwise convolutions run in [`Depthwise`], a dedicated kernel (bias and ReLU6 fused)
//! parallel over channels, instead of candle's one-convolution-per-group path.

use std::collections::HashMap;

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Module, Shape, Tensor};
use rayon::prelude::*;

/// Input normalisation: `(x - 127) / 128`.
pub const INPUT_MEAN: f32 = 127.0;
/// Input normalisation scale.
pub const INPUT_SCALE: f32 = 128.0;
/// Channels of the final feature map (and of pooled features).
pub const FEATURE_DIM: usize = 1280;
const BN_EPS: f64 = 1e-3;

/// (repeats, kernel, stride, expand ratio, in, out) of the seven stages.
const STAGES: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

type Weights = HashMap<String, Tensor>;

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
fn fold(w: &Weights, conv: &str, bn: &str) -> candle_core::Result<(Tensor, Tensor)> {
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

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (n, c, h, wd) = x.dims4()?;
        let y = if self.k == 1 && self.stride == 1 {
            let o = self.weight.dim(0)?;
            let w2 = self.weight.reshape((o, c))?;
            w2.broadcast_matmul(&x.reshape((n, c, h * wd))?)?.reshape((n, o, h, wd))?
        } else {
            let (_, pt, pb) = same_padding(h, self.k, self.stride);
            let (_, pl, pr) = same_padding(wd, self.k, self.stride);
            x.pad_with_zeros(2, pt, pb)?.pad_with_zeros(3, pl, pr)?.conv2d(&self.weight, 0, self.stride, 1, 1)?
        };
        y.contiguous()?.apply_op1_no_bwd(&BiasAct { bias: &self.bias_vec, relu6: self.relu6 })
    }
}

/// Adds a per-channel bias and optionally applies ReLU6, in one pass (NCHW, f32, CPU).
struct BiasAct<'a> {
    bias: &'a [f32],
    relu6: bool,
}

impl CustomOp1 for BiasAct<'_> {
    fn name(&self) -> &'static str {
        "bias-relu6"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else { candle_core::bail!("bias: f32 input expected") };
        let Some((a, b)) = layout.contiguous_offsets() else { candle_core::bail!("bias: contiguous input expected") };
        let (_, c, h, w) = layout.shape().dims4()?;
        if self.bias.len() != c {
            candle_core::bail!("bias: {c} channels but {} biases", self.bias.len());
        }
        let mut out = data[a..b].to_vec();
        let plane = h * w;
        let relu6 = self.relu6;
        out.par_chunks_mut(plane).enumerate().for_each(|(nc, o)| {
            let bias = self.bias[nc % c];
            if relu6 {
                o.iter_mut().for_each(|v| *v = (*v + bias).clamp(0.0, 6.0));
            } else {
                o.iter_mut().for_each(|v| *v += bias);
            }
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// Depthwise k×k convolution with TF "SAME" padding, bias and ReLU6 fused; NCHW, f32, CPU.
#[derive(Debug, Clone)]
pub struct Depthwise {
    weight: Vec<f32>,
    bias: Vec<f32>,
    k: usize,
    stride: usize,
}

impl Depthwise {
    /// A kernel over per-channel `weight` (channels × k × k) and `bias`.
    pub fn new(weight: Vec<f32>, bias: Vec<f32>, k: usize, stride: usize) -> Self {
        Self { weight, bias, k, stride }
    }

    fn channel(&self, ch: usize, inp: &[f32], h: usize, w: usize, out: &mut [f32]) {
        let (k, s) = (self.k, self.stride);
        let (oh, pt, _) = same_padding(h, k, s);
        let (ow, pl, _) = same_padding(w, k, s);
        let wk = &self.weight[ch * k * k..(ch + 1) * k * k];
        let b = self.bias[ch];
        for oy in 0..oh {
            let orow = &mut out[oy * ow..(oy + 1) * ow];
            orow.fill(b);
            for ky in 0..k {
                let iy = (oy * s + ky) as isize - pt as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                let irow = &inp[iy as usize * w..(iy as usize + 1) * w];
                for kx in 0..k {
                    let wv = wk[ky * k + kx];
                    // Output columns whose input column ox*s + kx - pl lies inside the row.
                    let lo = pl.saturating_sub(kx).div_ceil(s);
                    let hi = ((w + pl).saturating_sub(kx)).div_ceil(s).min(ow);
                    if lo >= hi {
                        continue;
                    }
                    let start = lo * s + kx - pl;
                    if s == 1 {
                        for (o, i) in orow[lo..hi].iter_mut().zip(&irow[start..start + (hi - lo)]) {
                            *o += wv * i;
                        }
                    } else {
                        for (o, i) in orow[lo..hi].iter_mut().zip(irow[start..].iter().step_by(s)) {
                            *o += wv * i;
                        }
                    }
                }
            }
            for o in orow.iter_mut() {
                *o = o.clamp(0.0, 6.0);
            }
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
        out.par_chunks_mut(oh * ow).enumerate().for_each(|(nc, o)| {
            self.channel(nc % c, &data[nc * h * w..(nc + 1) * h * w], h, w, o);
        });
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }
}

#[derive(Debug, Clone)]
struct Block {
    expand: Option<ConvBn>,
    depthwise: Depthwise,
    project: ConvBn,
    skip: bool,
}

impl Block {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = match &self.expand {
            Some(e) => e.forward(x)?,
            None => x.clone(),
        };
        let h = h.contiguous()?.apply_op1_no_bwd(&self.depthwise)?;
        let h = self.project.forward(&h)?;
        if self.skip {
            h + x
        } else {
            Ok(h)
        }
    }
}

/// The EfficientNet-Lite0 network with its ImageNet classifier.
#[derive(Debug, Clone)]
pub struct EfficientNetLite0 {
    stem: ConvBn,
    blocks: Vec<Block>,
    head: ConvBn,
    fc: candle_nn::Linear,
}

impl EfficientNetLite0 {
    /// Builds the network from converted weights (BatchNorm folded here).
    pub fn load(w: &Weights) -> candle_core::Result<Self> {
        let stem = ConvBn::load(w, "_conv_stem", "_bn0", 2, true)?;
        let mut blocks = Vec::new();
        for (repeats, k, stride, expand, cin, cout) in STAGES {
            for r in 0..repeats {
                let i = blocks.len();
                let (s, inp) = if r == 0 { (stride, cin) } else { (1, cout) };
                let p = format!("_blocks.{i}");
                let expand_conv = if expand != 1 {
                    Some(ConvBn::load(w, &format!("{p}._expand_conv"), &format!("{p}._bn0"), 1, true)?)
                } else {
                    None
                };
                let (dw, db) = fold(w, &format!("{p}._depthwise_conv"), &format!("{p}._bn1"))?;
                let depthwise = Depthwise::new(dw.flatten_all()?.to_vec1()?, db.to_vec1()?, k, s);
                let project = ConvBn::load(w, &format!("{p}._project_conv"), &format!("{p}._bn2"), 1, false)?;
                blocks.push(Block { expand: expand_conv, depthwise, project, skip: s == 1 && inp == cout });
            }
        }
        let head = ConvBn::load(w, "_conv_head", "_bn1", 1, true)?;
        let fc = candle_nn::Linear::new(get(w, "_fc.weight")?, Some(get(w, "_fc.bias")?));
        Ok(Self { stem, blocks, head, fc })
    }

    /// Loads converted weights from a safetensors file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, crate::weights::WeightsError> {
        let w = crate::weights::load_safetensors(path)?;
        Ok(Self::load(&w)?)
    }

    /// Feature maps at stride 16 (112 channels, after block 10) and stride 32 (1280 channels, after the head).
    pub fn feature_maps(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let mut h = self.stem.forward(x)?;
        let mut s16 = None;
        for (i, b) in self.blocks.iter().enumerate() {
            h = b.forward(&h)?;
            if i == 10 {
                s16 = Some(h.clone());
            }
        }
        let top = self.head.forward(&h)?;
        Ok((s16.unwrap_or_else(|| top.clone()), top))
    }

    /// Wall time of each stage for one input, in milliseconds: stem, the 16 blocks, head (profiling aid).
    pub fn stage_times(&self, x: &Tensor) -> candle_core::Result<Vec<(String, f64)>> {
        let mut out = Vec::new();
        let t = std::time::Instant::now();
        let mut h = self.stem.forward(x)?;
        out.push(("stem".to_string(), t.elapsed().as_secs_f64() * 1e3));
        for (i, b) in self.blocks.iter().enumerate() {
            let t = std::time::Instant::now();
            h = b.forward(&h)?;
            out.push((format!("block {i}"), t.elapsed().as_secs_f64() * 1e3));
        }
        let t = std::time::Instant::now();
        self.head.forward(&h)?;
        out.push(("head".to_string(), t.elapsed().as_secs_f64() * 1e3));
        Ok(out)
    }

    /// Globally average-pooled features, (N, 1280).
    pub fn pooled(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, top) = self.feature_maps(x)?;
        top.mean((2, 3))
    }

    /// ImageNet-1k logits, (N, 1000).
    pub fn imagenet_logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.fc.forward(&self.pooled(x)?)
    }
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
    fn same_padding_matches_tensorflow() {
        assert_eq!(same_padding(224, 3, 2), (112, 0, 1));
        assert_eq!(same_padding(112, 3, 1), (112, 1, 1));
        assert_eq!(same_padding(28, 5, 2), (14, 1, 2));
        assert_eq!(same_padding(7, 5, 1), (7, 2, 2));
    }

    #[test]
    fn depthwise_kernel_matches_candle_grouped_conv() {
        let dev = Device::Cpu;
        for (k, s, h, w) in [(3, 1, 9, 7), (3, 2, 10, 9), (5, 2, 11, 12), (5, 1, 6, 8)] {
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
            let diff: f32 = (ours - reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
            assert!(diff < 1e-4, "k{k} s{s}: {diff}");
        }
    }
}
