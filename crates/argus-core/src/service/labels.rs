//! Labels on existing images: tags, regions, metadata, region proposals.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use super::images::check_metadata_pairs;
use super::{check_region, store_err, Argus};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::limits::*;
use crate::model::{
    now, BoundingBox, ImageMetadataUpdateEntry, ImageMetadataUpdateSummary, ImageRegionCreateEntry,
    ImageRegionCreateResult, ImageRegionCreateSummary, ImageRegionProposal, ImageTagCreateEntry, ImageTagCreateSummary,
    Metadata, MetadataUpdateStatus, RegionProposal, TagType,
};
use crate::store::{ImageRecord, NewRegion};

fn same_box(a: &BoundingBox, b: &BoundingBox) -> bool {
    let eps = BOX_EPSILON;
    (a.left - b.left).abs() < eps
        && (a.top - b.top).abs() < eps
        && (a.width - b.width).abs() < eps
        && (a.height - b.height).abs() < eps
}

impl Argus {
    async fn images_of(&self, project: Uuid, ids: &[Uuid]) -> ApiResult<HashMap<Uuid, ImageRecord>> {
        let unique: Vec<Uuid> = ids.iter().copied().collect::<HashSet<_>>().into_iter().collect();
        let found: HashMap<Uuid, ImageRecord> =
            self.store.get_images(project, &unique).await.map_err(store_err)?.into_iter().map(|r| (r.id, r)).collect();
        if let Some(missing) = unique.iter().find(|id| !found.contains_key(id)) {
            return Err(ApiError::new(
                ErrorCode::NotFoundImage,
                format!("Image {missing} was not found in this project."),
            ));
        }
        Ok(found)
    }

