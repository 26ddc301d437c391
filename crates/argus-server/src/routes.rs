//! Route table and handlers of the Training API data plane, the signed blob route, and health checks.

use argus_core::limits::{MAX_IMAGES_PER_BATCH, MAX_TRAINING_IMAGE_BYTES};
use argus_core::model::IterationUpdate;
use argus_core::model::{
    ImageCreateStatus, ImageFileCreateBatch, ImageIdCreateBatch, ImageRegionCreateBatch, ImageTagCreateBatch,
    ImageUrlCreateBatch, Metadata, PredictionQueryToken, ProjectUpdate, TagUpdate,
};
use argus_core::service::{ImageListing, NewProject, TrainRequest, UploadItem};
use argus_core::store::TaggingStatus;
use argus_core::{ApiError, ErrorCode};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use tower_http::trace::TraceLayer;

use crate::error::{method_not_allowed, not_found, HttpError, HttpResult};
use crate::extract::{check_key, json_body, path_id, BaseUrl, Query};
use crate::AppState;

/// Largest upload request: 64 images of 6 MB, base64-encoded in JSON, with room for the envelope.
const MAX_UPLOAD_REQUEST_BYTES: usize = MAX_IMAGES_PER_BATCH * MAX_TRAINING_IMAGE_BYTES * 4 / 3 + (1 << 20);
/// Largest request elsewhere.
const MAX_REQUEST_BYTES: usize = 4 << 20;

pub(crate) fn router(state: AppState) -> Router {
    let uploads = Router::new()
        .route("/projects/{project}/images", post(create_images_from_data).get(get_images).delete(delete_images))
        .route("/projects/{project}/images/files", post(create_images_from_files))
        .route("/projects/{project}/quicktest/image", post(quick_test_image))
        .route("/projects/{project}/dataset", get(export_dataset).post(import_dataset))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_REQUEST_BYTES));
    let training = Router::new()
        .route("/domains", get(get_domains))
        .route("/domains/{domain}", get(get_domain))
        .route("/projects", get(get_projects).post(create_project))
        .route("/projects/import", post(import_project))
        .route("/projects/{project}", get(get_project).delete(delete_project).patch(update_project))
        .route("/projects/{project}/export", get(export_project))
        .route("/projects/{project}/artifacts", get(get_artifact))
        .route("/projects/{project}/tags", get(get_tags).post(create_tag))
        .route("/projects/{project}/tags/{tag}", get(get_tag).delete(delete_tag).patch(update_tag))
        .route("/projects/{project}/images/count", get(get_image_count))
        .route("/projects/{project}/images/id", get(get_images_by_ids))
        .route("/projects/{project}/images/metadata", post(update_image_metadata))
        .route("/projects/{project}/images/predictions", post(create_images_from_predictions))
        .route("/projects/{project}/predictions/query", post(query_predictions))
        .route("/projects/{project}/predictions", axum::routing::delete(delete_predictions))
        .route("/projects/{project}/images/tagged", get(get_tagged_images))
        .route("/projects/{project}/images/tagged/count", get(get_tagged_image_count))
        .route("/projects/{project}/images/untagged", get(get_untagged_images))
        .route("/projects/{project}/images/untagged/count", get(get_untagged_image_count))
        .route("/projects/{project}/images/urls", post(create_images_from_urls))
        .route("/projects/{project}/images/tags", post(create_image_tags).delete(delete_image_tags))
        .route("/projects/{project}/images/regions", post(create_image_regions).delete(delete_image_regions))
        .route("/projects/{project}/images/{image}/regionproposals", post(get_image_region_proposals))
        .route("/projects/{project}/train", post(train_project))
        .route("/projects/{project}/iterations", get(get_iterations))
        .route(
            "/projects/{project}/iterations/{iteration}",
            get(get_iteration).delete(delete_iteration).patch(update_iteration),
        )
        .route(
            "/projects/{project}/iterations/{iteration}/publish",
            post(publish_iteration).delete(unpublish_iteration),
        )
        .route("/projects/{project}/iterations/{iteration}/export", get(get_exports).post(export_iteration))
        .route("/projects/{project}/iterations/{iteration}/performance", get(get_iteration_performance))
        .route("/projects/{project}/iterations/{iteration}/performance/images", get(get_image_performances))
        .route("/projects/{project}/iterations/{iteration}/performance/images/count", get(get_image_performance_count))
        .route("/projects/{project}/quicktest/url", post(quick_test_url))
        .route("/projects/{project}/tagsandregions/suggestions", post(suggest_tags_and_regions))
        .route("/projects/{project}/images/suggested", post(query_suggested_images))
        .route("/projects/{project}/images/suggested/count", post(query_suggested_image_count))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .merge(uploads)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(state.clone(), training_auth));
    Router::new()
        .nest("/customvision/v3.3/training", training)
        .merge(crate::prediction_routes::router(state.clone()))
        .merge(crate::vision_routes::router(state.clone()))
        .route("/blobs/{*key}", get(get_blob))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::render))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(crate::metrics::track))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn training_auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match check_key(req.headers(), "Training-Key", &state.keys.training) {
        Ok(()) => next.run(req).await,
        Err(e) => HttpError(e).into_response(),
    }
}

