//! The Prediction API (classify / detect a published iteration, storing the image and the answer unless
//! `/nostore`) and the stored-prediction side of the Training API: QueryPredictions, DeletePrediction,
//! CreateImagesFromPredictions, and the retention sweep.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use chrono::Duration;
use uuid::Uuid;

use super::images::UploadItem;
use super::training::{snapshot_of, Snapshot};
use super::{store_err, Argus, UrlContext};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::limits::{MAX_IMAGES_PER_BATCH, MAX_PREDICTION_IDS, MAX_PREDICTION_IMAGE_BYTES, MAX_TAKE};
use crate::model::{
    now, ImageCreateStatus, ImageCreateSummary, ImageIdCreateBatch, ImagePrediction, Prediction, PredictionQueryResult,
    PredictionQueryTag, PredictionQueryToken, StoredImagePrediction,
};
use crate::store::{FetchError, PredictionCursor, PredictionOrder, PredictionQuery, PredictionRecord, UrlFetcher};

/// Tag filters a prediction query may combine.
pub const MAX_QUERY_TAGS: usize = 2;
/// Longest `application` value.
pub const MAX_APPLICATION_LEN: usize = 256;
/// Page size of QueryPredictions when `maxCount` is absent or 0.
const DEFAULT_QUERY_COUNT: usize = 50;

/// Classify or detect: which Prediction API route was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionKind {
    /// `/classify/…`.
    Classify,
    /// `/detect/…`.
    Detect,
}

/// A Prediction API call.
#[derive(Debug, Clone)]
pub struct PredictRequest {
    /// Project id.
    pub project: Uuid,
    /// Published iteration name (URL-decoded).
    pub published_name: String,
    /// Route family.
    pub kind: PredictionKind,
    /// `application` query value.
    pub application: Option<String>,
    /// False for the `/nostore` routes.
    pub store: bool,
    /// v3.1 responses carry `tagType`; v3.0 responses do not.
    pub with_tag_type: bool,
}

/// Blob key of a stored prediction's image file.
pub fn prediction_key(project: Uuid, prediction: Uuid, file: &str) -> String {
    format!("projects/{project}/predictions/{prediction}/{file}")
}

/// Normalised entropy of a prediction in [0, 1]: how unsure the model was (the `Suggested` order).
pub(crate) fn uncertainty(preds: &[Prediction], independent: bool) -> f64 {
    let h = |p: f64| if p > 0.0 { -p * p.ln() } else { 0.0 };
    if preds.is_empty() {
        return 0.0;
    }
    if independent {
        // Independent yes/no answers (multilabel tags, or detected boxes): mean binary entropy of the ten
        // most confident.
        let preds = &preds[..preds.len().min(10)];
        preds.iter().map(|p| (h(p.probability) + h(1.0 - p.probability)) / 2f64.ln()).sum::<f64>() / preds.len() as f64
    } else if preds.len() < 2 {
        0.0
    } else {
        preds.iter().map(|p| h(p.probability)).sum::<f64>() / (preds.len() as f64).ln()
    }
}

/// Downloads the image of a `{"url": …}` prediction with `fetcher`, with the Prediction API's errors.
pub async fn fetch_prediction_image(fetcher: &dyn UrlFetcher, url: &str, max_bytes: usize) -> ApiResult<Bytes> {
    if url.trim().is_empty() {
        return Err(ApiError::new(ErrorCode::BadRequestImageUrl, "url is required."));
    }
    fetcher.fetch(url, max_bytes).await.map_err(|e| match e {
        FetchError::TooLarge(n) => {
            ApiError::new(ErrorCode::BadRequestImageSizeBytes, format!("The image exceeds {n} bytes."))
        }
        other => ApiError::new(ErrorCode::BadRequestImageUrl, format!("The image could not be downloaded: {other}")),
    })
}

/// What every prediction checks before running a model: the route's kind matches the model (`what` names it
/// in the message) and the image is within the Prediction API's size limit.
pub(super) fn check_prediction(kind: PredictionKind, detection: bool, what: &str, bytes: usize) -> ApiResult<()> {
    match (kind, detection) {
        (PredictionKind::Classify, true) => {
            return Err(ApiError::new(
                ErrorCode::BadRequestNotSupported,
                format!("{what} is an object detector; call the detect route."),
            ))
        }
        (PredictionKind::Detect, false) => {
            return Err(ApiError::new(
                ErrorCode::BadRequestNotSupported,
                format!("{what} is an image classifier; call the classify route."),
            ))
        }
        _ => {}
    }
    if bytes > MAX_PREDICTION_IMAGE_BYTES {
        return Err(ApiError::new(
            ErrorCode::BadRequestImageSizeBytes,
            format!("The image is {bytes} bytes; the limit is {MAX_PREDICTION_IMAGE_BYTES}."),
        ));
    }
    Ok(())
}

