//! The persistence contracts the services are written against. `argus-store` implements them with SQLite
//! and a local blob directory; PostgreSQL and S3-compatible storage implement the same traits.

use std::collections::HashSet;

use async_trait::async_trait;
use bytes::Bytes;
use uuid::Uuid;

use crate::filter::MetadataFilter;
use crate::model::{BoundingBox, ImageRegion, ImageTag, Iteration, Metadata, Project, Tag, TagType, Time};

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was violated (e.g. a duplicate tag name).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The back end failed.
    #[error("store back end failed: {0}")]
    Backend(String),
}

/// Result alias for stores.
pub type StoreResult<T> = Result<T, StoreError>;

/// A tag as stored (without its derived image count).
#[derive(Debug, Clone)]
pub struct TagRecord {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Type.
    pub kind: TagType,
    /// Creation time.
    pub created: Time,
}

/// A training image as stored.
#[derive(Debug, Clone)]
pub struct ImageRecord {
    /// Id.
    pub id: Uuid,
    /// Project id.
    pub project_id: Uuid,
    /// Upload time.
    pub created: Time,
    /// Width after orientation.
    pub width: u32,
    /// Height after orientation.
    pub height: u32,
    /// MIME type of the original bytes.
    pub mime: String,
    /// Size of the original bytes.
    pub byte_size: u64,
    /// SHA-256 of the original bytes (hex).
    pub content_hash: String,
    /// Metadata.
    pub metadata: Metadata,
    /// Tags: attached directly, or through a region.
    pub tags: Vec<ImageTag>,
    /// Regions.
    pub regions: Vec<ImageRegion>,
}

/// What [`MetadataStore::delete_images`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeletedImages {
    /// Images gone entirely (their blobs may go).
    pub deleted: Vec<Uuid>,
    /// Images gone from the workspace only (an iteration still shows them; their blobs stay).
    pub retired: Vec<Uuid>,
}

/// A region to insert.
#[derive(Debug, Clone)]
pub struct NewRegion {
    /// New region id.
    pub id: Uuid,
    /// Tag id.
    pub tag_id: Uuid,
    /// Box.
    pub bbox: BoundingBox,
    /// Outline (Argus extension), when the region was segmented.
    pub polygon: Option<crate::model::RegionPolygon>,
    /// Creation time.
    pub created: Time,
}

/// An image to insert, its blobs already durably written.
#[derive(Debug, Clone)]
pub struct NewImage {
    /// New id.
    pub id: Uuid,
    /// Upload time.
    pub created: Time,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// MIME type of the original.
    pub mime: String,
    /// Size of the original.
    pub byte_size: u64,
    /// SHA-256 of the original (hex).
    pub content_hash: String,
    /// Metadata.
    pub metadata: Metadata,
    /// Tags to attach.
    pub tag_ids: Vec<Uuid>,
    /// Regions to add.
    pub regions: Vec<NewRegion>,
}

/// What happened to one [`NewImage`] in [`MetadataStore::insert_images`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Inserted.
    Inserted,
    /// The same bytes are already in the project, as this image.
    Duplicate(Uuid),
    /// The project's image quota is reached.
    QuotaExceeded,
}

/// Which images a listing selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaggingStatus {
    /// Every image.
    #[default]
    All,
    /// Images with at least one tag or region.
    Tagged,
    /// Images with neither.
    Untagged,
}

/// Newest first (default) or oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Newest first.
    #[default]
    Newest,
    /// Oldest first.
    Oldest,
}

/// An image listing or count.
#[derive(Debug, Clone, Default)]
pub struct ImageQuery {
    /// Tagged / untagged / all.
    pub tagging: TaggingStatus,
    /// Images carrying any of these tags (empty: no tag filter).
    pub tag_ids: Vec<Uuid>,
    /// Metadata filter.
    pub filter: Option<MetadataFilter>,
    /// Ordering.
    pub order: Order,
    /// Rows to skip.
    pub skip: u32,
    /// Rows to return.
    pub take: u32,
}

