//! The CDF-style vision surface: a subset of the Files API (create metadata → upload URL → bytes; get, byids,
//! list, delete, download links) and interactive segmentation jobs (`context/vision/segment`) that run on the
//! durable job queue, with the weight-free GrabCut engine or, when the user supplies weights, Segment Anything
//! (request field `engine`: `"grabcut"` or `"sam"`; the default is SAM when it is configured, else GrabCut).
//! Custom Vision training images are reachable as files through the external id
//! `customvision:{projectId}/{imageId}`.
//!
//! Errors here use the CDF shape (`{"error": {"code", "message", "missing"?}}`), carried by [`CdfError`].

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{resized_key, store_err, Argus, UrlContext};
use crate::compute::{ImageLimits, PromptBox, PromptPoint, SegmentMethod, SegmentRequest, SharedEmbeddings};
use crate::error::ApiError;
use crate::jobs::{Job, JobHandler, JobSpec, JobStatus, Progress, SegmentJob};
use crate::model::{now, Time};
use crate::store::{FileRecord, StoreError, VisionJobRecord};

pub use crate::jobs::SEGMENT_JOB;
/// External-id prefix that names a Custom Vision training image: `customvision:{projectId}/{imageId}`.
pub const CUSTOM_VISION_FILE_PREFIX: &str = "customvision:";
/// Most prompt points of one request.
pub const MAX_POINTS: usize = 64;
/// The weight-free GrabCut engine.
pub const ENGINE_GRABCUT: &str = "grabcut";
/// Segment Anything (needs `ARGUS_SAM_WEIGHTS`).
pub const ENGINE_SAM: &str = "sam";
/// Largest file upload.
pub const MAX_FILE_BYTES: usize = 25 * 1024 * 1024;

/// [`MAX_FILE_BYTES`], for request-size limits elsewhere.
pub const fn vision_max_file_bytes() -> usize {
    MAX_FILE_BYTES
}
/// Components smaller than this fraction of the image are not returned as polygons.
const MIN_COMPONENT_AREA: f64 = 0.0005;

/// What kind of failure a [`CdfError`] is (the HTTP layer picks the status and the body's numeric `code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CdfErrorKind {
    /// The request is malformed or names something that does not exist.
    Invalid,
    /// No valid bearer key.
    Unauthorized,
    /// The key is valid but the link or action is not allowed.
    Forbidden,
    /// An external id or instance id already taken.
    Conflict,
    /// The body is larger than the surface accepts.
    TooLarge,
    /// Too many jobs are queued or running.
    Busy,
    /// A failure of the shared services, with its official code.
    Api(crate::error::ErrorCode),
}

/// An error of the CDF surface: its kind, message and, for unknown references, the `missing` items.
#[derive(Debug, Clone, PartialEq)]
pub struct CdfError {
    /// What kind of failure.
    pub kind: CdfErrorKind,
    /// Human-readable cause.
    pub message: String,
    /// References that matched nothing.
    pub missing: Option<Vec<Value>>,
}

impl CdfError {
    /// An error of `kind` with a message.
    pub fn new(kind: CdfErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), missing: None }
    }

    /// An invalid request, with a message.
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(CdfErrorKind::Invalid, message)
    }

    /// An invalid request listing unknown references.
    pub fn missing(items: Vec<Value>) -> Self {
        Self { kind: CdfErrorKind::Invalid, message: "Files not found.".into(), missing: Some(items) }
    }
}

impl From<ApiError> for CdfError {
    fn from(e: ApiError) -> Self {
        Self::new(CdfErrorKind::Api(e.code), e.message)
    }
}

impl From<StoreError> for CdfError {
    fn from(e: StoreError) -> Self {
        store_err(e).into()
    }
}

/// Result alias of the CDF surface.
pub type CdfResult<T> = Result<T, CdfError>;

fn ms(t: &Time) -> i64 {
    t.timestamp_millis()
}

/// Checks a CDF project name (letters, digits, `-`, `_`; 1–64 characters).
pub fn check_project_name(project: &str) -> CdfResult<()> {
    let ok = !project.is_empty()
        && project.len() <= 64
        && project.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(CdfError::bad(format!("'{project}' is not a valid project name.")))
    }
}

fn file_key(project: &str, id: i64) -> String {
    format!("vision/{project}/files/{id}")
}

fn is_segmentable(f: &FileRecord) -> bool {
    let name = f.name.to_ascii_lowercase();
    let ext = name.ends_with(".jpg") || name.ends_with(".jpeg") || name.ends_with(".png");
    let mime = matches!(f.mime_type.as_deref(), Some("image/jpeg") | Some("image/png"));
    ext && mime
}

/// A parsed file reference.
#[derive(Debug, Clone, PartialEq)]
enum FileRef {
    Id(i64),
    External(String),
    Instance(String, String),
}

