//! ExportProject / ImportProject.
//!
//! Export writes a self-contained package (a tar: `manifest.json` plus every image's original, resized and
//! thumbnail bytes) to the blob store and returns an opaque token: base64url JSON holding the package id and
//! a signed, expiring download URL on this server. ImportProject on the same server reads the package from
//! its own blob store; another Argus server downloads it through that URL. Either way the import creates a
//! new project with new ids: tags, images, regions and metadata copied, and every Completed iteration with its
//! trained model, snapshot and held-out evaluation (ids mapped to the new ones), so the imported project
//! predicts, reports performance and exports as the original does without training again. Iterations come
//! unpublished (publishing names a prediction resource of the importing side), and each export the original
//! had finished is queued again on the importing server, whose exporter rebuilds it from the same model.

use std::collections::HashMap;
use std::io::Read;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::training::{iteration_model_key, snapshot_of};
use super::{original_key, resized_key, store_err, thumbnail_key, Argus, UrlContext};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::model::{
    now, BoundingBox, ClassificationType, Iteration, IterationStatus, Metadata, Project, ProjectExport,
    ProjectSettings, TagType, Time,
};
use crate::store::{NewImage, NewRegion, TagRecord};

const FORMAT: &str = "argus-project-export";
/// How long an export token stays valid.
const TOKEN_TTL_SECS: i64 = 7 * 24 * 3600;
/// Largest package an import downloads from another server.
const MAX_PACKAGE_BYTES: usize = 2 << 30;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Token {
    v: u32,
    export: Uuid,
    url: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    format: String,
    version: u32,
    name: String,
    description: String,
    settings: ProjectSettings,
    tags: Vec<ManifestTag>,
    images: Vec<ManifestImage>,
    /// Completed iterations (absent from packages written before iterations travelled).
    #[serde(default)]
    iterations: Vec<ManifestIteration>,
    /// Images an iteration still shows but the workspace no longer has (deleted without `allIterations`): only
    /// their bytes travel, under `images/{id}/`, as the original keeps only their bytes.
    #[serde(default)]
    retained_images: Vec<ManifestImage>,
}

/// A Completed iteration: its fields, what it was trained on, its evaluation and which exports it had. Its
/// model is the package's `iterations/{id}/model.safetensors`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestIteration {
    id: Uuid,
    name: String,
    created: Time,
    trained_at: Option<Time>,
    domain_id: Option<Uuid>,
    classification_type: Option<ClassificationType>,
    training_type: String,
    reserved_budget_in_hours: i32,
    training_time_in_minutes: i32,
    exportable: bool,
    exportable_to: Vec<String>,
    #[serde(default)]
    training_message: Option<String>,
    detection: bool,
    snapshot: serde_json::Value,
    #[serde(default)]
    evaluation: Option<serde_json::Value>,
    #[serde(default)]
    exports: Vec<ManifestExport>,
}

/// An export the original iteration had finished.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestExport {
    platform: String,
    #[serde(default)]
    flavor: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestTag {
    id: Uuid,
    name: String,
    description: String,
    #[serde(rename = "type")]
    kind: TagType,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestImage {
    id: Uuid,
    created: Time,
    width: u32,
    height: u32,
    mime: String,
    content_hash: String,
    metadata: Metadata,
    tag_ids: Vec<Uuid>,
    regions: Vec<ManifestRegion>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestRegion {
    /// The region's id in the original (absent in older packages): an iteration's snapshot names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<Uuid>,
    tag_id: Uuid,
    bbox: BoundingBox,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    polygon: Option<crate::model::RegionPolygon>,
}

fn export_key(id: Uuid) -> String {
    format!("exports/{id}.tar")
}

/// An image as the package lists it: its plain tags (those not carried by a region) and its regions.
fn manifest_image(img: crate::store::ImageRecord) -> ManifestImage {
    let region_tags: Vec<Uuid> = img.regions.iter().map(|r| r.tag_id).collect();
    ManifestImage {
        id: img.id,
        created: img.created,
        width: img.width,
        height: img.height,
        mime: img.mime,
        content_hash: img.content_hash,
        metadata: img.metadata,
        tag_ids: img.tags.iter().map(|t| t.tag_id).filter(|t| !region_tags.contains(t)).collect(),
        regions: img
            .regions
            .iter()
            .map(|r| ManifestRegion {
                id: Some(r.region_id),
                tag_id: r.tag_id,
                bbox: r.bbox(),
                polygon: r.polygon.clone(),
            })
            .collect(),
    }
}

/// The package name and blob key of each stored file of an image (original, resized, thumbnail).
fn image_files(project: Uuid, image: Uuid) -> [(&'static str, String); 3] {
    [
        ("original", original_key(project, image)),
        ("resized.jpg", resized_key(project, image)),
        ("thumbnail.jpg", thumbnail_key(project, image)),
    ]
}

fn invalid_token(why: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::BadRequestInvalidImportToken, format!("The import token is not valid: {why}"))
}

fn append(builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) -> ApiResult<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, path, data).map_err(ApiError::internal)
}

