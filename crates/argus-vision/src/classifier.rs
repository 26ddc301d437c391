//! Image classification on the frozen backbone: augmented views → pooled EfficientNet features → a linear
//! head trained with candle's autograd (softmax cross-entropy for Multiclass, per-tag sigmoid for Multilabel),
//! with feature standardisation and L2 weight decay. Deterministic: zero-initialised weights, full-batch AdamW,
//! fixed view geometry. The top feature map is pooled by its mean and, for the recipes that ask for it, also by its
//! maximum: the maximum keeps the response of an object that fills only part of a cluttered photo, which the mean
//! dilutes.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use image::{imageops, RgbImage};

use crate::backbone::{preprocess, EfficientNetLite0, FEATURE_DIM};

/// Softmax (one tag per image) or sigmoid (any number of tags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    /// Softmax over tags.
    Multiclass,
    /// Independent sigmoid per tag.
    Multilabel,
}

/// How the (C, H, W) top feature map becomes one feature vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Global average: C features.
    Mean,
    /// Global average and global maximum side by side: 2C features.
    MeanMax,
}

/// How hard to train.
#[derive(Debug, Clone, Copy)]
pub struct TrainingRecipe {
    /// Backbone input side in pixels.
    pub input_size: u32,
    /// Feature pooling.
    pub pooling: Pooling,
    /// Augmented views per training image (the first is the image itself).
    pub views: usize,
    /// Full-batch optimisation steps of the head.
    pub steps: usize,
    /// Learning rate.
    pub learning_rate: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
}

impl TrainingRecipe {
    /// Quick training ("Regular").
    pub fn regular() -> Self {
        Self {
            input_size: 224,
            pooling: Pooling::MeanMax,
            views: 6,
            steps: 300,
            learning_rate: 0.01,
            weight_decay: 0.01,
        }
    }

    /// Longer training ("Advanced"): a larger input, more augmentation, longer fitting.
    pub fn advanced() -> Self {
        Self {
            input_size: 288,
            pooling: Pooling::MeanMax,
            views: 10,
            steps: 500,
            learning_rate: 0.01,
            weight_decay: 0.01,
        }
    }
}

/// The `i`-th augmented view of an image: 0 is the image, then flips and crops at fixed positions.
pub fn view(img: &RgbImage, i: usize) -> RgbImage {
    let (w, h) = img.dimensions();
    let crop = |fx: f32, fy: f32, scale: f32| {
        let (cw, ch) = (((w as f32) * scale).max(1.0) as u32, ((h as f32) * scale).max(1.0) as u32);
        let x = (((w - cw) as f32) * fx) as u32;
        let y = (((h - ch) as f32) * fy) as u32;
        imageops::crop_imm(img, x, y, cw, ch).to_image()
    };
    match i % 10 {
        0 => img.clone(),
        1 => imageops::flip_horizontal(img),
        2 => crop(0.5, 0.5, 0.8),
        3 => crop(0.0, 0.0, 0.8),
        4 => imageops::flip_horizontal(&crop(1.0, 1.0, 0.8)),
        5 => crop(1.0, 0.0, 0.75),
        6 => imageops::flip_horizontal(&crop(0.0, 1.0, 0.75)),
        7 => crop(0.5, 0.5, 0.65),
        8 => imageops::flip_horizontal(&crop(0.5, 0.0, 0.9)),
        _ => crop(0.5, 1.0, 0.9),
    }
}

/// Pooled features of images at a `size` × `size` input, batched.
pub fn features(
    net: &EfficientNetLite0,
    images: &[RgbImage],
    size: u32,
    pooling: Pooling,
) -> candle_core::Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(8) {
        let batch: Vec<Tensor> = chunk.iter().map(|i| preprocess(i, size)).collect::<candle_core::Result<_>>()?;
        let x = Tensor::cat(&batch, 0)?;
        let pooled = match pooling {
            Pooling::Mean => net.pooled(&x)?,
            Pooling::MeanMax => net.pooled_mean_max(&x)?,
        };
        out.extend(pooled.to_vec2::<f32>()?);
    }
    Ok(out)
}

/// A trained linear head over standardised backbone features.
#[derive(Debug, Clone)]
pub struct LinearHead {
    /// Softmax or sigmoid.
    pub kind: HeadKind,
    /// Backbone input side it was trained with.
    pub input_size: u32,
    /// Feature pooling it was trained with.
    pub pooling: Pooling,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    /// (classes, features).
    weight: Vec<f32>,
    bias: Vec<f32>,
    classes: usize,
}