/// `{"space": …, "externalId": …}` → the pair, each 1 to 255 characters.
fn instance_id(v: &Value) -> CdfResult<(String, String)> {
    let part = |k: &str| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty() && s.len() <= 255);
    match (part("space"), part("externalId")) {
        (Some(space), Some(external)) => Ok((space.to_string(), external.to_string())),
        _ => Err(CdfError::bad("An instanceId needs space and externalId, strings of 1 to 255 characters.")),
    }
}

fn parse_ref(v: &Value) -> CdfResult<FileRef> {
    let obj = v.as_object().ok_or_else(|| CdfError::bad("Each item must be an object."))?;
    if obj.len() != 1 {
        return Err(CdfError::bad("Each item needs exactly one of fileId, fileExternalId or fileInstanceId."));
    }
    if let Some(id) = obj.get("fileId") {
        return id
            .as_i64()
            .filter(|i| *i >= 1)
            .map(FileRef::Id)
            .ok_or_else(|| CdfError::bad("fileId must be a positive integer."));
    }
    if let Some(x) = obj.get("fileExternalId") {
        return x
            .as_str()
            .filter(|s| !s.is_empty() && s.len() <= 255)
            .map(|s| FileRef::External(s.to_string()))
            .ok_or_else(|| CdfError::bad("fileExternalId must be a string of 1 to 255 characters."));
    }
    if let Some(x) = obj.get("fileInstanceId") {
        let (space, external) = instance_id(x)?;
        return Ok(FileRef::Instance(space, external));
    }
    Err(CdfError::bad("Each item needs exactly one of fileId, fileExternalId or fileInstanceId."))
}

fn unit(v: Option<&Value>, what: &str) -> CdfResult<f64> {
    let x =
        v.and_then(Value::as_f64).ok_or_else(|| CdfError::bad(format!("{what} is required and must be a number.")))?;
    if (0.0..=1.0).contains(&x) {
        Ok(x)
    } else {
        Err(CdfError::bad(format!("{what} must lie in [0, 1]; got {x}.")))
    }
}

/// A prompt point, in coordinates normalised to the image: label 1 marks the object, 0 the background.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct PointPrompt {
    x: f64,
    y: f64,
    label: u8,
}

/// A prompt box, in coordinates normalised to the image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BoxPrompt {
    x_min: f64,
    y_min: f64,
    x_max: f64,
    y_max: f64,
}

/// A validated prompt: points and/or a box, as the request gave them and the answers echo them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Prompt {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    points: Vec<PointPrompt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bounding_box: Option<BoxPrompt>,
}

/// A data-modeling instance id, as a file reference echoes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InstanceRef {
    space: String,
    external_id: String,
}

/// The file a job is about, named every way the file is known (what the answers echo as `items`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileItem {
    file_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file_external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file_instance_id: Option<InstanceRef>,
}

fn default_engine() -> String {
    ENGINE_GRABCUT.into()
}

/// A segmentation job's accepted request, validated and with its file resolved: what is stored with the vision
/// job, what the worker runs, and what the job's answers echo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SegmentJobRequest {
    items: Vec<FileItem>,
    #[serde(flatten)]
    prompt: Prompt,
    #[serde(default)]
    rle: bool,
    #[serde(default = "default_engine")]
    engine: String,
    /// Only encode the image for SAM (no prompt, no segments): `prepare`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    prepare: bool,
}

impl SegmentJobRequest {
    /// The stored request of a vision job.
    fn of(job: &VisionJobRecord) -> Result<Self, String> {
        serde_json::from_value(job.request.clone()).map_err(|e| format!("the stored request is unreadable: {e}"))
    }

    fn to_json(&self) -> CdfResult<Value> {
        serde_json::to_value(self).map_err(|e| CdfError::from(ApiError::internal(e)))
    }
}