/// Store-wide state: liveness, secrets and leases.
#[async_trait]
pub trait SystemRepo: Send + Sync + 'static {
    /// Checks the store answers.
    async fn ping(&self) -> StoreResult<()>;

    /// The secret named `name`, storing `candidate` as it when there is none yet (atomically: of processes
    /// racing on a new store, one candidate wins and all read it). Returns the value and whether `candidate`
    /// was stored now.
    async fn secret_or_insert(&self, name: &str, candidate: &str) -> StoreResult<(String, bool)>;

    /// Takes or renews the lease `name` for `holder` for `ttl_ms`: true when `holder` holds it now (it was free,
    /// had lapsed, or was already `holder`'s), false while another holder's lease runs. What makes a periodic
    /// task run once across every process sharing the store.
    async fn try_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> StoreResult<bool>;
}

/// Projects.
#[async_trait]
pub trait ProjectRepo: Send + Sync + 'static {
    /// Inserts a project.
    async fn insert_project(&self, project: &Project) -> StoreResult<()>;

    /// One project.
    async fn get_project(&self, id: Uuid) -> StoreResult<Option<Project>>;

    /// Every project, oldest first.
    async fn list_projects(&self) -> StoreResult<Vec<Project>>;

    /// Number of projects.
    async fn count_projects(&self) -> StoreResult<u64>;

    /// Replaces a project's name, description, settings, lastModified and status.
    async fn update_project(&self, project: &Project) -> StoreResult<()>;

    /// Deletes a project and every row under it; false when it did not exist.
    async fn delete_project(&self, id: Uuid) -> StoreResult<bool>;

    /// Ids of every project.
    async fn project_ids(&self) -> StoreResult<HashSet<Uuid>>;
}

/// Tags of a project.
#[async_trait]
pub trait TagRepo: Send + Sync + 'static {
    /// Inserts a tag; [`StoreError::Conflict`] when the name is taken (case-insensitively).
    async fn insert_tag(&self, project: Uuid, tag: &TagRecord) -> StoreResult<()>;

    /// Tags of a project with image counts, oldest first.
    async fn list_tags(&self, project: Uuid) -> StoreResult<Vec<Tag>>;

    /// One tag with its image count.
    async fn get_tag(&self, project: Uuid, tag: Uuid) -> StoreResult<Option<Tag>>;

    /// Replaces a tag's name, description and type; [`StoreError::Conflict`] on a taken name.
    async fn update_tag(&self, project: Uuid, tag: &Tag) -> StoreResult<()>;

    /// Deletes a tag and its image links and regions; false when it did not exist.
    async fn delete_tag(&self, project: Uuid, tag: Uuid) -> StoreResult<bool>;
}

