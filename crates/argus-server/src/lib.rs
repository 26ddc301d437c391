//! Argus HTTP surfaces. [`app`] builds the whole service: the Custom Vision Training API under
//! `/customvision/{v3.3|v3.4-preview|…}/training/` (version and area matched case-insensitively), signed blob
//! downloads under `/blobs/`, the web portal at `/ui` ([`portal`]), `/healthz` / `/readyz`, and `/metrics`
//! (Prometheus). Handlers are thin: parse,
//! call an [`argus_core::Argus`] service, map the result.

pub mod auth;
mod disposition;
pub mod error;
pub mod extract;
pub mod fetch;
pub mod metrics;
mod model_routes;
pub mod portal;
mod prediction_routes;
mod routes;
mod vision_routes;

use std::sync::Arc;

use argus_core::Argus;
use axum::extract::Request;
use axum::Router;
use tower::Layer;

pub use fetch::GuardedFetcher;
pub use model_routes::{model_app, serve_model, ModelState};

/// API keys accepted by the surfaces.
#[derive(Clone)]
pub struct Keys {
    /// `Training-Key`.
    pub training: String,
    /// `Prediction-Key`.
    pub prediction: String,
    /// Bearer key of the CDF-style vision API.
    pub vision: String,
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The services.
    pub argus: Argus,
    /// Accepted keys.
    pub keys: Arc<Keys>,
    /// Base URL clients reach this server at; `None` derives it from each request's `Host`.
    pub public_url: Option<String>,
}

/// The API versions whose Training routes Argus answers (the official SDKs use v3.3 and v3.4-preview).
pub const TRAINING_VERSIONS: &[&str] = &["v3.0", "v3.1", "v3.2", "v3.3", "v3.4-preview"];

/// Rewrites `/customvision/<version>/<Training|training>/…` to the canonical `/customvision/v3.3/training/…`
/// and collapses repeated slashes, so one router serves every accepted spelling.
pub fn normalize_path(path: &str) -> Option<String> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let collapsed = format!("/{}", segs.join("/"));
    if segs.len() >= 3
        && segs[0].eq_ignore_ascii_case("customvision")
        && segs[2].eq_ignore_ascii_case("training")
        && TRAINING_VERSIONS.iter().any(|v| v.eq_ignore_ascii_case(segs[1]))
    {
        let rest = segs[3..].join("/");
        return Some(format!("/customvision/v3.3/training/{rest}").trim_end_matches('/').to_string());
    }
    if segs.len() >= 3 && segs[0].eq_ignore_ascii_case("customvision") && segs[2].eq_ignore_ascii_case("prediction") {
        if let Some(v) = prediction_routes::PREDICTION_VERSIONS.iter().find(|v| v.eq_ignore_ascii_case(segs[1])) {
            let rest = segs[3..].join("/");
            let canonical = format!("/customvision/{v}/prediction/{rest}").trim_end_matches('/').to_string();
            return (canonical != path).then_some(canonical);
        }
    }
    (collapsed != path && path != "/").then_some(collapsed)
}

fn rewrite(mut req: Request) -> Request {
    if let Some(path) = normalize_path(req.uri().path()) {
        let pq = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let mut parts = req.uri().clone().into_parts();
        if let Ok(p) = pq.parse() {
            parts.path_and_query = Some(p);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req
}

/// The router (without path normalisation; see [`app`]).
pub fn router(state: AppState) -> Router {
    // The recorder must be in place before the first request is counted.
    metrics::handle();
    routes::router(state)
}

/// What a process with no API serves (`argus worker --metrics-bind`): `GET /metrics`, `/healthz` and `/readyz`.
pub fn ops_router(argus: argus_core::Argus) -> Router {
    use axum::extract::State;
    use axum::routing::get;
    metrics::handle();
    Router::new()
        .route("/metrics", get(|State(a): State<argus_core::Argus>| async move { metrics::render_for(&a).await }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|State(a): State<argus_core::Argus>| async move { routes::readiness(&a).await }))
        .layer(axum::middleware::from_fn(metrics::track))
        .with_state(argus)
}

/// Serves [`ops_router`] on `listener` until the task is dropped.
pub async fn serve_ops(listener: tokio::net::TcpListener, argus: argus_core::Argus) -> std::io::Result<()> {
    axum::serve(listener, ops_router(argus)).await
}

/// The complete service: path normalisation in front of the router. Serve it with
/// `axum::serve(listener, app(state).into_make_service())`.
pub fn app(state: AppState) -> tower::util::MapRequest<Router, fn(Request) -> Request> {
    let f: fn(Request) -> Request = rewrite;
    tower::util::MapRequestLayer::new(f).layer(router(state))
}

/// Serves the app on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::ServiceExt;
    let svc = app(state);
    axum::serve(listener, ServiceExt::<Request>::into_make_service(svc)).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::normalize_path;

    #[test]
    fn versions_and_case_are_normalised() {
        assert_eq!(
            normalize_path("/customvision/v3.4-preview/training/projects").as_deref(),
            Some("/customvision/v3.3/training/projects")
        );
        assert_eq!(
            normalize_path("/customvision/v3.3/Training/projects/x").as_deref(),
            Some("/customvision/v3.3/training/projects/x")
        );
        assert_eq!(
            normalize_path("//customvision/v3.3/training/domains").as_deref(),
            Some("/customvision/v3.3/training/domains")
        );
        assert_eq!(normalize_path("/customvision/v9.9/training/projects"), None);
        assert_eq!(normalize_path("/healthz"), None);
    }
}
