//! Loaded models: the pretrained backbone (loaded once, on first use) and an LRU cache of trained heads.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use argus_vision::backbone::EfficientNetLite0;
use argus_vision::classifier::LinearHead;
use argus_vision::detector::DetectorHead;
use argus_vision::weights::WEIGHTS_FILE;
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
    backbone: OnceLock<Arc<EfficientNetLite0>>,
    heads: Mutex<VecDeque<(Uuid, Arc<Head>)>>,
    compute: Arc<tokio::sync::Semaphore>,
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
            backbone: OnceLock::new(),
            heads: Mutex::new(VecDeque::new()),
            compute: Arc::new(tokio::sync::Semaphore::new(cores)),
        }
    }

    /// A slot to run a model in: at most one inference per core at a time, so that a burst of requests
    /// queues instead of oversubscribing the CPU (each inference already uses the cores it needs).
    pub async fn compute_permit(&self) -> ApiResult<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.compute).acquire_owned().await.map_err(ApiError::internal)
    }

    /// The backbone, loading it on first use. Missing weights are a clear error saying how to get them.
    pub fn backbone(&self) -> ApiResult<Arc<EfficientNetLite0>> {
        if let Some(b) = self.backbone.get() {
            return Ok(Arc::clone(b));
        }
        let path = self.dir.join(WEIGHTS_FILE);
        if !path.exists() {
            return Err(ApiError::new(
                ErrorCode::ErrorFeaturizationServiceUnavailable,
                format!(
                    "The pretrained backbone weights are missing ({}). Run `argus models pull --models-dir {}` and retry.",
                    path.display(),
                    self.dir.display()
                ),
            ));
        }
        let net = EfficientNetLite0::from_file(&path).map_err(|e| {
            ApiError::new(
                ErrorCode::ErrorFeaturizationInvalidFeaturizer,
                format!("{} is unreadable: {e}", path.display()),
            )
        })?;
        Ok(Arc::clone(self.backbone.get_or_init(|| Arc::new(net))))
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
