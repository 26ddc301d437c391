//! Training API handlers: image uploads (multipart, files, URLs, predictions), dataset import/export, listings and counts, labels (metadata, tags, regions, proposals) and stored predictions.

use super::*;

// ---- images: uploads ----

pub(super) fn summary_response(summary: argus_core::model::ImageCreateSummary) -> Response {
    let status = if summary.is_batch_successful { StatusCode::OK } else { StatusCode::MULTI_STATUS };
    status_json(status, summary)
}

pub(super) async fn read_multipart(req: Request) -> HttpResult<Vec<UploadItem>> {
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

pub(super) async fn create_images_from_data(
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
pub(super) async fn export_dataset(State(s): State<AppState>, Path(p): Path<String>, q: Query) -> HttpResult<Response> {
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
pub(super) async fn import_dataset(
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

pub(super) async fn create_images_from_files(
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

pub(super) async fn create_images_from_urls(
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

pub(super) async fn create_images_from_predictions(
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

pub(super) async fn query_predictions(
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

pub(super) async fn delete_predictions(
    State(s): State<AppState>,
    Path(p): Path<String>,
    q: Query,
) -> HttpResult<Response> {
    let project = path_id("projectId", &p)?;
    let ids = q.uuids("ids")?;
    s.argus.delete_predictions(project, ids).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- images: listings ----

pub(super) fn listing(q: &Query, with_filter: bool) -> Result<ImageListing, ApiError> {
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

pub(super) async fn list(
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

pub(super) async fn count(s: &AppState, p: &str, q: &Query, default: TaggingStatus, all: bool) -> HttpResult<Response> {
    let project = path_id("projectId", p)?;
    let mut l = listing(q, all)?;
    if !all {
        l.tagging = None;
    }
    Ok(ok_json(s.argus.count_images(project, l, default).await?))
}

pub(super) async fn get_images(
    State(s): State<AppState>,
    BaseUrl(ctx): BaseUrl,
    Path(p): Path<String>,
    q: Query,
) -> HttpResult<Response> {
    list(&s, &ctx, &p, &q, TaggingStatus::All, true).await
}

pub(super) async fn get_tagged_images(
    State(s): State<AppState>,
    BaseUrl(ctx): BaseUrl,
    Path(p): Path<String>,
    q: Query,
) -> HttpResult<Response> {
    list(&s, &ctx, &p, &q, TaggingStatus::Tagged, false).await
}

pub(super) async fn get_untagged_images(
    State(s): State<AppState>,
    BaseUrl(ctx): BaseUrl,
    Path(p): Path<String>,
    q: Query,
) -> HttpResult<Response> {
    let mut q = q;
    q.0.retain(|(k, _)| !k.eq_ignore_ascii_case("tagIds"));
    list(&s, &ctx, &p, &q, TaggingStatus::Untagged, false).await
}

pub(super) async fn get_image_count(
    State(s): State<AppState>,
    Path(p): Path<String>,
    q: Query,
) -> HttpResult<Response> {
    count(&s, &p, &q, TaggingStatus::All, true).await
}

pub(super) async fn get_tagged_image_count(
    State(s): State<AppState>,
    Path(p): Path<String>,
    q: Query,
) -> HttpResult<Response> {
    count(&s, &p, &q, TaggingStatus::Tagged, false).await
}

pub(super) async fn get_untagged_image_count(
    State(s): State<AppState>,
    Path(p): Path<String>,
    q: Query,
) -> HttpResult<Response> {
    let mut q = q;
    q.0.retain(|(k, _)| !k.eq_ignore_ascii_case("tagIds"));
    count(&s, &p, &q, TaggingStatus::Untagged, false).await
}

pub(super) async fn get_images_by_ids(
    State(s): State<AppState>,
    BaseUrl(ctx): BaseUrl,
    Path(p): Path<String>,
    q: Query,
) -> HttpResult<Response> {
    let project = path_id("projectId", &p)?;
    Ok(ok_json(s.argus.images_by_ids(&ctx, project, q.uuids("imageIds")?, q.uuid("iterationId")?).await?))
}

pub(super) async fn delete_images(
    State(s): State<AppState>,
    Path(p): Path<String>,
    q: Query,
) -> HttpResult<StatusCode> {
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

pub(super) async fn update_image_metadata(
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

pub(super) async fn create_image_tags(
    State(s): State<AppState>,
    Path(p): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let project = path_id("projectId", &p)?;
    let batch: ImageTagCreateBatch = json_body(&headers, &body)?;
    Ok(ok_json(s.argus.create_image_tags(project, batch.tags.unwrap_or_default()).await?))
}

pub(super) async fn delete_image_tags(
    State(s): State<AppState>,
    Path(p): Path<String>,
    q: Query,
) -> HttpResult<StatusCode> {
    let project = path_id("projectId", &p)?;
    s.argus.delete_image_tags(project, q.uuids("imageIds")?, q.uuids("tagIds")?).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn create_image_regions(
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

pub(super) async fn delete_image_regions(
    State(s): State<AppState>,
    Path(p): Path<String>,
    q: Query,
) -> HttpResult<StatusCode> {
    let project = path_id("projectId", &p)?;
    s.argus.delete_image_regions(project, q.uuids("regionIds")?).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn get_image_region_proposals(
    State(s): State<AppState>,
    Path((p, i)): Path<(String, String)>,
) -> HttpResult<Response> {
    Ok(ok_json(s.argus.region_proposals(path_id("projectId", &p)?, path_id("imageId", &i)?).await?))
}
