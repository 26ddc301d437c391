//! Every limit of the Custom Vision contract (ENDPOINTS.md §7 and the hosted service's quotas) as a named
//! constant. Services enforce them with the official error codes.

/// Images per create batch (data multipart / files / urls / predictions).
pub const MAX_IMAGES_PER_BATCH: usize = 64;
/// Tag ids per create batch and per `tagIds` filter.
pub const MAX_TAGS_PER_BATCH: usize = 20;
/// Largest training image in bytes (6 MB).
pub const MAX_TRAINING_IMAGE_BYTES: usize = 6 * 1024 * 1024;
/// Largest prediction image in bytes (4 MB).
pub const MAX_PREDICTION_IMAGE_BYTES: usize = 4 * 1024 * 1024;
/// Largest width or height accepted, read from the header before decoding.
pub const MAX_IMAGE_SIDE: u32 = 10_240;
/// Default and maximum `take` on image listings.
pub const DEFAULT_TAKE: u32 = 50;
/// Maximum `take` on image listings.
pub const MAX_TAKE: u32 = 256;
/// `imageIds` on GetImagesByIds / DeleteImages.
pub const MAX_IMAGE_IDS: usize = 256;
/// `imageIds` on UpdateImageMetadata.
pub const MAX_METADATA_IMAGE_IDS: usize = 64;
/// Metadata pairs per image.
pub const MAX_METADATA_PAIRS: usize = 50;
/// Metadata key length in characters.
pub const MAX_METADATA_KEY_LEN: usize = 256;
/// Metadata value length in characters.
pub const MAX_METADATA_VALUE_LEN: usize = 512;
/// Entries of a CreateImageTags batch.
pub const MAX_IMAGE_TAG_ENTRIES: usize = 128;
/// Images of a DeleteImageTags call.
pub const MAX_DELETE_IMAGE_TAGS_IMAGES: usize = 64;
/// Entries of a CreateImageRegions batch, and ids of DeleteImageRegions.
pub const MAX_REGION_ENTRIES: usize = 64;
/// Ids of DeletePrediction.
pub const MAX_PREDICTION_IDS: usize = 64;
/// Tags per image (classification).
pub const MAX_TAGS_PER_IMAGE: usize = 100;
/// Regions per image (detection).
pub const MAX_REGIONS_PER_IMAGE: usize = 200;
/// Tags per project.
pub const MAX_TAGS_PER_PROJECT: usize = 500;
/// Images per project.
pub const MAX_IMAGES_PER_PROJECT: u64 = 100_000;
/// Projects per server (default; configurable).
pub const DEFAULT_MAX_PROJECTS: u64 = 1_000;
/// Longest project name, in characters.
pub const MAX_PROJECT_NAME_LEN: usize = 200;
/// Longest project description, in characters.
pub const MAX_PROJECT_DESCRIPTION_LEN: usize = 2_000;
/// Longest tag name, in characters.
pub const MAX_TAG_NAME_LEN: usize = 200;
/// Longest tag description, in characters.
pub const MAX_TAG_DESCRIPTION_LEN: usize = 2_000;
/// Largest download accepted from a URL (same as an upload).
pub const MAX_URL_DOWNLOAD_BYTES: usize = MAX_TRAINING_IMAGE_BYTES;
/// Time allowed for one URL download, in seconds.
pub const URL_DOWNLOAD_TIMEOUT_SECS: u64 = 15;
/// Redirects followed for one URL download (each target re-checked).
pub const URL_MAX_REDIRECTS: usize = 3;
/// Tolerance when checking that a normalised box stays inside the image.
pub const BOX_EPSILON: f64 = 1e-6;
