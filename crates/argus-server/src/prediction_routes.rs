//! Routes of the Prediction API v3.0 and v3.1: classify or detect with a published iteration, from image
//! bytes (multipart `imageData` or a raw body) or `{"url": …}`, stored or `/nostore`. `Prediction-Key` auth.

use argus_core::limits::MAX_PREDICTION_IMAGE_BYTES;
use argus_core::service::{fetch_prediction_image, PredictRequest, PredictionKind};
use argus_core::store::UrlFetcher;
use argus_core::{ApiError, ErrorCode};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::middleware;
use axum::response::Response;
use axum::routing::post;
use axum::Router;

use crate::auth::{self, Policy};
use crate::error::{method_not_allowed, HttpError, HttpResult};
use crate::extract::{json_body, Query};
use crate::routes::{ok_json, single_image};
use crate::AppState;

/// Prediction API versions served (v3.1 adds `tagType` to every prediction).
pub const PREDICTION_VERSIONS: &[&str] = &["v3.0", "v3.1"];

/// Requests above this many bytes are cut off by the server; between the 4 MB image limit and this the
/// client gets `BadRequestImageSizeBytes`.
pub(crate) const MAX_PREDICTION_REQUEST_BYTES: usize = 8 << 20;

pub(crate) fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/customvision/{version}/prediction/{project}/{kind}/iterations/{name}/{source}", post(predict_stored))
        .route(
            "/customvision/{version}/prediction/{project}/{kind}/iterations/{name}/{source}/nostore",
            post(predict_nostore),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_PREDICTION_REQUEST_BYTES))
        .route_layer(middleware::from_fn_with_state((state, Policy::Prediction), auth::require))
}

type PredictPath = Path<(String, String, String, String, String)>;

async fn predict_stored(s: State<AppState>, p: PredictPath, q: Query, req: Request) -> HttpResult<Response> {
    predict(s, p, q, req, true).await
}

async fn predict_nostore(s: State<AppState>, p: PredictPath, q: Query, req: Request) -> HttpResult<Response> {
    predict(s, p, q, req, false).await
}

#[derive(serde::Deserialize)]
struct ImageUrl {
    url: Option<String>,
}

/// The image of a prediction request whose route ends in `source`: `image` (multipart `imageData` or the raw
/// body) or `url` (`{"url": …}`, downloaded with `fetcher`); `None` for any other source.
pub(crate) async fn prediction_image(
    req: Request,
    source: &str,
    fetcher: &dyn UrlFetcher,
) -> HttpResult<Option<bytes::Bytes>> {
    Ok(Some(match source {
        "image" => single_image(req, MAX_PREDICTION_IMAGE_BYTES).await?,
        "url" => {
            let headers = req.headers().clone();
            let body = axum::body::to_bytes(req.into_body(), MAX_PREDICTION_REQUEST_BYTES).await.map_err(|e| {
                ApiError::new(ErrorCode::BadRequestImageStream, format!("The body could not be read: {e}"))
            })?;
            let u: ImageUrl = json_body(&headers, &body)?;
            fetch_prediction_image(fetcher, u.url.as_deref().unwrap_or(""), MAX_PREDICTION_IMAGE_BYTES).await?
        }
        _ => return Ok(None),
    }))
}

async fn predict(
    State(s): State<AppState>,
    Path((version, project, kind, name, source)): PredictPath,
    q: Query,
    req: Request,
    store: bool,
) -> HttpResult<Response> {
    let not_found = || HttpError::from(ApiError::new(ErrorCode::NotFound, "No such Prediction API route."));
    if !PREDICTION_VERSIONS.contains(&version.as_str()) {
        return Err(not_found());
    }
    let kind = match kind.as_str() {
        "classify" => PredictionKind::Classify,
        "detect" => PredictionKind::Detect,
        _ => return Err(not_found()),
    };
    let project = uuid::Uuid::parse_str(&project)
        .map_err(|_| ApiError::new(ErrorCode::NotFoundProject, format!("Project '{project}' was not found.")))?;
    let Some(bytes) = prediction_image(req, &source, s.argus.fetcher.as_ref()).await? else {
        return Err(not_found());
    };
    let request = PredictRequest {
        project,
        published_name: name,
        kind,
        application: q.str("application").map(String::from),
        store,
        with_tag_type: version != "v3.0",
    };
    Ok(ok_json(s.argus.predict(request, bytes).await?))
}