async fn readyz(State(s): State<AppState>) -> Response {
    readiness(&s.argus).await
}

/// `GET /readyz`: 200 when the store answers, 503 with the reason otherwise.
pub(crate) async fn readiness(argus: &argus_core::Argus) -> Response {
    match argus.ready().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.message).into_response(),
    }
}

fn sniff_mime(bytes: &[u8]) -> &'static str {
    match bytes {
        [0xFF, 0xD8, ..] => "image/jpeg",
        [0x89, b'P', b'N', b'G', ..] => "image/png",
        [b'G', b'I', b'F', b'8', ..] => "image/gif",
        [b'B', b'M', ..] => "image/bmp",
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => "image/webp",
        _ => "application/octet-stream",
    }
}

/// A single `bytes=start-end` / `bytes=start-` / `bytes=-suffix` range of a `Range` header (`suffix` as
/// `(None, Some(n))`); anything else (several ranges, other units) is ignored, as RFC 9110 allows.
fn byte_range(headers: &axum::http::HeaderMap) -> Option<(Option<u64>, Option<u64>)> {
    let spec = headers.get(header::RANGE)?.to_str().ok()?.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let parse = |v: &str| if v.trim().is_empty() { Ok(None) } else { v.trim().parse::<u64>().map(Some) };
    match (parse(a).ok()?, parse(b).ok()?) {
        (None, None) => None,
        (Some(start), Some(end)) if end < start => None,
        r => Some(r),
    }
}

/// The content type of a blob from its key, or from its first bytes when the key does not say.
fn blob_mime(key: &str, head: &[u8]) -> &'static str {
    if key.ends_with(".tar") {
        "application/x-tar"
    } else if key.ends_with(".zip") {
        "application/zip"
    } else {
        sniff_mime(head)
    }
}

/// The signed `/blobs/` route: streams the blob (never holding it whole), honouring a single byte `Range`
/// (206 with `Content-Range`, 416 past the end) so that large export packages can be fetched in parts.
async fn get_blob(
    State(s): State<AppState>,
    Path(key): Path<String>,
    q: Query,
    headers: axum::http::HeaderMap,
) -> HttpResult<Response> {
    use futures::StreamExt;
    let expires = q.int("se")?.unwrap_or(0);
    let sig = q.str("sig").unwrap_or("");
    if !s.argus.verify_blob_signature(&key, expires, sig) {
        return Err(ApiError::with_status(ErrorCode::Forbidden, 403, "The link is invalid or has expired.").into());
    }
    let wanted = byte_range(&headers);
    let range = match wanted {
        None => None,
        Some((Some(start), end)) => Some(argus_core::store::ByteRange { start, end }),
        Some((None, Some(suffix))) => {
            // The last `suffix` bytes: the size is needed first.
            let total =
                s.argus.open_blob(&key, Some(argus_core::store::ByteRange { start: u64::MAX, end: None })).await?.total;
            Some(argus_core::store::ByteRange { start: total.saturating_sub(suffix), end: None })
        }
        Some((None, None)) => None,
    };
    let mut reader = s.argus.open_blob(&key, range).await?;
    if wanted.is_some() && reader.start >= reader.end {
        return Ok((StatusCode::RANGE_NOT_SATISFIABLE, [(header::CONTENT_RANGE, format!("bytes */{}", reader.total))])
            .into_response());
    }
    // The first chunk decides the content type of blobs whose key does not say it.
    let first = match reader.stream.next().await {
        Some(chunk) => chunk.map_err(|e| ApiError::internal(e.to_string()))?,
        None => bytes::Bytes::new(),
    };
    let mime = if reader.start == 0 { blob_mime(&key, &first) } else { blob_mime(&key, &[]) };
    let length = reader.end - reader.start;
    let body = futures::stream::once(async move { Ok::<_, argus_core::store::StoreError>(first) }).chain(reader.stream);
    let body = axum::body::Body::from_stream(body.map(|c| c.map_err(std::io::Error::other)));
    let mut response = Response::new(body);
    if wanted.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static(mime));
    h.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("private, max-age=3600"));
    h.insert(header::ACCEPT_RANGES, header::HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, header::HeaderValue::from(length));
    if wanted.is_some() {
        let value = format!("bytes {}-{}/{}", reader.start, reader.end.saturating_sub(1), reader.total);
        if let Ok(v) = header::HeaderValue::from_str(&value) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(response)
}

