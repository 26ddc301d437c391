//! Images: the three upload paths (bytes, base64 files, URLs), listings and counts, deletion.
//!
//! An upload is prepared off the async runtime (decode, orientation, derivatives), its three blobs are
//! written durably, and only then are the rows committed, in one transaction per batch. A crash before the
//! commit leaves blobs without rows, which the sweep removes; it never leaves a row without its blobs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{check_region, check_tag_filter, original_key, resized_key, store_err, thumbnail_key, Argus, UrlContext};
use crate::compute::{ImageError, ImageLimits, PreparedImage};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::filter::parse_filter;
use crate::limits::*;
use crate::model::{
    now, BoundingBox, Image, ImageCreateResult, ImageCreateStatus, ImageCreateSummary, Metadata, Region, Tag, TagType,
};
use crate::store::{ImageQuery, InsertOutcome, NewImage, NewRegion, Order, TaggingStatus};

/// One image of an upload batch, before preparation.
#[derive(Debug, Clone)]
pub struct UploadItem {
    /// File name or URL, echoed as `sourceUrl`.
    pub source: String,
    /// The bytes, or the reason they could not be read.
    pub bytes: Result<Bytes, ImageCreateStatus>,
    /// Tags for this image (the batch's tags are added).
    pub tag_ids: Vec<Uuid>,
    /// Regions for this image.
    pub regions: Vec<Region>,
}

/// Parameters of GetImages and friends, as raw request values.
#[derive(Debug, Clone, Default)]
pub struct ImageListing {
    /// `iterationId`.
    pub iteration: Option<Uuid>,
    /// `tagIds`.
    pub tag_ids: Vec<Uuid>,
    /// `taggingStatus`.
    pub tagging: Option<String>,
    /// `$filter`.
    pub filter: Option<String>,
    /// `orderBy`.
    pub order_by: Option<String>,
    /// `take`.
    pub take: Option<i64>,
    /// `skip`.
    pub skip: Option<i64>,
}

struct Prepared {
    index: usize,
    hash: String,
    bytes: Bytes,
    image: PreparedImage,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub(crate) fn check_metadata_pairs(metadata: &Metadata) -> ApiResult<()> {
    for (k, v) in metadata {
        if k.is_empty() || k.chars().count() > MAX_METADATA_KEY_LEN {
            return Err(ApiError::new(
                ErrorCode::BadRequestImageMetadataKey,
                format!("Metadata keys must be 1 to {MAX_METADATA_KEY_LEN} characters."),
            ));
        }
        if v.chars().count() > MAX_METADATA_VALUE_LEN {
            return Err(ApiError::new(
                ErrorCode::BadRequestImageMetadataValue,
                format!("Metadata values must be at most {MAX_METADATA_VALUE_LEN} characters (key '{k}')."),
            ));
        }
    }
    if metadata.len() > MAX_METADATA_PAIRS {
        return Err(ApiError::new(
            ErrorCode::BadRequestImageMetadataKey,
            format!("An image can have at most {MAX_METADATA_PAIRS} metadata pairs."),
        ));
    }
    Ok(())
}

impl Argus {
    pub(crate) async fn tag_map(&self, project: Uuid) -> ApiResult<HashMap<Uuid, Tag>> {
        Ok(self.store.list_tags(project).await.map_err(store_err)?.into_iter().map(|t| (t.id, t)).collect())
    }

