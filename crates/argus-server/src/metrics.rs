//! `GET /metrics`: Prometheus text exposition of this process's metrics, from the `metrics` facade through
//! `metrics-exporter-prometheus` (installed once per process as the global recorder).
//!
//! Recorded here: `argus_http_requests_total{group, method, status}` and
//! `argus_http_request_duration_seconds{group}` for every request, grouped by surface (`training`,
//! `prediction`, `vision`, `blobs`, `health`, `metrics`, `other`). Job counts and durations per kind are recorded by
//! `argus-jobs`; `argus_prediction_compute_seconds{kind}` (decode + backbone + head of one prediction) and
//! `argus_store_errors_total{kind}` by the services. Queue depth, `argus_jobs_queued{kind}` and
//! `argus_jobs_running{kind}`, is read from the job queue at each scrape, so every node and worker reports the
//! cluster's queue.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram buckets (seconds) for request and job durations: 1 ms to 30 min.
const BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0];

/// The process's exporter handle (installs the global recorder on first use; when another recorder is already
/// installed, a private one still renders what is recorded through this handle's recorder).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = || {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new())
        };
        builder().install_recorder().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "a metrics recorder was already installed; /metrics shows only its own");
            builder().build_recorder().handle()
        })
    })
}

/// The surface a (normalised) path belongs to.
fn group(path: &str) -> &'static str {
    let lower = path.to_ascii_lowercase();
    if lower.starts_with("/customvision/") && lower.contains("/training") {
        "training"
    } else if lower.starts_with("/customvision/") && lower.contains("/prediction") {
        "prediction"
    } else if lower.starts_with("/api/v1/") {
        "vision"
    } else if lower.starts_with("/blobs/") {
        "blobs"
    } else if lower == "/healthz" || lower == "/readyz" {
        "health"
    } else if lower == "/metrics" {
        "metrics"
    } else {
        "other"
    }
}

/// Middleware: counts and times every request by group, method and status.
pub async fn track(req: Request, next: Next) -> Response {
    let group = group(req.uri().path());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("argus_http_requests_total", "group" => group, "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("argus_http_request_duration_seconds", "group" => group)
        .record(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics` of a server.
pub async fn render(axum::extract::State(state): axum::extract::State<crate::AppState>) -> Response {
    render_for(&state.argus).await
}

/// The exposition, with the queue depth read from `argus`'s job queue first (a failed read leaves the gauges
/// as they were and counts a store error).
pub async fn render_for(argus: &argus_core::Argus) -> Response {
    match argus.jobs.queue_depth().await {
        Ok(depth) => {
            // Every known kind is reported, as 0 when none wait or run (the depth lists only the others).
            for kind in argus_core::jobs::JOB_KINDS {
                metrics::gauge!("argus_jobs_queued", "kind" => kind).set(0.0);
                metrics::gauge!("argus_jobs_running", "kind" => kind).set(0.0);
            }
            for (kind, queued, running) in depth {
                metrics::gauge!("argus_jobs_queued", "kind" => kind.clone()).set(queued as f64);
                metrics::gauge!("argus_jobs_running", "kind" => kind).set(running as f64);
            }
        }
        Err(e) => {
            metrics::counter!("argus_store_errors_total", "kind" => "backend").increment(1);
            tracing::warn!(error = %e, "reading the queue depth for /metrics failed");
        }
    }
    let body = handle().render();
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fall_into_their_surface() {
        assert_eq!(group("/customvision/v3.3/training/projects"), "training");
        assert_eq!(group("/customvision/v3.0/prediction/p/classify/iterations/x/image"), "prediction");
        assert_eq!(group("/api/v1/projects/p/context/vision/segment"), "vision");
        assert_eq!(group("/blobs/a/b"), "blobs");
        assert_eq!(group("/readyz"), "health");
        assert_eq!(group("/metrics"), "metrics");
        assert_eq!(group("/nope"), "other");
    }
}
