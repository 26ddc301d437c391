//! Segment Anything (SAM ViT-B/L/H and MobileSAM's TinyViT) on candle, for user-supplied weights.
//!
//! The image encoder, prompt encoder and mask decoder are candle-transformers' implementations; this module
//! composes them itself so that box prompts work: candle's prompt encoder returns a box's two corner
//! embeddings concatenated as `(1, 512)` (candle issue #1349), which we reshape to the `(1, 2, 256)` tokens the
//! decoder expects, and point tokens are taken without the padding token whenever a box is present (as in the
//! reference implementation). Masks are upsampled bilinearly from the decoder's 256×256 logits (1024 frame →
//! crop → target size, as SAM's `postprocess_masks` does). Image embeddings are expensive on a CPU (seconds), so
//! [`SamEngine`] keeps the most recent ones in an LRU cache keyed by the image's content hash: a second prompt on
//! the same image only runs the decoder.
//!
//! The checkpoint is a safetensors file with the official state-dict names (`image_encoder.*`,
//! `prompt_encoder.*`, `mask_decoder.*`); the encoder kind and its shape (ViT width, depth, heads, global
//! attention blocks) are read from the tensors, so ViT-B, ViT-L, ViT-H and MobileSAM load with no flag.

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::segment_anything::image_encoder::ImageEncoderViT;
use candle_transformers::models::segment_anything::mask_decoder::MaskDecoder;
use candle_transformers::models::segment_anything::prompt_encoder::PromptEncoder;
use candle_transformers::models::segment_anything::tiny_vit::{tiny_vit_5m, TinyViT};
use image::{imageops, GrayImage, RgbImage};
use lru::LruCache;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::segmentation::segment::{PromptBox, PromptPoint};

/// Side of SAM's square input frame (the image is resized so its longest side is this, then padded).
pub const IMAGE_SIZE: usize = 1024;
/// Side of the decoder's low-resolution mask logits.
pub const LOW_RES: usize = 256;
const PATCH: usize = 16;
const PROMPT_DIM: usize = 256;
const WINDOW: usize = 14;
/// Image embeddings kept in the cache (each is 256×64×64 floats, 4 MiB).
pub const EMBEDDING_CACHE: usize = 16;
const PIXEL_MEAN: [f32; 3] = [123.675, 116.28, 103.53];
const PIXEL_STD: [f32; 3] = [58.395, 57.12, 57.375];

/// A SAM failure: unreadable or incomplete weights, or a tensor error while running.
#[derive(Debug, thiserror::Error)]
pub enum SamError {
    /// The weights file is missing, unreadable or not a SAM checkpoint.
    #[error("SAM weights {path}: {message}")]
    Weights {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The image could not be decoded.
    #[error("{0}")]
    Image(String),
    /// A tensor operation failed.
    #[error("SAM inference failed: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// The image encoder's architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncoderSpec {
    /// The original ViT encoder (SAM ViT-B / L / H, or a smaller one built for tests).
    Vit {
        /// Token width (768 for ViT-B).
        embed_dim: usize,
        /// Number of transformer blocks.
        depth: usize,
        /// Attention heads.
        heads: usize,
        /// Blocks with global (not windowed) attention.
        global_attention: Vec<usize>,
    },
    /// MobileSAM's TinyViT-5M encoder.
    TinyVit,
}

impl EncoderSpec {
    /// SAM ViT-B (`sam_vit_b_01ec64`).
    pub fn vit_b() -> Self {
        Self::Vit { embed_dim: 768, depth: 12, heads: 12, global_attention: vec![2, 5, 8, 11] }
    }