impl LinearHead {
    /// Trains a head on `x` (rows of features) with `targets` (rows of 0/1 per class).
    pub fn fit(
        x: &[Vec<f32>],
        targets: &[Vec<f32>],
        kind: HeadKind,
        recipe: &TrainingRecipe,
    ) -> candle_core::Result<Self> {
        let n = x.len();
        let classes = targets.first().map(Vec::len).unwrap_or(0);
        if n == 0 || classes == 0 {
            candle_core::bail!("nothing to train on");
        }
        let dim = x[0].len();
        let mut mean = vec![0f32; dim];
        for row in x {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += v / n as f32;
            }
        }
        let mut var = vec![0f32; dim];
        for row in x {
            for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (v - m).powi(2) / n as f32;
            }
        }
        let inv_std: Vec<f32> = var.iter().map(|v| 1.0 / (v.sqrt() + 1e-3)).collect();
        let dev = Device::Cpu;
        let flat: Vec<f32> =
            x.iter().flat_map(|r| r.iter().zip(&mean).zip(&inv_std).map(|((v, m), s)| (v - m) * s)).collect();
        let xs = Tensor::from_vec(flat, (n, dim), &dev)?;
        let ys = Tensor::from_vec(targets.iter().flatten().copied().collect::<Vec<f32>>(), (n, classes), &dev)?;
        let w = Var::zeros((dim, classes), DType::F32, &dev)?;
        let b = Var::zeros(classes, DType::F32, &dev)?;
        let params = ParamsAdamW { lr: recipe.learning_rate, weight_decay: recipe.weight_decay, ..Default::default() };
        let mut opt = AdamW::new(vec![w.clone(), b.clone()], params)?;
        for _ in 0..recipe.steps {
            let logits = xs.matmul(w.as_tensor())?.broadcast_add(b.as_tensor())?;
            let loss = match kind {
                HeadKind::Multiclass => {
                    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
                    (ys.mul(&logp)?.sum_all()?.neg()? / n as f64)?
                }
                HeadKind::Multilabel => {
                    // Numerically stable BCE with logits: max(z, 0) - z*y + log(1 + exp(-|z|)).
                    let relu = logits.relu()?;
                    let soft = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
                    ((relu - logits.mul(&ys)?)? + soft)?.mean_all()?
                }
            };
            opt.backward_step(&loss)?;
        }
        let weight = w.as_tensor().t()?.contiguous()?.flatten_all()?.to_vec1()?;
        let bias = b.as_tensor().to_vec1()?;
        Ok(Self { kind, input_size: recipe.input_size, pooling: recipe.pooling, mean, inv_std, weight, bias, classes })
    }

    /// Probabilities per class for one feature vector.
    pub fn predict(&self, feature: &[f32]) -> Vec<f32> {
        let z: Vec<f32> = feature.iter().zip(&self.mean).zip(&self.inv_std).map(|((v, m), s)| (v - m) * s).collect();
        let logits: Vec<f32> = (0..self.classes)
            .map(|c| {
                self.bias[c]
                    + self.weight[c * z.len()..(c + 1) * z.len()].iter().zip(&z).map(|(w, x)| w * x).sum::<f32>()
            })
            .collect();
        match self.kind {
            HeadKind::Multiclass => {
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
                let sum: f32 = exp.iter().sum();
                exp.iter().map(|e| e / sum).collect()
            }
            HeadKind::Multilabel => logits.iter().map(|l| 1.0 / (1.0 + (-l).exp())).collect(),
        }
    }

    /// Serialises the head to safetensors bytes.
    pub fn to_bytes(&self) -> candle_core::Result<Vec<u8>> {
        let dev = Device::Cpu;
        let dim = self.mean.len();
        let meta = [
            self.classes as f32,
            self.input_size as f32,
            if self.kind == HeadKind::Multiclass { 0.0 } else { 1.0 },
            if self.pooling == Pooling::Mean { 0.0 } else { 1.0 },
        ];
        let tensors: HashMap<String, Tensor> = [
            ("mean".to_string(), Tensor::from_slice(&self.mean, dim, &dev)?),
            ("inv_std".to_string(), Tensor::from_slice(&self.inv_std, dim, &dev)?),
            ("weight".to_string(), Tensor::from_slice(&self.weight, (self.classes, dim), &dev)?),
            ("bias".to_string(), Tensor::from_slice(&self.bias, self.classes, &dev)?),
            ("meta".to_string(), Tensor::from_slice(&meta, meta.len(), &dev)?),
        ]
        .into_iter()
        .collect();
        let views: Vec<(String, Tensor)> = tensors.into_iter().collect();
        safetensors_bytes(&views)
    }

    /// Reads a head written by [`LinearHead::to_bytes`] (heads written before pooling was recorded used the mean).
    pub fn from_bytes(bytes: &[u8]) -> candle_core::Result<Self> {
        let t = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)?;
        let get = |k: &str| -> candle_core::Result<Vec<f32>> {
            t.get(k)
                .ok_or_else(|| candle_core::Error::Msg(format!("head tensor {k} missing")))?
                .flatten_all()?
                .to_vec1()
        };
        let meta = get("meta")?;
        if meta.len() != 3 && meta.len() != 4 {
            candle_core::bail!("head metadata malformed");
        }
        let pooling = if meta.get(3).copied().unwrap_or(0.0) == 0.0 { Pooling::Mean } else { Pooling::MeanMax };
        let (mean, inv_std, weight, bias) = (get("mean")?, get("inv_std")?, get("weight")?, get("bias")?);
        let classes = meta[0] as usize;
        if weight.len() != classes * mean.len() || bias.len() != classes || inv_std.len() != mean.len() {
            candle_core::bail!("head tensors have inconsistent shapes");
        }
        let kind = if meta[2] == 0.0 { HeadKind::Multiclass } else { HeadKind::Multilabel };
        Ok(Self { kind, input_size: meta[1] as u32, pooling, mean, inv_std, weight, bias, classes })
    }
}

