//! Wire models of the Custom Vision Training API v3.3, field for field (camelCase JSON), plus the
//! timestamp convention (RFC 3339 UTC, millisecond precision, `Z` suffix).

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};
use uuid::Uuid;

/// A point in time, UTC.
pub type Time = DateTime<Utc>;

/// The current time, truncated to milliseconds so that it round-trips through every store and client.
pub fn now() -> Time {
    let t = Utc::now();
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// Serialises a [`Time`] as `2024-01-02T03:04:05.678Z`.
pub fn ser_time<S: Serializer>(t: &Time, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// Serialises an optional [`Time`].
pub fn ser_opt_time<S: Serializer>(t: &Option<Time>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => ser_time(t, s),
        None => s.serialize_none(),
    }
}

/// Image metadata: string keys to string values.
pub type Metadata = BTreeMap<String, String>;

/// Multiclass or Multilabel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClassificationType {
    /// One tag per image (softmax).
    Multiclass,
    /// Any number of tags per image (sigmoid).
    Multilabel,
}

impl ClassificationType {
    /// Parses the wire name, case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "multiclass" => Some(Self::Multiclass),
            "multilabel" => Some(Self::Multilabel),
            _ => None,
        }
    }
}

/// Augmentation switches of a project.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageProcessingSettings {
    /// Augmentation method name → enabled.
    #[serde(default)]
    pub augmentation_methods: Option<BTreeMap<String, bool>>,
}

/// Project settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSettings {
    /// Domain (base model) id.
    pub domain_id: Uuid,
    /// Multiclass / Multilabel for classification projects, null for detection.
    #[serde(default)]
    pub classification_type: Option<ClassificationType>,
    /// Export platforms the project targets.
    #[serde(default)]
    pub target_export_platforms: Vec<String>,
    /// Whether images tagged with the Negative tag are used.
    #[serde(default = "yes")]
    pub use_negative_set: bool,
    /// Detection parameters (read-only, opaque).
    #[serde(default)]
    pub detection_parameters: Option<String>,
    /// Augmentation settings.
    #[serde(default)]
    pub image_processing_settings: Option<ImageProcessingSettings>,
}

fn yes() -> bool {
    true
}

/// A project.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Settings.
    pub settings: ProjectSettings,
    /// Creation time.
    #[serde(serialize_with = "ser_time")]
    pub created: Time,
    /// Last modification time.
    #[serde(serialize_with = "ser_time")]
    pub last_modified: Time,
    /// Thumbnail of the project (empty: none).
    pub thumbnail_uri: String,
    /// Disaster-recovery mode (always false here).
    pub dr_mode_enabled: bool,
    /// Succeeded, Importing or Failed.
    pub status: String,
}

/// Body of UpdateProject.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectUpdate {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New settings.
    pub settings: Option<ProjectSettingsUpdate>,
}

/// The writable part of settings in UpdateProject.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSettingsUpdate {
    /// New domain.
    pub domain_id: Option<Uuid>,
    /// New classification type.
    pub classification_type: Option<String>,
    /// New export platforms.
    pub target_export_platforms: Option<Vec<String>>,
    /// New augmentation settings.
    pub image_processing_settings: Option<ImageProcessingSettings>,
}

/// Regular, Negative or GeneralProduct.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TagType {
    /// An ordinary tag.
    Regular,
    /// Images that contain none of the other tags.
    Negative,
    /// Generic product (Products on Shelves).
    GeneralProduct,
}

impl TagType {
    /// Parses the wire name, case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "regular" => Some(Self::Regular),
            "negative" => Some(Self::Negative),
            "generalproduct" => Some(Self::GeneralProduct),
            _ => None,
        }
    }

    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Regular => "Regular",
            Self::Negative => "Negative",
            Self::GeneralProduct => "GeneralProduct",
        }
    }
}

/// A tag with its image count.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tag {
    /// Id.
    pub id: Uuid,
    /// Name (unique in the project, case-insensitively).
    pub name: String,
    /// Description.
    pub description: String,
    /// Type.
    #[serde(rename = "type")]
    pub kind: TagType,
    /// Images carrying the tag (directly or through a region).
    pub image_count: i64,
}

