//! EfficientNet-Lite0 (lukemelas EfficientNet-PyTorch layout, Lite variant: ReLU6, no squeeze-excite,
//! BatchNorm eps 1e-3, TensorFlow "SAME" padding) as a frozen feature extractor on candle.
//!
//! At load time every BatchNorm is folded into the convolution before it. The stem (im2col + one product),
//! the sixteen inverted-residual blocks and the head run on plain buffers in [`crate::kernels`] (products
//! through `gemm` or our own AVX-512 kernels, depthwise convolutions in a dedicated kernel with bias and ReLU6
//! fused, instead of candle's one-convolution-per-group path); candle holds the weights.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use crate::kernels::dense::Dense;
pub use crate::kernels::depthwise::Depthwise;
use crate::kernels::mbconv::{transpose, Im2colConv, MbConv, Workspace};
use crate::kernels::pointwise::Pointwise;
pub use crate::kernels::same_padding;
use rayon::prelude::*;

/// Input normalisation: `(x - 127) / 128`.
pub const INPUT_MEAN: f32 = 127.0;
/// Input normalisation scale.
pub const INPUT_SCALE: f32 = 128.0;
/// Channels of the final feature map (and of pooled features).
pub const FEATURE_DIM: usize = 1280;
const BN_EPS: f64 = 1e-3;
/// Blocks whose input has at most this many pixels (28 × 28 and smaller: from the second 5 × 5 block on) run
/// channels-last ([`MbConv::forward_nhwc`]): there the planar layout wastes vector lanes on short planes (and
/// pads every 28 × 28 plane for its depthwise convolution), while their channel counts are multiples of 16.
/// Measured when the switch moved from 14 × 14 outputs to 28 × 28 inputs: blocks 4 and 5 together 0.52 → 0.38
/// ms on two threads, 0.87 → 0.72 ms on one. Switching one block earlier still (the stride-2 block into
/// 28 × 28) lost as much in that block, whose 56 × 56 input is four times the size to transpose.
const CHANNELS_LAST_MAX_PIXELS: usize = 784;

/// Stride of the first block of each of the seven stages of every EfficientNet-Lite (the later blocks of a stage
/// have stride 1).
const STAGE_STRIDES: [usize; 7] = [1, 2, 2, 2, 1, 2, 1];

/// One block of a checkpoint: (kernel, stride, has an expansion, in, out, stage).
pub(crate) type BlockPlan = (usize, usize, bool, usize, usize, usize);

/// The blocks a checkpoint holds, as [`BlockPlan`]s: read off the weights, so one
/// loader serves Lite0 and its wider, deeper siblings. A stage starts where a block's output channels differ from
/// its input's (every stage changes the width); its first block takes the stage's stride.
pub(crate) fn block_plan(w: &Weights) -> candle_core::Result<Vec<BlockPlan>> {
    let mut plan = Vec::new();
    let mut stage: Option<usize> = None;
    let mut channels = get(w, "_conv_stem.weight")?.dim(0)?;
    for i in 0.. {
        let p = format!("_blocks.{i}");
        let Some(dw) = w.get(&format!("{p}._depthwise_conv.weight")) else { break };
        let k = dw.dim(2)?;
        let out = get(w, &format!("{p}._project_conv.weight"))?.dim(0)?;
        let expand = w.contains_key(&format!("{p}._expand_conv.weight"));
        let first = stage.is_none() || out != channels;
        if first {
            stage = Some(stage.map_or(0, |s| s + 1));
        }
        let s = stage.unwrap_or(0);
        let stride = match (first, STAGE_STRIDES.get(s)) {
            (true, Some(stride)) => *stride,
            (true, None) => candle_core::bail!("block {i} starts an eighth stage; not an EfficientNet-Lite"),
            (false, _) => 1,
        };
        plan.push((k, stride, expand, channels, out, s));
        channels = out;
    }
    if plan.is_empty() {
        candle_core::bail!("the checkpoint holds no blocks");
    }
    Ok(plan)
}

pub(crate) type Weights = HashMap<String, Tensor>;

fn get(w: &Weights, name: &str) -> candle_core::Result<Tensor> {
    w.get(name).cloned().ok_or_else(|| candle_core::Error::Msg(format!("weight {name} is missing")))
}