/// Training images and their labels (tags, regions, metadata), and the retired images iterations still reference.
#[async_trait]
pub trait ImageRepo: Send + Sync + 'static {
    /// Inserts images atomically (one transaction), each with its tags and regions. Images whose hash is
    /// already in the project are not inserted ([`InsertOutcome::Duplicate`]); images past `max_images` in
    /// the project are refused ([`InsertOutcome::QuotaExceeded`]).
    async fn insert_images(
        &self,
        project: Uuid,
        images: &[NewImage],
        max_images: u64,
    ) -> StoreResult<Vec<InsertOutcome>>;

    /// The image with these bytes, if any.
    async fn find_image_by_hash(&self, project: Uuid, hash: &str) -> StoreResult<Option<Uuid>>;

    /// Images by id, in the order of `ids`; unknown ids are skipped.
    async fn get_images(&self, project: Uuid, ids: &[Uuid]) -> StoreResult<Vec<ImageRecord>>;

    /// A page of images.
    async fn query_images(&self, project: Uuid, query: &ImageQuery) -> StoreResult<Vec<ImageRecord>>;

    /// Number of images matching (skip/take ignored).
    async fn count_images(&self, project: Uuid, query: &ImageQuery) -> StoreResult<u64>;

    /// Deletes the given images (all when `None`) from the workspace, in one transaction. Those in `retain` (the
    /// images an iteration trained on) become retired images: gone from the workspace, still readable through
    /// [`MetadataStore::get_retired_images`], blobs kept. The rest are gone.
    async fn delete_images(
        &self,
        project: Uuid,
        ids: Option<&[Uuid]>,
        retain: &HashSet<Uuid>,
    ) -> StoreResult<DeletedImages>;

    /// Retired images with these ids, in the order asked (tags and regions are empty: an iteration's snapshot
    /// holds what it trained on).
    async fn get_retired_images(&self, project: Uuid, ids: &[Uuid]) -> StoreResult<Vec<ImageRecord>>;

    /// Deletes the given retired images (all when `None`) except those in `retain`; returns the ids deleted.
    async fn purge_retired_images(
        &self,
        project: Uuid,
        ids: Option<&[Uuid]>,
        retain: &HashSet<Uuid>,
    ) -> StoreResult<Vec<Uuid>>;

    /// Of `candidates`, the image ids that exist in `project`, in the workspace or retired.
    async fn existing_image_ids(&self, project: Uuid, candidates: &[Uuid]) -> StoreResult<HashSet<Uuid>>;

    /// Replaces the metadata of each image, atomically.
    async fn set_metadata(&self, project: Uuid, updates: &[(Uuid, Metadata)]) -> StoreResult<()>;

    /// Attaches tags to images (image, tag, time), atomically; existing links are kept.
    async fn add_image_tags(&self, project: Uuid, links: &[(Uuid, Uuid, Time)]) -> StoreResult<()>;

    /// Detaches every listed tag from every listed image.
    async fn delete_image_tags(&self, project: Uuid, images: &[Uuid], tags: &[Uuid]) -> StoreResult<()>;

    /// Adds regions (image, region), atomically.
    async fn add_regions(&self, project: Uuid, regions: &[(Uuid, NewRegion)]) -> StoreResult<()>;

    /// Deletes regions by id.
    async fn delete_regions(&self, project: Uuid, ids: &[Uuid]) -> StoreResult<()>;
}

/// Iterations (with their training job), their evaluations and smart-labeler suggestions.
#[async_trait]
pub trait IterationRepo: Send + Sync + 'static {
    /// Whether the project has an iteration with this id.
    async fn iteration_exists(&self, project: Uuid, iteration: Uuid) -> StoreResult<bool>;

    /// Number of iterations of the project.
    async fn count_iterations(&self, project: Uuid) -> StoreResult<u64>;

    /// Inserts an iteration with the snapshot of what it trains on, and the job that trains it, in one
    /// transaction: no iteration exists without its job. The job gets the iteration's id (an iteration is
    /// trained by one job), so that its progress is found from the iteration alone.
    /// [`StoreError::Conflict`] when a job of the same kind and scope is already queued or running (a project
    /// trains one iteration at a time), checked inside the transaction so that two nodes cannot both start one.
    async fn insert_iteration_with_job(
        &self,
        iteration: &Iteration,
        snapshot: &serde_json::Value,
        job: &crate::jobs::NewJob,
    ) -> StoreResult<()>;

    /// Inserts an already trained iteration (ImportProject) with its snapshot and held-out evaluation, in one
    /// statement: no job trains it, so it must not be `Training`.
    async fn insert_trained_iteration(
        &self,
        iteration: &Iteration,
        snapshot: &serde_json::Value,
        evaluation: Option<&serde_json::Value>,
    ) -> StoreResult<()>;

    /// One iteration and its snapshot.
    async fn get_iteration(&self, project: Uuid, id: Uuid) -> StoreResult<Option<(Iteration, serde_json::Value)>>;

    /// Iterations of a project, oldest first.
    async fn list_iterations(&self, project: Uuid) -> StoreResult<Vec<Iteration>>;

    /// Saves an iteration's fields (name, status, times, publish state, progress).
    async fn update_iteration(&self, iteration: &Iteration) -> StoreResult<()>;

    /// Stores the held-out evaluation of an iteration.
    async fn set_evaluation(&self, project: Uuid, id: Uuid, evaluation: &serde_json::Value) -> StoreResult<()>;

    /// The held-out evaluation of an iteration.
    async fn get_evaluation(&self, project: Uuid, id: Uuid) -> StoreResult<Option<serde_json::Value>>;

    /// Deletes an iteration; false when it did not exist.
    async fn delete_iteration(&self, project: Uuid, id: Uuid) -> StoreResult<bool>;

    /// Saves (replacing) smart-labeler suggestions of an iteration for images.
    async fn put_suggestions(&self, project: Uuid, iteration: Uuid, rows: &[Suggestion]) -> StoreResult<()>;

    /// Every stored suggestion of an iteration for images that currently carry no tag and no region.
    async fn untagged_suggestions(&self, project: Uuid, iteration: Uuid) -> StoreResult<Vec<Suggestion>>;
}