pub(crate) fn ok_json<T: serde::Serialize>(v: T) -> Response {
    Json(v).into_response()
}

fn status_json<T: serde::Serialize>(status: StatusCode, v: T) -> Response {
    (status, Json(v)).into_response()
}

// ---- domains ----

async fn get_domains(State(s): State<AppState>) -> Response {
    ok_json(s.argus.domains())
}

async fn get_domain(State(s): State<AppState>, Path(id): Path<String>) -> HttpResult<Response> {
    Ok(ok_json(s.argus.domain(path_id("domainId", &id)?)?))
}

// ---- projects ----

async fn get_projects(State(s): State<AppState>) -> HttpResult<Response> {
    Ok(ok_json(s.argus.projects().await?))
}

async fn create_project(State(s): State<AppState>, q: Query) -> HttpResult<Response> {
    // SDK 3.1.x may send a JSON body {exportModelContainerUri, notificationQueueUri}; it is accepted and ignored.
    let input = NewProject {
        name: q.str("name").map(String::from),
        description: q.str("description").map(String::from),
        domain_id: match q.uuid("domainId") {
            Ok(d) => d,
            Err(_) => {
                return Err(ApiError::new(
                    ErrorCode::BadRequestProjectUnknownDomain,
                    format!("'{}' is not a valid domain id.", q.str("domainId").unwrap_or("")),
                )
                .into())
            }
        },
        classification_type: q.str("classificationType").map(String::from),
        target_export_platforms: q.strings("targetExportPlatforms"),
        // Argus extension (`argus import customvision` keeps the source's ids); absent from the official spec.
        requested_id: q.uuid("requestedId")?,
    };
    Ok(ok_json(s.argus.create_project(input).await?))
}

async fn get_project(State(s): State<AppState>, Path(p): Path<String>) -> HttpResult<Response> {
    Ok(ok_json(s.argus.get_project(path_id("projectId", &p)?).await?))
}

