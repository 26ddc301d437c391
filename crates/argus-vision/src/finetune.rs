//! Fine-tuning the top of the backbone (Advanced training): the last MBConv block(s) and the 1×1 head conv are
//! trained together with the linear classifier by back-propagation (candle's autograd on reference ops), from
//! the activations that enter the top, which are computed once per training view by the fast kernels. The
//! BatchNorm statistics stay frozen (folded into the weights, as the serving kernels expect), the classifier is
//! warm-started from the cross-validated linear head, and the top is held near its pretrained weights by an L2
//! penalty on the distance to them (L2-SP), so a few dozen photographs move it only where the data insist.
//! The trained weights go back into the serving kernels ([`FineTuned::blocks`], [`FineTuned::head`]).

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::backbone::Depthwise;
use crate::classifier::HeadKind;
use crate::mbconv::{MbConv, Pointwise};

/// How the top is fine-tuned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FineTuneRecipe {
    /// Passes over the training views.
    pub epochs: usize,
    /// Views per step.
    pub batch: usize,
    /// AdamW learning rate of the backbone's layers.
    pub lr_backbone: f64,
    /// AdamW learning rate of the classifier.
    pub lr_head: f64,
    /// L2-SP strength: `alpha / 2 · ‖θ − θ₀‖²` over the backbone's layers (summed, not averaged).
    pub alpha: f64,
}

/// One MBConv block as trainable variables.
struct BlockVars {
    expand: Option<(Var, Var)>,
    depthwise: (Var, Var),
    k: usize,
    project: (Var, Var),
    skip: bool,
}

/// The trainable top: blocks, head conv, classifier.
pub struct TrainableTop {
    blocks: Vec<BlockVars>,
    head: (Var, Var),
    fc: (Var, Var),
    /// The backbone variables' pretrained values, in [`TrainableTop::backbone_vars`] order.
    init: Vec<Tensor>,
}

fn var(data: &[f32], shape: &[usize]) -> candle_core::Result<Var> {
    Var::from_tensor(&Tensor::from_slice(data, shape, &Device::Cpu)?)
}

fn pointwise_vars(p: &Pointwise) -> candle_core::Result<(Var, Var)> {
    Ok((var(p.weight(), &[p.cout(), p.cin()])?, var(p.bias(), &[p.cout()])?))
}

fn depthwise_vars(d: &Depthwise) -> candle_core::Result<(Var, Var)> {
    let (k, _) = d.shape();
    Ok((var(d.weight(), &[d.channels(), k * k])?, var(d.bias(), &[d.channels()])?))
}

fn relu6(x: &Tensor) -> candle_core::Result<Tensor> {
    x.clamp(0f32, 6f32)
}

/// A 1×1 convolution on (B, Cin, P): (B, Cout, P).
fn pointwise(x: &Tensor, (w, b): &(Var, Var)) -> candle_core::Result<Tensor> {
    let cout = b.dim(0)?;
    w.as_tensor().broadcast_matmul(x)?.broadcast_add(&b.as_tensor().reshape((1, cout, 1))?)
}

/// A stride-1 depthwise k×k convolution with "SAME" zero padding on (B, C, H, W), as a sum of shifted planes.
fn depthwise(x: &Tensor, (w, b): &(Var, Var), k: usize) -> candle_core::Result<Tensor> {
    let (_, c, h, wd) = x.dims4()?;
    let pad = k / 2;
    let xp = x.pad_with_zeros(2, pad, pad)?.pad_with_zeros(3, pad, pad)?;
    let mut acc = b.as_tensor().reshape((1, c, 1, 1))?.broadcast_as(x.shape())?.contiguous()?;
    for dy in 0..k {
        let rows = xp.narrow(2, dy, h)?;
        for dx in 0..k {
            let tap = w.as_tensor().narrow(1, dy * k + dx, 1)?.reshape((1, c, 1, 1))?;
            acc = (acc + rows.narrow(3, dx, wd)?.broadcast_mul(&tap)?)?;
        }
    }
    Ok(acc)
}