    /// A short human name: "ViT-B", "ViT-L", "ViT-H", "MobileSAM (TinyViT)" or "ViT-{width}x{depth}".
    pub fn name(&self) -> String {
        match self {
            Self::TinyVit => "MobileSAM (TinyViT)".into(),
            Self::Vit { embed_dim: 768, depth: 12, .. } => "ViT-B".into(),
            Self::Vit { embed_dim: 1024, depth: 24, .. } => "ViT-L".into(),
            Self::Vit { embed_dim: 1280, depth: 32, .. } => "ViT-H".into(),
            Self::Vit { embed_dim, depth, .. } => format!("ViT-{embed_dim}x{depth}"),
        }
    }
}

enum Encoder {
    Vit(Box<ImageEncoderViT>),
    Tiny(Box<TinyViT>),
}

impl Encoder {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Vit(e) => e.forward(xs),
            Self::Tiny(e) => e.forward(xs),
        }
    }
}

/// The three SAM networks, composed for point and box prompts.
pub struct SamModel {
    encoder: Encoder,
    prompt: PromptEncoder,
    decoder: MaskDecoder,
    dense_pe: Tensor,
    spec: EncoderSpec,
}

impl std::fmt::Debug for SamModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamModel").field("encoder", &self.spec.name()).finish()
    }
}

/// One image's embedding plus the geometry needed to map prompts and masks.
#[derive(Debug)]
pub struct ImageEmbedding {
    embedding: Tensor,
    /// Width and height of the original image.
    pub original: (u32, u32),
    /// Width and height after resizing the longest side to [`IMAGE_SIZE`].
    pub resized: (u32, u32),
}

impl ImageEmbedding {
    /// The embedding as safetensors bytes (the encoder output and the image sizes), for a cache shared by
    /// processes: an embedding computed on one worker serves prompts on every other.
    pub fn to_bytes(&self) -> Result<Vec<u8>, SamError> {
        let sizes = Tensor::new(&[self.original.0, self.original.1, self.resized.0, self.resized.1], &Device::Cpu)?;
        let tensors = [("embedding".to_string(), self.embedding.clone()), ("sizes".to_string(), sizes)];
        Ok(crate::heads::classifier::safetensors_bytes(&tensors)?)
    }

    /// Reads what [`ImageEmbedding::to_bytes`] wrote; anything else is an error (the caller recomputes).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SamError> {
        let mut t = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)?;
        let (Some(embedding), Some(sizes)) = (t.remove("embedding"), t.remove("sizes")) else {
            return Err(SamError::Tensor(candle_core::Error::Msg("not a stored SAM embedding".into())));
        };
        let sizes = sizes.to_vec1::<u32>()?;
        if sizes.len() != 4 || embedding.dims() != [1, PROMPT_DIM, IMAGE_SIZE / PATCH, IMAGE_SIZE / PATCH] {
            return Err(SamError::Tensor(candle_core::Error::Msg("a stored SAM embedding of the wrong shape".into())));
        }
        Ok(Self { embedding, original: (sizes[0], sizes[1]), resized: (sizes[2], sizes[3]) })
    }
}

/// A decoded mask: low-resolution logits, SAM's predicted IoU and where the image sits in the frame.
#[derive(Debug, Clone)]
pub struct SamMask {
    logits: Tensor,
    /// SAM's predicted IoU of the chosen mask, clamped to [0, 1].
    pub score: f32,
    /// Original image size.
    pub original: (u32, u32),
    /// Resized image size inside the 1024 frame.
    pub resized: (u32, u32),
    /// Whether the image embedding came from the cache.
    pub cached_embedding: bool,
}

impl SamMask {
    /// The binary mask at `width`×`height` (255 = object): the logits are upsampled bilinearly to the 1024
    /// frame, cropped to the image and resized bilinearly to the target, then thresholded at 0.
    pub fn mask(&self, width: u32, height: u32) -> Result<GrayImage, SamError> {
        let (rw, rh) = (self.resized.0 as usize, self.resized.1 as usize);
        let frame = self.logits.upsample_bilinear2d(IMAGE_SIZE, IMAGE_SIZE, false)?;
        let cropped = frame.i((.., .., ..rh, ..rw))?.contiguous()?;
        let out = if (width as usize, height as usize) == (rw, rh) {
            cropped
        } else {
            cropped.upsample_bilinear2d(height as usize, width as usize, false)?
        };
        let values = out.flatten_all()?.to_vec1::<f32>()?;
        let pixels: Vec<u8> = values.iter().map(|&v| if v > 0.0 { 255 } else { 0 }).collect();
        GrayImage::from_raw(width, height, pixels).ok_or_else(|| {
            SamError::Tensor(candle_core::Error::Msg(format!("mask of {} values for {width}x{height}", values.len())))
        })
    }

