//! Use cases of the Training API data plane. Handlers parse a request, call one method here, and map the
//! result; every rule of the contract (limits, validation, error codes) is enforced in this module tree.

mod datasets;
mod exports;
mod images;
mod labels;
mod maintenance;
mod models;
mod package;
mod predictions;
mod projects;
mod served;
mod suggestions;
mod tags;
mod training;
mod transfer;
mod vision;

use std::sync::Arc;

use uuid::Uuid;

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::jobs::JobQueue;
use crate::model::{Image, Project};
use crate::signing::UrlSigner;
use crate::store::{BlobStore, ImageRecord, MetadataStore, StoreError, UrlFetcher};

pub use datasets::{dataset_format, DatasetImportFailure, DatasetImportSummary};
pub use exports::{ExportJobs, EXPORTER_VERSION, EXPORT_JOB};
pub use images::{ImageListing, UploadItem};
pub use maintenance::SweepReport;
pub use models::ModelHub;
pub use predictions::{fetch_prediction_image, prediction_key, PredictRequest, PredictionKind};
pub use projects::NewProject;
pub use served::{ServedModel, MODEL_FOLDER_FORMAT};
pub use training::{
    TrainRequest, TrainingJobs, MIN_CONFIGURABLE_IMAGES_PER_TAG_DETECTION, MIN_IMAGES_PER_TAG_DETECTION, TRAIN_JOB,
};
pub use vision::{
    vision_max_file_bytes, CdfError, CdfErrorKind, CdfResult, SegmentJobs, CUSTOM_VISION_FILE_PREFIX, SEGMENT_JOB,
};

/// Tunables of the services.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Lifetime of signed blob URLs, in seconds.
    pub url_ttl_secs: i64,
    /// Projects allowed on this server.
    pub max_projects: u64,
    /// Images allowed per project.
    pub max_images_per_project: u64,
    /// Threads used to decode and resize the images of one batch.
    pub image_workers: usize,
    /// How long stored predictions are kept, in days.
    pub prediction_retention_days: i64,
    /// Segmentation jobs a CDF project may have queued or running at once (429 above).
    pub max_running_vision_jobs: u64,
    /// How long finished segmentation job results are kept, in hours.
    pub vision_retention_hours: i64,
    /// Images with a box of it each tag needs before a detector trains (the hosted service asks 15; at least 2).
    pub min_detection_images_per_tag: usize,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            url_ttl_secs: 24 * 3600,
            max_projects: crate::limits::DEFAULT_MAX_PROJECTS,
            max_images_per_project: crate::limits::MAX_IMAGES_PER_PROJECT,
            image_workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            prediction_retention_days: 30,
            max_running_vision_jobs: 20,
            vision_retention_hours: 24 * 7,
            min_detection_images_per_tag: training::MIN_IMAGES_PER_TAG_DETECTION,
        }
    }
}

/// Per-request facts the services need to render absolute URLs.
#[derive(Debug, Clone)]
pub struct UrlContext {
    /// Scheme and authority clients reach this server at, e.g. `http://127.0.0.1:8080` (no trailing slash).
    pub base_url: String,
}

/// The application: stores, fetcher, signer and configuration, shared by every handler.
#[derive(Clone)]
pub struct Argus {
    /// Metadata repository.
    pub store: Arc<dyn MetadataStore>,
    /// Blob store.
    pub blobs: Arc<dyn BlobStore>,
    /// URL downloader (SSRF-guarded).
    pub fetcher: Arc<dyn UrlFetcher>,
    /// Durable job queue.
    pub jobs: Arc<dyn JobQueue>,
    /// Pretrained backbone and trained heads.
    pub models: Arc<ModelHub>,
    /// Signer of blob URLs and export tokens.
    pub signer: UrlSigner,
    /// Tunables.
    pub config: ServiceConfig,
}

/// Blob key of an image's original bytes.
pub fn original_key(project: Uuid, image: Uuid) -> String {
    format!("projects/{project}/images/{image}/original")
}

/// Blob key of an image's resized JPEG.
pub fn resized_key(project: Uuid, image: Uuid) -> String {
    format!("projects/{project}/images/{image}/resized.jpg")
}

/// Blob key of an image's thumbnail JPEG.
pub fn thumbnail_key(project: Uuid, image: Uuid) -> String {
    format!("projects/{project}/images/{image}/thumbnail.jpg")
}

/// Blob prefix of everything a project owns.
pub fn project_prefix(project: Uuid) -> String {
    format!("projects/{project}/")
}

pub(crate) fn store_err(e: StoreError) -> ApiError {
    let kind = match &e {
        StoreError::Conflict(_) => "conflict",
        StoreError::Backend(_) => "backend",
    };
    metrics::counter!("argus_store_errors_total", "kind" => kind).increment(1);
    ApiError::internal(e)
}

impl Argus {
    /// Checks that the metadata store answers (readiness).
    pub async fn ready(&self) -> ApiResult<()> {
        self.store.ping().await.map_err(store_err)
    }