impl TrainableTop {
    /// The top of a network (`blocks` and `head`, as [`crate::backbone::EfficientNetLite0::top`] lends them)
    /// with a classifier of weights (classes × features) and biases, all at their current values.
    pub fn new(blocks: &[MbConv], head: &Pointwise, fc_weight: &[f32], fc_bias: &[f32]) -> candle_core::Result<Self> {
        let mut vars = Vec::new();
        for b in blocks {
            let (k, stride) = b.depthwise.shape();
            if stride != 1 || k % 2 == 0 {
                candle_core::bail!("fine-tuning supports stride-1 odd-kernel blocks, not k{k} s{stride}");
            }
            vars.push(BlockVars {
                expand: b.expand.as_ref().map(pointwise_vars).transpose()?,
                depthwise: depthwise_vars(&b.depthwise)?,
                k,
                project: pointwise_vars(&b.project)?,
                skip: b.skip,
            });
        }
        let classes = fc_bias.len();
        if classes == 0 || fc_weight.len() != classes * head.cout() {
            candle_core::bail!("classifier of {} weights for {classes} classes of {}", fc_weight.len(), head.cout());
        }
        let mut top = Self {
            blocks: vars,
            head: pointwise_vars(head)?,
            fc: (var(fc_weight, &[classes, head.cout()])?, var(fc_bias, &[classes])?),
            init: Vec::new(),
        };
        top.init = top.backbone_vars().iter().map(|v| v.as_tensor().copy()).collect::<candle_core::Result<_>>()?;
        Ok(top)
    }

    /// The network's variables (blocks and head conv), in a fixed order.
    fn backbone_vars(&self) -> Vec<Var> {
        let mut out = Vec::new();
        for b in &self.blocks {
            if let Some((w, bias)) = &b.expand {
                out.extend([w.clone(), bias.clone()]);
            }
            out.extend([b.depthwise.0.clone(), b.depthwise.1.clone(), b.project.0.clone(), b.project.1.clone()]);
        }
        out.extend([self.head.0.clone(), self.head.1.clone()]);
        out
    }

    /// Mean-pooled head features of block inputs (B, C, H, W): (B, features).
    pub fn features(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        let mut x = x.clone();
        for block in &self.blocks {
            let c = x.dim(1)?;
            let flat = x.reshape((b, c, h * w))?;
            let e = match &block.expand {
                Some(p) => relu6(&pointwise(&flat, p)?)?,
                None => flat.clone(),
            };
            let ce = e.dim(1)?;
            let d = relu6(&depthwise(&e.reshape((b, ce, h, w))?, &block.depthwise, block.k)?)?;
            let mut y = pointwise(&d.reshape((b, ce, h * w))?, &block.project)?;
            if block.skip {
                y = (y + flat)?;
            }
            x = y.reshape((b, y.dim(1)?, h, w))?;
        }
        let c = x.dim(1)?;
        relu6(&pointwise(&x.reshape((b, c, h * w))?, &self.head)?)?.mean(D::Minus1)
    }