    /// The mask at the resized (longest side 1024) resolution — what polygons are traced on.
    pub fn working_mask(&self) -> Result<GrayImage, SamError> {
        self.mask(self.resized.0, self.resized.1)
    }
}

fn weights_error(path: &Path, message: impl Into<String>) -> SamError {
    SamError::Weights { path: path.display().to_string(), message: message.into() }
}

/// Reads the encoder's architecture from the tensors' names and shapes.
pub fn infer_spec(path: &Path) -> Result<EncoderSpec, SamError> {
    // SAFETY: read-only memory map of a weights file nobody writes while Argus runs; only the header is read.
    let file = unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }
        .map_err(|e| weights_error(path, e.to_string()))?;
    let shapes: std::collections::HashMap<String, Vec<usize>> =
        file.tensors().into_iter().map(|(name, view)| (name, view.shape().to_vec())).collect();
    let names: Vec<&String> = shapes.keys().collect();
    let shape = |name: &str| shapes.get(name).cloned();
    for part in ["image_encoder.", "prompt_encoder.", "mask_decoder."] {
        if !names.iter().any(|n| n.starts_with(part)) {
            return Err(weights_error(path, format!("no {part}* tensors: not a Segment Anything checkpoint")));
        }
    }
    if names.iter().any(|n| n.starts_with("image_encoder.layers.")) {
        return Ok(EncoderSpec::TinyVit);
    }
    let embed_dim = shape("image_encoder.patch_embed.proj.weight")
        .and_then(|s| s.first().copied())
        .ok_or_else(|| weights_error(path, "image_encoder.patch_embed.proj.weight is missing"))?;
    let depth =
        (0..).take_while(|i| names.iter().any(|n| n.starts_with(&format!("image_encoder.blocks.{i}.")))).count();
    if depth == 0 {
        return Err(weights_error(path, "the ViT encoder has no blocks"));
    }
    let grid = IMAGE_SIZE / PATCH;
    let mut heads = 0;
    let mut global_attention = Vec::new();
    for i in 0..depth {
        let rel = shape(&format!("image_encoder.blocks.{i}.attn.rel_pos_h"))
            .ok_or_else(|| weights_error(path, format!("image_encoder.blocks.{i}.attn.rel_pos_h is missing")))?;
        let (rows, head_dim) = match rel.as_slice() {
            [r, d] if *d > 0 && embed_dim % d == 0 => (*r, *d),
            _ => return Err(weights_error(path, format!("block {i}: unexpected rel_pos_h shape {rel:?}"))),
        };
        heads = embed_dim / head_dim;
        if rows == 2 * grid - 1 {
            global_attention.push(i);
        } else if rows != 2 * WINDOW - 1 {
            return Err(weights_error(path, format!("block {i}: rel_pos_h has {rows} rows")));
        }
    }
    Ok(EncoderSpec::Vit { embed_dim, depth, heads, global_attention })
}

impl SamModel {
    /// Loads a checkpoint, reading its architecture from the tensors.
    pub fn load(path: &Path) -> Result<Self, SamError> {
        let spec = infer_spec(path)?;
        // SAFETY: the file is memory-mapped read-only; Argus never writes to a weights file while serving.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, &Device::Cpu) }
            .map_err(|e| weights_error(path, e.to_string()))?;
        Self::build(&spec, vb).map_err(|e| weights_error(path, e.to_string()))
    }