    /// UpdateImageMetadata: merges `metadata` into each image (at most 64 images, 50 pairs per image).
    pub async fn update_image_metadata(
        &self,
        project: Uuid,
        ids: Vec<Uuid>,
        metadata: Metadata,
    ) -> ApiResult<ImageMetadataUpdateSummary> {
        self.project(project).await?;
        if ids.is_empty() {
            return Err(ApiError::new(ErrorCode::BadRequestInvalidIds, "imageIds is required."));
        }
        if ids.len() > MAX_METADATA_IMAGE_IDS {
            return Err(ApiError::new(
                ErrorCode::BadRequestExceededBatchSize,
                format!("At most {MAX_METADATA_IMAGE_IDS} images can be updated at once; got {}.", ids.len()),
            ));
        }
        check_metadata_pairs(&metadata)?;
        let found: HashMap<Uuid, ImageRecord> =
            self.store.get_images(project, &ids).await.map_err(store_err)?.into_iter().map(|r| (r.id, r)).collect();
        let mut entries = Vec::new();
        let mut updates = Vec::new();
        for id in ids {
            let Some(img) = found.get(&id) else {
                entries.push(ImageMetadataUpdateEntry {
                    image_id: id,
                    status: MetadataUpdateStatus::ErrorImageNotFound,
                    metadata: None,
                });
                continue;
            };
            let mut merged = img.metadata.clone();
            merged.extend(metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
            if merged.len() > MAX_METADATA_PAIRS {
                entries.push(ImageMetadataUpdateEntry {
                    image_id: id,
                    status: MetadataUpdateStatus::ErrorLimitExceed,
                    metadata: None,
                });
                continue;
            }
            entries.push(ImageMetadataUpdateEntry {
                image_id: id,
                status: MetadataUpdateStatus::Ok,
                metadata: Some(merged.clone()),
            });
            updates.push((id, merged));
        }
        self.store.set_metadata(project, &updates).await.map_err(store_err)?;
        let ok = entries.iter().all(|e| e.status == MetadataUpdateStatus::Ok);
        Ok(ImageMetadataUpdateSummary { is_batch_successful: ok, images: entries })
    }

    /// CreateImageTags (at most 128 entries).
    pub async fn create_image_tags(
        &self,
        project: Uuid,
        entries: Vec<ImageTagCreateEntry>,
    ) -> ApiResult<ImageTagCreateSummary> {
        self.project(project).await?;
        if entries.is_empty() {
            return Err(ApiError::new(ErrorCode::BadRequestImageTags, "The batch contains no tags."));
        }
        if entries.len() > MAX_IMAGE_TAG_ENTRIES {
            return Err(ApiError::new(
                ErrorCode::BadRequestExceededBatchSize,
                format!("A batch can contain at most {MAX_IMAGE_TAG_ENTRIES} entries; got {}.", entries.len()),
            ));
        }
        let tags = self.tag_map(project).await?;
        if let Some(e) = entries.iter().find(|e| !tags.contains_key(&e.tag_id)) {
            return Err(ApiError::new(
                ErrorCode::BadRequestImageTags,
                format!("Tag {} does not exist in this project.", e.tag_id),
            ));
        }
        let images = self.images_of(project, &entries.iter().map(|e| e.image_id).collect::<Vec<_>>()).await?;
        let mut current: HashMap<Uuid, Vec<Uuid>> =
            images.values().map(|i| (i.id, i.tags.iter().map(|t| t.tag_id).collect())).collect();
        let mut summary = ImageTagCreateSummary::default();
        let mut links = Vec::new();
        let t = now();
        for e in entries {
            let have = current.entry(e.image_id).or_default();
            if have.contains(&e.tag_id) {
                summary.duplicated.push(e);
                continue;
            }
            let kinds: Vec<TagType> =
                have.iter().chain(std::iter::once(&e.tag_id)).filter_map(|id| tags.get(id).map(|t| t.kind)).collect();
            if kinds.contains(&TagType::Negative) && kinds.iter().any(|k| *k != TagType::Negative) {
                return Err(ApiError::new(
                    ErrorCode::BadRequestNegativeAndRegularTagOnSameImage,
                    format!("Image {} cannot carry the Negative tag together with other tags.", e.image_id),
                ));
            }
            if have.len() >= MAX_TAGS_PER_IMAGE {
                summary.exceeded.push(e);
                continue;
            }
            have.push(e.tag_id);
            links.push((e.image_id, e.tag_id, t));
            summary.created.push(e);
        }
        self.store.add_image_tags(project, &links).await.map_err(store_err)?;
        Ok(summary)
    }

    /// DeleteImageTags (at most 64 images and 20 tags).
    pub async fn delete_image_tags(&self, project: Uuid, images: Vec<Uuid>, tags: Vec<Uuid>) -> ApiResult<()> {
        self.project(project).await?;
        if images.is_empty() || tags.is_empty() {
            return Err(ApiError::new(ErrorCode::BadRequestInvalidIds, "imageIds and tagIds are required."));
        }
        if images.len() > MAX_DELETE_IMAGE_TAGS_IMAGES || tags.len() > MAX_TAGS_PER_BATCH {
            return Err(ApiError::new(
                ErrorCode::BadRequestExceededBatchSize,
                format!("At most {MAX_DELETE_IMAGE_TAGS_IMAGES} images and {MAX_TAGS_PER_BATCH} tags can be given."),
            ));
        }
        self.store.delete_image_tags(project, &images, &tags).await.map_err(store_err)
    }

    /// CreateImageRegions (at most 64 entries): created, duplicated (same image, tag and box) and exceeded
    /// (per-image region limit). The bool is true when everything was created (200) rather than 207.
    pub async fn create_image_regions(
        &self,
        project: Uuid,
        entries: Vec<ImageRegionCreateEntry>,
    ) -> ApiResult<(ImageRegionCreateSummary, bool)> {
        self.project(project).await?;
        if entries.is_empty() {
            return Err(ApiError::new(ErrorCode::BadRequestImageRegions, "The batch contains no regions."));
        }
        if entries.len() > MAX_REGION_ENTRIES {
            return Err(ApiError::new(
                ErrorCode::BadRequestExceededBatchSize,
                format!("A batch can contain at most {MAX_REGION_ENTRIES} regions; got {}.", entries.len()),
            ));
        }
        let tags = self.tag_map(project).await?;
        for e in &entries {
            if !tags.contains_key(&e.tag_id) {
                return Err(ApiError::new(
                    ErrorCode::BadRequestImageRegions,
                    format!("Tag {} does not exist in this project.", e.tag_id),
                ));
            }
            check_region(e.left, e.top, e.width, e.height, e.polygon.as_ref())?;
        }
        let images = self.images_of(project, &entries.iter().map(|e| e.image_id).collect::<Vec<_>>()).await?;
        let mut current: HashMap<Uuid, Vec<(Uuid, BoundingBox)>> =
            images.values().map(|i| (i.id, i.regions.iter().map(|r| (r.tag_id, r.bbox())).collect())).collect();
        let mut summary = ImageRegionCreateSummary::default();
        let mut rows = Vec::new();
        let t = now();
        for e in entries {
            let bbox = BoundingBox { left: e.left, top: e.top, width: e.width, height: e.height };
            let have = current.entry(e.image_id).or_default();
            if have.iter().any(|(tag, b)| *tag == e.tag_id && same_box(b, &bbox)) {
                summary.duplicated.push(e);
                continue;
            }
            if have.len() >= MAX_REGIONS_PER_IMAGE {
                summary.exceeded.push(e);
                continue;
            }
            have.push((e.tag_id, bbox));
            let region =
                NewRegion { id: Uuid::new_v4(), tag_id: e.tag_id, bbox, polygon: e.polygon.clone(), created: t };
            summary.created.push(ImageRegionCreateResult {
                image_id: e.image_id,
                region_id: region.id,
                tag_name: tags.get(&e.tag_id).map(|t| t.name.clone()).unwrap_or_default(),
                created: t,
                tag_id: e.tag_id,
                left: e.left,
                top: e.top,
                width: e.width,
                height: e.height,
            });
            rows.push((e.image_id, region));
        }
        self.store.add_regions(project, &rows).await.map_err(store_err)?;
        let all_created = summary.duplicated.is_empty() && summary.exceeded.is_empty();
        Ok((summary, all_created))
    }

    /// DeleteImageRegions (at most 64 ids).
    pub async fn delete_image_regions(&self, project: Uuid, ids: Vec<Uuid>) -> ApiResult<()> {
        self.project(project).await?;
        if ids.is_empty() {
            return Err(ApiError::new(ErrorCode::BadRequestInvalidIds, "regionIds is required."));
        }
        if ids.len() > MAX_REGION_ENTRIES {
            return Err(ApiError::new(
                ErrorCode::BadRequestExceededBatchSize,
                format!("At most {MAX_REGION_ENTRIES} regions can be deleted at once; got {}.", ids.len()),
            ));
        }
        self.store.delete_regions(project, &ids).await.map_err(store_err)
    }

    /// GetImageRegionProposals: class-agnostic boxes from the pretrained backbone's activations, best first.
    pub async fn region_proposals(&self, project: Uuid, image: Uuid) -> ApiResult<ImageRegionProposal> {
        self.project(project).await?;
        self.images_of(project, &[image]).await?;
        let bytes = self
            .blobs
            .get(&super::resized_key(project, image))
            .await
            .map_err(store_err)?
            .ok_or_else(|| ApiError::internal(format!("resized copy of {image} missing")))?;
        let engine = self.models.engine();
        let boxes = tokio::task::spawn_blocking(move || engine.propose_regions(&bytes, 10))
            .await
            .map_err(ApiError::internal)??;
        let proposals = boxes
            .into_iter()
            .map(|b| RegionProposal {
                confidence: b.confidence,
                bounding_box: BoundingBox { left: b.left, top: b.top, width: b.width, height: b.height },
            })
            .collect();
        Ok(ImageRegionProposal { project_id: project, image_id: image, proposals })
    }
}
