//! Turning [`ApiError`] into the Custom Vision error body `{"code", "message"}` with its HTTP status.

use argus_core::{ApiError, ErrorCode};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An [`ApiError`] as an HTTP response.
#[derive(Debug)]
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({ "code": self.0.code.as_str(), "message": self.0.message });
        (status, Json(body)).into_response()
    }
}

/// Result of a handler.
pub type HttpResult<T> = Result<T, HttpError>;

/// 404 for a route that does not exist.
pub async fn not_found() -> HttpError {
    HttpError(ApiError::new(ErrorCode::NotFound, "No such resource. Check the method, the path and the API version."))
}

/// 405 for a known path with another method.
pub async fn method_not_allowed() -> HttpError {
    HttpError(ApiError::with_status(
        ErrorCode::BadRequestNotSupported,
        405,
        "This method is not supported on this path.",
    ))
}

/// `BadRequestInvalidIds` for a malformed GUID.
pub fn invalid_id(what: &str, value: &str) -> ApiError {
    ApiError::new(ErrorCode::BadRequestInvalidIds, format!("'{value}' is not a valid {what} (a GUID is expected)."))
}