async fn delete_project(State(s): State<AppState>, Path(p): Path<String>) -> HttpResult<StatusCode> {
    s.argus.delete_project(path_id("projectId", &p)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn update_project(
    State(s): State<AppState>,
    Path(p): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let id = path_id("projectId", &p)?;
    let update: ProjectUpdate = json_body(&headers, &body)?;
    Ok(ok_json(s.argus.update_project(id, update).await?))
}

async fn export_project(
    State(s): State<AppState>,
    BaseUrl(ctx): BaseUrl,
    Path(p): Path<String>,
) -> HttpResult<Response> {
    Ok(ok_json(s.argus.export_project(&ctx, path_id("projectId", &p)?).await?))
}

async fn import_project(State(s): State<AppState>, q: Query) -> HttpResult<Response> {
    let token = q.required("token")?;
    Ok(ok_json(s.argus.import_project(token, q.str("name")).await?))
}

async fn get_artifact(State(s): State<AppState>, Path(p): Path<String>, q: Query) -> HttpResult<Response> {
    let id = path_id("projectId", &p)?;
    let data = s.argus.get_artifact(id, q.required("path")?).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response())
}

// ---- tags ----

async fn get_tags(State(s): State<AppState>, Path(p): Path<String>, q: Query) -> HttpResult<Response> {
    Ok(ok_json(s.argus.tags(path_id("projectId", &p)?, q.uuid("iterationId")?).await?))
}

async fn get_tag(State(s): State<AppState>, Path((p, t)): Path<(String, String)>, q: Query) -> HttpResult<Response> {
    Ok(ok_json(s.argus.tag(path_id("projectId", &p)?, path_id("tagId", &t)?, q.uuid("iterationId")?).await?))
}

async fn create_tag(State(s): State<AppState>, Path(p): Path<String>, q: Query) -> HttpResult<Response> {
    let id = path_id("projectId", &p)?;
    let requested = q.uuid("requestedId")?; // Argus extension, as in CreateProject.
    Ok(ok_json(s.argus.create_tag(id, q.str("name"), q.str("description"), q.str("type"), requested).await?))
}

async fn delete_tag(State(s): State<AppState>, Path((p, t)): Path<(String, String)>) -> HttpResult<StatusCode> {
    s.argus.delete_tag(path_id("projectId", &p)?, path_id("tagId", &t)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn update_tag(
    State(s): State<AppState>,
    Path((p, t)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let (p, t) = (path_id("projectId", &p)?, path_id("tagId", &t)?);
    let update: TagUpdate = json_body(&headers, &body)?;
    Ok(ok_json(s.argus.update_tag(p, t, update).await?))
}

// ---- images: uploads ----

fn summary_response(summary: argus_core::model::ImageCreateSummary) -> Response {
    let status = if summary.is_batch_successful { StatusCode::OK } else { StatusCode::MULTI_STATUS };
    status_json(status, summary)
}

async fn read_multipart(req: Request) -> HttpResult<Vec<UploadItem>> {
    let mut mp = Multipart::from_request(req, &()).await.map_err(|e| {
        ApiError::new(ErrorCode::BadRequestImageStream, format!("The multipart body is malformed: {e}"))
    })?;
    let mut items = Vec::new();
    loop {
        let field = mp.next_field().await.map_err(|e| {
            ApiError::new(ErrorCode::BadRequestImageStream, format!("The multipart body is malformed: {e}"))
        })?;
        let Some(mut field) = field else { break };
        let source = field
            .headers()
            .get(axum::http::header::CONTENT_DISPOSITION)
            // Browsers send UTF-8 names raw in the header, which `to_str` would refuse.
            .and_then(|h| crate::disposition::file_name(&String::from_utf8_lossy(h.as_bytes())))
            .unwrap_or_default();
        let mut data = Vec::new();
        let mut too_large = false;
        while let Some(chunk) = field.chunk().await.map_err(|e| {
            ApiError::new(ErrorCode::BadRequestImageStream, format!("The multipart body is malformed: {e}"))
        })? {
            if too_large || data.len() + chunk.len() > MAX_TRAINING_IMAGE_BYTES {
                too_large = true;
                data.clear();
                continue;
            }
            data.extend_from_slice(&chunk);
        }
        if items.len() >= MAX_IMAGES_PER_BATCH {
            return Err(ApiError::new(
                ErrorCode::BadRequestExceededBatchSize,
                format!("A batch can contain at most {MAX_IMAGES_PER_BATCH} images."),
            )
            .into());
        }
        let bytes = if too_large { Err(ImageCreateStatus::ErrorImageSize) } else { Ok(Bytes::from(data)) };
        items.push(UploadItem { source, bytes, tag_ids: Vec::new(), regions: Vec::new() });
    }
    Ok(items)
}

async fn create_images_from_data(
    State(s): State<AppState>,
    BaseUrl(ctx): BaseUrl,
    Path(p): Path<String>,
    q: Query,
    req: Request,
) -> HttpResult<Response> {
    let project = path_id("projectId", &p)?;
    let tags = q.uuids("tagIds")?;
    let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let items = if ct.starts_with("multipart/form-data") {
        read_multipart(req).await?
    } else if ct.starts_with("application/octet-stream") || ct.starts_with("image/") {
        let body = axum::body::to_bytes(req.into_body(), MAX_UPLOAD_REQUEST_BYTES)
            .await
            .map_err(|e| ApiError::new(ErrorCode::BadRequestImageStream, format!("The body could not be read: {e}")))?;
        let bytes =
            if body.len() > MAX_TRAINING_IMAGE_BYTES { Err(ImageCreateStatus::ErrorImageSize) } else { Ok(body) };
        vec![UploadItem { source: String::new(), bytes, tag_ids: Vec::new(), regions: Vec::new() }]
    } else {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!("Send images as multipart/form-data (field imageData) or application/octet-stream, not '{ct}'."),
        )
        .into());
    };
    Ok(summary_response(s.argus.create_images(&ctx, project, tags, Metadata::new(), items).await?))
}

/// Argus extension: the project as a COCO / YOLO / VOC zip (`?format=`).
async fn export_dataset(State(s): State<AppState>, Path(p): Path<String>, q: Query) -> HttpResult<Response> {
    let project = path_id("projectId", &p)?;
    let format = argus_core::service::dataset_format(q.str("format"))?;
    let zip = s.argus.export_dataset(project, format).await?;
    let name = format!("attachment; filename=\"{project}-{}.zip\"", q.str("format").unwrap_or("").to_ascii_lowercase());
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/zip".to_string()), (header::CONTENT_DISPOSITION, name)],
        zip,
    )
        .into_response())
}