/// Folds BatchNorm `bn` into a convolution weight of shape (out, …): returns (weight, bias).
pub(crate) fn fold(w: &Weights, conv: &str, bn: &str) -> candle_core::Result<(Tensor, Tensor)> {
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

    /// This convolution as an [`Im2colConv`] (for the stem).
    fn im2col(&self) -> candle_core::Result<Im2colConv> {
        let (_, i, _, _) = self.weight.dims4()?;
        Im2colConv::new(
            self.weight.flatten_all()?.to_vec1()?,
            self.bias_vec.clone(),
            i,
            self.k,
            self.stride,
            self.relu6,
        )
        .map_err(candle_core::Error::Msg)
    }

    /// This convolution as a [`Pointwise`] one (it must be 1×1, stride 1).
    fn pointwise(&self) -> candle_core::Result<Pointwise> {
        let (o, i, _, _) = self.weight.dims4()?;
        if self.k != 1 || self.stride != 1 {
            candle_core::bail!("{o}×{i} convolution is {}×{} stride {}, not pointwise", self.k, self.k, self.stride);
        }
        Pointwise::new(self.weight.flatten_all()?.to_vec1()?, self.bias_vec.clone(), i, self.relu6)
            .map_err(candle_core::Error::Msg)
    }
}

thread_local! {
    /// Each thread's buffers for passes through the network, kept from pass to pass.
    static WORKSPACE: std::cell::RefCell<Workspace> = std::cell::RefCell::new(Workspace::default());
}

/// Runs `f` with this thread's [`WORKSPACE`] (or a fresh one when the thread is already inside a pass: it took
/// another batch slice while waiting).
fn with_workspace<R>(f: impl FnOnce(&mut Workspace) -> R) -> R {
    WORKSPACE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut ws) => f(&mut ws),
        Err(_) => f(&mut Workspace::default()),
    })
}

/// The EfficientNet-Lite0 network with its ImageNet classifier.
#[derive(Debug, Clone)]
pub struct EfficientNetLite0 {
    stem: Im2colConv,
    blocks: Vec<MbConv>,
    /// The block whose output is the stride-16 feature map.
    s16_block: usize,
    head: Pointwise,
    fc: Dense,
}

impl EfficientNetLite0 {
    /// Builds the network from converted weights (BatchNorm folded here).
    pub fn load(w: &Weights) -> candle_core::Result<Self> {
        let stem = ConvBn::load(w, "_conv_stem", "_bn0", 2, true)?.im2col()?;
        let mut blocks = Vec::new();
        let plan = block_plan(w)?;
        // The stride-16 map is the output of the last block before the stride-2 stage 5 (block 10 in Lite0).
        let s16_block = plan.iter().rposition(|b| b.5 < 5).unwrap_or(0);
        for (i, (k, s, expand, inp, cout, _)) in plan.into_iter().enumerate() {
            {
                let p = format!("_blocks.{i}");
                let expand_conv = if expand {
                    Some(ConvBn::load(w, &format!("{p}._expand_conv"), &format!("{p}._bn0"), 1, true)?.pointwise()?)
                } else {
                    None
                };
                let (dw, db) = fold(w, &format!("{p}._depthwise_conv"), &format!("{p}._bn1"))?;
                let depthwise = Depthwise::new(dw.flatten_all()?.to_vec1()?, db.to_vec1()?, k, s);
                let project = ConvBn::load(w, &format!("{p}._project_conv"), &format!("{p}._bn2"), 1, false)?;
                let project = project.pointwise()?;
                blocks.push(MbConv { expand: expand_conv, depthwise, project, skip: s == 1 && inp == cout });
            }
        }
        let head = ConvBn::load(w, "_conv_head", "_bn1", 1, true)?.pointwise()?;
        let fc = Dense::new(&get(w, "_fc.weight")?.flatten_all()?.to_vec1()?, get(w, "_fc.bias")?.to_vec1()?)?;
        Ok(Self { stem, blocks, s16_block, head, fc })
    }

