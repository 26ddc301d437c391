//! `argus serve-model`: one exported model (a DockerFile package's `model/` folder) served with no store, on
//! the routes of the hosted Custom Vision container and of the Prediction API:
//!
//! - `POST /image` (the image as the body, or multipart) and `POST /url` (`{"url": …}`): whichever the model
//!   is, classifier or detector;
//! - `POST /{project}/{classify|detect}/iterations/{name}/{image|url}` (the container's aliases);
//! - `POST /customvision/{v3.0|v3.1}/prediction/{project}/{classify|detect}/iterations/{name}/{image|url}[/nostore]`;
//! - `GET /healthz` and `/readyz`.
//!
//! No key is asked for (a container answers whoever reaches it) and nothing is stored.

use std::sync::Arc;

use argus_core::service::{PredictionKind, ServedModel};
use argus_core::store::UrlFetcher;
use argus_core::{ApiError, ErrorCode};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tower::Layer;

use crate::error::{method_not_allowed, HttpError, HttpResult};
use crate::prediction_routes::{prediction_image, MAX_PREDICTION_REQUEST_BYTES};
use crate::routes::ok_json;

/// What the model routes share.
#[derive(Clone)]
pub struct ModelState {
    /// The model.
    pub model: Arc<ServedModel>,
    /// Downloads `/url` images.
    pub fetcher: Arc<dyn UrlFetcher>,
}

/// The routes above, with path normalisation (API versions, `Prediction` case) in front.
pub fn model_app(state: ModelState) -> tower::util::MapRequest<Router, fn(Request) -> Request> {
    let f: fn(Request) -> Request = crate::rewrite;
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ready" }))
        .route("/{source}", post(container))
        .route("/{project}/{kind}/iterations/{name}/{source}", post(aliased))
        .route("/customvision/{version}/prediction/{project}/{kind}/iterations/{name}/{source}", post(prediction_api))
        .route(
            "/customvision/{version}/prediction/{project}/{kind}/iterations/{name}/{source}/nostore",
            post(prediction_api),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_PREDICTION_REQUEST_BYTES))
        .with_state(state);
    tower::util::MapRequestLayer::new(f).layer(router)
}

/// Serves [`model_app`] on `listener` until `shutdown` resolves.
pub async fn serve_model(
    listener: tokio::net::TcpListener,
    state: ModelState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::ServiceExt;
    axum::serve(listener, ServiceExt::<Request>::into_make_service(model_app(state)))
        .with_graceful_shutdown(shutdown)
        .await
}

fn not_found() -> HttpError {
    HttpError::from(ApiError::new(ErrorCode::NotFound, "No such route: POST /image, /url, or a Prediction API route."))
}

async fn answer(
    s: &ModelState,
    kind: Option<PredictionKind>,
    source: &str,
    req: Request,
    with_tag_type: bool,
) -> HttpResult<Response> {
    let Some(bytes) = prediction_image(req, source, s.fetcher.as_ref()).await? else {
        return Err(not_found());
    };
    Ok(ok_json(s.model.predict(kind, bytes, with_tag_type).await?))
}

/// The project and published name of a path must be the model's (as the server would answer 404).
fn check_target(s: &ModelState, project: &str, kind: &str, name: &str) -> HttpResult<PredictionKind> {
    let kind = match kind {
        "classify" => PredictionKind::Classify,
        "detect" => PredictionKind::Detect,
        _ => return Err(not_found()),
    };
    let model = &s.model;
    if uuid::Uuid::parse_str(project).ok() != Some(model.project()) {
        return Err(HttpError::from(ApiError::new(
            ErrorCode::NotFoundProject,
            format!("Project '{project}' was not found; this container serves project {}.", model.project()),
        )));
    }
    let known = [model.publish_name().to_string(), model.iteration().to_string()];
    if !known.iter().any(|k| !k.is_empty() && k == name) {
        return Err(HttpError::from(ApiError::new(
            ErrorCode::NotFoundIteration,
            format!("No iteration of this project is published as '{name}'."),
        )));
    }
    Ok(kind)
}

async fn container(State(s): State<ModelState>, Path(source): Path<String>, req: Request) -> HttpResult<Response> {
    answer(&s, None, &source, req, false).await
}

async fn aliased(
    State(s): State<ModelState>,
    Path((project, kind, name, source)): Path<(String, String, String, String)>,
    req: Request,
) -> HttpResult<Response> {
    let kind = check_target(&s, &project, &kind, &name)?;
    answer(&s, Some(kind), &source, req, false).await
}

async fn prediction_api(
    State(s): State<ModelState>,
    Path((version, project, kind, name, source)): Path<(String, String, String, String, String)>,
    req: Request,
) -> HttpResult<Response> {
    if !crate::prediction_routes::PREDICTION_VERSIONS.contains(&version.as_str()) {
        return Err(not_found());
    }
    let kind = check_target(&s, &project, &kind, &name)?;
    // As the Prediction API: v3.1 adds each tag's type.
    answer(&s, Some(kind), &source, req, version != "v3.0").await
}