/// Body of UpdateTag.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagUpdate {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New type.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// A tag on an image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageTag {
    /// Tag id.
    pub tag_id: Uuid,
    /// Tag name.
    pub tag_name: String,
    /// When it was attached.
    #[serde(serialize_with = "ser_time")]
    pub created: Time,
}

/// A normalised box: fractions of the image width/height, origin top-left.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct BoundingBox {
    /// Left edge.
    pub left: f64,
    /// Top edge.
    pub top: f64,
    /// Width.
    pub width: f64,
    /// Height.
    pub height: f64,
}

/// A region (tagged box) on an image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageRegion {
    /// Region id.
    pub region_id: Uuid,
    /// Tag name.
    pub tag_name: String,
    /// Creation time.
    #[serde(serialize_with = "ser_time")]
    pub created: Time,
    /// Tag id.
    pub tag_id: Uuid,
    /// Left edge.
    pub left: f64,
    /// Top edge.
    pub top: f64,
    /// Width.
    pub width: f64,
    /// Height.
    pub height: f64,
    /// Argus extension: the region's outline, when it was drawn by click-to-segment (absent otherwise, so the
    /// official clients see the regions they expect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polygon: Option<RegionPolygon>,
}

/// A vertex of a region's outline, normalised to the image like the region's box.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct PolygonPoint {
    /// From the left edge, in [0, 1].
    pub x: f64,
    /// From the top edge, in [0, 1].
    pub y: f64,
}

/// Argus extension: the outline of a region, one closed ring per part (the first vertex is not repeated).
pub type RegionPolygon = Vec<Vec<PolygonPoint>>;

/// Most rings in one region's outline.
pub const MAX_POLYGON_RINGS: usize = 32;
/// Most vertices in one ring (the CDF segment result's limit).
pub const MAX_POLYGON_VERTICES: usize = 1000;

impl ImageRegion {
    /// The region's box.
    pub fn bbox(&self) -> BoundingBox {
        BoundingBox { left: self.left, top: self.top, width: self.width, height: self.height }
    }
}

/// A training image as the API returns it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// Id.
    pub id: Uuid,
    /// Upload time.
    #[serde(serialize_with = "ser_time")]
    pub created: Time,
    /// Width in pixels (after EXIF orientation).
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Signed URL of the resized copy.
    pub resized_image_uri: String,
    /// Signed URL of the thumbnail.
    pub thumbnail_uri: String,
    /// Signed URL of the original bytes.
    pub original_image_uri: String,
    /// Tags.
    pub tags: Vec<ImageTag>,
    /// Regions.
    pub regions: Vec<ImageRegion>,
    /// Metadata.
    pub metadata: Metadata,
}

/// A region in a create batch (no image id).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Region {
    /// Tag id.
    pub tag_id: Uuid,
    /// Left edge.
    pub left: f64,
    /// Top edge.
    pub top: f64,
    /// Width.
    pub width: f64,
    /// Height.
    pub height: f64,
    /// Argus extension: the region's outline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polygon: Option<RegionPolygon>,
}

/// One image of CreateImagesFromFiles.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageFileCreateEntry {
    /// File name (echoed as `sourceUrl`).
    pub name: Option<String>,
    /// Base64 bytes.
    pub contents: Option<String>,
    /// Tags for this image.
    pub tag_ids: Option<Vec<Uuid>>,
    /// Regions for this image.
    pub regions: Option<Vec<Region>>,
}

/// Body of CreateImagesFromFiles.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageFileCreateBatch {
    /// Images.
    pub images: Option<Vec<ImageFileCreateEntry>>,
    /// Tags for every image.
    pub tag_ids: Option<Vec<Uuid>>,
    /// Metadata for every image.
    pub metadata: Option<Metadata>,
}

/// One image of CreateImagesFromUrls.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageUrlCreateEntry {
    /// URL to download.
    pub url: Option<String>,
    /// Tags for this image.
    pub tag_ids: Option<Vec<Uuid>>,
    /// Regions for this image.
    pub regions: Option<Vec<Region>>,
}