/// Argus extension: adds a COCO / YOLO / VOC zip (the request body, `?format=`) to the project.
async fn import_dataset(
    State(s): State<AppState>,
    BaseUrl(ctx): BaseUrl,
    Path(p): Path<String>,
    q: Query,
    body: Bytes,
) -> HttpResult<Response> {
    let project = path_id("projectId", &p)?;
    let format = argus_core::service::dataset_format(q.str("format"))?;
    Ok(ok_json(s.argus.import_dataset(&ctx, project, format, body).await?))
}

async fn create_images_from_files(
    State(s): State<AppState>,
    BaseUrl(ctx): BaseUrl,
    Path(p): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let project = path_id("projectId", &p)?;
    let batch: ImageFileCreateBatch = json_body(&headers, &body)?;
    let entries = batch.images.unwrap_or_default();
    let items = entries
        .into_iter()
        .map(|e| {
            let bytes = match e.contents.as_deref() {
                None | Some("") => Err(ImageCreateStatus::ErrorSource),
                Some(c) => match base64::engine::general_purpose::STANDARD.decode(c.trim()) {
                    Ok(b) if b.len() > MAX_TRAINING_IMAGE_BYTES => Err(ImageCreateStatus::ErrorImageSize),
                    Ok(b) => Ok(Bytes::from(b)),
                    Err(_) => Err(ImageCreateStatus::ErrorImageFormat),
                },
            };
            UploadItem {
                source: e.name.unwrap_or_default(),
                bytes,
                tag_ids: e.tag_ids.unwrap_or_default(),
                regions: e.regions.unwrap_or_default(),
            }
        })
        .collect();
    let summary = s
        .argus
        .create_images(&ctx, project, batch.tag_ids.unwrap_or_default(), batch.metadata.unwrap_or_default(), items)
        .await?;
    Ok(summary_response(summary))
}

async fn create_images_from_urls(
    State(s): State<AppState>,
    BaseUrl(ctx): BaseUrl,
    Path(p): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let project = path_id("projectId", &p)?;
    let batch: ImageUrlCreateBatch = json_body(&headers, &body)?;
    Ok(summary_response(s.argus.create_images_from_urls(&ctx, project, batch).await?))
}

async fn create_images_from_predictions(
    State(s): State<AppState>,
    BaseUrl(ctx): BaseUrl,
    Path(p): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let project = path_id("projectId", &p)?;
    let batch: ImageIdCreateBatch = json_body(&headers, &body)?;
    Ok(summary_response(s.argus.create_images_from_predictions(&ctx, project, batch).await?))
}

// ---- stored predictions ----

async fn query_predictions(
    State(s): State<AppState>,
    BaseUrl(ctx): BaseUrl,
    Path(p): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let project = path_id("projectId", &p)?;
    let token: PredictionQueryToken = json_body(&headers, &body)?;
    Ok(ok_json(s.argus.query_predictions(&ctx, project, token).await?))
}

