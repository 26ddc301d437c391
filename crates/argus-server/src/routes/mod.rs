//! The route table of the whole server, the Training-Key layer, the signed blob route and the health checks.
//! The Training API's handlers live in one module per resource: [`projects`] (and domains), [`tags`],
//! [`images`] (uploads, listings, labels, stored predictions) and [`iterations`] (training, evaluation,
//! QuickTest, the smart labeler).

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
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use tower_http::trace::TraceLayer;

use crate::auth::{self, Policy};
use crate::error::{method_not_allowed, not_found, HttpResult};
use crate::extract::{json_body, path_id, BaseUrl, Query};
use crate::AppState;

mod images;
mod iterations;
mod projects;
mod tags;

use images::*;
use iterations::*;
use projects::*;
use tags::*;

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
        .route_layer(middleware::from_fn_with_state((state.clone(), Policy::Training), auth::require));
    Router::new()
        .nest("/customvision/v3.3/training", training)
        .merge(crate::prediction_routes::router(state.clone()))
        .merge(crate::vision_routes::router(state.clone()))
        .merge(crate::portal::router())
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

/// A single `bytes=start-end`, `bytes=start-` or `bytes=-suffix` range of a `Range` header; anything else
/// (several ranges, other units, a malformed one) is ignored, as RFC 9110 allows.
fn byte_range(headers: &axum::http::HeaderMap) -> Option<argus_core::store::ByteRange> {
    use argus_core::store::ByteRange;
    let spec = headers.get(header::RANGE)?.to_str().ok()?.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let parse = |v: &str| if v.trim().is_empty() { Ok(None) } else { v.trim().parse::<u64>().map(Some) };
    match (parse(a).ok()?, parse(b).ok()?) {
        (Some(start), Some(end)) if end < start => None,
        (Some(start), end) => Some(ByteRange::From { start, end }),
        (None, Some(n)) => Some(ByteRange::Last(n)),
        (None, None) => None,
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
        return Err(ApiError::new(ErrorCode::Forbidden, "The link is invalid or has expired.").into());
    }
    let range = byte_range(&headers);
    let mut reader = s.argus.open_blob(&key, range).await?;
    if range.is_some() && reader.start >= reader.end {
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
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static(mime));
    h.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("private, max-age=3600"));
    h.insert(header::ACCEPT_RANGES, header::HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, header::HeaderValue::from(length));
    if range.is_some() {
        let value = format!("bytes {}-{}/{}", reader.start, reader.end.saturating_sub(1), reader.total);
        if let Ok(v) = header::HeaderValue::from_str(&value) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(response)
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

pub(crate) fn ok_json<T: serde::Serialize>(v: T) -> Response {
    Json(v).into_response()
}

fn status_json<T: serde::Serialize>(status: StatusCode, v: T) -> Response {
    (status, Json(v)).into_response()
}