/// Body of CreateImagesFromUrls.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageUrlCreateBatch {
    /// Images.
    pub images: Option<Vec<ImageUrlCreateEntry>>,
    /// Tags for every image.
    pub tag_ids: Option<Vec<Uuid>>,
    /// Metadata for every image.
    pub metadata: Option<Metadata>,
}

/// One image of CreateImagesFromPredictions.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIdCreateEntry {
    /// Stored prediction id.
    pub id: Option<Uuid>,
    /// Tags for this image.
    pub tag_ids: Option<Vec<Uuid>>,
    /// Regions for this image.
    pub regions: Option<Vec<Region>>,
}

/// Body of CreateImagesFromPredictions.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIdCreateBatch {
    /// Images.
    pub images: Option<Vec<ImageIdCreateEntry>>,
    /// Tags for every image.
    pub tag_ids: Option<Vec<Uuid>>,
    /// Metadata for every image.
    pub metadata: Option<Metadata>,
}

/// Per-image outcome of a create batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ImageCreateStatus {
    /// Created.
    #[serde(rename = "OK")]
    Ok,
    /// Identical bytes already in the project; the existing image is returned.
    #[serde(rename = "OKDuplicate")]
    OkDuplicate,
    /// The source could not be read (URL download failed, missing contents).
    ErrorSource,
    /// Not a decodable image of a supported format.
    ErrorImageFormat,
    /// Too many bytes or too many pixels.
    ErrorImageSize,
    /// The store failed.
    ErrorStorage,
    /// The project's image quota is reached.
    ErrorLimitExceed,
    /// Too many tags on the image.
    ErrorTagLimitExceed,
    /// Too many regions on the image.
    ErrorRegionLimitExceed,
    /// Anything else.
    ErrorUnknown,
    /// The Negative tag together with a regular tag.
    ErrorNegativeAndRegularTagOnSameImage,
}

impl ImageCreateStatus {
    /// OK and OKDuplicate count as success.
    pub fn is_success(self) -> bool {
        matches!(self, Self::Ok | Self::OkDuplicate)
    }
}

/// Per-image result of a create batch.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageCreateResult {
    /// The file name or URL the image came from.
    pub source_url: String,
    /// Outcome.
    pub status: ImageCreateStatus,
    /// The image, when created or found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
}

/// Result of a create batch.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageCreateSummary {
    /// True when every image succeeded.
    pub is_batch_successful: bool,
    /// One result per input, in order.
    pub images: Vec<ImageCreateResult>,
}

/// One entry of CreateImageTags.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct ImageTagCreateEntry {
    /// Image id.
    pub image_id: Uuid,
    /// Tag id.
    pub tag_id: Uuid,
}

/// Body of CreateImageTags.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageTagCreateBatch {
    /// Entries.
    pub tags: Option<Vec<ImageTagCreateEntry>>,
}

/// Result of CreateImageTags.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ImageTagCreateSummary {
    /// Attached now.
    pub created: Vec<ImageTagCreateEntry>,
    /// Already attached.
    pub duplicated: Vec<ImageTagCreateEntry>,
    /// Refused: the image has too many tags.
    pub exceeded: Vec<ImageTagCreateEntry>,
}

/// One entry of CreateImageRegions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageRegionCreateEntry {
    /// Image id.
    pub image_id: Uuid,
    /// Tag id.
    pub tag_id: Uuid,
    /// Left edge.
    pub left: f64,
    /// Top edge.
    pub top: f64,
    /// Width.
    pub width: f64,
    /// Height.
    pub height: f64,
    /// Argus extension: the region's outline (click-to-segment keeps it for the COCO export).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polygon: Option<RegionPolygon>,
}

/// Body of CreateImageRegions.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageRegionCreateBatch {
    /// Entries.
    pub regions: Option<Vec<ImageRegionCreateEntry>>,
}

/// A created region.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRegionCreateResult {
    /// Image id.
    pub image_id: Uuid,
    /// New region id.
    pub region_id: Uuid,
    /// Tag name.
    pub tag_name: String,
    /// Creation time.
    #[serde(serialize_with = "ser_time")]
    pub created: Time,
    /// Tag id.
    pub tag_id: Uuid,
    /// Left edge.
    pub left: f64,
    /// Top edge.
    pub top: f64,
    /// Width.
    pub width: f64,
    /// Height.
    pub height: f64,
}