    fn build(spec: &EncoderSpec, vb: VarBuilder) -> candle_core::Result<Self> {
        let grid = IMAGE_SIZE / PATCH;
        let encoder = match spec {
            EncoderSpec::Vit { embed_dim, depth, heads, global_attention } => {
                Encoder::Vit(Box::new(ImageEncoderViT::new(
                    IMAGE_SIZE,
                    PATCH,
                    3,
                    *embed_dim,
                    *depth,
                    *heads,
                    PROMPT_DIM,
                    true,
                    true,
                    true,
                    WINDOW,
                    global_attention,
                    vb.pp("image_encoder"),
                )?))
            }
            EncoderSpec::TinyVit => Encoder::Tiny(Box::new(tiny_vit_5m(vb.pp("image_encoder"))?)),
        };
        let prompt =
            PromptEncoder::new(PROMPT_DIM, (grid, grid), (IMAGE_SIZE, IMAGE_SIZE), 16, vb.pp("prompt_encoder"))?;
        let decoder = MaskDecoder::new(PROMPT_DIM, 3, 3, 256, vb.pp("mask_decoder"))?;
        let dense_pe = prompt.get_dense_pe()?;
        Ok(Self { encoder, prompt, decoder, dense_pe, spec: spec.clone() })
    }

    /// The encoder's architecture.
    pub fn spec(&self) -> &EncoderSpec {
        &self.spec
    }

    /// Runs the image encoder (the expensive part: seconds on a CPU for ViT-B).
    pub fn embed(&self, image: &RgbImage) -> Result<ImageEmbedding, SamError> {
        let (w, h) = image.dimensions();
        let scale = IMAGE_SIZE as f64 / f64::from(w.max(h).max(1));
        let rw = ((f64::from(w) * scale).round() as u32).clamp(1, IMAGE_SIZE as u32);
        let rh = ((f64::from(h) * scale).round() as u32).clamp(1, IMAGE_SIZE as u32);
        let resized = imageops::resize(image, rw, rh, imageops::FilterType::Triangle);
        let (rwu, rhu) = (rw as usize, rh as usize);
        let mut planes = vec![0f32; 3 * IMAGE_SIZE * IMAGE_SIZE];
        for (x, y, p) in resized.enumerate_pixels() {
            let (x, y) = (x as usize, y as usize);
            for c in 0..3 {
                planes[c * IMAGE_SIZE * IMAGE_SIZE + y * IMAGE_SIZE + x] =
                    (f32::from(p.0[c]) - PIXEL_MEAN[c]) / PIXEL_STD[c];
            }
        }
        debug_assert!(rwu <= IMAGE_SIZE && rhu <= IMAGE_SIZE);
        let input = Tensor::from_vec(planes, (1, 3, IMAGE_SIZE, IMAGE_SIZE), &Device::Cpu)?;
        let embedding = self.encoder.forward(&input)?;
        Ok(ImageEmbedding { embedding, original: (w, h), resized: (rw, rh) })
    }