/// A serialisable value as a JSON object's fields (empty for anything else).
fn fields(v: &impl Serialize) -> Map<String, Value> {
    match serde_json::to_value(v) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

fn parse_prompt(body: &Map<String, Value>) -> CdfResult<Prompt> {
    let mut points = Vec::new();
    if let Some(p) = body.get("points").filter(|p| !p.is_null()) {
        let arr = p.as_array().ok_or_else(|| CdfError::bad("points must be an array."))?;
        if arr.len() > MAX_POINTS {
            return Err(CdfError::bad(format!("At most {MAX_POINTS} points; got {}.", arr.len())));
        }
        for pt in arr {
            let x = unit(pt.get("x"), "points[].x")?;
            let y = unit(pt.get("y"), "points[].y")?;
            let label: u8 = match pt.get("label") {
                None | Some(Value::Null) => 1,
                Some(l) => match l.as_f64() {
                    Some(0.0) => 0,
                    Some(1.0) => 1,
                    _ => return Err(CdfError::bad("points[].label must be 0 or 1.")),
                },
            };
            let point = PointPrompt { x, y, label };
            if points.contains(&point) {
                return Err(CdfError::bad("points must be unique."));
            }
            points.push(point);
        }
    }
    let bbox = match body.get("boundingBox").filter(|b| !b.is_null()) {
        None => None,
        Some(b) => {
            let (x0, y0) = (unit(b.get("xMin"), "boundingBox.xMin")?, unit(b.get("yMin"), "boundingBox.yMin")?);
            let (x1, y1) = (unit(b.get("xMax"), "boundingBox.xMax")?, unit(b.get("yMax"), "boundingBox.yMax")?);
            if x0 >= x1 || y0 >= y1 {
                return Err(CdfError::bad("boundingBox needs xMin < xMax and yMin < yMax."));
            }
            Some(BoxPrompt { x_min: x0, y_min: y0, x_max: x1, y_max: y1 })
        }
    };
    if points.is_empty() && bbox.is_none() {
        return Err(CdfError::bad("Give points and/or a boundingBox."));
    }
    Ok(Prompt { points, bounding_box: bbox })
}

fn file_item(f: &FileRecord) -> FileItem {
    FileItem {
        file_id: f.id,
        file_external_id: f.external_id.clone(),
        file_instance_id: f
            .instance_id
            .as_ref()
            .map(|(space, external)| InstanceRef { space: space.clone(), external_id: external.clone() }),
    }
}

impl Argus {
    /// The JSON of a file, CDF-style.
    pub fn file_json(&self, f: &FileRecord) -> Value {
        let mut v = json!({
            "id": f.id,
            "name": f.name,
            "uploaded": f.uploaded,
            "createdTime": ms(&f.created),
            "lastUpdatedTime": ms(&f.updated),
        });
        if let Some(obj) = v.as_object_mut() {
            if let Some(x) = &f.external_id {
                obj.insert("externalId".into(), json!(x));
            }
            if let Some((space, external)) = &f.instance_id {
                obj.insert("instanceId".into(), json!({"space": space, "externalId": external}));
            }
            if let Some(m) = &f.mime_type {
                obj.insert("mimeType".into(), json!(m));
            }
            if let Some(t) = &f.uploaded_time {
                obj.insert("uploadedTime".into(), json!(ms(t)));
            }
        }
        v
    }

    /// Creates file metadata; returns the file and the signed URL to PUT its bytes to.
    pub async fn create_file(&self, ctx: &UrlContext, project: &str, body: &Value) -> CdfResult<Value> {
        check_project_name(project)?;
        let name = body.get("name").and_then(Value::as_str).filter(|n| !n.trim().is_empty() && n.len() <= 256);
        let name = name.ok_or_else(|| CdfError::bad("name is required (1 to 256 characters)."))?;
        let external_id = match body.get("externalId") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_str()
                    .filter(|s| !s.is_empty() && s.len() <= 255)
                    .ok_or_else(|| CdfError::bad("externalId must be a string of 1 to 255 characters."))?
                    .to_string(),
            ),
        };
        if external_id.as_deref().is_some_and(|x| x.starts_with(CUSTOM_VISION_FILE_PREFIX)) {
            return Err(CdfError::bad(format!(
                "External ids starting with '{CUSTOM_VISION_FILE_PREFIX}' are reserved."
            )));
        }
        let mime_type = body.get("mimeType").and_then(Value::as_str).map(String::from);
        let instance = match body.get("instanceId") {
            None | Some(Value::Null) => None,
            Some(v) => Some(instance_id(v)?),
        };
        let t = now();
        let record = FileRecord {
            id: 0,
            project: project.to_string(),
            external_id: external_id.clone(),
            instance_id: instance,
            name: name.to_string(),
            mime_type,
            blob_key: String::new(),
            uploaded: false,
            size: None,
            created: t,
            updated: t,
            uploaded_time: None,
        };
        let f = self.store.insert_file(&record).await.map_err(|e| match e {
            StoreError::Conflict(_) => {
                CdfError::new(CdfErrorKind::Conflict, "A file with this externalId or instanceId already exists.")
            }
            other => other.into(),
        })?;
        let mut v = self.file_json(&f);
        let upload = self.signed_url(ctx, &format!("upload/{}", file_key(project, f.id)));
        if let Some(obj) = v.as_object_mut() {
            obj.insert("uploadUrl".into(), json!(upload.replacen("/blobs/upload/", "/api/v1/upload/", 1)));
        }
        Ok(v)
    }

    /// Stores the bytes of a file (the target of its upload URL, whose signature the caller checked).
    pub async fn upload_file(&self, project: &str, id: i64, bytes: Bytes) -> CdfResult<()> {
        if bytes.len() > MAX_FILE_BYTES {
            return Err(CdfError::new(CdfErrorKind::TooLarge, format!("Files are limited to {MAX_FILE_BYTES} bytes.")));
        }
        let f = self.store.files_by_ids(project, &[id]).await?;
        if f.is_empty() {
            return Err(CdfError::missing(vec![json!({"id": id})]));
        }
        let size = bytes.len() as i64;
        self.blobs.put(&file_key(project, id), bytes).await?;
        self.store.mark_file_uploaded(project, id, size, now()).await?;
        Ok(())
    }

    /// Resolves file references (`{id}` / `{externalId}` for the Files API, `{fileId}` / `{fileExternalId}` /
    /// `{fileInstanceId}` for vision jobs) in order; unknown ones are a 400 with `missing`.
    async fn resolve_files(&self, project: &str, refs: &[(FileRef, Value)]) -> CdfResult<Vec<FileRecord>> {
        let mut out = Vec::with_capacity(refs.len());
        let mut missing = Vec::new();
        for (r, original) in refs {
            let found = match r {
                FileRef::Id(id) => self.store.files_by_ids(project, &[*id]).await?.into_iter().next(),
                FileRef::External(x) => {
                    match self.store.files_by_external_ids(project, std::slice::from_ref(x)).await?.into_iter().next() {
                        Some(f) => Some(f),
                        None if x.starts_with(CUSTOM_VISION_FILE_PREFIX) => {
                            self.register_training_image(project, x).await?
                        }
                        None => None,
                    }
                }
                FileRef::Instance(space, external) => self
                    .store
                    .files_by_instance_ids(project, &[(space.clone(), external.clone())])
                    .await?
                    .into_iter()
                    .next(),
            };
            match found {
                Some(f) => out.push(f),
                None => missing.push(original.clone()),
            }
        }
        if missing.is_empty() {
            Ok(out)
        } else {
            Err(CdfError::missing(missing))
        }
    }

    /// Makes a Custom Vision training image addressable as a file (its resized JPEG), on first reference.
    async fn register_training_image(&self, project: &str, external: &str) -> CdfResult<Option<FileRecord>> {
        let rest = &external[CUSTOM_VISION_FILE_PREFIX.len()..];
        let Some((p, i)) = rest.split_once('/') else { return Ok(None) };
        let (Ok(p), Ok(i)) = (Uuid::parse_str(p), Uuid::parse_str(i)) else { return Ok(None) };
        if self.store.get_images(p, &[i]).await?.is_empty() {
            return Ok(None);
        }
        let t = now();
        let record = FileRecord {
            id: 0,
            project: project.to_string(),
            external_id: Some(external.to_string()),
            instance_id: None,
            name: format!("{i}.jpg"),
            mime_type: Some("image/jpeg".into()),
            blob_key: resized_key(p, i),
            uploaded: true,
            size: None,
            created: t,
            updated: t,
            uploaded_time: Some(t),
        };
        match self.store.insert_file(&record).await {
            Ok(f) => Ok(Some(f)),
            // Registered concurrently: read it back.
            Err(StoreError::Conflict(_)) => {
                Ok(self.store.files_by_external_ids(project, &[external.to_string()]).await?.into_iter().next())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn blob_of(f: &FileRecord) -> String {
        if f.blob_key.is_empty() {
            file_key(&f.project, f.id)
        } else {
            f.blob_key.clone()
        }
    }

    /// Files API identity lists (`{"items": [{"id"} | {"externalId"}]}`) → files, in order.
    pub async fn files_by_identity(&self, project: &str, body: &Value) -> CdfResult<Vec<FileRecord>> {
        check_project_name(project)?;
        let items = body.get("items").and_then(Value::as_array).ok_or_else(|| CdfError::bad("items is required."))?;
        if items.is_empty() || items.len() > 1000 {
            return Err(CdfError::bad("items must hold 1 to 1000 identifiers."));
        }
        let mut refs = Vec::new();
        for it in items {
            let one_of = "Each item needs exactly one of id, externalId or instanceId.";
            if it.as_object().map_or(0, |o| o.len()) != 1 {
                return Err(CdfError::bad(one_of));
            }
            let r = match (it.get("id"), it.get("externalId").and_then(Value::as_str), it.get("instanceId")) {
                (Some(id), None, None) => FileRef::Id(id.as_i64().ok_or_else(|| CdfError::bad(one_of))?),
                (None, Some(x), None) => FileRef::External(x.to_string()),
                (None, None, Some(i)) => {
                    let (space, external) = instance_id(i)?;
                    FileRef::Instance(space, external)
                }
                _ => return Err(CdfError::bad(one_of)),
            };
            refs.push((r, it.clone()));
        }
        self.resolve_files(project, &refs).await
    }

    /// Files of a project, paged by cursor.
    pub async fn list_files(&self, project: &str, limit: Option<i64>, cursor: Option<&str>) -> CdfResult<Value> {
        check_project_name(project)?;
        let limit = limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(CdfError::bad("limit must be between 1 and 1000."));
        }
        let after = match cursor.filter(|c| !c.is_empty()) {
            None => 0,
            Some(c) => c.parse::<i64>().map_err(|_| CdfError::bad("cursor is not one this server issued."))?,
        };
        let mut rows = self.store.list_files(project, after, limit as u32 + 1).await?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next = if more { rows.last().map(|f| json!(f.id.to_string())) } else { None };
        Ok(json!({"items": rows.iter().map(|f| self.file_json(f)).collect::<Vec<_>>(), "nextCursor": next}))
    }

    /// Deletes files (their own bytes too; a registered training image keeps its bytes).
    pub async fn delete_files(&self, project: &str, body: &Value) -> CdfResult<()> {
        let files = self.files_by_identity(project, body).await?;
        let ids: Vec<i64> = files.iter().map(|f| f.id).collect();
        for f in self.store.delete_files(project, &ids).await? {
            if f.blob_key.is_empty() {
                if let Err(e) = self.blobs.delete(&file_key(project, f.id)).await {
                    tracing::warn!(file = f.id, error = %e, "file blob delete failed");
                }
            }
        }
        Ok(())
    }

    /// Signed download links of files.
    pub async fn file_download_links(&self, ctx: &UrlContext, project: &str, body: &Value) -> CdfResult<Value> {
        let files = self.files_by_identity(project, body).await?;
        if let Some(f) = files.iter().find(|f| !f.uploaded) {
            return Err(CdfError::bad(format!("File {} has no content uploaded yet.", f.id)));
        }
        let items: Vec<Value> =
            files.iter().map(|f| json!({"id": f.id, "downloadUrl": self.signed_url(ctx, &Self::blob_of(f))})).collect();
        Ok(json!({ "items": items }))
    }

    /// POST context/vision/segment: validates, resolves the file, queues the job.
    pub async fn create_segment_job(&self, project: &str, body: &Value) -> CdfResult<Value> {
        check_project_name(project)?;
        let obj = body.as_object().ok_or_else(|| CdfError::bad("The body must be a JSON object."))?;
        let items = obj.get("items").and_then(Value::as_array).ok_or_else(|| CdfError::bad("items is required."))?;
        if items.len() != 1 {
            return Err(CdfError::bad(format!("items must hold exactly one file reference; got {}.", items.len())));
        }
        let reference = parse_ref(&items[0])?;
        let prompt = parse_prompt(obj)?;
        let rle = match obj.get("rle") {
            None | Some(Value::Null) => false,
            Some(v) => v.as_bool().ok_or_else(|| CdfError::bad("rle must be a boolean."))?,
        };
        let engine = match obj.get("engine") {
            None | Some(Value::Null) => {
                if self.models.engine().sam_available().is_ok() {
                    ENGINE_SAM
                } else {
                    ENGINE_GRABCUT
                }
            }
            Some(Value::String(e)) if e.eq_ignore_ascii_case(ENGINE_GRABCUT) => ENGINE_GRABCUT,
            Some(Value::String(e)) if e.eq_ignore_ascii_case(ENGINE_SAM) => {
                self.models.engine().sam_available().map_err(CdfError::bad)?;
                ENGINE_SAM
            }
            Some(_) => return Err(CdfError::bad("engine must be \"grabcut\" or \"sam\".")),
        };
        let file = self.segmentable_file(project, reference, &items[0]).await?;
        let running = self.jobs.active_jobs(SEGMENT_JOB, project).await?;
        if running >= self.config.max_running_vision_jobs {
            return Err(CdfError::new(
                CdfErrorKind::Busy,
                format!(
                    "At most {} segmentation jobs may be queued or running at once in a project.",
                    self.config.max_running_vision_jobs
                ),
            ));
        }
        let request =
            SegmentJobRequest { items: vec![file_item(&file)], prompt, rle, engine: engine.into(), prepare: false };
        let t = now();
        let id = self.queue_vision_job(project, &request.to_json()?, t).await?;
        let mut v = fields(&request.prompt);
        v.insert("status".into(), json!(JobStatus::Queued.as_str()));
        v.insert("createdTime".into(), json!(ms(&t)));
        v.insert("startTime".into(), json!(ms(&t)));
        v.insert("statusTime".into(), json!(ms(&t)));
        v.insert("jobId".into(), json!(id));
        v.insert("engine".into(), json!(engine));
        v.insert("items".into(), json!([file_item(&file)]));
        v.insert("errorMessage".into(), Value::Null);
        Ok(Value::Object(v))
    }

    /// The one file a segmentation request names, checked to be an uploaded JPEG or PNG.
    async fn segmentable_file(&self, project: &str, reference: FileRef, item: &Value) -> CdfResult<FileRecord> {
        let file = self.resolve_files(project, &[(reference, item.clone())]).await?.remove(0);
        if !is_segmentable(&file) {
            return Err(CdfError::bad(format!(
                "File {} must be a .jpg, .jpeg or .png with mimeType image/jpeg or image/png.",
                file.id
            )));
        }
        if !file.uploaded {
            return Err(CdfError::bad(format!("File {} has no content uploaded yet.", file.id)));
        }
        Ok(file)
    }

    /// Argus extension, `POST context/vision/segment/prepare` with `{"items": [one file reference]}`: starts
    /// Segment Anything's image encoder on a file ahead of its first prompt (the portal calls it when an image
    /// opens), so that the first click only pays the light mask decoder. Best effort: the answer's `jobId` is
    /// the job that encodes it (and finds at once an embedding another worker stored), or null when no SAM is
    /// configured (GrabCut needs no preparation) or the project already has its most segmentation jobs queued.
    pub async fn prepare_segment(&self, project: &str, body: &Value) -> CdfResult<Value> {
        check_project_name(project)?;
        let obj = body.as_object().ok_or_else(|| CdfError::bad("The body must be a JSON object."))?;
        let items = obj.get("items").and_then(Value::as_array).ok_or_else(|| CdfError::bad("items is required."))?;
        if items.len() != 1 {
            return Err(CdfError::bad(format!("items must hold exactly one file reference; got {}.", items.len())));
        }
        let file = self.segmentable_file(project, parse_ref(&items[0])?, &items[0]).await?;
        let answer =
            |engine: &str, job: Option<i64>| json!({"engine": engine, "jobId": job, "items": [file_item(&file)]});
        if self.models.engine().sam_available().is_err() {
            return Ok(answer(ENGINE_GRABCUT, None));
        }
        if self.jobs.active_jobs(SEGMENT_JOB, project).await? >= self.config.max_running_vision_jobs {
            return Ok(answer(ENGINE_SAM, None));
        }
        let request = SegmentJobRequest {
            items: vec![file_item(&file)],
            prompt: Prompt::default(),
            rle: false,
            engine: ENGINE_SAM.into(),
            prepare: true,
        };
        let id = self.queue_vision_job(project, &request.to_json()?, now()).await?;
        Ok(answer(ENGINE_SAM, Some(id)))
    }

    /// Stores a vision job's request and queues the job that runs it (two attempts); a job that could not be
    /// queued is marked Failed rather than left waiting forever.
    async fn queue_vision_job(&self, project: &str, request: &Value, t: Time) -> CdfResult<i64> {
        let id = self.store.insert_vision_job(project, request, t).await?;
        let queued =
            self.jobs.enqueue(JobSpec::Segment(SegmentJob { vision_job: id }).to_new_job(project.to_string(), 2)).await;
        match queued {
            Ok(job) => self.store.set_vision_queue_job(id, job.id).await?,
            Err(e) => {
                self.store
                    .update_vision_job(id, JobStatus::Failed, now(), None, Some("could not queue the job"))
                    .await?;
                return Err(e.into());
            }
        }
        Ok(id)
    }

    /// GET context/vision/segment/{jobId}.
    pub async fn segment_job(&self, project: &str, id: i64) -> CdfResult<Value> {
        check_project_name(project)?;
        let job = self
            .store
            .get_vision_job(project, id)
            .await?
            .ok_or_else(|| CdfError::bad(format!("Job with id {id} not found")))?;
        Ok(segment_job_json(&job))
    }

    async fn run_segment_job(&self, id: i64) -> Result<(), String> {
        let job = self.store.vision_job(id).await.map_err(|e| e.to_string())?.ok_or("the job row is gone")?;
        self.store.update_vision_job(id, JobStatus::Running, now(), None, None).await.map_err(|e| e.to_string())?;
        let req = SegmentJobRequest::of(&job)?;
        let item = req.items.first().cloned().ok_or("the job has no item")?;
        let file_id = item.file_id;
        let file = self
            .store
            .files_by_ids(&job.project, &[file_id])
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .next()
            .ok_or_else(|| format!("File {file_id} was deleted."))?;
        let bytes = self
            .blobs
            .get(&Self::blob_of(&file))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("File {file_id} has no content."))?;
        let points: Vec<PromptPoint> = req
            .prompt
            .points
            .iter()
            .map(|p| PromptPoint { x: p.x as f32, y: p.y as f32, foreground: p.label == 1 })
            .collect();
        let bbox = req.prompt.bounding_box.map(|b| PromptBox {
            x_min: b.x_min as f32,
            y_min: b.y_min as f32,
            x_max: b.x_max as f32,
            y_max: b.y_max as f32,
        });
        let request = SegmentRequest {
            image: bytes,
            limits: ImageLimits { max_bytes: MAX_FILE_BYTES, max_side: crate::limits::MAX_IMAGE_SIDE },
            method: if req.engine == ENGINE_SAM { SegmentMethod::Sam } else { SegmentMethod::GrabCut },
            points,
            bbox,
            rle: req.rle,
            prepare: req.prepare,
            min_area: MIN_COMPONENT_AREA,
        };
        let engine = self.models.engine();
        let shared =
            BlobEmbeddings { blobs: std::sync::Arc::clone(&self.blobs), runtime: tokio::runtime::Handle::current() };
        let segment = tokio::task::spawn_blocking(move || engine.segment(&request, &shared))
            .await
            .map_err(|e| e.to_string())??
            .map(|s| {
                let polygons: Vec<Value> = s
                    .polygons
                    .iter()
                    .map(|p| {
                        let vertices: Vec<Value> =
                            p.iter().map(|(x, y)| json!({"x": x, "y": y, "confidence": null})).collect();
                        json!({"vertices": vertices, "confidence": null})
                    })
                    .collect();
                let mut seg = json!({"score": s.score.clamp(0.0, 1.0), "polygons": polygons});
                if let (Some(full), Some(o)) = (s.rle, seg.as_object_mut()) {
                    o.insert("rle".into(), json!({"size": [full.height, full.width], "counts": full.counts}));
                }
                seg
            });
        let mut out = fields(&item);
        // A preparation (no prompt) ends with the embedding stored and no segments.
        out.insert("segments".into(), json!(segment.into_iter().collect::<Vec<_>>()));
        let result = json!({ "items": [Value::Object(out)] });
        self.store
            .update_vision_job(id, JobStatus::Completed, now(), Some(&result), None)
            .await
            .map_err(|e| e.to_string())
    }

    /// Deletes finished vision jobs older than `retention`, and the stored SAM embeddings written before it
    /// (a prompt on such an image encodes it again).
    pub async fn sweep_vision_jobs(&self, retention: chrono::Duration) -> CdfResult<u64> {
        let cutoff = now() - retention;
        let mut gone = self.store.delete_finished_vision_jobs(cutoff).await?;
        for blob in self.blobs.list(SAM_EMBEDDINGS_PREFIX).await? {
            if blob.last_modified < cutoff {
                self.blobs.delete(&blob.key).await?;
                gone += 1;
            }
        }
        Ok(gone)
    }
}