/// Result of CreateImageRegions.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ImageRegionCreateSummary {
    /// Created now.
    pub created: Vec<ImageRegionCreateResult>,
    /// Same image, tag and box already present (or repeated in the batch).
    pub duplicated: Vec<ImageRegionCreateEntry>,
    /// Refused: the image has too many regions.
    pub exceeded: Vec<ImageRegionCreateEntry>,
}

/// Per-image outcome of UpdateImageMetadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MetadataUpdateStatus {
    /// Merged.
    #[serde(rename = "OK")]
    Ok,
    /// No such image in the project.
    ErrorImageNotFound,
    /// The merge would exceed the pairs-per-image limit.
    ErrorLimitExceed,
    /// Anything else.
    ErrorUnknown,
}

/// Per-image result of UpdateImageMetadata.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageMetadataUpdateEntry {
    /// Image id.
    pub image_id: Uuid,
    /// Outcome.
    pub status: MetadataUpdateStatus,
    /// The image's metadata after the update (when OK).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

/// Result of UpdateImageMetadata.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageMetadataUpdateSummary {
    /// True when every image was updated.
    pub is_batch_successful: bool,
    /// One entry per image id.
    pub images: Vec<ImageMetadataUpdateEntry>,
}

/// A proposed box.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegionProposal {
    /// Objectness confidence.
    pub confidence: f64,
    /// The box.
    pub bounding_box: BoundingBox,
}

/// Result of GetImageRegionProposals.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRegionProposal {
    /// Project id.
    pub project_id: Uuid,
    /// Image id.
    pub image_id: Uuid,
    /// Proposals, best first.
    pub proposals: Vec<RegionProposal>,
}

/// Result of ExportProject.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectExport {
    /// Iterations in the package.
    pub iteration_count: i64,
    /// Images in the package.
    pub image_count: i64,
    /// Tags in the package.
    pub tag_count: i64,
    /// Regions in the package.
    pub region_count: i64,
    /// Rough import time.
    #[serde(rename = "estimatedImportTimeInMS")]
    pub estimated_import_time_in_ms: i64,
    /// Opaque token for ImportProject.
    pub token: String,
}

/// One export of an iteration (GetExports / ExportIteration).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Export {
    /// Platform: `ONNX`.
    pub platform: String,
    /// Where the export is.
    pub status: ExportStatus,
    /// A signed, expiring link to the package once `Done`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_uri: Option<String>,
    /// Flavor asked for (`null` for the platform's default).
    pub flavor: Option<String>,
    /// Whether the exporter that made this package is older than the current one.
    pub newer_version_available: bool,
}

/// Where an export is: on the wire, the strings the hosted service uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExportStatus {
    /// Its job is queued or running.
    Exporting,
    /// The package is ready to download.
    Done,
    /// The export failed.
    Failed,
}

/// Where an iteration is in its life: on the wire, the strings the hosted service uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IterationStatus {
    /// Its training job is queued or running.
    Training,
    /// Trained: it can be published, tested, exported.
    Completed,
    /// Its training failed (the iteration's `trainingMessage` says why).
    Failed,
}

impl IterationStatus {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Training => "Training",
            Self::Completed => "Completed",
            Self::Failed => "Failed",
        }
    }
}

