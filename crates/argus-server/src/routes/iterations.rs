//! Training API handlers: training, iterations (get, update, delete, publish, export), performance, QuickTest and the smart labeler.

use super::*;

// ---- training and iterations ----

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TrainingParameters {
    selected_tags: Option<Vec<uuid::Uuid>>,
}

pub(super) async fn train_project(
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

pub(super) fn ids(p: &str, i: &str) -> Result<(uuid::Uuid, uuid::Uuid), ApiError> {
    Ok((path_id("projectId", p)?, path_id("iterationId", i)?))
}

pub(super) async fn get_iterations(State(s): State<AppState>, Path(p): Path<String>) -> HttpResult<Response> {
    Ok(ok_json(s.argus.iterations(path_id("projectId", &p)?).await?))
}

pub(super) async fn get_iteration(
    State(s): State<AppState>,
    Path((p, i)): Path<(String, String)>,
) -> HttpResult<Response> {
    let (p, i) = ids(&p, &i)?;
    Ok(ok_json(s.argus.iteration(p, i).await?))
}

pub(super) async fn export_iteration(
    State(s): State<AppState>,
    Path((p, i)): Path<(String, String)>,
    q: Query,
) -> HttpResult<Response> {
    let (p, i) = ids(&p, &i)?;
    Ok(ok_json(s.argus.export_iteration(p, i, q.str("platform"), q.str("flavor")).await?))
}

pub(super) async fn get_exports(
    State(s): State<AppState>,
    BaseUrl(ctx): BaseUrl,
    Path((p, i)): Path<(String, String)>,
) -> HttpResult<Response> {
    let (p, i) = ids(&p, &i)?;
    Ok(ok_json(s.argus.exports(&ctx, p, i).await?))
}

pub(super) async fn delete_iteration(
    State(s): State<AppState>,
    Path((p, i)): Path<(String, String)>,
) -> HttpResult<StatusCode> {
    let (p, i) = ids(&p, &i)?;
    s.argus.delete_iteration(p, i).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn update_iteration(
    State(s): State<AppState>,
    Path((p, i)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let (p, i) = ids(&p, &i)?;
    let update: IterationUpdate = json_body(&headers, &body)?;
    Ok(ok_json(s.argus.update_iteration(p, i, update).await?))
}

pub(super) async fn publish_iteration(
    State(s): State<AppState>,
    Path((p, i)): Path<(String, String)>,
    q: Query,
) -> HttpResult<Response> {
    let (p, i) = ids(&p, &i)?;
    let overwrite = q.bool("overwrite")?.unwrap_or(false);
    Ok(ok_json(s.argus.publish_iteration(p, i, q.str("publishName"), q.str("predictionId"), overwrite).await?))
}

pub(super) async fn unpublish_iteration(
    State(s): State<AppState>,
    Path((p, i)): Path<(String, String)>,
) -> HttpResult<StatusCode> {
    let (p, i) = ids(&p, &i)?;
    s.argus.unpublish_iteration(p, i).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) fn float(q: &Query, name: &str) -> Result<Option<f64>, ApiError> {
    match q.str(name).map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => {
            v.parse().map(Some).map_err(|_| ApiError::bad_request(format!("'{name}' must be a number, not '{v}'.")))
        }
    }
}

pub(super) async fn get_iteration_performance(
    State(s): State<AppState>,
    Path((p, i)): Path<(String, String)>,
    q: Query,
) -> HttpResult<Response> {
    let (p, i) = ids(&p, &i)?;
    // overlapThreshold applies to detection iterations; classification ignores it.
    float(&q, "overlapThreshold")?;
    Ok(ok_json(s.argus.iteration_performance(p, i, float(&q, "threshold")?, float(&q, "overlapThreshold")?).await?))
}

pub(super) async fn get_image_performances(
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

pub(super) async fn get_image_performance_count(
    State(s): State<AppState>,
    Path((p, i)): Path<(String, String)>,
    q: Query,
) -> HttpResult<Response> {
    let (p, i) = ids(&p, &i)?;
    Ok(ok_json(s.argus.image_performance_count(p, i, q.uuids("tagIds")?).await?))
}

pub(super) async fn quick_test_image(
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
pub(super) struct ImageUrl {
    url: Option<String>,
}

pub(super) async fn quick_test_url(
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

pub(super) fn required_iteration(q: &Query) -> Result<uuid::Uuid, ApiError> {
    q.uuid("iterationId")?
        .ok_or_else(|| ApiError::new(ErrorCode::BadRequestRequiredParamIsNull, "iterationId is required."))
}

pub(super) async fn suggest_tags_and_regions(
    State(s): State<AppState>,
    Path(p): Path<String>,
    q: Query,
) -> HttpResult<Response> {
    let project = path_id("projectId", &p)?;
    let it = required_iteration(&q)?;
    Ok(ok_json(s.argus.suggest_tags_and_regions(project, it, q.uuids("imageIds")?).await?))
}

pub(super) async fn query_suggested_images(
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

pub(super) async fn query_suggested_image_count(
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
