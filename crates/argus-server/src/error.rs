//! Turning [`ApiError`] into the Custom Vision error body `{"code", "message"}` with its HTTP status: the one
//! place that decides which status carries which official code.

use argus_core::{ApiError, ErrorCode};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// The HTTP status that carries an official code: 400 for `BadRequest*`, 415, 403 for `Forbidden*`, 404 for
/// `NotFound*`, 409 for `Conflict*`, 503 for the two `*ServiceUnavailable`, 500 for the other `Error*`.
pub fn status_of(code: ErrorCode) -> StatusCode {
    let name = code.as_str();
    if name == "UnsupportedMediaType" {
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    } else if name.starts_with("BadRequest") {
        StatusCode::BAD_REQUEST
    } else if name.starts_with("Forbidden") {
        StatusCode::FORBIDDEN
    } else if name.starts_with("NotFound") {
        StatusCode::NOT_FOUND
    } else if name.starts_with("Conflict") {
        StatusCode::CONFLICT
    } else if matches!(
        code,
        ErrorCode::ErrorFeaturizationServiceUnavailable | ErrorCode::ErrorPredictionServiceUnavailable
    ) {
        StatusCode::SERVICE_UNAVAILABLE
    } else if name == "NoError" {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

/// An [`ApiError`] as an HTTP response: with its code's status ([`status_of`]), or another where the service
/// answers so (401 for a missing key, 405 for a known path with another method).
#[derive(Debug)]
pub struct HttpError(pub ApiError, pub Option<StatusCode>);

impl HttpError {
    /// An error answered with `status` instead of its code's usual one.
    pub fn with_status(code: ErrorCode, status: StatusCode, message: impl Into<String>) -> Self {
        Self(ApiError::new(code, message), Some(status))
    }
}

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        Self(e, None)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = self.1.unwrap_or_else(|| status_of(self.0.code));
        let body = serde_json::json!({ "code": self.0.code.as_str(), "message": self.0.message });
        (status, Json(body)).into_response()
    }
}

/// Result of a handler.
pub type HttpResult<T> = Result<T, HttpError>;

/// 404 for a route that does not exist.
pub async fn not_found() -> HttpError {
    ApiError::new(ErrorCode::NotFound, "No such resource. Check the method, the path and the API version.").into()
}

/// 405 for a known path with another method.
pub async fn method_not_allowed() -> HttpError {
    HttpError::with_status(
        ErrorCode::BadRequestNotSupported,
        StatusCode::METHOD_NOT_ALLOWED,
        "This method is not supported on this path.",
    )
}

/// `BadRequestInvalidIds` for a malformed GUID.
pub fn invalid_id(what: &str, value: &str) -> ApiError {
    ApiError::new(ErrorCode::BadRequestInvalidIds, format!("'{value}' is not a valid {what} (a GUID is expected)."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_the_services_statuses() {
        assert_eq!(status_of(ErrorCode::NotFoundProject), StatusCode::NOT_FOUND);
        assert_eq!(status_of(ErrorCode::UnsupportedMediaType), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(status_of(ErrorCode::BadRequestExceededBatchSize), StatusCode::BAD_REQUEST);
        assert_eq!(status_of(ErrorCode::ErrorUnknown), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status_of(ErrorCode::ErrorPredictionServiceUnavailable), StatusCode::SERVICE_UNAVAILABLE);
    }
}