    /// Runs the prompt encoder and mask decoder for points and/or a box (relative coordinates). A single point
    /// with no box is ambiguous, so SAM's three candidate masks are decoded and the one with the highest
    /// predicted IoU is kept; otherwise the single-mask output is used.
    pub fn decode(
        &self,
        emb: &ImageEmbedding,
        points: &[PromptPoint],
        bbox: Option<PromptBox>,
    ) -> Result<SamMask, SamError> {
        let dev = &Device::Cpu;
        let (rw, rh) = (f64::from(emb.resized.0), f64::from(emb.resized.1));
        let boxes = match bbox {
            Some(b) => Some(Tensor::from_vec(
                vec![
                    (f64::from(b.x_min) * rw) as f32,
                    (f64::from(b.y_min) * rh) as f32,
                    (f64::from(b.x_max) * rw) as f32,
                    (f64::from(b.y_max) * rh) as f32,
                ],
                (1, 4),
                dev,
            )?),
            None => None,
        };
        let mut sparse = Vec::new();
        if !points.is_empty() {
            let n = points.len();
            let xy: Vec<f32> =
                points.iter().flat_map(|p| [(f64::from(p.x) * rw) as f32, (f64::from(p.y) * rh) as f32]).collect();
            let labels: Vec<f32> = points.iter().map(|p| if p.foreground { 1.0 } else { 0.0 }).collect();
            let xy = Tensor::from_vec(xy, (1, n, 2), dev)?;
            let labels = Tensor::from_vec(labels, (1, n), dev)?;
            // candle pads the points with a "not a point" token when called without a box; the reference
            // implementation omits it when a box follows, so keep only the first n tokens in that case.
            let (tokens, _) = self.prompt.forward(Some((&xy, &labels)), None, None)?;
            sparse.push(if boxes.is_some() { tokens.narrow(1, 0, n)? } else { tokens });
        }
        if let Some(b) = &boxes {
            let (tokens, _) = self.prompt.forward(None, Some(b), None)?;
            // candle issue #1349: the two corner embeddings come back concatenated as (1, 512).
            sparse.push(tokens.reshape((1, 2, PROMPT_DIM))?);
        }
        let sparse = Tensor::cat(&sparse, 1)?;
        let (_, dense) = self.prompt.forward(None, None, None)?;
        let multimask = points.len() == 1 && bbox.is_none();
        let (masks, iou) = self.decoder.forward(&emb.embedding, &self.dense_pe, &sparse, &dense, multimask)?;
        let iou = iou.flatten_all()?.to_vec1::<f32>()?;
        let best = iou
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .ok_or_else(|| SamError::Tensor(candle_core::Error::Msg("the decoder returned no mask".into())))?;
        let logits = masks.i((.., best..best + 1))?.contiguous()?;
        let score = if iou[best].is_finite() { iou[best].clamp(0.0, 1.0) } else { 0.0 };
        Ok(SamMask { logits, score, original: emb.original, resized: emb.resized, cached_embedding: false })
    }
}

/// A loaded SAM model with its image-embedding cache; shared by every segmentation worker.
pub struct SamEngine {
    model: SamModel,
    cache: Mutex<LruCache<[u8; 32], Arc<ImageEmbedding>>>,
    encoding: Mutex<()>,
    fingerprint: String,
}

impl std::fmt::Debug for SamEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamEngine").field("model", &self.model).finish()
    }
}

impl SamEngine {
    /// Loads the checkpoint at `path`.
    pub fn load(path: &Path) -> Result<Self, SamError> {
        let model = SamModel::load(path)?;
        let fingerprint = checkpoint_fingerprint(path)
            .map_err(|e| SamError::Weights { path: path.display().to_string(), message: e.to_string() })?;
        Ok(Self { fingerprint, ..Self::new(model) })
    }

    /// Wraps a model with an empty cache.
    pub fn new(model: SamModel) -> Self {
        let size = NonZeroUsize::new(EMBEDDING_CACHE).unwrap_or(NonZeroUsize::MIN);
        let fingerprint = format!("unsaved-{}", model.spec().name());
        Self { model, cache: Mutex::new(LruCache::new(size)), encoding: Mutex::new(()), fingerprint }
    }

    /// Names the checkpoint (its size and the SHA-256 of its first MiB, in hex): embeddings are only shared
    /// between processes that run the same weights.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The model.
    pub fn model(&self) -> &SamModel {
        &self.model
    }

    /// The embedding of the image whose content hash is `key`, when it is in this process's cache.
    pub fn cached(&self, key: &[u8; 32]) -> Option<Arc<ImageEmbedding>> {
        self.cache.lock().ok()?.get(key).cloned()
    }

    /// Puts an embedding computed elsewhere (read from a shared cache) into this process's cache.
    pub fn remember(&self, key: [u8; 32], embedding: ImageEmbedding) {
        if let Ok(mut c) = self.cache.lock() {
            c.put(key, Arc::new(embedding));
        }
    }

