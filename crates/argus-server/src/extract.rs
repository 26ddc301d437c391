//! Request parsing in the API's own error shape: query parameters (case-insensitive names, CSV arrays,
//! GUIDs, booleans, integers), JSON bodies (415 for a wrong content type, 400 for malformed JSON), the
//! base URL for signed links, and the constant-time key comparison [`crate::auth`] uses.

use argus_core::{ApiError, ApiResult, ErrorCode, UrlContext};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::{invalid_id, HttpError};
use crate::AppState;

/// The query string as name/value pairs.
#[derive(Debug, Clone, Default)]
pub struct Query(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        Ok(Query(url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()))
    }
}

impl Query {
    /// Every value given for `name` (case-insensitive).
    pub fn all<'a, 'b>(&'a self, name: &'b str) -> impl Iterator<Item = &'a str> + use<'a, 'b> {
        self.0.iter().filter(move |(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The first value of `name`.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.all(name).next()
    }

    /// A required value.
    pub fn required(&self, name: &str) -> ApiResult<&str> {
        self.str(name).filter(|v| !v.is_empty()).ok_or_else(|| {
            ApiError::new(
                ErrorCode::BadRequestRequiredParamIsNull,
                format!("The query parameter '{name}' is required."),
            )
        })
    }

    /// An optional GUID.
    pub fn uuid(&self, name: &str) -> ApiResult<Option<Uuid>> {
        match self.str(name).map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => Uuid::parse_str(v).map(Some).map_err(|_| invalid_id(name, v)),
        }
    }

    /// GUIDs given as CSV, repeated parameters, or both.
    pub fn uuids(&self, name: &str) -> ApiResult<Vec<Uuid>> {
        let mut out = Vec::new();
        for v in self.all(name).flat_map(|v| v.split(',')).map(str::trim).filter(|v| !v.is_empty()) {
            let id = Uuid::parse_str(v).map_err(|_| invalid_id(name, v))?;
            if !out.contains(&id) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Strings given as CSV or repeated parameters.
    pub fn strings(&self, name: &str) -> Vec<String> {
        self.all(name).flat_map(|v| v.split(',')).map(str::trim).filter(|v| !v.is_empty()).map(String::from).collect()
    }

    /// An optional boolean (`true` / `false`, any case).
    pub fn bool(&self, name: &str) -> ApiResult<Option<bool>> {
        match self.str(name).map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(ApiError::bad_request(format!("'{name}' must be true or false, not '{v}'."))),
        }
    }

    /// An optional integer.
    pub fn int(&self, name: &str) -> ApiResult<Option<i64>> {
        match self.str(name).map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("'{name}' must be an integer, not '{v}'."))),
        }
    }
}

/// Parses a path GUID.
pub fn path_id(what: &str, v: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(v).map_err(|_| invalid_id(what, v))
}

/// Checks the content type and parses a JSON body.
pub fn json_body<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> ApiResult<T> {
    if let Some(ct) = headers.get(axum::http::header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        if !ct.is_empty() && !ct.contains("json") {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                format!("Expected an application/json body, got '{ct}'."),
            ));
        }
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(ErrorCode::BadRequestRequiredParamIsNull, "A JSON body is required."));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("The JSON body is malformed: {e}")))
}

/// The base URL of this request, for signed links.
pub struct BaseUrl(pub UrlContext);

impl FromRequestParts<AppState> for BaseUrl {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(p) = &state.public_url {
            return Ok(BaseUrl(UrlContext { base_url: p.trim_end_matches('/').to_string() }));
        }
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let host = header("x-forwarded-host").or_else(|| header("host")).unwrap_or_else(|| "localhost".into());
        let scheme = header("x-forwarded-proto").unwrap_or_else(|| "http".into());
        Ok(BaseUrl(UrlContext { base_url: format!("{scheme}://{host}") }))
    }
}

/// Constant-time comparison of a presented key with the expected one.
pub fn key_matches(presented: &str, expected: &str) -> bool {
    let (a, b) = (presented.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
