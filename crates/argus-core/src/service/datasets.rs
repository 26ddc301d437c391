//! Dataset interchange through the API (an Argus extension of the Training API, for the portal and for scripts):
//! `GET /projects/{p}/dataset?format=coco|yolo|voc|customvision` answers the project as a zip in that format,
//! `POST` of such a zip to the same path adds its images, tags and boxes to the project. The formats are [`argus_datasets`]'; the
//! CLI's `argus dataset export|import` writes the same files through the standard Training API.

use std::collections::HashSet;

use bytes::Bytes;
use serde::Serialize;
use uuid::Uuid;

use super::{original_key, store_err, Argus, UploadItem, UrlContext};
use crate::domains::{find_domain, DomainType};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::limits::MAX_IMAGES_PER_BATCH;
use crate::model::{ImageCreateStatus, Metadata, Region};
use argus_datasets::{Dataset, Files, Format, Item, Labelled, Sink};

/// What an import did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetImportSummary {
    /// Images added.
    pub images_created: usize,
    /// Images the project already held (same bytes).
    pub images_duplicate: usize,
    /// Boxes added with the new images.
    pub regions_created: usize,
    /// Tags created (the others existed by name).
    pub tags_created: usize,
    /// Images refused, with the upload status that says why.
    pub failed: Vec<DatasetImportFailure>,
}

/// One image an import could not add.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetImportFailure {
    /// Its path in the dataset.
    pub file: String,
    /// The upload status (`ErrorImageFormat`, `ErrorImageSize`, …).
    pub status: ImageCreateStatus,
}

/// Parses the `format` parameter.
pub fn dataset_format(raw: Option<&str>) -> ApiResult<Format> {
    raw.unwrap_or("")
        .parse::<Format>()
        .map_err(|_| ApiError::new(ErrorCode::BadRequest, "format must be coco, yolo, voc or customvision."))
}

fn bad_dataset(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, format!("The dataset could not be read: {e}"))
}

impl Argus {
    async fn project_is_detection(&self, project: Uuid) -> ApiResult<bool> {
        let p = self.project(project).await?;
        Ok(find_domain(p.settings.domain_id).is_some_and(|d| d.kind == DomainType::ObjectDetection))
    }