/// SAM embeddings shared through the blob store, under [`sam_embedding_key`]; read and written from the
/// blocking thread a segmentation runs on.
struct BlobEmbeddings {
    blobs: std::sync::Arc<dyn crate::store::BlobStore>,
    runtime: tokio::runtime::Handle,
}

impl SharedEmbeddings for BlobEmbeddings {
    fn load(&self, fingerprint: &str, image: &[u8; 32]) -> Option<Vec<u8>> {
        let key = sam_embedding_key(fingerprint, image);
        match self.runtime.block_on(self.blobs.get(&key)) {
            Ok(stored) => stored.map(|b| b.to_vec()),
            Err(e) => {
                tracing::warn!(error = %e, key = %key, "reading a stored SAM embedding failed");
                None
            }
        }
    }

    fn store(&self, fingerprint: &str, image: &[u8; 32], embedding: Vec<u8>) {
        if let Err(e) = self.runtime.block_on(self.blobs.put(&sam_embedding_key(fingerprint, image), embedding.into()))
        {
            tracing::warn!(error = %e, "storing a SAM embedding failed");
        }
    }
}

/// Prefix of the SAM image embeddings shared by every worker (by checkpoint, then by image content hash).
pub const SAM_EMBEDDINGS_PREFIX: &str = "sam-embeddings/";

