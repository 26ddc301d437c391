//! Loaded models: the pretrained backbone (loaded once, on first use), an LRU cache of trained heads, and the
//! optional Segment Anything engine (loaded from `ARGUS_SAM_WEIGHTS` on first use).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use argus_vision::backbone::EfficientNetLite0;
use argus_vision::heads::classifier::LinearHead;
use argus_vision::heads::detector::DetectorHead;
use argus_vision::segmentation::sam::SamEngine;
use argus_vision::weights::Variant;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult, ErrorCode};

/// A trained iteration's model: the part trained on top of the shared backbone.
#[derive(Debug)]
pub enum Head {
    /// Image classifier.
    Classifier(LinearHead),
    /// Object detector.
    Detector(DetectorHead),
}

/// Heads kept in memory.
const HEAD_CACHE: usize = 16;

/// Where models come from and the ones already loaded.
pub struct ModelHub {
    dir: PathBuf,
    /// One slot per backbone variant (`Variant::ALL` order).
    backbones: [OnceLock<Arc<EfficientNetLite0>>; 2],
    heads: Mutex<VecDeque<(Uuid, Arc<Head>)>>,
    compute: Arc<tokio::sync::Semaphore>,
    sam_weights: Option<PathBuf>,
    sam: OnceLock<Arc<SamEngine>>,
}

impl std::fmt::Debug for ModelHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ModelHub({})", self.dir.display())
    }
}

impl ModelHub {
    /// Models under `dir` (the `--models-dir`).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Self {
            dir: dir.into(),
            backbones: [OnceLock::new(), OnceLock::new()],
            heads: Mutex::new(VecDeque::new()),
            compute: Arc::new(tokio::sync::Semaphore::new(cores)),
            sam_weights: None,
            sam: OnceLock::new(),
        }
    }

    /// Enables the Segment Anything engine with the checkpoint at `path` (loaded on first use).
    pub fn with_sam_weights(mut self, path: Option<PathBuf>) -> Self {
        self.sam_weights = path;
        self
    }

    /// Whether the SAM engine can be used: a checkpoint is configured and its header is a SAM checkpoint's. The error says what
    /// to do (it is shown to API users asking for `engine: "sam"`).
    pub fn sam_available(&self) -> Result<(), String> {
        match &self.sam_weights {
            None => Err("engine \"sam\" needs Segment Anything weights: start Argus with ARGUS_SAM_WEIGHTS (or \
                         --sam-weights) pointing at a SAM or MobileSAM safetensors checkpoint, or use \"grabcut\"."
                .into()),
            Some(_) if self.sam.get().is_some() => Ok(()),
            Some(p) => argus_vision::segmentation::sam::infer_spec(p)
                .map(drop)
                .map_err(|e| format!("engine \"sam\" is unavailable ({e}); use \"grabcut\" or fix ARGUS_SAM_WEIGHTS.")),
        }
    }

    /// The SAM engine, loading the checkpoint on first use. A failed load is not remembered, so fixing the file
    /// needs no restart. Blocking: call from a blocking thread.
    pub fn sam(&self) -> Result<Arc<SamEngine>, String> {
        if let Some(e) = self.sam.get() {
            return Ok(Arc::clone(e));
        }
        let path = self.sam_weights.as_ref().ok_or_else(|| {
            "Segment Anything is not configured: set ARGUS_SAM_WEIGHTS (or --sam-weights) to a SAM or MobileSAM \
             safetensors checkpoint, or use the default engine \"grabcut\"."
                .to_string()
        })?;
        let started = std::time::Instant::now();
        let engine = SamEngine::load(path).map_err(|e| e.to_string())?;
        tracing::info!(
            weights = %path.display(),
            encoder = %engine.model().spec().name(),
            ms = started.elapsed().as_millis() as u64,
            "Segment Anything loaded"
        );
        Ok(Arc::clone(self.sam.get_or_init(|| Arc::new(engine))))
    }

    /// A slot to run a model in: at most one inference per core at a time, so that a burst of requests
    /// queues instead of oversubscribing the CPU (each inference already uses the cores it needs).
    pub async fn compute_permit(&self) -> ApiResult<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.compute).acquire_owned().await.map_err(ApiError::internal)
    }

    /// The default backbone (EfficientNet-Lite0), loading it on first use. Missing weights are a clear error
    /// saying how to get them.
    pub fn backbone(&self) -> ApiResult<Arc<EfficientNetLite0>> {
        self.backbone_of(Variant::Lite0)
    }

    /// Whether a variant's weights are in the models directory.
    pub fn has_backbone(&self, variant: Variant) -> bool {
        self.dir.join(variant.file()).exists()
    }

    /// The backbone a training that wants `wanted` runs on: `wanted` when its weights are here, otherwise
    /// EfficientNet-Lite0 (with a warning saying how to get the others).
    pub fn trainable_backbone(&self, wanted: Variant) -> Variant {
        if wanted == Variant::Lite0 || self.has_backbone(wanted) {
            return wanted;
        }
        tracing::warn!(
            wanted = wanted.name(),
            "backbone weights missing (run `argus models pull`); training on EfficientNet-Lite0 instead"
        );
        Variant::Lite0
    }

    /// The checkpoint file of a backbone variant (a clear error when it is missing).
    pub fn weights_path(&self, variant: Variant) -> ApiResult<PathBuf> {
        let path = self.dir.join(variant.file());
        if !path.exists() {
            return Err(ApiError::new(
                ErrorCode::ErrorFeaturizationServiceUnavailable,
                format!(
                    "The pretrained {} weights are missing ({}). Run `argus models pull --models-dir {}` and retry.",
                    variant.name(),
                    path.display(),
                    self.dir.display()
                ),
            ));
        }
        Ok(path)
    }

    /// A backbone variant, loading it on first use.
    pub fn backbone_of(&self, variant: Variant) -> ApiResult<Arc<EfficientNetLite0>> {
        let slot = &self.backbones[Variant::ALL.iter().position(|v| *v == variant).unwrap_or(0)];
        if let Some(b) = slot.get() {
            return Ok(Arc::clone(b));
        }
        let path = self.weights_path(variant)?;
        let net = EfficientNetLite0::from_file(&path).map_err(|e| {
            ApiError::new(
                ErrorCode::ErrorFeaturizationInvalidFeaturizer,
                format!("{} is unreadable: {e}", path.display()),
            )
        })?;
        Ok(Arc::clone(slot.get_or_init(|| Arc::new(net))))
    }

    /// A cached head, most recently used first.
    pub fn cached_head(&self, id: Uuid) -> Option<Arc<Head>> {
        let mut cache = self.heads.lock().ok()?;
        let pos = cache.iter().position(|(k, _)| *k == id)?;
        let entry = cache.remove(pos)?;
        let head = Arc::clone(&entry.1);
        cache.push_front(entry);
        Some(head)
    }

    /// Caches a loaded head, evicting the least recently used past the cache size.
    pub fn cache_head(&self, id: Uuid, head: Arc<Head>) {
        if let Ok(mut cache) = self.heads.lock() {
            cache.retain(|(k, _)| *k != id);
            cache.push_front((id, head));
            cache.truncate(HEAD_CACHE);
        }
    }

    /// Forgets a head (its iteration was deleted).
    pub fn evict(&self, id: Uuid) {
        if let Ok(mut cache) = self.heads.lock() {
            cache.retain(|(k, _)| *k != id);
        }
    }
}