    /// The project's images and labels as a zip in `format`.
    pub async fn export_dataset(&self, project: Uuid, format: Format) -> ApiResult<Bytes> {
        let detection = self.project_is_detection(project).await?;
        let tags = self.store.list_tags(project).await.map_err(store_err)?;
        let index = |id: &Uuid| tags.iter().position(|t| t.id == *id);
        let mut dataset =
            Dataset { detection, categories: tags.iter().map(|t| t.name.clone()).collect(), items: vec![] };
        let mut files: Vec<(Item, Bytes)> = Vec::new();
        let mut skip = 0u32;
        loop {
            let q =
                crate::store::ImageQuery { order: crate::store::Order::Oldest, skip, take: 256, ..Default::default() };
            let page = self.store.query_images(project, &q).await.map_err(store_err)?;
            if page.is_empty() {
                break;
            }
            skip += page.len() as u32;
            for img in page {
                let key = original_key(project, img.id);
                let bytes = self.stored_blob(&key).await?;
                let region_tags: HashSet<Uuid> = img.regions.iter().map(|r| r.tag_id).collect();
                let item = Item {
                    path: format!("{}.{}", img.id, argus_datasets::extension(&bytes)),
                    width: img.width,
                    height: img.height,
                    tags: img
                        .tags
                        .iter()
                        .filter(|t| !region_tags.contains(&t.tag_id))
                        .filter_map(|t| index(&t.tag_id))
                        .collect(),
                    boxes: img
                        .regions
                        .iter()
                        .filter_map(|r| {
                            Some(Labelled {
                                category: index(&r.tag_id)?,
                                left: r.left,
                                top: r.top,
                                width: r.width,
                                height: r.height,
                                outline: r
                                    .polygon
                                    .iter()
                                    .flatten()
                                    .map(|ring| ring.iter().map(|v| [v.x, v.y]).collect())
                                    .collect(),
                            })
                        })
                        .collect(),
                };
                files.push((item, bytes));
            }
        }
        dataset.items = files.iter().map(|(i, _)| i.clone()).collect();
        tokio::task::spawn_blocking(move || -> anyhow::Result<Bytes> {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("dataset.zip");
            let mut sink = Sink::zip(&path)?;
            for (item, bytes) in &files {
                for p in argus_datasets::image_paths(format, &dataset, item) {
                    sink.put(&p, bytes)?;
                }
            }
            argus_datasets::write_annotations(format, &dataset, &mut sink)?;
            sink.finish()?;
            Ok(Bytes::from(std::fs::read(&path)?))
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
    }

    /// Adds a zipped dataset in `format` to the project: tags by name (created when missing; a category named
    /// `Negative` becomes the Negative tag), then the images with their tags and boxes, 64 at a time. The
    /// dataset is read and checked in full before anything is created.
    pub async fn import_dataset(
        &self,
        ctx: &UrlContext,
        project: Uuid,
        format: Format,
        zip: Bytes,
    ) -> ApiResult<DatasetImportSummary> {
        let detection = self.project_is_detection(project).await?;
        let (dataset, images) = tokio::task::spawn_blocking(move || -> anyhow::Result<(Dataset, Vec<Bytes>)> {
            let mut tmp = tempfile::NamedTempFile::new()?;
            std::io::Write::write_all(&mut tmp, &zip)?;
            let mut files = Files::open(tmp.path())?;
            let d = argus_datasets::read(format, &mut files)?;
            let images = d.items.iter().map(|i| files.read(&i.path).map(Bytes::from)).collect::<anyhow::Result<_>>()?;
            Ok((d, images))
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| bad_dataset(format!("{e:#}")))?;
        if dataset.detection && !detection {
            return Err(ApiError::new(
                ErrorCode::BadRequestImageRegions,
                "The dataset has boxes; this project is a classification project.",
            ));
        }
        let mut summary = DatasetImportSummary::default();
        let mut existing = self.store.list_tags(project).await.map_err(store_err)?;
        let mut tag_ids = Vec::with_capacity(dataset.categories.len());
        for name in &dataset.categories {
            if let Some(t) = existing.iter().find(|t| t.name == *name) {
                tag_ids.push(t.id);
                continue;
            }
            let kind = (name == "Negative").then_some("Negative");
            let t = self.create_tag(project, Some(name), None, kind, None).await?;
            tag_ids.push(t.id);
            summary.tags_created += 1;
            existing = self.store.list_tags(project).await.map_err(store_err)?;
        }
        let items: Vec<(Item, Bytes)> = dataset.items.into_iter().zip(images).collect();
        for chunk in items.chunks(MAX_IMAGES_PER_BATCH) {
            let uploads: Vec<UploadItem> = chunk
                .iter()
                .map(|(item, bytes)| UploadItem {
                    source: item.path.clone(),
                    bytes: Ok(bytes.clone()),
                    tag_ids: item.tags.iter().map(|t| tag_ids[*t]).collect(),
                    regions: item
                        .boxes
                        .iter()
                        .map(|b| Region {
                            tag_id: tag_ids[b.category],
                            left: b.left,
                            top: b.top,
                            width: b.width,
                            height: b.height,
                            polygon: outline_polygon(&b.outline),
                        })
                        .collect(),
                })
                .collect();
            let result = self.create_images(ctx, project, Vec::new(), Metadata::default(), uploads).await?;
            for ((item, _), r) in chunk.iter().zip(&result.images) {
                match r.status {
                    ImageCreateStatus::Ok => {
                        summary.images_created += 1;
                        summary.regions_created += item.boxes.len();
                    }
                    ImageCreateStatus::OkDuplicate => summary.images_duplicate += 1,
                    status => summary.failed.push(DatasetImportFailure { file: item.path.clone(), status }),
                }
            }
        }
        tracing::info!(project = %project, created = summary.images_created, duplicates = summary.images_duplicate,
            failed = summary.failed.len(), "dataset imported");
        Ok(summary)
    }
}

/// A dataset box's outline as a region's polygon: rings of 3 or more vertices, clamped to the image; `None`
/// when nothing usable is left (a region without an outline).
fn outline_polygon(outline: &[Vec<[f64; 2]>]) -> Option<crate::model::RegionPolygon> {
    use crate::model::{PolygonPoint, MAX_POLYGON_RINGS, MAX_POLYGON_VERTICES};
    let rings: Vec<Vec<PolygonPoint>> = outline
        .iter()
        .filter(|r| (3..=MAX_POLYGON_VERTICES).contains(&r.len()))
        .take(MAX_POLYGON_RINGS)
        .map(|r| r.iter().map(|[x, y]| PolygonPoint { x: x.clamp(0.0, 1.0), y: y.clamp(0.0, 1.0) }).collect())
        .collect();
    (!rings.is_empty()).then_some(rings)
}