    /// Loads converted weights from a safetensors file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, crate::weights::WeightsError> {
        let w = crate::weights::load_safetensors(path)?;
        Ok(Self::load(&w)?)
    }

    /// Feature maps at stride 16 (112 channels, after block 10) and stride 32 (1280 channels, after the head).
    pub fn feature_maps(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let mut parts = self.per_slice(x, |s| self.feature_maps_serial(s))?;
        if parts.len() == 1 {
            if let Some(maps) = parts.pop() {
                return Ok(maps);
            }
        }
        let (s16, top): (Vec<Tensor>, Vec<Tensor>) = parts.into_iter().unzip();
        Ok((Tensor::cat(&s16, 0)?, Tensor::cat(&top, 0)?))
    }

    /// `f` on slices of the batch `x`, in order.
    ///
    /// A batch is split into one slice per thread, each run through the whole network: the threads then
    /// synchronise once per batch instead of once per operation (the ops inside still share idle threads). A
    /// single image is handed to the thread pool once as a whole: called from outside it, every parallel step of
    /// the pass would otherwise wake a pool thread and put this one to sleep (some thirty round trips an image).
    /// It runs on a team of spinning threads (crate::team): a worker put to sleep between two steps of the pass
    /// costs more to wake than some steps take.
    fn per_slice<T: Send>(
        &self,
        x: &Tensor,
        f: impl Fn(&Tensor) -> candle_core::Result<T> + Sync,
    ) -> candle_core::Result<Vec<T>> {
        let n = x.dim(0)?;
        let threads = rayon::current_num_threads();
        if n >= 2 && threads >= 2 {
            let per = n.div_ceil(threads);
            return (0..n.div_ceil(per))
                .into_par_iter()
                .map(|i| f(&x.narrow(0, i * per, per.min(n - i * per))?))
                .collect();
        }
        Ok(vec![rayon::scope(|_| crate::kernels::team::with_team(|| f(x)))?])
    }

    /// Both feature maps of one slice of a batch, inside its pass.
    fn feature_maps_serial(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let (mut s16, mut top) = (Vec::new(), Vec::new());
        for t in self.tops_serial(x, TopAs::Maps)? {
            if let Top::Maps(a, b) = t {
                s16.push(a);
                top.push(b);
            }
        }
        Ok((Tensor::cat(&s16, 0)?, Tensor::cat(&top, 0)?))
    }

    /// The top feature map's global mean and global maximum, (N, 1280) each, for one slice of a batch inside
    /// its pass.
    fn pooled_serial(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let (mut means, mut maxes) = (Vec::new(), Vec::new());
        for t in self.tops_serial(x, TopAs::Pooled)? {
            if let Top::Pooled(mean, max) = t {
                means.extend(mean);
                maxes.extend(max);
            }
        }
        let c = self.head.cout();
        let n = means.len() / c;
        Ok((Tensor::from_vec(means, (n, c), &Device::Cpu)?, Tensor::from_vec(maxes, (n, c), &Device::Cpu)?))
    }

    /// What each image of one slice of a batch leaves at the top of the network, as `top_as` asks.
    fn tops_serial(&self, x: &Tensor, top_as: TopAs) -> candle_core::Result<Vec<Top>> {
        let (n, c, h, w) = x.dims4()?;
        let data = x.flatten_all()?.to_vec1::<f32>()?;
        let mut tops = Vec::with_capacity(n);
        let pass = |ws: &mut Workspace| -> candle_core::Result<()> {
            for image in data.chunks(c * h * w) {
                let (sh, sw) = self.stem.forward_into(image, h, w, ws);
                tops.push(self.run_blocks(ws, self.stem.cout(), sh, sw, top_as, None)?);
            }
            Ok(())
        };
        with_workspace(pass)?;
        Ok(tops)
    }

    /// The blocks and the head on one image's stem output (`c` planes of h × w): the stride-16 and stride-32
    /// feature maps as (1, C, H, W) tensors, or the stride-32 map's pooled values, as `top_as` asks. `times`
    /// collects each stage's wall time.
    fn run_blocks(
        &self,
        ws: &mut Workspace,
        c: usize,
        h: usize,
        w: usize,
        top_as: TopAs,
        mut times: Option<&mut Vec<(String, f64)>>,
    ) -> candle_core::Result<Top> {
        let (mut c, mut h, mut w) = (c, h, w);
        let mut s16 = None;
        // Channels-planar while planes are large; channels-last from the first block whose input is small.
        let mut channels_last = false;
        for (i, b) in self.blocks.iter().enumerate() {
            let t = std::time::Instant::now();
            if !channels_last && h * w <= CHANNELS_LAST_MAX_PIXELS {
                channels_last = true;
                ws.make_channels_last(c, h * w);
            }
            (h, w) = b.forward_into(h, w, channels_last, ws);
            c = b.project.cout();
            if let Some(times) = times.as_deref_mut() {
                times.push((format!("block {i}"), t.elapsed().as_secs_f64() * 1e3));
            }
            if i == self.s16_block && top_as == TopAs::Maps {
                let y = &ws.cur[..c * h * w];
                s16 = Some((if channels_last { transpose(y, h * w, c) } else { y.to_vec() }, c, h, w));
            }
        }
        let t = std::time::Instant::now();
        let data = &ws.cur[..c * h * w];
        let p = h * w;
        let top = match top_as {
            // Wanted planar: after a channels-last product (on 7 × 7 planes the planar one leaves a quarter of its
            // 64-pixel tiles empty), the 1280 channels go back to planes.
            TopAs::Maps => {
                let planes = if channels_last {
                    self.head.forward_nhwc_to_planes(data, p)
                } else {
                    self.head.forward(data, p, None)
                };
                let tensor =
                    |(d, c, h, w): (Vec<f32>, usize, usize, usize)| Tensor::from_vec(d, (1, c, h, w), &Device::Cpu);
                let top = (planes, self.head.cout(), h, w);
                let s16 = s16.unwrap_or_else(|| top.clone());
                Top::Maps(tensor(s16)?, tensor(top)?)
            }
            TopAs::Pooled if channels_last => {
                let (mean, max) = self.head.forward_nhwc_pooled(data, p);
                Top::Pooled(mean, max)
            }
            TopAs::Pooled => {
                // Planes (an input so large that the head's is over 28 × 28): each plane is a column of its
                // transpose.
                let planes = transpose(&self.head.forward(data, p, None), self.head.cout(), p);
                let (mut mean, mut max) = (vec![0f32; self.head.cout()], vec![0f32; self.head.cout()]);
                crate::kernels::pointwise::pool_rows(&planes, &mut mean, &mut max);
                Top::Pooled(mean, max)
            }
        };
        if let Some(times) = times {
            times.push(("head".to_string(), t.elapsed().as_secs_f64() * 1e3));
        }
        Ok(top)
    }

    /// Wall time of each stage for one input, in milliseconds: stem, the 16 blocks, head (with the pooling) and
    /// the ImageNet classifier (profiling aid).
    pub fn stage_times(&self, x: &Tensor) -> candle_core::Result<Vec<(String, f64)>> {
        let mut out = Vec::new();
        let t = std::time::Instant::now();
        let (_, _, h, w) = x.dims4()?;
        let image = x.narrow(0, 0, 1)?.flatten_all()?.to_vec1::<f32>()?;
        let ms = |t: std::time::Instant| t.elapsed().as_secs_f64() * 1e3;
        // Inside the pool and on a team, as a real pass runs.
        rayon::scope(|_| {
            crate::kernels::team::with_team(|| {
                let top = with_workspace(|ws| {
                    let (sh, sw) = self.stem.forward_into(&image, h, w, ws);
                    out.push(("stem".to_string(), ms(t)));
                    self.run_blocks(ws, self.stem.cout(), sh, sw, TopAs::Pooled, Some(&mut out))
                })?;
                if let Top::Pooled(mean, _) = top {
                    let t = std::time::Instant::now();
                    let n = mean.len();
                    self.fc.forward(&Tensor::from_vec(mean, (1, n), &Device::Cpu)?)?;
                    out.push(("classifier".to_string(), ms(t)));
                }
                Ok::<_, candle_core::Error>(())
            })
        })?;
        Ok(out)
    }

    /// Globally average-pooled features, (N, 1280).
    pub fn pooled(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let parts = self.per_slice(x, |s| Ok(self.pooled_serial(s)?.0))?;
        Tensor::cat(&parts, 0)
    }

    /// Global average and global maximum of the top feature map side by side, (N, 2 × 1280).
    pub fn pooled_mean_max(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let parts = self.per_slice(x, |s| {
            let (mean, max) = self.pooled_serial(s)?;
            Tensor::cat(&[mean, max], 1)
        })?;
        Tensor::cat(&parts, 0)
    }

    /// ImageNet-1k logits, (N, 1000).
    pub fn imagenet_logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        // The classifier runs inside each slice's pass: on its team of threads for a single image.
        let parts = self.per_slice(x, |s| self.fc.forward(&self.pooled_serial(s)?.0))?;
        Tensor::cat(&parts, 0)
    }
}

/// What a pass keeps of the top of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TopAs {
    /// The stride-16 and stride-32 feature maps (detection, region proposals).
    Maps,
    /// The stride-32 map's global mean and maximum per channel (classification).
    Pooled,
}

/// What a pass left at the top of the network for one image.
enum Top {
    /// The stride-16 and stride-32 feature maps, (1, C, H, W) each.
    Maps(Tensor, Tensor),
    /// The stride-32 map's mean and maximum per channel.
    Pooled(Vec<f32>, Vec<f32>),
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