    pub(crate) async fn project(&self, id: Uuid) -> ApiResult<Project> {
        self.store
            .get_project(id)
            .await
            .map_err(store_err)?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFoundProject, format!("Project {id} was not found.")))
    }

    /// A signed, expiring absolute URL for a blob key.
    pub fn signed_url(&self, ctx: &UrlContext, key: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        // Round the expiry up to a whole hour so repeated listings return identical, cacheable URLs.
        let expires = (now + self.config.url_ttl_secs + 3599) / 3600 * 3600;
        let sig = self.signer.sign(key, expires);
        format!("{}/blobs/{key}?se={expires}&sig={sig}", ctx.base_url)
    }

    /// Checks a blob URL's signature and expiry.
    pub fn verify_blob_signature(&self, key: &str, expires: i64, sig: &str) -> bool {
        self.signer.verify(key, expires, sig, chrono::Utc::now().timestamp())
    }

    pub(crate) fn render_image(&self, ctx: &UrlContext, r: ImageRecord) -> Image {
        Image {
            id: r.id,
            created: r.created,
            width: r.width,
            height: r.height,
            resized_image_uri: self.signed_url(ctx, &resized_key(r.project_id, r.id)),
            thumbnail_uri: self.signed_url(ctx, &thumbnail_key(r.project_id, r.id)),
            original_image_uri: self.signed_url(ctx, &original_key(r.project_id, r.id)),
            tags: r.tags,
            regions: r.regions,
            metadata: r.metadata,
        }
    }

    /// Opens a blob, whole or a byte range, as a stream (the signed `/blobs/` route).
    pub async fn open_blob(
        &self,
        key: &str,
        range: Option<crate::store::ByteRange>,
    ) -> ApiResult<crate::store::BlobReader> {
        self.blobs
            .open(key, range)
            .await
            .map_err(store_err)?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "The file was not found."))
    }

    /// Reads a whole blob that the metadata says exists: its absence is an internal error (logged), not a 404.
    pub(crate) async fn stored_blob(&self, key: &str) -> ApiResult<bytes::Bytes> {
        self.blobs
            .get(key)
            .await
            .map_err(store_err)?
            .ok_or_else(|| ApiError::internal(format!("blob {key} is missing")))
    }

    /// Reads a whole blob.
    pub async fn read_blob(&self, key: &str) -> ApiResult<bytes::Bytes> {
        self.blobs
            .get(key)
            .await
            .map_err(store_err)?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "The file was not found."))
    }

    /// GetArtifact: a project file by its path relative to the project (e.g. `images/<id>/original`).
    pub async fn get_artifact(&self, project: Uuid, path: &str) -> ApiResult<bytes::Bytes> {
        self.project(project).await?;
        let clean = !path.is_empty()
            && !path.starts_with('/')
            && path.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
            && !path.contains('\\')
            && !path.chars().any(char::is_control);
        if !clean {
            return Err(ApiError::new(
                ErrorCode::BadRequestInvalidArtifactUri,
                format!("'{path}' is not a valid artifact path."),
            ));
        }
        self.read_blob(&format!("{}{path}", project_prefix(project))).await
    }
}

/// Checks a `tagIds` filter: at most 20 tags, else `BadRequestExceededBatchSize`.
pub(crate) fn check_tag_filter(tags: &[Uuid]) -> ApiResult<()> {
    let max = crate::limits::MAX_TAGS_PER_BATCH;
    if tags.len() > max {
        return Err(ApiError::new(
            ErrorCode::BadRequestExceededBatchSize,
            format!("At most {max} tag ids can be given; got {}.", tags.len()),
        ));
    }
    Ok(())
}

/// Validates a region's outline (Argus extension): 1 to [`MAX_POLYGON_RINGS`] rings of 3 to
/// [`MAX_POLYGON_VERTICES`] vertices inside [0, 1]; `BadRequestImageRegions` otherwise.
///
/// [`MAX_POLYGON_RINGS`]: crate::model::MAX_POLYGON_RINGS
/// [`MAX_POLYGON_VERTICES`]: crate::model::MAX_POLYGON_VERTICES
fn check_polygon(p: &crate::model::RegionPolygon) -> ApiResult<()> {
    use crate::model::{MAX_POLYGON_RINGS, MAX_POLYGON_VERTICES};
    let bad = |why: String| Err(ApiError::new(ErrorCode::BadRequestImageRegions, format!("polygon: {why}")));
    if p.is_empty() || p.len() > MAX_POLYGON_RINGS {
        return bad(format!("1 to {MAX_POLYGON_RINGS} rings are allowed; got {}.", p.len()));
    }
    for ring in p {
        if ring.len() < 3 || ring.len() > MAX_POLYGON_VERTICES {
            return bad(format!("a ring needs 3 to {MAX_POLYGON_VERTICES} vertices; got {}.", ring.len()));
        }
        if !ring
            .iter()
            .all(|v| v.x.is_finite() && v.y.is_finite() && (0.0..=1.0).contains(&v.x) && (0.0..=1.0).contains(&v.y))
        {
            return bad("every vertex needs x and y in [0, 1].".into());
        }
    }
    Ok(())
}

/// Validates a region: its normalised box (inside [0, 1], positive size) and its outline when it has one;
/// `BadRequestImageRegions` otherwise.
pub(crate) fn check_region(
    left: f64,
    top: f64,
    width: f64,
    height: f64,
    polygon: Option<&crate::model::RegionPolygon>,
) -> ApiResult<()> {
    check_box(left, top, width, height)?;
    polygon.map_or(Ok(()), check_polygon)
}

/// Validates a normalised box (inside [0, 1], positive size); `BadRequestImageRegions` otherwise.
fn check_box(left: f64, top: f64, width: f64, height: f64) -> ApiResult<()> {
    let eps = crate::limits::BOX_EPSILON;
    let valid = [left, top, width, height].iter().all(|v| v.is_finite())
        && left >= -eps
        && top >= -eps
        && width > 0.0
        && height > 0.0
        && left + width <= 1.0 + eps
        && top + height <= 1.0 + eps;
    if valid {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::BadRequestImageRegions,
        format!(
            "Region ({left}, {top}, {width}, {height}) is not a box inside the image: left, top >= 0, width, height > 0, \
             left + width <= 1, top + height <= 1."
        ),
    ))
}
