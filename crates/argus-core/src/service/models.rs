//! Models in memory: the compute engine, an LRU cache of loaded iteration models, and the permits that keep a
//! burst of predictions from oversubscribing the CPU.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::compute::{Compute, LoadedModel};
use crate::error::{ApiError, ApiResult};

/// Loaded models kept in memory.
const MODEL_CACHE: usize = 16;

/// The engine and the models already loaded on it.
pub struct ModelHub {
    engine: Arc<dyn Compute>,
    loaded: Mutex<VecDeque<(Uuid, Arc<dyn LoadedModel>)>>,
    permits: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for ModelHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ModelHub")
    }
}

impl ModelHub {
    /// Models run on `engine`, at most one inference per core at a time.
    pub fn new(engine: Arc<dyn Compute>) -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Self { engine, loaded: Mutex::new(VecDeque::new()), permits: Arc::new(tokio::sync::Semaphore::new(cores)) }
    }

    /// The compute engine.
    pub fn engine(&self) -> Arc<dyn Compute> {
        Arc::clone(&self.engine)
    }

    /// A slot to run a model in: at most one inference per core at a time, so that a burst of requests
    /// queues instead of oversubscribing the CPU (each inference already uses the cores it needs).
    pub async fn compute_permit(&self) -> ApiResult<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.permits).acquire_owned().await.map_err(ApiError::internal)
    }

    /// A loaded model, most recently used first.
    pub fn cached(&self, id: Uuid) -> Option<Arc<dyn LoadedModel>> {
        let mut cache = self.loaded.lock().ok()?;
        let pos = cache.iter().position(|(k, _)| *k == id)?;
        let entry = cache.remove(pos)?;
        let model = Arc::clone(&entry.1);
        cache.push_front(entry);
        Some(model)
    }

    /// Caches a loaded model, evicting the least recently used past the cache size.
    pub fn cache(&self, id: Uuid, model: Arc<dyn LoadedModel>) {
        if let Ok(mut cache) = self.loaded.lock() {
            cache.retain(|(k, _)| *k != id);
            cache.push_front((id, model));
            cache.truncate(MODEL_CACHE);
        }
    }

    /// Forgets a model (its iteration was deleted).
    pub fn evict(&self, id: Uuid) {
        if let Ok(mut cache) = self.loaded.lock() {
            cache.retain(|(k, _)| *k != id);
        }
    }
}