impl Argus {
    /// ExportProject.
    pub async fn export_project(&self, ctx: &UrlContext, project_id: Uuid) -> ApiResult<ProjectExport> {
        let project = self.project(project_id).await?;
        let tags = self.store.list_tags(project_id).await.map_err(store_err)?;
        let mut images = Vec::new();
        let mut builder = tar::Builder::new(Vec::new());
        let mut region_count = 0i64;
        let mut skip = 0u32;
        loop {
            let q =
                crate::store::ImageQuery { order: crate::store::Order::Oldest, skip, take: 256, ..Default::default() };
            let page = self.store.query_images(project_id, &q).await.map_err(store_err)?;
            if page.is_empty() {
                break;
            }
            skip += page.len() as u32;
            for img in page {
                for (name, data) in self.image_blobs(project_id, img.id).await? {
                    append(&mut builder, &format!("images/{}/{name}", img.id), &data)?;
                }
                region_count += img.regions.len() as i64;
                images.push(manifest_image(img));
            }
        }
        let workspace: std::collections::HashSet<Uuid> = images.iter().map(|i| i.id).collect();
        let (iterations, retained) = self.export_iterations(project_id, &workspace, &mut builder).await?;
        let retired = self.store.get_retired_images(project_id, &retained).await.map_err(store_err)?;
        let retained_images = retired.into_iter().map(manifest_image).collect();
        let manifest = Manifest {
            format: FORMAT.into(),
            version: 1,
            name: project.name.clone(),
            description: project.description.clone(),
            settings: project.settings.clone(),
            tags: tags
                .iter()
                .map(|t| ManifestTag {
                    id: t.id,
                    name: t.name.clone(),
                    description: t.description.clone(),
                    kind: t.kind,
                })
                .collect(),
            images,
            iterations,
            retained_images,
        };
        let manifest_json = serde_json::to_vec_pretty(&manifest).map_err(ApiError::internal)?;
        append(&mut builder, "manifest.json", &manifest_json)?;
        let package = builder.into_inner().map_err(ApiError::internal)?;
        let export = Uuid::new_v4();
        self.blobs.put(&export_key(export), Bytes::from(package)).await.map_err(store_err)?;
        let expires = chrono::Utc::now().timestamp() + TOKEN_TTL_SECS;
        let key = export_key(export);
        let url = format!("{}/blobs/{key}?se={expires}&sig={}", ctx.base_url, self.signer.sign(&key, expires));
        let token =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&Token { v: 1, export, url }).map_err(ApiError::internal)?);
        let image_count = manifest.images.len() as i64;
        tracing::info!(project = %project_id, export = %export, images = image_count, "project exported");
        Ok(ProjectExport {
            iteration_count: manifest.iterations.len() as i64,
            image_count,
            tag_count: manifest.tags.len() as i64,
            region_count,
            estimated_import_time_in_ms: 500 + image_count * 20,
            token,
        })
    }

    /// The project's Completed iterations for its export package, and the images they show that the
    /// `workspace` no longer has: each iteration's model and those images' bytes are appended to `builder`.
    async fn export_iterations(
        &self,
        project: Uuid,
        workspace: &std::collections::HashSet<Uuid>,
        builder: &mut tar::Builder<Vec<u8>>,
    ) -> ApiResult<(Vec<ManifestIteration>, Vec<Uuid>)> {
        let mut out = Vec::new();
        let mut retained = Vec::new();
        for it in self.store.list_iterations(project).await.map_err(store_err)? {
            if it.status != IterationStatus::Completed {
                continue;
            }
            let Some((_, snapshot)) = self.store.get_iteration(project, it.id).await.map_err(store_err)? else {
                continue;
            };
            let snap = snapshot_of(snapshot.clone())?;
            let detection = snap.is_detection();
            let model = self.stored_blob(&iteration_model_key(project, it.id, detection)).await?;
            append(builder, &format!("iterations/{}/model.safetensors", it.id), &model)?;
            for image in snap.image_ids() {
                if workspace.contains(&image) || retained.contains(&image) {
                    continue;
                }
                for (name, data) in self.image_blobs(project, image).await? {
                    append(builder, &format!("images/{image}/{name}"), &data)?;
                }
                retained.push(image);
            }
            let evaluation = self.store.get_evaluation(project, it.id).await.map_err(store_err)?;
            let exports = self.done_export_targets(project, it.id).await?;
            out.push(ManifestIteration {
                id: it.id,
                name: it.name,
                created: it.created,
                trained_at: it.trained_at,
                domain_id: it.domain_id,
                classification_type: it.classification_type,
                training_type: it.training_type,
                reserved_budget_in_hours: it.reserved_budget_in_hours,
                training_time_in_minutes: it.training_time_in_minutes,
                exportable: it.exportable,
                exportable_to: it.exportable_to,
                training_message: it.training_message,
                detection,
                snapshot,
                evaluation,
                exports: exports.into_iter().map(|(platform, flavor)| ManifestExport { platform, flavor }).collect(),
            });
        }
        Ok((out, retained))
    }

    /// The three stored files of an image (original, resized, thumbnail) under their package names.
    async fn image_blobs(&self, project: Uuid, image: Uuid) -> ApiResult<Vec<(&'static str, Bytes)>> {
        let mut out = Vec::new();
        for (name, key) in image_files(project, image) {
            out.push((name, self.stored_blob(&key).await?));
        }
        Ok(out)
    }

    /// ImportProject: a full copy of the exported project as a new project.
    pub async fn import_project(&self, token: &str, name: Option<&str>) -> ApiResult<Project> {
        let raw = URL_SAFE_NO_PAD.decode(token.trim().trim_end_matches('=')).map_err(invalid_token)?;
        let token: Token = serde_json::from_slice(&raw).map_err(invalid_token)?;
        let package = match self.blobs.get(&export_key(token.export)).await.map_err(store_err)? {
            Some(p) => p,
            None => self.fetcher.fetch(&token.url, MAX_PACKAGE_BYTES).await.map_err(|e| {
                ApiError::new(
                    ErrorCode::BadRequestInvalidImportToken,
                    format!("The export package could not be fetched: {e}"),
                )
            })?,
        };
        let (manifest, files) =
            tokio::task::spawn_blocking(move || read_package(&package)).await.map_err(ApiError::internal)??;
        let mut input = super::NewProject {
            name: Some(name.filter(|n| !n.trim().is_empty()).unwrap_or(&manifest.name).to_string()),
            description: Some(manifest.description.clone()),
            domain_id: Some(manifest.settings.domain_id),
            classification_type: manifest.settings.classification_type.map(|c| format!("{c:?}")),
            target_export_platforms: manifest.settings.target_export_platforms.clone(),
            requested_id: None,
        };
        if input.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            input.name = Some("Imported project".into());
        }
        let mut project = self.create_project(input).await?;
        match self.fill_import(&project, manifest, files).await {
            Ok(()) => {
                project.settings.image_processing_settings =
                    self.project(project.id).await?.settings.image_processing_settings;
                tracing::info!(project = %project.id, "project imported");
                Ok(project)
            }
            Err(e) => {
                // Leave nothing half-imported behind.
                let _ = self.delete_project(project.id).await;
                Err(e)
            }
        }
    }

    async fn fill_import(
        &self,
        project: &Project,
        manifest: Manifest,
        mut files: HashMap<String, Bytes>,
    ) -> ApiResult<()> {
        let mut tag_ids = HashMap::new();
        for t in &manifest.tags {
            let record = TagRecord {
                id: Uuid::new_v4(),
                name: t.name.clone(),
                description: t.description.clone(),
                kind: t.kind,
                created: now(),
            };
            self.store.insert_tag(project.id, &record).await.map_err(store_err)?;
            tag_ids.insert(t.id, record.id);
        }
        let map_tag = |id: &Uuid| {
            tag_ids.get(id).copied().ok_or_else(|| invalid_token(format!("the package names unknown tag {id}")))
        };
        // Old id → new id of every tag, image and region, for the iterations' snapshots and evaluations.
        let mut ids: HashMap<Uuid, Uuid> = tag_ids.clone();
        let mut rows = Vec::new();
        let mut retired = Vec::new();
        let workspace = manifest.images.into_iter().map(|i| (i, false));
        for (img, retain) in workspace.chain(manifest.retained_images.into_iter().map(|i| (i, true))) {
            let id = Uuid::new_v4();
            if retain {
                retired.push(id);
            }
            ids.insert(img.id, id);
            let mut byte_size = 0;
            for (name, key) in image_files(project.id, id) {
                let data = files
                    .remove(&format!("images/{}/{name}", img.id))
                    .ok_or_else(|| invalid_token(format!("the package lacks image {} ({name})", img.id)))?;
                if name == "original" {
                    byte_size = data.len() as u64;
                }
                self.blobs.put(&key, data).await.map_err(store_err)?;
            }
            rows.push(NewImage {
                id,
                created: img.created,
                width: img.width,
                height: img.height,
                mime: img.mime,
                byte_size,
                content_hash: img.content_hash,
                metadata: img.metadata,
                tag_ids: img.tag_ids.iter().map(map_tag).collect::<ApiResult<_>>()?,
                regions: img
                    .regions
                    .iter()
                    .map(|r| {
                        let new_id = Uuid::new_v4();
                        if let Some(old) = r.id {
                            ids.insert(old, new_id);
                        }
                        Ok(NewRegion {
                            id: new_id,
                            tag_id: map_tag(&r.tag_id)?,
                            bbox: r.bbox,
                            polygon: r.polygon.clone(),
                            created: img.created,
                        })
                    })
                    .collect::<ApiResult<_>>()?,
            });
        }
        for chunk in rows.chunks(256) {
            self.store.insert_images(project.id, chunk, u64::MAX).await.map_err(store_err)?;
        }
        // Images only an iteration shows go where the original keeps them: out of the workspace, retained.
        if !retired.is_empty() {
            let retain = retired.iter().copied().collect();
            self.store.delete_images(project.id, Some(&retired), &retain).await.map_err(store_err)?;
        }
        let mut updated = project.clone();
        updated.settings.image_processing_settings = manifest.settings.image_processing_settings;
        self.store.update_project(&updated).await.map_err(store_err)?;
        for m in manifest.iterations {
            self.import_iteration(project.id, m, &ids, &mut files).await?;
        }
        Ok(())
    }

    /// Recreates one Completed iteration under a new id: its model, its snapshot and evaluation with every id
    /// mapped through `ids`, then queues again the exports the original had finished.
    async fn import_iteration(
        &self,
        project: Uuid,
        m: ManifestIteration,
        ids: &HashMap<Uuid, Uuid>,
        files: &mut HashMap<String, Bytes>,
    ) -> ApiResult<()> {
        let id = Uuid::new_v4();
        let model = files
            .remove(&format!("iterations/{}/model.safetensors", m.id))
            .ok_or_else(|| invalid_token(format!("the package lacks the model of iteration {}", m.id)))?;
        self.blobs.put(&iteration_model_key(project, id, m.detection), model).await.map_err(store_err)?;
        let snapshot = remap_ids(m.snapshot, ids);
        // The snapshot must still read as one (it says what the model predicts and how it was trained).
        if snapshot_of(snapshot.clone()).map(|s| s.is_detection()).ok() != Some(m.detection) {
            return Err(invalid_token(format!("iteration {} has an unreadable snapshot", m.id)));
        }
        let evaluation = m.evaluation.map(|e| remap_ids(e, ids));
        let it = Iteration {
            id,
            name: m.name,
            status: IterationStatus::Completed,
            created: m.created,
            last_modified: now(),
            trained_at: m.trained_at,
            project_id: project,
            exportable: m.exportable,
            exportable_to: m.exportable_to,
            domain_id: m.domain_id,
            classification_type: m.classification_type,
            training_type: m.training_type,
            reserved_budget_in_hours: m.reserved_budget_in_hours,
            training_time_in_minutes: m.training_time_in_minutes,
            publish_name: String::new(),
            original_publish_resource_id: String::new(),
            training_progress: Some(100.0),
            training_message: m.training_message,
        };
        self.store.insert_trained_iteration(&it, &snapshot, evaluation.as_ref()).await.map_err(store_err)?;
        for e in m.exports {
            if let Err(err) = self.export_iteration(project, id, Some(&e.platform), e.flavor.as_deref()).await {
                tracing::warn!(project = %project, iteration = %id, platform = %e.platform, error = %err.message,
                    "an export of the imported iteration was not queued again");
            }
        }
        Ok(())
    }
}