    /// Creates images from a batch: CreateImagesFromData, CreateImagesFromFiles, CreateImagesFromUrls.
    /// Returns the summary and whether every image succeeded (200) or not (207).
    pub async fn create_images(
        &self,
        ctx: &UrlContext,
        project: Uuid,
        batch_tags: Vec<Uuid>,
        metadata: Metadata,
        items: Vec<UploadItem>,
    ) -> ApiResult<ImageCreateSummary> {
        self.project(project).await?;
        if items.is_empty() {
            return Err(ApiError::new(ErrorCode::BadRequestImageBatch, "The batch contains no images."));
        }
        if items.len() > MAX_IMAGES_PER_BATCH {
            return Err(ApiError::new(
                ErrorCode::BadRequestExceededBatchSize,
                format!("A batch can contain at most {MAX_IMAGES_PER_BATCH} images; got {}.", items.len()),
            ));
        }
        if batch_tags.len() > MAX_TAGS_PER_BATCH {
            return Err(ApiError::new(
                ErrorCode::BadRequestExceededBatchSize,
                format!("A batch can name at most {MAX_TAGS_PER_BATCH} tags; got {}.", batch_tags.len()),
            ));
        }
        check_metadata_pairs(&metadata)?;
        let tags = self.tag_map(project).await?;
        for id in batch_tags.iter().chain(items.iter().flat_map(|i| i.tag_ids.iter())) {
            if !tags.contains_key(id) {
                return Err(ApiError::new(
                    ErrorCode::BadRequestImageTags,
                    format!("Tag {id} does not exist in this project."),
                ));
            }
        }
        for r in items.iter().flat_map(|i| i.regions.iter()) {
            if !tags.contains_key(&r.tag_id) {
                return Err(ApiError::new(
                    ErrorCode::BadRequestImageRegions,
                    format!("Tag {} of a region does not exist in this project.", r.tag_id),
                ));
            }
            check_region(r.left, r.top, r.width, r.height, r.polygon.as_ref())?;
        }

        let n = items.len();
        let mut statuses: Vec<Option<ImageCreateStatus>> = vec![None; n];
        let mut image_ids: Vec<Option<Uuid>> = vec![None; n];
        let mut all_tags: Vec<Vec<Uuid>> = Vec::with_capacity(n);
        for (i, item) in items.iter().enumerate() {
            let mut t: Vec<Uuid> = Vec::new();
            for id in batch_tags.iter().chain(item.tag_ids.iter()) {
                if !t.contains(id) {
                    t.push(*id);
                }
            }
            let mut with_regions = t.clone();
            for r in &item.regions {
                if !with_regions.contains(&r.tag_id) {
                    with_regions.push(r.tag_id);
                }
            }
            let negative = with_regions.iter().any(|id| tags.get(id).map(|t| t.kind) == Some(TagType::Negative));
            let regular = with_regions.iter().any(|id| tags.get(id).map(|t| t.kind) != Some(TagType::Negative));
            statuses[i] = match &item.bytes {
                Err(s) => Some(*s),
                Ok(_) if with_regions.len() > MAX_TAGS_PER_IMAGE => Some(ImageCreateStatus::ErrorTagLimitExceed),
                Ok(_) if item.regions.len() > MAX_REGIONS_PER_IMAGE => Some(ImageCreateStatus::ErrorRegionLimitExceed),
                Ok(_) if negative && regular => Some(ImageCreateStatus::ErrorNegativeAndRegularTagOnSameImage),
                Ok(_) => None,
            };
            all_tags.push(t);
        }

        // Decode and derive off the async runtime, a few images at a time.
        let limits = ImageLimits { max_bytes: MAX_TRAINING_IMAGE_BYTES, max_side: MAX_IMAGE_SIDE };
        let todo: Vec<(usize, Bytes)> = items
            .iter()
            .enumerate()
            .filter(|(i, _)| statuses[*i].is_none())
            .filter_map(|(i, it)| it.bytes.as_ref().ok().map(|b| (i, b.clone())))
            .collect();
        let results: Vec<(usize, Result<Prepared, ImageCreateStatus>)> = stream::iter(todo)
            .map(|(index, bytes)| async move {
                let engine = self.models.engine();
                let res = tokio::task::spawn_blocking(move || {
                    let hash = sha256_hex(&bytes);
                    engine.prepare_image(&bytes, limits).map(|image| Prepared { index, hash, bytes, image })
                })
                .await;
                let mapped = match res {
                    Ok(Ok(p)) => Ok(p),
                    Ok(Err(ImageError::TooLarge(_) | ImageError::DimensionsTooLarge(_))) => {
                        Err(ImageCreateStatus::ErrorImageSize)
                    }
                    Ok(Err(ImageError::Format(_))) => Err(ImageCreateStatus::ErrorImageFormat),
                    Err(e) => {
                        tracing::error!(error = %e, "image preparation task failed");
                        Err(ImageCreateStatus::ErrorUnknown)
                    }
                };
                (index, mapped)
            })
            .buffer_unordered(self.config.image_workers.max(1))
            .collect()
            .await;

        // Duplicates inside the batch and against the project, then durable blob writes.
        let mut prepared: Vec<Prepared> = Vec::new();
        for (i, r) in results {
            match r {
                Ok(p) => prepared.push(p),
                Err(s) => statuses[i] = Some(s),
            }
        }
        prepared.sort_by_key(|p| p.index);
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut fresh: Vec<Prepared> = Vec::new();
        let mut batch_dups: Vec<(usize, usize)> = Vec::new();
        for p in prepared {
            if let Some(&first) = seen.get(&p.hash) {
                batch_dups.push((p.index, first));
                continue;
            }
            seen.insert(p.hash.clone(), p.index);
            if let Some(existing) = self.store.find_image_by_hash(project, &p.hash).await.map_err(store_err)? {
                statuses[p.index] = Some(ImageCreateStatus::OkDuplicate);
                image_ids[p.index] = Some(existing);
                continue;
            }
            fresh.push(p);
        }

        let created = now();
        let blobs = Arc::clone(&self.blobs);
        let mut writes = stream::iter(fresh.into_iter().map(|p| {
            let blobs = Arc::clone(&blobs);
            async move {
                let id = Uuid::new_v4();
                let r = async {
                    blobs.put(&original_key(project, id), p.bytes.clone()).await?;
                    blobs.put(&resized_key(project, id), Bytes::from(p.image.resized_jpeg.clone())).await?;
                    blobs.put(&thumbnail_key(project, id), Bytes::from(p.image.thumbnail_jpeg.clone())).await
                }
                .await;
                (id, p, r)
            }
        }))
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await;
        // Commit in input order, so quotas and duplicates are decided as the client listed the images.
        writes.sort_by_key(|(_, p, _)| p.index);

        let mut rows: Vec<NewImage> = Vec::new();
        let mut row_index: Vec<usize> = Vec::new();
        for (id, p, r) in writes {
            if let Err(e) = r {
                tracing::error!(error = %e, "writing image blobs failed");
                statuses[p.index] = Some(ImageCreateStatus::ErrorStorage);
                self.remove_image_blobs(project, id).await;
                continue;
            }
            let item = &items[p.index];
            rows.push(NewImage {
                id,
                created,
                width: p.image.width,
                height: p.image.height,
                mime: p.image.mime.to_string(),
                byte_size: p.bytes.len() as u64,
                content_hash: p.hash,
                metadata: metadata.clone(),
                tag_ids: all_tags[p.index].clone(),
                regions: item
                    .regions
                    .iter()
                    .map(|r| NewRegion {
                        id: Uuid::new_v4(),
                        tag_id: r.tag_id,
                        bbox: BoundingBox { left: r.left, top: r.top, width: r.width, height: r.height },
                        polygon: r.polygon.clone(),
                        created,
                    })
                    .collect(),
            });
            row_index.push(p.index);
        }
        if !rows.is_empty() {
            let outcomes = match self.store.insert_images(project, &rows, self.config.max_images_per_project).await {
                Ok(o) => o,
                Err(e) => {
                    for row in &rows {
                        self.remove_image_blobs(project, row.id).await;
                    }
                    return Err(store_err(e));
                }
            };
            for ((row, idx), outcome) in rows.iter().zip(row_index).zip(outcomes) {
                match outcome {
                    InsertOutcome::Inserted => {
                        statuses[idx] = Some(ImageCreateStatus::Ok);
                        image_ids[idx] = Some(row.id);
                    }
                    InsertOutcome::Duplicate(existing) => {
                        self.remove_image_blobs(project, row.id).await;
                        statuses[idx] = Some(ImageCreateStatus::OkDuplicate);
                        image_ids[idx] = Some(existing);
                    }
                    InsertOutcome::QuotaExceeded => {
                        self.remove_image_blobs(project, row.id).await;
                        statuses[idx] = Some(ImageCreateStatus::ErrorLimitExceed);
                    }
                }
            }
        }
        for (dup, first) in batch_dups {
            statuses[dup] = Some(if statuses[first].is_some_and(|s| s.is_success()) {
                image_ids[dup] = image_ids[first];
                ImageCreateStatus::OkDuplicate
            } else {
                statuses[first].unwrap_or(ImageCreateStatus::ErrorUnknown)
            });
        }

        let wanted: Vec<Uuid> = image_ids.iter().flatten().copied().collect::<HashSet<_>>().into_iter().collect();
        let records: HashMap<Uuid, Image> = self
            .store
            .get_images(project, &wanted)
            .await
            .map_err(store_err)?
            .into_iter()
            .map(|r| (r.id, self.render_image(ctx, r)))
            .collect();
        let results: Vec<ImageCreateResult> = items
            .iter()
            .enumerate()
            .map(|(i, item)| ImageCreateResult {
                source_url: item.source.clone(),
                status: statuses[i].unwrap_or(ImageCreateStatus::ErrorUnknown),
                image: image_ids[i].and_then(|id| records.get(&id).cloned()),
            })
            .collect();
        let ok = results.iter().filter(|r| r.status.is_success()).count();
        // The hosted service answers `isBatchSuccessful: false` (and 207) as soon as one entry is not a plain
        // `OK`, duplicates included; client code in the wild relies on that to skip `OKDuplicate` entries.
        let all_new = results.iter().all(|r| r.status == ImageCreateStatus::Ok);
        tracing::info!(project = %project, images = n, ok, "image batch processed");
        Ok(ImageCreateSummary { is_batch_successful: all_new, images: results })
    }

