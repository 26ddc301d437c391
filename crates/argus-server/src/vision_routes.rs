//! Routes of the CDF-style vision surface under `/api/v1/projects/{project}`: the Files subset and
//! `context/vision/segment` jobs. `Authorization: Bearer <vision key>`; errors in the CDF shape
//! `{"error": {"code", "message", "missing"?}}`. The `cdf-version` header is accepted and ignored.

use argus_core::service::{CdfError, CdfErrorKind};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::auth::{self, Policy};
use crate::extract::{BaseUrl, Query};
use crate::AppState;

/// Largest request body (a file upload).
const MAX_VISION_REQUEST_BYTES: usize = argus_core::service::vision_max_file_bytes() + (1 << 20);

/// A CDF-shaped error response.
pub(crate) struct CdfResponse(pub CdfError);

impl IntoResponse for CdfResponse {
    /// The status of the error's kind, and the CDF body `{"error": {"code": status, "message", "missing"?}}`.
    fn into_response(self) -> Response {
        let status = match self.0.kind {
            CdfErrorKind::Invalid => StatusCode::BAD_REQUEST,
            CdfErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            CdfErrorKind::Forbidden => StatusCode::FORBIDDEN,
            CdfErrorKind::Conflict => StatusCode::CONFLICT,
            CdfErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            CdfErrorKind::Busy => StatusCode::TOO_MANY_REQUESTS,
            CdfErrorKind::Api(code) => crate::error::status_of(code),
        };
        let mut e = json!({"code": status.as_u16(), "message": self.0.message});
        if let (Some(m), Some(obj)) = (self.0.missing, e.as_object_mut()) {
            obj.insert("missing".into(), serde_json::Value::Array(m));
        }
        (status, Json(json!({ "error": e }))).into_response()
    }
}

impl From<CdfError> for CdfResponse {
    fn from(e: CdfError) -> Self {
        Self(e)
    }
}

type CdfHttp = Result<Response, CdfResponse>;

pub(crate) fn router(state: AppState) -> Router<AppState> {
    let authed = Router::new()
        .route("/api/v1/projects/{project}/context/vision/segment", post(create_segment))
        .route("/api/v1/projects/{project}/context/vision/segment/prepare", post(prepare_segment))
        .route("/api/v1/projects/{project}/context/vision/segment/{job}", get(get_segment))
        .route("/api/v1/projects/{project}/files", post(create_file).get(list_files))
        .route("/api/v1/projects/{project}/files/byids", post(files_by_ids))
        .route("/api/v1/projects/{project}/files/delete", post(delete_files))
        .route("/api/v1/projects/{project}/files/downloadlink", post(download_links))
        .route("/api/v1/projects/{project}/files/{id}", get(get_file))
        .route_layer(middleware::from_fn_with_state((state, Policy::Vision), auth::require));
    Router::new()
        .merge(authed)
        .route("/api/v1/upload/vision/{project}/files/{id}", put(upload_file).post(upload_file))
        .layer(DefaultBodyLimit::max(MAX_VISION_REQUEST_BYTES))
}

fn json_of(body: &Bytes) -> Result<Value, CdfResponse> {
    serde_json::from_slice(body).map_err(|e| CdfResponse(CdfError::bad(format!("The body is not valid JSON: {e}"))))
}

fn file_id(id: &str) -> Result<i64, CdfResponse> {
    id.parse::<i64>().map_err(|_| CdfResponse(CdfError::bad("The file id must be an integer.")))
}

fn ok(v: Value) -> CdfHttp {
    Ok((StatusCode::OK, Json(v)).into_response())
}

async fn create_segment(State(s): State<AppState>, Path(project): Path<String>, body: Bytes) -> CdfHttp {
    let v = json_of(&body)?;
    ok(s.argus.create_segment_job(&project, &v).await?)
}

async fn prepare_segment(State(s): State<AppState>, Path(project): Path<String>, body: Bytes) -> CdfHttp {
    let v = json_of(&body)?;
    ok(s.argus.prepare_segment(&project, &v).await?)
}

async fn get_segment(State(s): State<AppState>, Path((project, job)): Path<(String, String)>) -> CdfHttp {
    let id = job.parse::<i64>().map_err(|_| CdfResponse(CdfError::bad(format!("Job with id {job} not found"))))?;
    ok(s.argus.segment_job(&project, id).await?)
}

async fn create_file(
    State(s): State<AppState>,
    BaseUrl(ctx): BaseUrl,
    Path(project): Path<String>,
    body: Bytes,
) -> CdfHttp {
    let v = json_of(&body)?;
    let file = s.argus.create_file(&ctx, &project, &v).await?;
    Ok((StatusCode::CREATED, Json(file)).into_response())
}

async fn list_files(State(s): State<AppState>, Path(project): Path<String>, q: Query) -> CdfHttp {
    let limit = match q.str("limit") {
        None => None,
        Some(l) => Some(l.parse::<i64>().map_err(|_| CdfResponse(CdfError::bad("limit must be an integer.")))?),
    };
    ok(s.argus.list_files(&project, limit, q.str("cursor")).await?)
}

async fn get_file(State(s): State<AppState>, Path((project, id)): Path<(String, String)>) -> CdfHttp {
    let id = file_id(&id)?;
    let files = s.argus.files_by_identity(&project, &json!({"items": [{"id": id}]})).await?;
    ok(files.first().map(|f| s.argus.file_json(f)).unwrap_or(Value::Null))
}

async fn files_by_ids(State(s): State<AppState>, Path(project): Path<String>, body: Bytes) -> CdfHttp {
    let v = json_of(&body)?;
    let files = s.argus.files_by_identity(&project, &v).await?;
    ok(json!({"items": files.iter().map(|f| s.argus.file_json(f)).collect::<Vec<_>>()}))
}

async fn delete_files(State(s): State<AppState>, Path(project): Path<String>, body: Bytes) -> CdfHttp {
    let v = json_of(&body)?;
    s.argus.delete_files(&project, &v).await?;
    ok(json!({}))
}

async fn download_links(
    State(s): State<AppState>,
    BaseUrl(ctx): BaseUrl,
    Path(project): Path<String>,
    body: Bytes,
) -> CdfHttp {
    let v = json_of(&body)?;
    ok(s.argus.file_download_links(&ctx, &project, &v).await?)
}

async fn upload_file(
    State(s): State<AppState>,
    Path((project, id)): Path<(String, String)>,
    q: Query,
    _headers: HeaderMap,
    body: Bytes,
) -> CdfHttp {
    let expires = q.str("se").and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    let key = format!("upload/vision/{project}/files/{id}");
    if !s.argus.verify_blob_signature(&key, expires, q.str("sig").unwrap_or("")) {
        return Err(CdfResponse(CdfError::new(CdfErrorKind::Forbidden, "The upload link is invalid or has expired.")));
    }
    let id = file_id(&id)?;
    s.argus.upload_file(&project, id, body).await?;
    ok(json!({}))
}