/// Stored predictions.
#[async_trait]
pub trait PredictionRepo: Send + Sync + 'static {
    /// Stores a prediction (its blobs are already written).
    async fn insert_prediction(&self, prediction: &PredictionRecord) -> StoreResult<()>;

    /// Stored predictions matching a query, in its order, after its cursor, at most `limit`.
    async fn query_predictions(&self, project: Uuid, query: &PredictionQuery) -> StoreResult<Vec<PredictionRecord>>;

    /// Stored predictions by id (unknown ids are skipped).
    async fn get_predictions(&self, project: Uuid, ids: &[Uuid]) -> StoreResult<Vec<PredictionRecord>>;

    /// Deletes stored predictions; returns the ids that existed.
    async fn delete_predictions(&self, project: Uuid, ids: &[Uuid]) -> StoreResult<Vec<Uuid>>;

    /// Which of `candidates` are stored predictions of the project.
    async fn existing_prediction_ids(&self, project: Uuid, candidates: &[Uuid]) -> StoreResult<HashSet<Uuid>>;

    /// Up to `limit` predictions created before `before`, as (project, prediction).
    async fn expired_predictions(&self, before: Time, limit: u32) -> StoreResult<Vec<(Uuid, Uuid)>>;
}

/// The CDF-style vision API's files.
#[async_trait]
pub trait FileRepo: Send + Sync + 'static {
    /// Creates a file (metadata; the bytes come later) and returns it with its new id. A duplicate
    /// external id is a [`StoreError::Conflict`].
    async fn insert_file(&self, file: &FileRecord) -> StoreResult<FileRecord>;

    /// Files of a project by id (unknown ids are skipped).
    async fn files_by_ids(&self, project: &str, ids: &[i64]) -> StoreResult<Vec<FileRecord>>;

    /// Files of a project by external id (unknown ones are skipped).
    async fn files_by_external_ids(&self, project: &str, ids: &[String]) -> StoreResult<Vec<FileRecord>>;

    /// Files by data-modeling instance id `(space, externalId)`; unknown ones are skipped.
    async fn files_by_instance_ids(&self, project: &str, ids: &[(String, String)]) -> StoreResult<Vec<FileRecord>>;

    /// Files of a project with ids above `after`, ascending, at most `limit`.
    async fn list_files(&self, project: &str, after: i64, limit: u32) -> StoreResult<Vec<FileRecord>>;

    /// Records that a file's bytes were uploaded.
    async fn mark_file_uploaded(&self, project: &str, id: i64, size: i64, at: Time) -> StoreResult<()>;

    /// Deletes files; returns the deleted rows.
    async fn delete_files(&self, project: &str, ids: &[i64]) -> StoreResult<Vec<FileRecord>>;
}

/// Segmentation jobs of the vision API.
#[async_trait]
pub trait VisionJobRepo: Send + Sync + 'static {
    /// Creates a vision job row (status `Queued`) and returns its id.
    async fn insert_vision_job(&self, project: &str, request: &serde_json::Value, at: Time) -> StoreResult<i64>;

    /// Links a vision job to its queue job.
    async fn set_vision_queue_job(&self, id: i64, queue_job: Uuid) -> StoreResult<()>;

    /// A vision job of a project.
    async fn get_vision_job(&self, project: &str, id: i64) -> StoreResult<Option<VisionJobRecord>>;

    /// A vision job by id alone (for workers).
    async fn vision_job(&self, id: i64) -> StoreResult<Option<VisionJobRecord>>;

    /// Moves a vision job to `status` at `at`, with its result or error when it ends.
    async fn update_vision_job(
        &self,
        id: i64,
        status: crate::jobs::JobStatus,
        at: Time,
        result: Option<&serde_json::Value>,
        error: Option<&str>,
    ) -> StoreResult<()>;

    /// Deletes finished vision jobs whose status changed before `before`; returns how many.
    async fn delete_finished_vision_jobs(&self, before: Time) -> StoreResult<u64>;
}