    /// CreateImagesFromUrls: downloads each URL (SSRF-guarded) and creates the images.
    pub async fn create_images_from_urls(
        &self,
        ctx: &UrlContext,
        project: Uuid,
        batch: crate::model::ImageUrlCreateBatch,
    ) -> ApiResult<ImageCreateSummary> {
        self.project(project).await?;
        let entries = batch.images.unwrap_or_default();
        if entries.len() > MAX_IMAGES_PER_BATCH {
            return Err(ApiError::new(
                ErrorCode::BadRequestExceededBatchSize,
                format!("A batch can contain at most {MAX_IMAGES_PER_BATCH} images; got {}.", entries.len()),
            ));
        }
        let fetcher = Arc::clone(&self.fetcher);
        let items: Vec<UploadItem> = stream::iter(entries)
            .map(|e| {
                let fetcher = Arc::clone(&fetcher);
                async move {
                    let url = e.url.unwrap_or_default();
                    let bytes = if url.is_empty() {
                        Err(ImageCreateStatus::ErrorSource)
                    } else {
                        match fetcher.fetch(&url, MAX_URL_DOWNLOAD_BYTES).await {
                            Ok(b) => Ok(b),
                            Err(crate::store::FetchError::TooLarge(_)) => Err(ImageCreateStatus::ErrorImageSize),
                            Err(err) => {
                                tracing::info!(url = %url, error = %err, "image download refused or failed");
                                Err(ImageCreateStatus::ErrorSource)
                            }
                        }
                    };
                    UploadItem {
                        source: url,
                        bytes,
                        tag_ids: e.tag_ids.unwrap_or_default(),
                        regions: e.regions.unwrap_or_default(),
                    }
                }
            })
            .buffered(8)
            .collect()
            .await;
        self.create_images(ctx, project, batch.tag_ids.unwrap_or_default(), batch.metadata.unwrap_or_default(), items)
            .await
    }