    /// Classifier scores of block inputs: (B, classes).
    pub fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.features(x)?.matmul(&self.fc.0.as_tensor().t()?)?.broadcast_add(self.fc.1.as_tensor())
    }

    /// Fine-tunes on block inputs `x` (V, C, H, W) with soft targets `y` (V, classes): mean cross-entropy
    /// (softmax or per-class sigmoid) plus `lambda / 2 · ‖W_fc‖²` and the recipe's L2-SP term. Deterministic in
    /// `seed`; `progress` is told the fraction done.
    pub fn fit(
        &self,
        x: &Tensor,
        y: &Tensor,
        kind: HeadKind,
        lambda: f64,
        recipe: &FineTuneRecipe,
        seed: u64,
        progress: &dyn Fn(f64),
    ) -> candle_core::Result<()> {
        let views = x.dim(0)?;
        if views == 0 || y.dim(0)? != views {
            candle_core::bail!("{views} views for {} targets", y.dim(0)?);
        }
        let params = |lr| ParamsAdamW { lr, weight_decay: 0.0, ..Default::default() };
        let backbone = self.backbone_vars();
        let mut opt_backbone = AdamW::new(backbone.clone(), params(recipe.lr_backbone))?;
        let mut opt_head = AdamW::new(vec![self.fc.0.clone(), self.fc.1.clone()], params(recipe.lr_head))?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut order: Vec<u32> = (0..views as u32).collect();
        let batch = recipe.batch.max(1);
        let steps = recipe.epochs * views.div_ceil(batch);
        let mut done = 0;
        for _ in 0..recipe.epochs {
            order.shuffle(&mut rng);
            for chunk in order.chunks(batch) {
                let idx = Tensor::from_slice(chunk, chunk.len(), &Device::Cpu)?;
                let (xb, yb) = (x.index_select(&idx, 0)?, y.index_select(&idx, 0)?);
                let z = self.logits(&xb)?;
                let data = match kind {
                    HeadKind::Multiclass => {
                        (yb * candle_nn::ops::log_softmax(&z, D::Minus1)?)?.sum(D::Minus1)?.mean_all()?.neg()?
                    }
                    HeadKind::Multilabel => {
                        // log(1 + e^z) − t·z, computed stably as relu(z) + log(1 + e^−|z|) − t·z.
                        let soft = (z.relu()? + ((z.abs()?.neg()?.exp()? + 1.0)?.log()?))?;
                        (soft - (yb * &z)?)?.mean_all()?
                    }
                };
                let mut loss = (data + (self.fc.0.as_tensor().sqr()?.sum_all()? * (lambda / 2.0))?)?;
                for (v, v0) in backbone.iter().zip(&self.init) {
                    loss = (loss + ((v.as_tensor() - v0)?.sqr()?.sum_all()? * (recipe.alpha / 2.0))?)?;
                }
                let grads = loss.backward()?;
                opt_backbone.step(&grads)?;
                opt_head.step(&grads)?;
                done += 1;
                progress(done as f64 / steps.max(1) as f64);
            }
        }
        Ok(())
    }

    /// The trained weights as serving kernels and a classifier.
    pub fn finish(&self) -> candle_core::Result<FineTuned> {
        let vec = |v: &Var| v.as_tensor().flatten_all()?.to_vec1::<f32>();
        let pw = |(w, b): &(Var, Var), relu6: bool| -> candle_core::Result<Pointwise> {
            let cin = w.dim(1)?;
            Pointwise::new(vec(w)?, vec(b)?, cin, relu6).map_err(candle_core::Error::Msg)
        };
        let mut blocks = Vec::new();
        for b in &self.blocks {
            blocks.push(MbConv {
                expand: b.expand.as_ref().map(|p| pw(p, true)).transpose()?,
                depthwise: Depthwise::new(vec(&b.depthwise.0)?, vec(&b.depthwise.1)?, b.k, 1),
                project: pw(&b.project, false)?,
                skip: b.skip,
            });
        }
        Ok(FineTuned { blocks, head: pw(&self.head, true)?, fc_weight: vec(&self.fc.0)?, fc_bias: vec(&self.fc.1)? })
    }
}

/// A fine-tuned top, ready for the serving kernels.
pub struct FineTuned {
    /// The replaced blocks.
    pub blocks: Vec<MbConv>,
    /// The replaced head conv.
    pub head: Pointwise,
    /// Classifier weights (classes × features), row-major.
    pub fc_weight: Vec<f32>,
    /// Classifier biases.
    pub fc_bias: Vec<f32>,
}

/// Stacks per-view block inputs (each (1, C, H, W) or (n, C, H, W)) and per-view targets into the tensors
/// [`TrainableTop::fit`] takes.
pub fn stack(maps: &[Tensor], targets: &[Vec<f32>]) -> candle_core::Result<(Tensor, Tensor)> {
    let x = Tensor::cat(maps, 0)?;
    let classes = targets.first().map(Vec::len).unwrap_or(0);
    let flat: Vec<f32> = targets.iter().flatten().copied().collect();
    let y = Tensor::from_vec(flat, (targets.len(), classes), &Device::Cpu)?.to_dtype(DType::F32)?;
    Ok((x, y))
}
