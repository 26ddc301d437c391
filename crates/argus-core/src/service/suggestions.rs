//! The smart labeler: SuggestTagsAndRegions runs a trained iteration on images and stores its suggestions;
//! QuerySuggestedImages and QuerySuggestedImageCount read them back for images that are still untagged.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use uuid::Uuid;

use crate::model::IterationStatus;

use super::predictions::uncertainty;
use super::training::snapshot_of;
use super::{check_tag_filter, original_key, resized_key, store_err, thumbnail_key, Argus, UrlContext};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::limits::{MAX_IMAGES_PER_BATCH, MAX_TAKE};
use crate::model::{
    now, StoredSuggestedTagAndRegion, SuggestedTagAndRegion, SuggestedTagAndRegionQuery,
    SuggestedTagAndRegionQueryToken, TagFilter,
};
use crate::store::Suggestion;

fn matches(s: &Suggestion, tags: &[Uuid], threshold: f64) -> bool {
    s.predictions.iter().any(|p| (tags.is_empty() || tags.contains(&p.tag_id)) && p.probability >= threshold)
}

impl Argus {
    /// SuggestTagsAndRegions (at most 64 images).
    pub async fn suggest_tags_and_regions(
        &self,
        project: Uuid,
        iteration: Uuid,
        images: Vec<Uuid>,
    ) -> ApiResult<Vec<SuggestedTagAndRegion>> {
        self.project(project).await?;
        if images.is_empty() {
            return Err(ApiError::new(ErrorCode::BadRequestInvalidIds, "imageIds is required."));
        }
        if images.len() > MAX_IMAGES_PER_BATCH {
            return Err(ApiError::new(
                ErrorCode::BadRequestExceededBatchSize,
                format!("At most {MAX_IMAGES_PER_BATCH} images can be given; got {}.", images.len()),
            ));
        }
        let (it, snap) = self.iteration_record(project, iteration).await?;
        if it.status != IterationStatus::Completed {
            return Err(ApiError::new(
                ErrorCode::BadRequestIterationIsNotTrained,
                format!("Iteration {iteration} has not finished training."),
            ));
        }
        let snap = snapshot_of(snap)?;
        let multilabel = snap.is_detection() || snap.is_multilabel();
        let found = self.store.get_images(project, &images).await.map_err(store_err)?;
        if let Some(missing) = images.iter().find(|id| !found.iter().any(|r| r.id == **id)) {
            return Err(ApiError::new(
                ErrorCode::NotFoundImage,
                format!("Image {missing} was not found in this project."),
            ));
        }
        let mut out = Vec::new();
        let mut rows = Vec::new();
        for img in found {
            let bytes = self
                .blobs
                .get(&resized_key(project, img.id))
                .await
                .map_err(store_err)?
                .ok_or_else(|| ApiError::internal(format!("resized copy of {} missing", img.id)))?;
            let predictions = self.predict_image(project, iteration, &snap, bytes, usize::MAX).await?;
            let u = uncertainty(&predictions, multilabel);
            let created = now();
            rows.push(Suggestion { image_id: img.id, created, uncertainty: u, predictions: predictions.clone() });
            out.push(SuggestedTagAndRegion {
                id: img.id,
                project,
                iteration,
                created,
                predictions,
                prediction_uncertainty: u,
            });
        }
        self.store.put_suggestions(project, iteration, &rows).await.map_err(store_err)?;
        Ok(out)
    }

    async fn suggestions(&self, project: Uuid, iteration: Uuid) -> ApiResult<(uuid::Uuid, Vec<Suggestion>)> {
        self.project(project).await?;
        let (it, _) = self.iteration_record(project, iteration).await?;
        let rows = self.store.untagged_suggestions(project, iteration).await.map_err(store_err)?;
        Ok((it.domain_id.unwrap_or_default(), rows))
    }