/// `v` with every string (and object key) that is a UUID in `ids` replaced by its new id: the snapshot and the
/// evaluation name tags, images and regions only by id.
fn remap_ids(v: serde_json::Value, ids: &HashMap<Uuid, Uuid>) -> serde_json::Value {
    use serde_json::Value;
    let map = |s: String| match Uuid::parse_str(&s).ok().and_then(|u| ids.get(&u)) {
        Some(new) => new.to_string(),
        None => s,
    };
    match v {
        Value::String(s) => Value::String(map(s)),
        Value::Array(a) => Value::Array(a.into_iter().map(|x| remap_ids(x, ids)).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, x)| (map(k), remap_ids(x, ids))).collect()),
        other => other,
    }
}

fn read_package(package: &[u8]) -> ApiResult<(Manifest, HashMap<String, Bytes>)> {
    let mut archive = tar::Archive::new(package);
    let mut files = HashMap::new();
    let entries = archive.entries().map_err(invalid_token)?;
    for entry in entries {
        let mut entry = entry.map_err(invalid_token)?;
        let path = entry.path().map_err(invalid_token)?.to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(invalid_token)?;
        files.insert(path, Bytes::from(data));
    }
    let manifest_bytes = files.remove("manifest.json").ok_or_else(|| invalid_token("the package has no manifest"))?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes).map_err(invalid_token)?;
    if manifest.format != FORMAT || manifest.version != 1 {
        return Err(invalid_token("unknown package format"));
    }
    Ok((manifest, files))
}