/// Blob key of the embedding of the image with content hash `hash` under the checkpoint `fingerprint`.
fn sam_embedding_key(fingerprint: &str, hash: &[u8; 32]) -> String {
    format!("{SAM_EMBEDDINGS_PREFIX}{fingerprint}/{}", hex::encode(hash))
}

fn segment_job_json(job: &VisionJobRecord) -> Value {
    let request = SegmentJobRequest::of(job);
    let prompt = request.as_ref().map(|r| fields(&r.prompt)).unwrap_or_default();
    let engine = request.as_ref().map_or(ENGINE_GRABCUT, |r| r.engine.as_str());
    let items = match &job.result {
        Some(r) => r.get("items").cloned().unwrap_or_else(|| json!([])),
        None => json!([]),
    };
    let mut v = json!({
        "status": job.status.as_str(),
        "createdTime": ms(&job.created),
        "startTime": ms(&job.start_time),
        "statusTime": ms(&job.status_time),
        "jobId": job.id,
        "items": items,
        "prompt": Value::Object(prompt),
        "engine": engine,
        "errorMessage": job.error,
    });
    if job.status == JobStatus::Failed {
        if let (Some(o), Ok(refs)) = (v.as_object_mut(), request.as_ref().map(|r| &r.items)) {
            o.insert(
                "failedItems".into(),
                json!([{"errorMessage": job.error.clone().unwrap_or_default(), "items": refs}]),
            );
        }
    }
    v
}