/// Serialises named tensors to safetensors bytes, in memory.
pub(crate) fn safetensors_bytes(tensors: &[(String, Tensor)]) -> candle_core::Result<Vec<u8>> {
    safetensors::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), None)
        .map_err(|e| candle_core::Error::Msg(format!("serialising tensors: {e}")))
}

/// Feature dimension of the backbone.
pub const DIM: usize = FEATURE_DIM;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_separates_separable_data_and_round_trips() {
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..40 {
            let c = i % 2;
            let mut row = vec![0f32; 16];
            row[c] = 2.0 + (i as f32 * 0.37).sin() * 0.3;
            row[5] = (i as f32 * 1.3).cos();
            x.push(row);
            y.push(if c == 0 { vec![1.0, 0.0] } else { vec![0.0, 1.0] });
        }
        for kind in [HeadKind::Multiclass, HeadKind::Multilabel] {
            let head = LinearHead::fit(&x, &y, kind, &TrainingRecipe::regular()).expect("fit");
            for (row, t) in x.iter().zip(&y) {
                let p = head.predict(row);
                let best = if p[0] > p[1] { 0 } else { 1 };
                assert_eq!(t[best], 1.0, "{kind:?}");
            }
            let again = LinearHead::from_bytes(&head.to_bytes().expect("bytes")).expect("load");
            assert_eq!(again.predict(&x[3]), head.predict(&x[3]));
            assert_eq!((again.pooling, again.input_size), (Pooling::MeanMax, 224));
        }
    }

    #[test]
    fn heads_written_before_pooling_was_recorded_read_as_mean_pooled() {
        let dev = Device::Cpu;
        let t = |v: &[f32]| Tensor::from_slice(v, v.len(), &dev).expect("tensor");
        let old = [
            ("mean".to_string(), t(&[0.0, 0.0])),
            ("inv_std".to_string(), t(&[1.0, 1.0])),
            ("weight".to_string(), t(&[1.0, 0.0, 0.0, 1.0])),
            ("bias".to_string(), t(&[0.0, 0.0])),
            ("meta".to_string(), t(&[2.0, 224.0, 0.0])),
        ];
        let head = LinearHead::from_bytes(&safetensors_bytes(&old).expect("bytes")).expect("old head");
        assert_eq!((head.pooling, head.input_size, head.kind), (Pooling::Mean, 224, HeadKind::Multiclass));
        assert!(head.predict(&[3.0, 0.0])[0] > 0.9);
        let round = LinearHead::from_bytes(&head.to_bytes().expect("bytes")).expect("again");
        assert_eq!(round.pooling, Pooling::Mean);
        let mut bad = old;
        bad[4].1 = t(&[2.0]);
        assert!(LinearHead::from_bytes(&safetensors_bytes(&bad).expect("bytes")).is_err());
    }

    #[test]
    fn views_are_deterministic_and_distinct() {
        let img = RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8, y as u8, 0]));
        assert_eq!(view(&img, 0), img);
        assert_eq!(view(&img, 3), view(&img, 3));
        assert_ne!(view(&img, 1), img);
        assert_eq!(view(&img, 2).dimensions(), (32, 24));
    }
}