    /// QuerySuggestedImages: untagged images whose suggestions match, paged with an opaque continuation.
    pub async fn query_suggested_images(
        &self,
        ctx: &UrlContext,
        project: Uuid,
        iteration: Uuid,
        mut token: SuggestedTagAndRegionQueryToken,
    ) -> ApiResult<SuggestedTagAndRegionQuery> {
        let tags = token.tag_ids.clone().unwrap_or_default();
        check_tag_filter(&tags)?;
        let threshold = token.threshold.unwrap_or(0.0);
        let max = token.max_count.filter(|m| *m > 0).unwrap_or(50).min(MAX_TAKE as i64) as usize;
        let descending = match token.sort_by.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("") | Some("uncertaintydescending") => true,
            Some("uncertaintyascending") => false,
            Some(o) => {
                return Err(ApiError::bad_request(format!(
                    "sortBy must be UncertaintyAscending or UncertaintyDescending, not '{o}'."
                )))
            }
        };
        let offset = match token.continuation.as_deref().filter(|c| !c.is_empty()) {
            None => 0,
            Some(c) => URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.strip_prefix("offset:").and_then(|n| n.parse::<usize>().ok()))
                .ok_or_else(|| ApiError::bad_request("The continuation is not one this server issued."))?,
        };
        let (domain, mut rows) = self.suggestions(project, iteration).await?;
        rows.retain(|s| matches(s, &tags, threshold));
        rows.sort_by(|a, b| a.uncertainty.total_cmp(&b.uncertainty).then(a.image_id.cmp(&b.image_id)));
        if descending {
            rows.reverse();
        }
        let total = rows.len();
        let page: Vec<Suggestion> = rows.into_iter().skip(offset).take(max).collect();
        let ids: Vec<Uuid> = page.iter().map(|s| s.image_id).collect();
        let images: HashMap<Uuid, _> =
            self.store.get_images(project, &ids).await.map_err(store_err)?.into_iter().map(|r| (r.id, r)).collect();
        let results = page
            .into_iter()
            .filter_map(|s| {
                let img = images.get(&s.image_id)?;
                Some(StoredSuggestedTagAndRegion {
                    width: img.width,
                    height: img.height,
                    resized_image_uri: self.signed_url(ctx, &resized_key(project, img.id)),
                    thumbnail_uri: self.signed_url(ctx, &thumbnail_key(project, img.id)),
                    original_image_uri: self.signed_url(ctx, &original_key(project, img.id)),
                    domain,
                    id: img.id,
                    project,
                    iteration,
                    created: s.created,
                    predictions: s.predictions,
                    prediction_uncertainty: s.uncertainty,
                })
            })
            .collect();
        let next = offset + max;
        // The echoed token carries the effective values, never `null` (the schema's fields are not nullable);
        // an empty continuation means there is no further page.
        token.continuation =
            Some(if next < total { URL_SAFE_NO_PAD.encode(format!("offset:{next}")) } else { String::new() });
        token.tag_ids = Some(tags);
        token.threshold = Some(threshold);
        token.max_count = Some(max as i64);
        token.session = Some(token.session.take().unwrap_or_default());
        token.sort_by = Some(if descending { "UncertaintyDescending" } else { "UncertaintyAscending" }.to_string());
        Ok(SuggestedTagAndRegionQuery { token, results })
    }

    /// QuerySuggestedImageCount: per tag, the untagged images whose suggestion for it reaches the threshold.
    pub async fn query_suggested_image_count(
        &self,
        project: Uuid,
        iteration: Uuid,
        filter: TagFilter,
    ) -> ApiResult<HashMap<Uuid, u64>> {
        let tags = filter.tag_ids.unwrap_or_default();
        check_tag_filter(&tags)?;
        let threshold = filter.threshold.unwrap_or(0.0);
        let (_, rows) = self.suggestions(project, iteration).await?;
        Ok(tags.iter().map(|t| (*t, rows.iter().filter(|s| matches(s, &[*t], threshold)).count() as u64)).collect())
    }
}