    pub(crate) async fn remove_image_blobs(&self, project: Uuid, image: Uuid) {
        for key in [original_key(project, image), resized_key(project, image), thumbnail_key(project, image)] {
            if let Err(e) = self.blobs.delete(&key).await {
                tracing::warn!(key = %key, error = %e, "blob delete failed; the sweep will retry");
            }
        }
    }

    fn image_query(&self, l: &ImageListing, default_tagging: TaggingStatus) -> ApiResult<ImageQuery> {
        check_tag_filter(&l.tag_ids)?;
        let tagging = match l.tagging.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("") => default_tagging,
            Some("all") => TaggingStatus::All,
            Some("tagged") => TaggingStatus::Tagged,
            Some("untagged") => TaggingStatus::Untagged,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "taggingStatus must be All, Tagged or Untagged, not '{other}'."
                )))
            }
        };
        let order = match l.order_by.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("") | Some("newest") => Order::Newest,
            Some("oldest") => Order::Oldest,
            Some(other) => {
                return Err(ApiError::bad_request(format!("orderBy must be Newest or Oldest, not '{other}'.")))
            }
        };
        let take = l.take.unwrap_or(DEFAULT_TAKE as i64);
        if !(0..=MAX_TAKE as i64).contains(&take) {
            return Err(ApiError::bad_request(format!("take must be between 0 and {MAX_TAKE}; got {take}.")));
        }
        let skip = l.skip.unwrap_or(0);
        if !(0..=u32::MAX as i64).contains(&skip) {
            return Err(ApiError::bad_request(format!("skip must be zero or more; got {skip}.")));
        }
        let filter = match l.filter.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(f) => Some(parse_filter(f)?),
        };
        Ok(ImageQuery { tagging, tag_ids: l.tag_ids.clone(), filter, order, skip: skip as u32, take: take as u32 })
    }

    /// GetImages / GetTaggedImages / GetUntaggedImages: `default_tagging` is what the route implies.
    pub async fn list_images(
        &self,
        ctx: &UrlContext,
        project: Uuid,
        l: ImageListing,
        default_tagging: TaggingStatus,
    ) -> ApiResult<Vec<Image>> {
        self.project(project).await?;
        let q = self.image_query(&l, default_tagging)?;
        if let Some(it) = l.iteration {
            let all = self.iteration_view(ctx, project, it, &q).await?;
            return Ok(all.into_iter().skip(q.skip as usize).take(q.take as usize).collect());
        }
        let records = self.store.query_images(project, &q).await.map_err(store_err)?;
        Ok(records.into_iter().map(|r| self.render_image(ctx, r)).collect())
    }

    /// The images an iteration trained on that match `q` (tags, tagging status, metadata filter), in order.
    async fn iteration_view(&self, ctx: &UrlContext, project: Uuid, it: Uuid, q: &ImageQuery) -> ApiResult<Vec<Image>> {
        let mut all = self.iteration_images(ctx, project, it).await?;
        // Every image of an iteration was tagged when it trained.
        if q.tagging == TaggingStatus::Untagged {
            all.clear();
        }
        if !q.tag_ids.is_empty() {
            all.retain(|i| i.tags.iter().any(|t| q.tag_ids.contains(&t.tag_id)));
        }
        if let Some(f) = &q.filter {
            all.retain(|i| crate::filter::matches(f, &i.metadata));
        }
        all.sort_by_key(|i| (i.created, i.id));
        if q.order == Order::Newest {
            all.reverse();
        }
        Ok(all)
    }

    /// GetImageCount / GetTaggedImageCount / GetUntaggedImageCount.
    pub async fn count_images(&self, project: Uuid, l: ImageListing, default_tagging: TaggingStatus) -> ApiResult<u64> {
        self.project(project).await?;
        let q = self.image_query(&l, default_tagging)?;
        if let Some(it) = l.iteration {
            let ctx = UrlContext { base_url: String::new() };
            return Ok(self.iteration_view(&ctx, project, it, &q).await?.len() as u64);
        }
        self.store.count_images(project, &q).await.map_err(store_err)
    }

    /// GetImagesByIds.
    pub async fn images_by_ids(
        &self,
        ctx: &UrlContext,
        project: Uuid,
        ids: Vec<Uuid>,
        iteration: Option<Uuid>,
    ) -> ApiResult<Vec<Image>> {
        self.project(project).await?;
        if ids.len() > MAX_IMAGE_IDS {
            return Err(ApiError::new(
                ErrorCode::BadRequestExceededBatchSize,
                format!("At most {MAX_IMAGE_IDS} image ids can be given; got {}.", ids.len()),
            ));
        }
        if let Some(it) = iteration {
            let view = self.iteration_images(ctx, project, it).await?;
            return Ok(ids.iter().filter_map(|id| view.iter().find(|i| i.id == *id).cloned()).collect());
        }
        let records = self.store.get_images(project, &ids).await.map_err(store_err)?;
        Ok(records.into_iter().map(|r| self.render_image(ctx, r)).collect())
    }

    /// DeleteImages: by ids (at most 256), or every image (`all`). Rows go first, in one transaction, then
    /// the blobs.
    pub async fn delete_images(&self, project: Uuid, ids: Vec<Uuid>, all: bool, all_iterations: bool) -> ApiResult<()> {
        self.project(project).await?;
        if !all && ids.is_empty() {
            return Err(ApiError::new(ErrorCode::BadRequestInvalidIds, "Give imageIds, or allImages=true."));
        }
        if ids.len() > MAX_IMAGE_IDS {
            return Err(ApiError::new(
                ErrorCode::BadRequestExceededBatchSize,
                format!("At most {MAX_IMAGE_IDS} image ids can be deleted at once; got {}.", ids.len()),
            ));
        }
        let selection = if all { None } else { Some(ids.as_slice()) };
        // Without allIterations an image leaves the workspace only: the iterations that trained on it keep
        // showing it, as the hosted service does ("removes these images from all iterations, not just the
        // current workspace" is what the flag adds).
        let retain = if all_iterations { HashSet::new() } else { self.images_in_iterations(project).await? };
        let done = self.store.delete_images(project, selection, &retain).await.map_err(store_err)?;
        let mut gone = done.deleted;
        if all_iterations {
            // Images that an earlier delete left in iteration views go now too.
            gone.extend(self.store.purge_retired_images(project, selection, &retain).await.map_err(store_err)?);
        }
        for id in &gone {
            self.remove_image_blobs(project, *id).await;
        }
        tracing::info!(project = %project, deleted = gone.len(), kept_for_iterations = done.retired.len(), "images deleted");
        Ok(())
    }
}