/// The whole metadata repository (pict-rs's `FullRepo`): every narrow repository, for code that needs them
/// all. A backend implements the narrow traits; this one follows.
pub trait MetadataStore:
    SystemRepo + ProjectRepo + TagRepo + ImageRepo + IterationRepo + PredictionRepo + FileRepo + VisionJobRepo
{
}

impl<T: SystemRepo + ProjectRepo + TagRepo + ImageRepo + IterationRepo + PredictionRepo + FileRepo + VisionJobRepo>
    MetadataStore for T
{
}

/// A file of the CDF-style Files API.
#[derive(Debug, Clone, PartialEq)]
pub struct FileRecord {
    /// Internal id (assigned on insert).
    pub id: i64,
    /// CDF project name.
    pub project: String,
    /// External id, unique in the project.
    pub external_id: Option<String>,
    /// Data-modeling instance id `(space, externalId)`, unique in the project.
    pub instance_id: Option<(String, String)>,
    /// File name.
    pub name: String,
    /// MIME type.
    pub mime_type: Option<String>,
    /// Where the bytes are in the blob store.
    pub blob_key: String,
    /// Whether the bytes were uploaded.
    pub uploaded: bool,
    /// Byte size once uploaded.
    pub size: Option<i64>,
    /// Creation time.
    pub created: Time,
    /// Last update time.
    pub updated: Time,
    /// Upload time.
    pub uploaded_time: Option<Time>,
}

/// A vision job as stored.
#[derive(Debug, Clone)]
pub struct VisionJobRecord {
    /// Job id.
    pub id: i64,
    /// CDF project name.
    pub project: String,
    /// The durable queue job that runs it.
    pub queue_job: Option<Uuid>,
    /// The accepted request (with resolved file ids).
    pub request: serde_json::Value,
    /// Queued, Running, Completed or Failed (the CDF job statuses are the queue's).
    pub status: crate::jobs::JobStatus,
    /// Creation time.
    pub created: Time,
    /// Start time.
    pub start_time: Time,
    /// Last status change.
    pub status_time: Time,
    /// Result when completed.
    pub result: Option<serde_json::Value>,
    /// Error message when failed.
    pub error: Option<String>,
}

/// A stored prediction: what a published model (or QuickTest) answered for an image.
#[derive(Debug, Clone)]
pub struct PredictionRecord {
    /// Prediction id.
    pub id: Uuid,
    /// Project.
    pub project: Uuid,
    /// Iteration that answered.
    pub iteration: Uuid,
    /// Domain of that iteration.
    pub domain: Uuid,
    /// `application` query value of the request ("" when none).
    pub application: String,
    /// When it was made.
    pub created: Time,
    /// How unsure the model was, in [0, 1] (the `Suggested` order ranks the most unsure first).
    pub uncertainty: f64,
    /// Pixel size of the image.
    pub width: u32,
    /// Pixel size of the image.
    pub height: u32,
    /// Predictions, most probable first.
    pub predictions: Vec<crate::model::Prediction>,
}

/// Order of a prediction query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PredictionOrder {
    /// Most recent first.
    #[default]
    Newest,
    /// Oldest first.
    Oldest,
    /// Most uncertain first (then newest).
    Suggested,
}

/// Where the previous page ended: the sort key of its last row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PredictionCursor {
    /// Uncertainty of the last row (used by `Suggested`).
    pub uncertainty: f64,
    /// Creation time of the last row, epoch milliseconds.
    pub created_ms: i64,
    /// Id of the last row.
    pub id: Uuid,
}

/// A stored-prediction query (QueryPredictions).
#[derive(Debug, Clone, Default)]
pub struct PredictionQuery {
    /// Tag filters: some prediction of the tag with a probability within [min, max].
    pub tags: Vec<(Uuid, f64, f64)>,
    /// Only predictions of this iteration.
    pub iteration: Option<Uuid>,
    /// Only predictions made with this `application`.
    pub application: Option<String>,
    /// Created at or after.
    pub start: Option<Time>,
    /// Created at or before.
    pub end: Option<Time>,
    /// Order.
    pub order: PredictionOrder,
    /// Continue after this row.
    pub after: Option<PredictionCursor>,
    /// Page size.
    pub limit: u32,
}