    /// Segments the image whose content hash is `key`. The embedding comes from the cache when this image
    /// was seen recently; otherwise `image` is called to decode it and the encoder runs (one encoding at a
    /// time: the encoder already uses every core, and two prompts on a new image then share one encoding).
    pub fn segment(
        &self,
        key: [u8; 32],
        image: impl FnOnce() -> Result<RgbImage, String>,
        points: &[PromptPoint],
        bbox: Option<PromptBox>,
    ) -> Result<SamMask, SamError> {
        let (emb, cached) = match self.cached(&key) {
            Some(e) => (e, true),
            None => {
                let _turn = self.encoding.lock().unwrap_or_else(|p| p.into_inner());
                match self.cached(&key) {
                    Some(e) => (e, true),
                    None => {
                        let rgb = image().map_err(SamError::Image)?;
                        let e = Arc::new(self.model.embed(&rgb)?);
                        if let Ok(mut c) = self.cache.lock() {
                            c.put(key, e.clone());
                        }
                        (e, false)
                    }
                }
            }
        };
        let mut mask = self.model.decode(&emb, points, bbox)?;
        mask.cached_embedding = cached;
        Ok(mask)
    }
}

/// The size of a checkpoint file and the SHA-256 of its first MiB: cheap to compute on a multi-GB file and
/// different for any two real checkpoints.
fn checkpoint_fingerprint(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut head = Vec::with_capacity(1 << 20);
    file.take(1 << 20).read_to_end(&mut head)?;
    let digest = sha2::Sha256::digest(&head);
    Ok(format!("{len}-{}", digest.iter().take(16).map(|b| format!("{b:02x}")).collect::<String>()))
}

/// Writes a SAM checkpoint of the given architecture with random weights (scaled like a trained network's:
/// norm scales 1, biases 0, matrices N(0, 1/fan_in)). There are no SAM weights to download here, so tests use a
/// small one to exercise the whole path, and the benchmark times ViT-B's real shapes with it — timing does not
/// depend on the values; masks from random weights mean nothing.
pub fn write_random_checkpoint(spec: &EncoderSpec, path: &Path, seed: u64) -> Result<(), SamError> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    SamModel::build(spec, vb)?;
    let dev = Device::Cpu;
    let mut rng = StdRng::seed_from_u64(seed);
    {
        let vars = varmap.data().lock().map_err(|_| candle_core::Error::Msg("the var map is poisoned".into()))?;
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        for name in names {
            let var = &vars[name];
            let dims = var.dims().to_vec();
            let value = if name.ends_with("running_var") || (dims.len() == 1 && name.ends_with("weight")) {
                Tensor::ones(dims.as_slice(), DType::F32, &dev)?
            } else if dims.len() == 1 {
                Tensor::zeros(dims.as_slice(), DType::F32, &dev)?
            } else {
                let fan_in: usize = dims.iter().skip(1).product::<usize>().max(1);
                let std = if name.contains("pos") { 0.02 } else { 1.0 / (fan_in as f64).sqrt() };
                let n: usize = dims.iter().product();
                // Box–Muller: two uniforms → one standard normal.
                let values: Vec<f32> = (0..n)
                    .map(|_| {
                        let (u1, u2): (f64, f64) = (rng.gen_range(f64::EPSILON..1.0), rng.gen());
                        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * std) as f32
                    })
                    .collect();
                Tensor::from_vec(values, dims.as_slice(), &dev)?
            };
            var.set(&value)?;
        }
    }
    varmap.save(path).map_err(|e| weights_error(path, e.to_string()))
}