impl std::fmt::Display for IterationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A trained (or training) iteration, as the API returns it, with Argus's progress fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Iteration {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Training, Completed or Failed.
    pub status: IterationStatus,
    /// Creation time.
    #[serde(serialize_with = "ser_time")]
    pub created: Time,
    /// Last change.
    #[serde(serialize_with = "ser_time")]
    pub last_modified: Time,
    /// End of training.
    #[serde(serialize_with = "ser_opt_time")]
    pub trained_at: Option<Time>,
    /// Project.
    pub project_id: Uuid,
    /// Whether it can be exported.
    pub exportable: bool,
    /// Export platforms.
    pub exportable_to: Vec<String>,
    /// Domain at training time.
    pub domain_id: Option<Uuid>,
    /// Classification type at training time.
    pub classification_type: Option<ClassificationType>,
    /// Regular or Advanced.
    pub training_type: String,
    /// Budget asked for (Advanced).
    pub reserved_budget_in_hours: i32,
    /// Wall time of training, rounded up to minutes.
    pub training_time_in_minutes: i32,
    /// Name it is published under (empty: unpublished).
    pub publish_name: String,
    /// Prediction resource it is published to.
    pub original_publish_resource_id: String,
    /// Argus extension: training progress in percent while `Training`.
    pub training_progress: Option<f64>,
    /// Argus extension: what training is doing now, or why it failed.
    pub training_message: Option<String>,
}

/// Body of UpdateIteration.
#[derive(Debug, Clone, Deserialize)]
pub struct IterationUpdate {
    /// New name.
    pub name: Option<String>,
}

/// A per-tag line of an iteration's performance.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TagPerformance {
    /// Tag id.
    pub id: Uuid,
    /// Tag name.
    pub name: String,
    /// Precision at the threshold.
    pub precision: f64,
    /// Its standard deviation across folds.
    pub precision_std_deviation: f64,
    /// Recall at the threshold.
    pub recall: f64,
    /// Its standard deviation across folds.
    pub recall_std_deviation: f64,
    /// Average precision.
    pub average_precision: f64,
}

/// GetIterationPerformance.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IterationPerformance {
    /// Per tag.
    pub per_tag_performance: Vec<TagPerformance>,
    /// Overall precision (micro-averaged over tags).
    pub precision: f64,
    /// Its standard deviation across folds.
    pub precision_std_deviation: f64,
    /// Overall recall.
    pub recall: f64,
    /// Its standard deviation across folds.
    pub recall_std_deviation: f64,
    /// Mean average precision over tags.
    pub average_precision: f64,
}

/// A prediction of a model.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prediction {
    /// Probability.
    pub probability: f64,
    /// Tag id.
    pub tag_id: Uuid,
    /// Tag name.
    pub tag_name: String,
    /// Box (detection).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bounding_box: Option<BoundingBox>,
    /// Tag type (Prediction v3.1 and later).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag_type: Option<TagType>,
}

/// An image of GetImagePerformances.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImagePerformance {
    /// Held-out predictions.
    pub predictions: Vec<Prediction>,
    /// Image id.
    pub id: Uuid,
    /// Upload time.
    #[serde(serialize_with = "ser_time")]
    pub created: Time,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Signed URL of the resized image.
    pub image_uri: String,
    /// Signed URL of the thumbnail.
    pub thumbnail_uri: String,
    /// Tags at training time.
    pub tags: Vec<ImageTag>,
    /// Regions at training time.
    pub regions: Vec<ImageRegion>,
}

/// QuickTest / Prediction API result.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImagePrediction {
    /// Prediction id.
    pub id: Uuid,
    /// Project.
    pub project: Uuid,
    /// Iteration.
    pub iteration: Uuid,
    /// Time.
    #[serde(serialize_with = "ser_time")]
    pub created: Time,
    /// Predictions, most probable first.
    pub predictions: Vec<Prediction>,
}

/// Result of SuggestTagsAndRegions for one image.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SuggestedTagAndRegion {
    /// The image id.
    pub id: Uuid,
    /// Project.
    pub project: Uuid,
    /// Iteration that made the suggestion.
    pub iteration: Uuid,
    /// When.
    #[serde(serialize_with = "ser_time")]
    pub created: Time,
    /// Suggested tags, most probable first.
    pub predictions: Vec<Prediction>,
    /// Normalised entropy of the prediction in [0, 1]: high means worth labelling by hand.
    pub prediction_uncertainty: f64,
}

