//! ExportProject / ImportProject.
//!
//! Export writes a self-contained package (a tar: `manifest.json` plus every image's original, resized and
//! thumbnail bytes) to the blob store and returns an opaque token: base64url JSON holding the package id and
//! a signed, expiring download URL on this server. ImportProject on the same server reads the package from
//! its own blob store; another Argus server downloads it through that URL. Either way the import creates a
//! new project with new ids: tags, images, regions and metadata copied.

use std::collections::HashMap;
use std::io::Read;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{original_key, resized_key, store_err, thumbnail_key, Argus, UrlContext};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::model::{now, BoundingBox, Metadata, Project, ProjectExport, ProjectSettings, TagType, Time};
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
    tag_id: Uuid,
    bbox: BoundingBox,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    polygon: Option<crate::model::RegionPolygon>,
}

fn export_key(id: Uuid) -> String {
    format!("exports/{id}.tar")
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
                for (name, key) in [
                    ("original", original_key(project_id, img.id)),
                    ("resized.jpg", resized_key(project_id, img.id)),
                    ("thumbnail.jpg", thumbnail_key(project_id, img.id)),
                ] {
                    let data = self
                        .blobs
                        .get(&key)
                        .await
                        .map_err(store_err)?
                        .ok_or_else(|| ApiError::internal(format!("blob {key} is missing")))?;
                    append(&mut builder, &format!("images/{}/{name}", img.id), &data)?;
                }
                let region_tags: Vec<Uuid> = img.regions.iter().map(|r| r.tag_id).collect();
                region_count += img.regions.len() as i64;
                images.push(ManifestImage {
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
                        .map(|r| ManifestRegion { tag_id: r.tag_id, bbox: r.bbox(), polygon: r.polygon.clone() })
                        .collect(),
                });
            }
        }
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
            iteration_count: 0,
            image_count,
            tag_count: manifest.tags.len() as i64,
            region_count,
            estimated_import_time_in_ms: 500 + image_count * 20,
            token,
        })
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
        let mut rows = Vec::new();
        for img in manifest.images {
            let id = Uuid::new_v4();
            let mut byte_size = 0;
            for (name, key) in [
                ("original", original_key(project.id, id)),
                ("resized.jpg", resized_key(project.id, id)),
                ("thumbnail.jpg", thumbnail_key(project.id, id)),
            ] {
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
                        Ok(NewRegion {
                            id: Uuid::new_v4(),
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
        let mut updated = project.clone();
        updated.settings.image_processing_settings = manifest.settings.image_processing_settings;
        self.store.update_project(&updated).await.map_err(store_err)
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