/// The share of a binary mask's pixels that are object (value > 127).
pub fn foreground_share(mask: &GrayImage) -> f64 {
    let on = mask.pixels().filter(|p| p.0[0] > 127).count();
    on as f64 / f64::from((mask.width() * mask.height()).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_spec() -> EncoderSpec {
        EncoderSpec::Vit { embed_dim: 32, depth: 2, heads: 2, global_attention: vec![1] }
    }

    fn photo() -> RgbImage {
        RgbImage::from_fn(300, 200, |x, y| {
            if (x as i32 - 150).pow(2) + (y as i32 - 100).pow(2) < 60 * 60 {
                image::Rgb([220, 40, 30])
            } else {
                image::Rgb([(x % 256) as u8, 90, (y % 256) as u8])
            }
        })
    }

    #[test]
    fn a_random_checkpoint_loads_with_its_shape_read_from_the_tensors_and_segments() {
        let dir = std::env::temp_dir().join(format!("argus-sam-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sam-small.safetensors");
        write_random_checkpoint(&small_spec(), &path, 7).unwrap();
        assert_eq!(infer_spec(&path).unwrap(), small_spec());
        let engine = SamEngine::load(&path).unwrap();
        let img = photo();
        let key = [1u8; 32];
        let point = PromptPoint { x: 0.5, y: 0.5, foreground: true };
        let bbox = PromptBox { x_min: 0.2, y_min: 0.1, x_max: 0.8, y_max: 0.9 };
        let first = engine.segment(key, || Ok(img.clone()), &[point], None).unwrap();
        assert!(!first.cached_embedding);
        assert_eq!(first.resized, (1024, 683));
        // The second prompt on the same image reuses the embedding and never decodes the image again.
        let boxed =
            engine.segment(key, || panic!("the embedding should come from the cache"), &[], Some(bbox)).unwrap();
        assert!(boxed.cached_embedding);
        let both = engine
            .segment(key, || panic!("cached"), &[point, PromptPoint { x: 0.1, y: 0.1, foreground: false }], Some(bbox))
            .unwrap();
        for m in [&first, &boxed, &both] {
            assert!((0.0..=1.0).contains(&m.score));
            let full = m.mask(300, 200).unwrap();
            assert_eq!(full.dimensions(), (300, 200));
            assert_eq!(m.working_mask().unwrap().dimensions(), (1024, 683));
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn an_embedding_stored_as_bytes_serves_another_process_with_the_same_mask() {
        let dir = std::env::temp_dir().join(format!("argus-sam-shared-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sam-small.safetensors");
        write_random_checkpoint(&small_spec(), &path, 9).unwrap();
        let (here, there) = (SamEngine::load(&path).unwrap(), SamEngine::load(&path).unwrap());
        let key = [3u8; 32];
        let point = [PromptPoint { x: 0.4, y: 0.6, foreground: true }];
        let computed = here.segment(key, || Ok(photo()), &point, None).unwrap();
        let bytes = here.cached(&key).unwrap().to_bytes().unwrap();
        there.remember(key, ImageEmbedding::from_bytes(&bytes).unwrap());
        let reused = there.segment(key, || panic!("the stored embedding should serve"), &point, None).unwrap();
        assert!(reused.cached_embedding);
        assert_eq!((reused.original, reused.resized), (computed.original, computed.resized));
        assert_eq!(reused.working_mask().unwrap(), computed.working_mask().unwrap());
        assert!(ImageEmbedding::from_bytes(b"not safetensors").is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn files_that_are_not_sam_checkpoints_are_refused_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("argus-sam-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("nope.safetensors");
        let err = SamEngine::load(&missing).unwrap_err().to_string();
        assert!(err.contains("nope.safetensors"), "{err}");
        let other = dir.join("other.safetensors");
        let t = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
        candle_core::safetensors::save(&std::collections::HashMap::from([("w".to_string(), t)]), &other).unwrap();
        let err = SamEngine::load(&other).unwrap_err().to_string();
        assert!(err.contains("not a Segment Anything checkpoint"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn upsampling_is_bilinear_and_crops_the_padding() {
        // Logits positive on the left half of the 1024 frame; the image fills the top 512 rows.
        let mut v = vec![-5f32; LOW_RES * LOW_RES];
        for y in 0..LOW_RES {
            for x in 0..LOW_RES / 2 {
                v[y * LOW_RES + x] = 5.0;
            }
        }
        let logits = Tensor::from_vec(v, (1, 1, LOW_RES, LOW_RES), &Device::Cpu).unwrap();
        let m = SamMask { logits, score: 0.5, original: (200, 100), resized: (1024, 512), cached_embedding: false };
        let mask = m.mask(200, 100).unwrap();
        assert!((foreground_share(&mask) - 0.5).abs() < 0.02);
        assert_eq!(mask.get_pixel(10, 50).0[0], 255);
        assert_eq!(mask.get_pixel(190, 50).0[0], 0);
    }
}