/// A stored smart-labeler suggestion.
#[derive(Debug, Clone)]
pub struct Suggestion {
    /// Image.
    pub image_id: Uuid,
    /// When it was computed.
    pub created: Time,
    /// Normalised entropy of the prediction, in [0, 1].
    pub uncertainty: f64,
    /// Predictions, most probable first.
    pub predictions: Vec<crate::model::Prediction>,
}

/// A blob listed by [`BlobStore::list`].
#[derive(Debug, Clone)]
pub struct BlobMeta {
    /// Key.
    pub key: String,
    /// Last write time.
    pub last_modified: Time,
}

/// A blob being read as a stream: the bytes `start..end` of a blob of `total` bytes.
pub struct BlobReader {
    /// Size of the whole blob.
    pub total: u64,
    /// First byte served.
    pub start: u64,
    /// One past the last byte served (`start == end`: the range asked for lies beyond the blob).
    pub end: u64,
    /// The bytes, in chunks as the backend delivers them.
    pub stream: futures::stream::BoxStream<'static, StoreResult<Bytes>>,
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlobReader({}..{} of {})", self.start, self.end, self.total)
    }
}

/// Which bytes of a blob to read, as an HTTP `Range` header says them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=start-end`: from `start` to `end` inclusive (to the last byte when `None`).
    From {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: Option<u64>,
    },
    /// `bytes=-n`: the last `n` bytes.
    Last(u64),
}

impl ByteRange {
    /// The bytes `start..end` of a blob of `total` bytes this range names, clamped to the blob (`start == end`:
    /// nothing of it).
    pub fn clamp(self, total: u64) -> (u64, u64) {
        let (start, end) = match self {
            Self::From { start, end } => (start.min(total), end.map_or(total, |e| e.saturating_add(1).min(total))),
            Self::Last(n) => (total.saturating_sub(n), total),
        };
        (start, end.max(start))
    }
}

/// Binary objects: original images, derivatives, export packages, models.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Opens a blob as a stream, whole or a byte range of it (clamped to the blob: a range that starts past its
    /// end reads nothing); `None` when absent. Large blobs (export packages) are served this way, never held
    /// in memory whole.
    async fn open(&self, key: &str, range: Option<ByteRange>) -> StoreResult<Option<BlobReader>>;
    /// Writes a blob durably (it survives a crash once this returns).
    async fn put(&self, key: &str, bytes: Bytes) -> StoreResult<()>;
    /// Writes a file's content as a blob, durably, streaming it in parts (large blobs such as export packages
    /// are never held in memory whole).
    async fn put_file(&self, key: &str, path: &std::path::Path) -> StoreResult<()>;
    /// Reads a blob; `None` when absent.
    async fn get(&self, key: &str) -> StoreResult<Option<Bytes>>;
    /// Deletes a blob; absent is not an error.
    async fn delete(&self, key: &str) -> StoreResult<()>;
    /// Deletes every blob under `prefix`.
    async fn delete_prefix(&self, prefix: &str) -> StoreResult<()>;
    /// Every blob under `prefix`.
    async fn list(&self, prefix: &str) -> StoreResult<Vec<BlobMeta>>;
}

/// Why a URL could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL or its target is not allowed (scheme, private address, …).
    #[error("refused: {0}")]
    Refused(String),
    /// The body exceeds the limit.
    #[error("the response exceeds {0} bytes")]
    TooLarge(usize),
    /// The download failed.
    #[error("download failed: {0}")]
    Failed(String),
}

/// Downloads URLs on behalf of users (CreateImagesFromUrls, QuickTestImageUrl, imports).
#[async_trait]
pub trait UrlFetcher: Send + Sync + 'static {
    /// Fetches `url`, refusing bodies over `max_bytes`.
    async fn fetch(&self, url: &str, max_bytes: usize) -> Result<Bytes, FetchError>;
}