async fn delete_predictions(State(s): State<AppState>, Path(p): Path<String>, q: Query) -> HttpResult<Response> {
    let project = path_id("projectId", &p)?;
    let ids = q.uuids("ids")?;
    s.argus.delete_predictions(project, ids).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- images: listings ----

fn listing(q: &Query, with_filter: bool) -> Result<ImageListing, ApiError> {
    Ok(ImageListing {
        iteration: q.uuid("iterationId")?,
        tag_ids: q.uuids("tagIds")?,
        tagging: q.str("taggingStatus").map(String::from),
        filter: if with_filter { q.str("$filter").map(String::from) } else { None },
        order_by: q.str("orderBy").map(String::from),
        take: q.int("take")?,
        skip: q.int("skip")?,
    })
}

async fn list(
    s: &AppState,
    ctx: &argus_core::UrlContext,
    p: &str,
    q: &Query,
    default: TaggingStatus,
    all: bool,
) -> HttpResult<Response> {
    let project = path_id("projectId", p)?;
    let mut l = listing(q, all)?;
    if !all {
        l.tagging = None;
    }
    Ok(ok_json(s.argus.list_images(ctx, project, l, default).await?))
}

async fn count(s: &AppState, p: &str, q: &Query, default: TaggingStatus, all: bool) -> HttpResult<Response> {
    let project = path_id("projectId", p)?;
    let mut l = listing(q, all)?;
    if !all {
        l.tagging = None;
    }
    Ok(ok_json(s.argus.count_images(project, l, default).await?))
}

async fn get_images(
    State(s): State<AppState>,
    BaseUrl(ctx): BaseUrl,
    Path(p): Path<String>,
    q: Query,
) -> HttpResult<Response> {
    list(&s, &ctx, &p, &q, TaggingStatus::All, true).await
}

async fn get_tagged_images(
    State(s): State<AppState>,
    BaseUrl(ctx): BaseUrl,
    Path(p): Path<String>,
    q: Query,
) -> HttpResult<Response> {
    list(&s, &ctx, &p, &q, TaggingStatus::Tagged, false).await
}

async fn get_untagged_images(
    State(s): State<AppState>,
    BaseUrl(ctx): BaseUrl,
    Path(p): Path<String>,
    q: Query,
) -> HttpResult<Response> {
    let mut q = q;
    q.0.retain(|(k, _)| !k.eq_ignore_ascii_case("tagIds"));
    list(&s, &ctx, &p, &q, TaggingStatus::Untagged, false).await
}

async fn get_image_count(State(s): State<AppState>, Path(p): Path<String>, q: Query) -> HttpResult<Response> {
    count(&s, &p, &q, TaggingStatus::All, true).await
}

async fn get_tagged_image_count(State(s): State<AppState>, Path(p): Path<String>, q: Query) -> HttpResult<Response> {
    count(&s, &p, &q, TaggingStatus::Tagged, false).await
}

async fn get_untagged_image_count(State(s): State<AppState>, Path(p): Path<String>, q: Query) -> HttpResult<Response> {
    let mut q = q;
    q.0.retain(|(k, _)| !k.eq_ignore_ascii_case("tagIds"));
    count(&s, &p, &q, TaggingStatus::Untagged, false).await
}

async fn get_images_by_ids(
    State(s): State<AppState>,
    BaseUrl(ctx): BaseUrl,
    Path(p): Path<String>,
    q: Query,
) -> HttpResult<Response> {
    let project = path_id("projectId", &p)?;
    Ok(ok_json(s.argus.images_by_ids(&ctx, project, q.uuids("imageIds")?, q.uuid("iterationId")?).await?))
}

async fn delete_images(State(s): State<AppState>, Path(p): Path<String>, q: Query) -> HttpResult<StatusCode> {
    let project = path_id("projectId", &p)?;
    // `allImages` alone widens the deletion to every image; `allIterations` only says the named images leave
    // earlier iterations too (the spec: "removes these images from all iterations, not just the current
    // workspace"). Both flags answer 202, as the spec says of each.
    let all_images = q.bool("allImages")?.unwrap_or(false);
    let all_iterations = q.bool("allIterations")?.unwrap_or(false);
    s.argus.delete_images(project, q.uuids("imageIds")?, all_images, all_iterations).await?;
    Ok(if all_images || all_iterations { StatusCode::ACCEPTED } else { StatusCode::NO_CONTENT })
}

// ---- labels ----

async fn update_image_metadata(
    State(s): State<AppState>,
    Path(p): Path<String>,
    q: Query,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let project = path_id("projectId", &p)?;
    let ids = q.uuids("imageIds")?;
    let metadata: Metadata = json_body(&headers, &body)?;
    let summary = s.argus.update_image_metadata(project, ids, metadata).await?;
    let status = if summary.is_batch_successful { StatusCode::OK } else { StatusCode::MULTI_STATUS };
    Ok(status_json(status, summary))
}

async fn create_image_tags(
    State(s): State<AppState>,
    Path(p): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let project = path_id("projectId", &p)?;
    let batch: ImageTagCreateBatch = json_body(&headers, &body)?;
    Ok(ok_json(s.argus.create_image_tags(project, batch.tags.unwrap_or_default()).await?))
}

async fn delete_image_tags(State(s): State<AppState>, Path(p): Path<String>, q: Query) -> HttpResult<StatusCode> {
    let project = path_id("projectId", &p)?;
    s.argus.delete_image_tags(project, q.uuids("imageIds")?, q.uuids("tagIds")?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_image_regions(
    State(s): State<AppState>,
    Path(p): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let project = path_id("projectId", &p)?;
    let batch: ImageRegionCreateBatch = json_body(&headers, &body)?;
    let (summary, all_created) = s.argus.create_image_regions(project, batch.regions.unwrap_or_default()).await?;
    Ok(status_json(if all_created { StatusCode::OK } else { StatusCode::MULTI_STATUS }, summary))
}

async fn delete_image_regions(State(s): State<AppState>, Path(p): Path<String>, q: Query) -> HttpResult<StatusCode> {
    let project = path_id("projectId", &p)?;
    s.argus.delete_image_regions(project, q.uuids("regionIds")?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_image_region_proposals(
    State(s): State<AppState>,
    Path((p, i)): Path<(String, String)>,
) -> HttpResult<Response> {
    Ok(ok_json(s.argus.region_proposals(path_id("projectId", &p)?, path_id("imageId", &i)?).await?))
}

// ---- training and iterations ----

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct TrainingParameters {
    selected_tags: Option<Vec<uuid::Uuid>>,
}

async fn train_project(
    State(s): State<AppState>,
    Path(p): Path<String>,
    q: Query,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let project = path_id("projectId", &p)?;
    // The SDK sends an empty body (with a JSON content type) when there are no parameters.
    let params: Option<TrainingParameters> =
        if body.iter().all(u8::is_ascii_whitespace) { None } else { Some(json_body(&headers, &body)?) };
    let req = TrainRequest {
        training_type: q.str("trainingType").map(String::from),
        reserved_budget_in_hours: q.int("reservedBudgetInHours")?.unwrap_or(0),
        force_train: q.bool("forceTrain")?.unwrap_or(false),
        notification_email_address: q.str("notificationEmailAddress").map(String::from),
        selected_tags: params.and_then(|p| p.selected_tags),
    };
    Ok(ok_json(s.argus.train_project(project, req).await?))
}

fn ids(p: &str, i: &str) -> Result<(uuid::Uuid, uuid::Uuid), ApiError> {
    Ok((path_id("projectId", p)?, path_id("iterationId", i)?))
}

async fn get_iterations(State(s): State<AppState>, Path(p): Path<String>) -> HttpResult<Response> {
    Ok(ok_json(s.argus.iterations(path_id("projectId", &p)?).await?))
}

async fn get_iteration(State(s): State<AppState>, Path((p, i)): Path<(String, String)>) -> HttpResult<Response> {
    let (p, i) = ids(&p, &i)?;
    Ok(ok_json(s.argus.iteration(p, i).await?))
}

async fn export_iteration(
    State(s): State<AppState>,
    Path((p, i)): Path<(String, String)>,
    q: Query,
) -> HttpResult<Response> {
    let (p, i) = ids(&p, &i)?;
    Ok(ok_json(s.argus.export_iteration(p, i, q.str("platform"), q.str("flavor")).await?))
}

async fn get_exports(
    State(s): State<AppState>,
    BaseUrl(ctx): BaseUrl,
    Path((p, i)): Path<(String, String)>,
) -> HttpResult<Response> {
    let (p, i) = ids(&p, &i)?;
    Ok(ok_json(s.argus.exports(&ctx, p, i).await?))
}

async fn delete_iteration(State(s): State<AppState>, Path((p, i)): Path<(String, String)>) -> HttpResult<StatusCode> {
    let (p, i) = ids(&p, &i)?;
    s.argus.delete_iteration(p, i).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn update_iteration(
    State(s): State<AppState>,
    Path((p, i)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let (p, i) = ids(&p, &i)?;
    let update: IterationUpdate = json_body(&headers, &body)?;
    Ok(ok_json(s.argus.update_iteration(p, i, update).await?))
}

async fn publish_iteration(
    State(s): State<AppState>,
    Path((p, i)): Path<(String, String)>,
    q: Query,
) -> HttpResult<Response> {
    let (p, i) = ids(&p, &i)?;
    let overwrite = q.bool("overwrite")?.unwrap_or(false);
    Ok(ok_json(s.argus.publish_iteration(p, i, q.str("publishName"), q.str("predictionId"), overwrite).await?))
}

async fn unpublish_iteration(
    State(s): State<AppState>,
    Path((p, i)): Path<(String, String)>,
) -> HttpResult<StatusCode> {
    let (p, i) = ids(&p, &i)?;
    s.argus.unpublish_iteration(p, i).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn float(q: &Query, name: &str) -> Result<Option<f64>, ApiError> {
    match q.str(name).map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => {
            v.parse().map(Some).map_err(|_| ApiError::bad_request(format!("'{name}' must be a number, not '{v}'.")))
        }
    }
}

async fn get_iteration_performance(
    State(s): State<AppState>,
    Path((p, i)): Path<(String, String)>,
    q: Query,
) -> HttpResult<Response> {
    let (p, i) = ids(&p, &i)?;
    // overlapThreshold applies to detection iterations; classification ignores it.
    float(&q, "overlapThreshold")?;
    Ok(ok_json(s.argus.iteration_performance(p, i, float(&q, "threshold")?, float(&q, "overlapThreshold")?).await?))
}

async fn get_image_performances(
    State(s): State<AppState>,
    BaseUrl(ctx): BaseUrl,
    Path((p, i)): Path<(String, String)>,
    q: Query,
) -> HttpResult<Response> {
    let (p, i) = ids(&p, &i)?;
    let list = s
        .argus
        .image_performances(&ctx, p, i, q.uuids("tagIds")?, q.str("orderBy"), q.int("take")?, q.int("skip")?)
        .await?;
    Ok(ok_json(list))
}

async fn get_image_performance_count(
    State(s): State<AppState>,
    Path((p, i)): Path<(String, String)>,
    q: Query,
) -> HttpResult<Response> {
    let (p, i) = ids(&p, &i)?;
    Ok(ok_json(s.argus.image_performance_count(p, i, q.uuids("tagIds")?).await?))
}

/// Reads one image from a multipart (`imageData`) or raw body.
pub(crate) async fn single_image(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let bytes = if ct.starts_with("multipart/form-data") {
        let items = read_multipart(req).await.map_err(|e| e.0)?;
        match items.into_iter().next() {
            Some(UploadItem { bytes: Ok(b), .. }) => b,
            Some(_) => {
                return Err(ApiError::new(
                    ErrorCode::BadRequestImageSizeBytes,
                    format!("The image exceeds {limit} bytes."),
                ))
            }
            None => return Err(ApiError::new(ErrorCode::BadRequestImageStream, "The multipart body holds no image.")),
        }
    } else if ct.is_empty() || ct.starts_with("application/octet-stream") || ct.starts_with("image/") {
        let body = axum::body::to_bytes(req.into_body(), MAX_UPLOAD_REQUEST_BYTES)
            .await
            .map_err(|e| ApiError::new(ErrorCode::BadRequestImageStream, format!("The body could not be read: {e}")))?;
        // A body without a content type is taken as the raw image; no body and no type is a wrong request.
        if ct.is_empty() && body.is_empty() {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "Send the image as multipart/form-data (field imageData) or application/octet-stream.",
            ));
        }
        body
    } else {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!("Send the image as multipart/form-data (field imageData) or application/octet-stream, not '{ct}'."),
        ));
    };
    if bytes.len() > limit {
        return Err(ApiError::new(
            ErrorCode::BadRequestImageSizeBytes,
            format!("The image is {} bytes; the limit is {limit}.", bytes.len()),
        ));
    }
    Ok(bytes)
}

async fn quick_test_image(
    State(s): State<AppState>,
    Path(p): Path<String>,
    q: Query,
    req: Request,
) -> HttpResult<Response> {
    let project = path_id("projectId", &p)?;
    let iteration = q.uuid("iterationId")?;
    let store = q.bool("store")?.unwrap_or(true);
    let bytes = single_image(req, MAX_TRAINING_IMAGE_BYTES).await?;
    Ok(ok_json(s.argus.quick_test(project, iteration, bytes, store).await?))
}

#[derive(serde::Deserialize)]
struct ImageUrl {
    url: Option<String>,
}

async fn quick_test_url(
    State(s): State<AppState>,
    Path(p): Path<String>,
    q: Query,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let project = path_id("projectId", &p)?;
    let iteration = q.uuid("iterationId")?;
    let store = q.bool("store")?.unwrap_or(true);
    let u: ImageUrl = json_body(&headers, &body)?;
    let bytes = s.argus.fetch_image(u.url.as_deref().unwrap_or(""), MAX_TRAINING_IMAGE_BYTES).await?;
    Ok(ok_json(s.argus.quick_test(project, iteration, bytes, store).await?))
}

// ---- smart labeler ----

fn required_iteration(q: &Query) -> Result<uuid::Uuid, ApiError> {
    q.uuid("iterationId")?
        .ok_or_else(|| ApiError::new(ErrorCode::BadRequestRequiredParamIsNull, "iterationId is required."))
}

async fn suggest_tags_and_regions(State(s): State<AppState>, Path(p): Path<String>, q: Query) -> HttpResult<Response> {
    let project = path_id("projectId", &p)?;
    let it = required_iteration(&q)?;
    Ok(ok_json(s.argus.suggest_tags_and_regions(project, it, q.uuids("imageIds")?).await?))
}

async fn query_suggested_images(
    State(s): State<AppState>,
    BaseUrl(ctx): BaseUrl,
    Path(p): Path<String>,
    q: Query,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let project = path_id("projectId", &p)?;
    let it = required_iteration(&q)?;
    let token: argus_core::model::SuggestedTagAndRegionQueryToken = json_body(&headers, &body)?;
    Ok(ok_json(s.argus.query_suggested_images(&ctx, project, it, token).await?))
}

async fn query_suggested_image_count(
    State(s): State<AppState>,
    Path(p): Path<String>,
    q: Query,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let project = path_id("projectId", &p)?;
    let it = required_iteration(&q)?;
    let filter: argus_core::model::TagFilter = json_body(&headers, &body)?;
    Ok(ok_json(s.argus.query_suggested_image_count(project, it, filter).await?))
}