/// A suggestion with its image, from QuerySuggestedImages.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredSuggestedTagAndRegion {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Signed URL of the resized image.
    pub resized_image_uri: String,
    /// Signed URL of the thumbnail.
    pub thumbnail_uri: String,
    /// Signed URL of the original.
    pub original_image_uri: String,
    /// Domain of the iteration.
    pub domain: Uuid,
    /// The image id.
    pub id: Uuid,
    /// Project.
    pub project: Uuid,
    /// Iteration.
    pub iteration: Uuid,
    /// When the suggestion was made.
    #[serde(serialize_with = "ser_time")]
    pub created: Time,
    /// Suggested tags.
    pub predictions: Vec<Prediction>,
    /// Normalised entropy of the prediction.
    pub prediction_uncertainty: f64,
}

/// Query and paging state of QuerySuggestedImages.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SuggestedTagAndRegionQueryToken {
    /// Tags to match (empty: any).
    #[serde(default)]
    pub tag_ids: Option<Vec<Uuid>>,
    /// Minimum probability for a tag to match.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Echoed.
    #[serde(default)]
    pub session: Option<String>,
    /// Opaque position of the next page; empty: no more.
    #[serde(default)]
    pub continuation: Option<String>,
    /// Page size.
    #[serde(default)]
    pub max_count: Option<i64>,
    /// UncertaintyAscending or UncertaintyDescending.
    #[serde(default)]
    pub sort_by: Option<String>,
}

/// Result of QuerySuggestedImages.
#[derive(Debug, Clone, Serialize)]
pub struct SuggestedTagAndRegionQuery {
    /// Send back to get the next page.
    pub token: SuggestedTagAndRegionQueryToken,
    /// This page.
    pub results: Vec<StoredSuggestedTagAndRegion>,
}

/// Body of QuerySuggestedImageCount.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagFilter {
    /// Tags to count.
    #[serde(default)]
    pub tag_ids: Option<Vec<Uuid>>,
    /// Minimum probability.
    #[serde(default)]
    pub threshold: Option<f64>,
}

/// A tag filter of QueryPredictions: some prediction of the tag with a probability in [min, max].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PredictionQueryTag {
    /// Tag id.
    pub id: Uuid,
    /// Lowest probability (default 0).
    #[serde(default)]
    pub min_threshold: Option<f64>,
    /// Highest probability (default 1).
    #[serde(default)]
    pub max_threshold: Option<f64>,
}

/// Body of QueryPredictions, echoed back (with the next `continuation`) in its result.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PredictionQueryToken {
    /// Echoed.
    #[serde(default)]
    pub session: Option<String>,
    /// Opaque position of the next page; empty: no more.
    #[serde(default)]
    pub continuation: Option<String>,
    /// Page size.
    #[serde(default)]
    pub max_count: Option<i64>,
    /// Newest, Oldest or Suggested.
    #[serde(default)]
    pub order_by: Option<String>,
    /// Tag filters (at most 2).
    #[serde(default)]
    pub tags: Option<Vec<PredictionQueryTag>>,
    /// Only this iteration's predictions.
    #[serde(default)]
    pub iteration_id: Option<Uuid>,
    /// Created at or after.
    #[serde(default, serialize_with = "ser_opt_time")]
    pub start_time: Option<Time>,
    /// Created at or before.
    #[serde(default, serialize_with = "ser_opt_time")]
    pub end_time: Option<Time>,
    /// Only predictions made with this `application`.
    #[serde(default)]
    pub application: Option<String>,
}

/// A stored prediction as QueryPredictions returns it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredImagePrediction {
    /// Signed link to the resized image.
    pub resized_image_uri: String,
    /// Signed link to the thumbnail.
    pub thumbnail_uri: String,
    /// Signed link to the original image.
    pub original_image_uri: String,
    /// Domain of the iteration that predicted.
    pub domain: Uuid,
    /// Prediction id.
    pub id: Uuid,
    /// Project.
    pub project: Uuid,
    /// Iteration.
    pub iteration: Uuid,
    /// Time.
    #[serde(serialize_with = "ser_time")]
    pub created: Time,
    /// Predictions, most probable first.
    pub predictions: Vec<Prediction>,
}

/// Result of QueryPredictions.
#[derive(Debug, Clone, Serialize)]
pub struct PredictionQueryResult {
    /// Send back to get the next page.
    pub token: PredictionQueryToken,
    /// This page.
    pub results: Vec<StoredImagePrediction>,
}
