//! Background maintenance: sweeping blobs that no row refers to (left by a crash between the durable blob
//! write and the row commit, or by a delete whose blob cleanup failed; images and stored predictions) and
//! expired export packages.

use std::collections::{HashMap, HashSet};

use chrono::Duration;
use uuid::Uuid;

use super::{store_err, Argus};
use crate::error::ApiResult;

/// What a sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Blobs examined.
    pub examined: usize,
    /// Orphaned blobs deleted.
    pub deleted: usize,
}

impl Argus {
    /// Deletes blobs under `projects/` whose project or image row does not exist and that are older than
    /// `min_age` (younger ones may belong to an upload in flight), and export packages past their token's life.
    pub async fn sweep_orphans(&self, min_age: Duration) -> ApiResult<SweepReport> {
        let cutoff = chrono::Utc::now() - min_age;
        let blobs = self.blobs.list("projects/").await.map_err(store_err)?;
        let projects: HashSet<Uuid> = self.store.project_ids().await.map_err(store_err)?;
        let mut report = SweepReport { examined: blobs.len(), deleted: 0 };
        let mut by_image: HashMap<Uuid, Vec<(Uuid, String)>> = HashMap::new();
        let mut by_prediction: HashMap<Uuid, Vec<(Uuid, String)>> = HashMap::new();
        for b in blobs.into_iter().filter(|b| b.last_modified < cutoff) {
            let parts: Vec<&str> = b.key.split('/').collect();
            let project = parts.get(1).and_then(|p| Uuid::parse_str(p).ok());
            match project {
                Some(p) if projects.contains(&p) => match (parts.get(2), parts.get(3).map(|s| Uuid::parse_str(s))) {
                    (Some(&"images"), Some(Ok(img))) => by_image.entry(p).or_default().push((img, b.key)),
                    (Some(&"predictions"), Some(Ok(id))) => by_prediction.entry(p).or_default().push((id, b.key)),
                    _ => {}
                },
                _ => {
                    self.blobs.delete(&b.key).await.map_err(store_err)?;
                    report.deleted += 1;
                }
            }
        }
        // Blobs of rows that no longer exist: images and stored predictions, checked per project in chunks.
        for (owners, predictions) in [(by_image, false), (by_prediction, true)] {
            for (project, entries) in owners {
                let candidates: Vec<Uuid> =
                    entries.iter().map(|(i, _)| *i).collect::<HashSet<_>>().into_iter().collect();
                let mut existing = HashSet::new();
                for chunk in candidates.chunks(500) {
                    let found = if predictions {
                        self.store.existing_prediction_ids(project, chunk).await
                    } else {
                        self.store.existing_image_ids(project, chunk).await
                    };
                    existing.extend(found.map_err(store_err)?);
                }
                for (id, key) in entries {
                    if !existing.contains(&id) {
                        self.blobs.delete(&key).await.map_err(store_err)?;
                        report.deleted += 1;
                    }
                }
            }
        }
        let export_cutoff = chrono::Utc::now() - Duration::days(8);
        for b in self.blobs.list("exports/").await.map_err(store_err)? {
            report.examined += 1;
            if b.last_modified < export_cutoff {
                self.blobs.delete(&b.key).await.map_err(store_err)?;
                report.deleted += 1;
            }
        }
        if report.deleted > 0 {
            tracing::info!(examined = report.examined, deleted = report.deleted, "orphan sweep");
        }
        Ok(report)
    }
}