/// Runs `segment` jobs.
pub struct SegmentJobs(pub Argus);

#[async_trait]
impl JobHandler for SegmentJobs {
    fn kind(&self) -> &'static str {
        SEGMENT_JOB
    }

    async fn run(&self, job: &Job, _progress: Progress) -> Result<Value, (String, bool)> {
        let JobSpec::Segment(SegmentJob { vision_job: id }) = JobSpec::of(job).map_err(|e| (e, false))? else {
            return Err((format!("job {} is not a segmentation", job.id), false));
        };
        match self.0.run_segment_job(id).await {
            Ok(()) => Ok(json!({ "visionJob": id })),
            Err(message) => {
                if let Err(e) = self.0.store.update_vision_job(id, JobStatus::Failed, now(), None, Some(&message)).await
                {
                    tracing::error!(error = %e, "could not mark the segmentation job failed");
                }
                Err((message, false))
            }
        }
    }

    async fn abandoned(&self, job: &Job, reason: &str) {
        if let Ok(JobSpec::Segment(SegmentJob { vision_job: id })) = JobSpec::of(job) {
            let _ = self.0.store.update_vision_job(id, JobStatus::Failed, now(), None, Some(reason)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_validated_as_documented() {
        let p = |v: Value| parse_prompt(v.as_object().expect("object"));
        assert!(p(json!({"points": [{"x": 0.5, "y": 0.5}]})).is_ok());
        assert_eq!(p(json!({"points": [{"x": 0.5, "y": 0.5, "label": 1.0}]})).expect("ok").points[0].label, 1);
        assert!(p(json!({})).is_err());
        assert!(p(json!({"points": [{"x": 1.5, "y": 0.5}]})).is_err());
        assert!(p(json!({"points": [{"x": 0.5, "y": 0.5, "label": 2}]})).is_err());
        assert!(p(json!({"points": [{"x": 0.5, "y": 0.5}, {"x": 0.5, "y": 0.5}]})).is_err());
        assert!(p(json!({"boundingBox": {"xMin": 0.6, "yMin": 0.1, "xMax": 0.5, "yMax": 0.9}})).is_err());
        assert!(p(json!({"boundingBox": {"xMin": 0.1, "yMin": 0.1, "xMax": 0.5, "yMax": 0.9}})).is_ok());
        assert!(parse_ref(&json!({"fileId": 3, "fileExternalId": "x"})).is_err());
        assert_eq!(parse_ref(&json!({"fileExternalId": "x"})).expect("ok"), FileRef::External("x".into()));
    }

    #[test]
    fn a_stored_request_reads_back_and_keeps_the_shape_of_older_rows() {
        let request = SegmentJobRequest {
            items: vec![FileItem {
                file_id: 4,
                file_external_id: Some("cat".into()),
                file_instance_id: Some(InstanceRef { space: "s".into(), external_id: "e".into() }),
            }],
            prompt: Prompt {
                points: vec![PointPrompt { x: 0.25, y: 0.5, label: 0 }],
                bounding_box: Some(BoxPrompt { x_min: 0.1, y_min: 0.2, x_max: 0.3, y_max: 0.4 }),
            },
            rle: true,
            engine: ENGINE_SAM.into(),
            prepare: false,
        };
        let v = request.to_json().expect("json");
        assert_eq!(
            v,
            json!({
                "items": [{"fileId": 4, "fileExternalId": "cat", "fileInstanceId": {"space": "s", "externalId": "e"}}],
                "points": [{"x": 0.25, "y": 0.5, "label": 0}],
                "boundingBox": {"xMin": 0.1, "yMin": 0.2, "xMax": 0.3, "yMax": 0.4},
                "rle": true,
                "engine": "sam",
            })
        );
        let back: SegmentJobRequest = serde_json::from_value(v).expect("read back");
        assert_eq!(back, request);
        // A preparation written before requests were typed: no rle, no prompt.
        let old: SegmentJobRequest =
            serde_json::from_value(json!({"items": [{"fileId": 9}], "engine": "sam", "prepare": true})).expect("old");
        assert!(old.prepare && !old.rle && old.prompt == Prompt::default() && old.items[0].file_id == 9);
    }
}