fn check_application(app: Option<&str>) -> ApiResult<String> {
    let app = app.unwrap_or("");
    if app.chars().count() > MAX_APPLICATION_LEN || app.chars().any(char::is_control) {
        return Err(ApiError::new(
            ErrorCode::BadRequestPredictionInvalidApplicationName,
            format!("application must be at most {MAX_APPLICATION_LEN} printable characters."),
        ));
    }
    Ok(app.to_string())
}

fn invalid_query(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BadRequestPredictionInvalidQueryParameters, message)
}

impl Argus {
    /// Downloads an image for the Prediction API or QuickTest (SSRF-guarded), with the official errors.
    pub async fn fetch_image(&self, url: &str, max_bytes: usize) -> ApiResult<Bytes> {
        fetch_prediction_image(self.fetcher.as_ref(), url, max_bytes).await
    }

    /// ClassifyImage, DetectImage and their `/url` and `/nostore` variants.
    pub async fn predict(&self, req: PredictRequest, bytes: Bytes) -> ApiResult<ImagePrediction> {
        let application = check_application(req.application.as_deref())?;
        self.project(req.project).await?;
        let iteration = self
            .store
            .list_iterations(req.project)
            .await
            .map_err(store_err)?
            .into_iter()
            .find(|i| !i.publish_name.is_empty() && i.publish_name == req.published_name)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotFoundIteration,
                    format!("No iteration of this project is published as '{}'.", req.published_name),
                )
            })?;
        let (_, snap) = self.iteration_record(req.project, iteration.id).await?;
        let snap = snapshot_of(snap)?;
        check_prediction(req.kind, snap.is_detection(), &format!("'{}'", req.published_name), bytes.len())?;
        let original = bytes.clone();
        let (mut predictions, kept) =
            self.run_model(req.project, iteration.id, &snap, bytes, MAX_PREDICTION_IMAGE_BYTES, req.store).await?;
        let result = ImagePrediction {
            id: Uuid::new_v4(),
            project: req.project,
            iteration: iteration.id,
            created: now(),
            predictions: predictions.clone(),
        };
        if let Some(prepared) = kept {
            self.store_prediction(
                &result,
                &snap,
                iteration.domain_id.unwrap_or_default(),
                application,
                original,
                prepared,
            )
            .await?;
        }
        if !req.with_tag_type {
            for p in predictions.iter_mut() {
                p.tag_type = None;
            }
        }
        Ok(ImagePrediction { predictions, ..result })
    }

    /// Writes a prediction's image files, then its row: once this returns it is durable and queryable.
    /// Its uncertainty (the `Suggested` order) follows the iteration's kind: independent yes/no answers for
    /// detectors and multilabel classifiers, one softmax for multiclass.
    pub(super) async fn store_prediction(
        &self,
        result: &ImagePrediction,
        snap: &Snapshot,
        domain: Uuid,
        application: String,
        original: Bytes,
        prepared: crate::compute::PreparedImage,
    ) -> ApiResult<()> {
        let (p, id) = (result.project, result.id);
        let uncertainty = uncertainty(&result.predictions, snap.is_detection() || snap.is_multilabel());
        self.blobs.put(&prediction_key(p, id, "original"), original).await.map_err(store_err)?;
        self.blobs
            .put(&prediction_key(p, id, "resized.jpg"), Bytes::from(prepared.resized_jpeg))
            .await
            .map_err(store_err)?;
        self.blobs
            .put(&prediction_key(p, id, "thumbnail.jpg"), Bytes::from(prepared.thumbnail_jpeg))
            .await
            .map_err(store_err)?;
        let record = PredictionRecord {
            id,
            project: p,
            iteration: result.iteration,
            domain,
            application,
            created: result.created,
            uncertainty,
            width: prepared.width,
            height: prepared.height,
            predictions: result.predictions.clone(),
        };
        self.store.insert_prediction(&record).await.map_err(store_err)
    }

    fn render_prediction(&self, ctx: &UrlContext, r: PredictionRecord) -> StoredImagePrediction {
        StoredImagePrediction {
            resized_image_uri: self.signed_url(ctx, &prediction_key(r.project, r.id, "resized.jpg")),
            thumbnail_uri: self.signed_url(ctx, &prediction_key(r.project, r.id, "thumbnail.jpg")),
            original_image_uri: self.signed_url(ctx, &prediction_key(r.project, r.id, "original")),
            domain: r.domain,
            id: r.id,
            project: r.project,
            iteration: r.iteration,
            created: r.created,
            predictions: r.predictions,
        }
    }

    /// QueryPredictions: stored predictions matching the token, one page, with the token to pass back.
    pub async fn query_predictions(
        &self,
        ctx: &UrlContext,
        project: Uuid,
        token: PredictionQueryToken,
    ) -> ApiResult<PredictionQueryResult> {
        self.project(project).await?;
        let tags = token.tags.clone().unwrap_or_default();
        if tags.len() > MAX_QUERY_TAGS {
            return Err(ApiError::new(
                ErrorCode::BadRequestPredictionTagsExceededCount,
                format!("A prediction query can filter on at most {MAX_QUERY_TAGS} tags; got {}.", tags.len()),
            ));
        }
        let mut filters = Vec::new();
        for t in &tags {
            let (min, max) = (t.min_threshold.unwrap_or(0.0), t.max_threshold.unwrap_or(1.0));
            if !(0.0..=1.0).contains(&min) || !(0.0..=1.0).contains(&max) || min > max {
                return Err(invalid_query(format!(
                    "Tag {}: minThreshold and maxThreshold must lie in [0, 1] with min <= max.",
                    t.id
                )));
            }
            filters.push((t.id, min, max));
        }
        let order = match token.order_by.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("") | Some("newest") => PredictionOrder::Newest,
            Some("oldest") => PredictionOrder::Oldest,
            Some("suggested") => PredictionOrder::Suggested,
            Some(o) => return Err(invalid_query(format!("orderBy must be Newest, Oldest or Suggested, not '{o}'."))),
        };
        if let (Some(a), Some(b)) = (token.start_time, token.end_time) {
            if a > b {
                return Err(invalid_query("startTime is after endTime."));
            }
        }
        let max = match token.max_count {
            None | Some(0) => DEFAULT_QUERY_COUNT,
            Some(n) if n < 0 => return Err(invalid_query("maxCount must not be negative.")),
            Some(n) => (n as usize).min(MAX_TAKE as usize),
        };
        let after = match token.continuation.as_deref().filter(|c| !c.is_empty()) {
            None => None,
            Some(c) => Some(
                URL_SAFE_NO_PAD
                    .decode(c)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<PredictionCursor>(&b).ok())
                    .ok_or_else(|| invalid_query("continuation is not one this server issued."))?,
            ),
        };
        let application = match token.application.as_deref() {
            None | Some("") => None,
            Some(a) => Some(check_application(Some(a))?),
        };
        let query = PredictionQuery {
            tags: filters,
            iteration: token.iteration_id,
            application,
            start: token.start_time,
            end: token.end_time,
            order,
            after,
            limit: max as u32 + 1,
        };
        let mut rows = self.store.query_predictions(project, &query).await.map_err(store_err)?;
        let more = rows.len() > max;
        rows.truncate(max);
        let continuation = match (more, rows.last()) {
            (true, Some(last)) => {
                let c = PredictionCursor {
                    uncertainty: last.uncertainty,
                    created_ms: last.created.timestamp_millis(),
                    id: last.id,
                };
                URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).map_err(ApiError::internal)?)
            }
            _ => String::new(),
        };
        let results = rows.into_iter().map(|r| self.render_prediction(ctx, r)).collect();
        let token = PredictionQueryToken {
            session: Some(token.session.unwrap_or_default()),
            continuation: Some(continuation),
            max_count: Some(token.max_count.unwrap_or(0)),
            order_by: Some(
                match order {
                    PredictionOrder::Newest => "Newest",
                    PredictionOrder::Oldest => "Oldest",
                    PredictionOrder::Suggested => "Suggested",
                }
                .to_string(),
            ),
            // The effective thresholds, never `null` (the schema's numbers are not nullable).
            tags: Some(
                tags.into_iter()
                    .map(|t| PredictionQueryTag {
                        min_threshold: Some(t.min_threshold.unwrap_or(0.0)),
                        max_threshold: Some(t.max_threshold.unwrap_or(1.0)),
                        ..t
                    })
                    .collect(),
            ),
            application: Some(token.application.unwrap_or_default()),
            ..token
        };
        Ok(PredictionQueryResult { token, results })
    }

    /// DeletePrediction: removes rows and image files. Ids that do not exist are ignored.
    pub async fn delete_predictions(&self, project: Uuid, ids: Vec<Uuid>) -> ApiResult<()> {
        self.project(project).await?;
        if ids.is_empty() {
            return Err(ApiError::new(ErrorCode::BadRequestPredictionIdsMissing, "ids is required."));
        }
        if ids.len() > MAX_PREDICTION_IDS {
            return Err(ApiError::new(
                ErrorCode::BadRequestPredictionIdsExceededCount,
                format!("At most {MAX_PREDICTION_IDS} predictions can be deleted at once; got {}.", ids.len()),
            ));
        }
        let gone = self.store.delete_predictions(project, &ids).await.map_err(store_err)?;
        for id in gone {
            self.remove_prediction_blobs(project, id).await;
        }
        Ok(())
    }

    async fn remove_prediction_blobs(&self, project: Uuid, id: Uuid) {
        if let Err(e) = self.blobs.delete_prefix(&format!("projects/{project}/predictions/{id}/")).await {
            tracing::warn!(prediction = %id, error = %e, "prediction blob delete failed; the sweep will retry");
        }
    }

    /// CreateImagesFromPredictions: copies stored prediction images into the training set with the given
    /// tags and regions. An unknown prediction id fails that entry (`ErrorSource`), not the batch.
    pub async fn create_images_from_predictions(
        &self,
        ctx: &UrlContext,
        project: Uuid,
        batch: ImageIdCreateBatch,
    ) -> ApiResult<ImageCreateSummary> {
        self.project(project).await?;
        let entries = batch.images.unwrap_or_default();
        if entries.len() > MAX_IMAGES_PER_BATCH {
            return Err(ApiError::new(
                ErrorCode::BadRequestExceededBatchSize,
                format!("A batch can contain at most {MAX_IMAGES_PER_BATCH} images; got {}.", entries.len()),
            ));
        }
        if entries.iter().any(|e| e.id.is_none()) {
            return Err(ApiError::new(
                ErrorCode::BadRequestInvalidIds,
                "Every entry needs the id of a stored prediction.",
            ));
        }
        let ids: Vec<Uuid> = entries.iter().filter_map(|e| e.id).collect();
        let stored: std::collections::HashSet<Uuid> =
            self.store.get_predictions(project, &ids).await.map_err(store_err)?.into_iter().map(|r| r.id).collect();
        let mut items = Vec::with_capacity(entries.len());
        for e in entries {
            let id = e.id.unwrap_or_default();
            let blob = if stored.contains(&id) {
                self.blobs.get(&prediction_key(project, id, "original")).await.map_err(store_err)?
            } else {
                None
            };
            let bytes = blob.ok_or(ImageCreateStatus::ErrorSource);
            items.push(UploadItem {
                source: id.to_string(),
                bytes,
                tag_ids: e.tag_ids.unwrap_or_default(),
                regions: e.regions.unwrap_or_default(),
            });
        }
        self.create_images(ctx, project, batch.tag_ids.unwrap_or_default(), batch.metadata.unwrap_or_default(), items)
            .await
    }

    /// Deletes stored predictions older than `retention` (rows first, then their files). Returns how many.
    pub async fn sweep_expired_predictions(&self, retention: Duration) -> ApiResult<usize> {
        let before = now() - retention;
        let mut removed = 0;
        loop {
            let batch = self.store.expired_predictions(before, 500).await.map_err(store_err)?;
            if batch.is_empty() {
                break;
            }
            for (project, id) in &batch {
                self.store.delete_predictions(*project, &[*id]).await.map_err(store_err)?;
                self.remove_prediction_blobs(*project, *id).await;
            }
            removed += batch.len();
        }
        if removed > 0 {
            tracing::info!(removed, retention_days = retention.num_days(), "expired predictions removed");
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Prediction;

    fn p(probability: f64) -> Prediction {
        Prediction { probability, tag_id: Uuid::nil(), tag_name: String::new(), bounding_box: None, tag_type: None }
    }

    #[test]
    fn uncertainty_is_normalised_entropy() {
        assert!((uncertainty(&[p(0.5), p(0.5)], false) - 1.0).abs() < 1e-12);
        assert!(uncertainty(&[p(1.0), p(0.0)], false).abs() < 1e-12);
        assert!((uncertainty(&[p(0.5)], true) - 1.0).abs() < 1e-12);
        assert!(uncertainty(&[p(0.9), p(0.1)], false) < uncertainty(&[p(0.6), p(0.4)], false));
    }
}
