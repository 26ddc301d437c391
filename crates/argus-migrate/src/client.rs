//! A client for the parts of the Custom Vision Training API (v3.3) that a migration reads and writes, with the
//! retries the hosted service's rate limits require.
//!
//! Every request goes through [`TrainingApi::send`]: a 429 waits for its `Retry-After` (or an exponential backoff),
//! a 5xx, a 408 or a dropped connection backs off and retries, up to [`RetryPolicy::attempts`]. Other errors come
//! back as [`ApiFailure`] with the service's own `code` and `message`. Only requests that are safe to repeat are
//! retried after a 5xx; see [`Retry`].

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use rand::Rng;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The Training API version the migration speaks (every Custom Vision resource and Argus serve it).
pub const TRAINING_PATH: &str = "customvision/v3.3/training";

/// How failed requests are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub attempts: u32,
    /// The first backoff; each further one doubles, up to `max_delay`.
    pub base_delay: Duration,
    /// The longest wait between two attempts (a longer `Retry-After` is honoured up to this too).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { attempts: 10, base_delay: Duration::from_millis(250), max_delay: Duration::from_secs(30) }
    }
}

/// Whether a request may be sent again after the server may have acted on it (a 5xx or a lost response).
/// A 429 is always retried: the service refused the request without acting on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Repeating it changes nothing (reads, uploads that deduplicate, tag links, metadata).
    Idempotent,
    /// Repeating it could apply it twice (regions): only 429 is retried; the caller reconciles otherwise.
    OnlyThrottled,
}

/// An error answer in the service's shape (`{"code", "message"}`, or nested under `error`).
#[derive(Debug, Clone)]
pub struct ApiFailure {
    /// HTTP status.
    pub status: StatusCode,
    /// The service's error code (`NotFound`, `BadRequestInvalidIds`, …), or empty.
    pub code: String,
    /// The service's message, or the body.
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for ApiFailure {}

/// A Training API endpoint and its key.
#[derive(Clone)]
pub struct TrainingApi {
    http: reqwest::Client,
    base: String,
    key: String,
    retry: RetryPolicy,
}

impl TrainingApi {
    /// A client for `endpoint` (e.g. `https://<resource>.cognitiveservices.azure.com` or `http://127.0.0.1:8080`).
    pub fn new(endpoint: &str, key: &str, retry: RetryPolicy) -> Result<Self> {
        let endpoint = endpoint.trim().trim_end_matches('/');
        let parsed = url::Url::parse(endpoint).with_context(|| format!("'{endpoint}' is not a URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(anyhow!("'{endpoint}' is not an http(s) URL"));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(20))
            .timeout(Duration::from_secs(300))
            .build()
            .context("building the HTTP client")?;
        Ok(Self { http, base: format!("{endpoint}/{TRAINING_PATH}"), key: key.to_string(), retry })
    }

    /// The endpoint's Training API base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request (path relative to the Training API, query pairs, optional JSON body) with retries and
    /// returns the success body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
        retry: Retry,
    ) -> Result<bytes::Bytes> {
        let url = format!("{}/{}", self.base, path.trim_start_matches('/'));
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut req = self.http.request(method.clone(), &url).header("Training-Key", &self.key).query(query);
            if let Some(b) = body {
                req = req.json(b);
            }
            let wait = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_success() {
                        match resp.bytes().await {
                            Ok(b) => return Ok(b),
                            Err(e) if retry == Retry::Idempotent && attempt < self.retry.attempts => {
                                tracing::debug!(error = %e, %url, "response body lost; retrying");
                                self.backoff(attempt, None)
                            }
                            Err(e) => return Err(anyhow!(e).context(format!("{method} {url}"))),
                        }
                    } else {
                        let retry_after = resp
                            .headers()
                            .get(reqwest::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<f64>().ok())
                            .filter(|v| v.is_finite() && *v >= 0.0)
                            .map(Duration::from_secs_f64);
                        let text = resp.text().await.unwrap_or_default();
                        let again = status == StatusCode::TOO_MANY_REQUESTS
                            || (retry == Retry::Idempotent
                                && (status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT));
                        if !again || attempt >= self.retry.attempts {
                            return Err(failure(status, &text).into());
                        }
                        tracing::debug!(status = status.as_u16(), %url, attempt, "retrying");
                        self.backoff(attempt, retry_after.filter(|_| status == StatusCode::TOO_MANY_REQUESTS))
                    }
                }
                // The request may or may not have reached the server.
                Err(e) if retry == Retry::Idempotent && attempt < self.retry.attempts => {
                    tracing::debug!(error = %e, %url, attempt, "request failed; retrying");
                    self.backoff(attempt, None)
                }
                Err(e) => return Err(anyhow!(e).context(format!("{method} {url}"))),
            };
            tokio::time::sleep(wait).await;
        }
    }

    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self.retry.base_delay.saturating_mul(1u32 << (attempt - 1).min(16));
        let jitter = rand::thread_rng().gen_range(0.8..1.2);
        retry_after.unwrap_or_else(|| exp.mul_f64(jitter)).min(self.retry.max_delay)
    }

    /// GET and decode JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T> {
        let body = self.send(Method::GET, path, query, None, Retry::Idempotent).await?;
        serde_json::from_slice(&body).with_context(|| format!("decoding the answer of GET {path}"))
    }

    /// POST (optionally with a JSON body) and decode JSON.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
        retry: Retry,
    ) -> Result<T> {
        let bytes = self.send(Method::POST, path, query, body, retry).await?;
        serde_json::from_slice(&bytes).with_context(|| format!("decoding the answer of POST {path}"))
    }

    /// Downloads a file by absolute URL (an image's `originalImageUri`: signed, no key), with the same retries.
    pub async fn download(&self, url: &str, max_bytes: usize) -> Result<bytes::Bytes> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let error: anyhow::Error = match self.http.get(url).send().await {
                Ok(resp) if resp.status().is_success() => match resp.bytes().await {
                    Ok(b) if b.len() > max_bytes => {
                        return Err(anyhow!("the image is {} bytes, more than {max_bytes}", b.len()))
                    }
                    Ok(b) => return Ok(b),
                    Err(e) => anyhow!(e),
                },
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    let f = failure(status, &text);
                    if !(status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS) {
                        return Err(anyhow!(f).context("downloading the original image"));
                    }
                    anyhow!(f)
                }
                Err(e) => anyhow!(e),
            };
            if attempt >= self.retry.attempts {
                return Err(error.context("downloading the original image"));
            }
            tokio::time::sleep(self.backoff(attempt, None)).await;
        }
    }
}

/// Decodes an error body in either of the service's shapes.
fn failure(status: StatusCode, body: &str) -> ApiFailure {
    #[derive(Deserialize)]
    struct Flat {
        code: Option<String>,
        message: Option<String>,
        error: Option<Box<Flat>>,
    }
    match serde_json::from_str::<Flat>(body) {
        Ok(f) => {
            let inner = f.error.map(|e| *e);
            let code = f.code.or_else(|| inner.as_ref().and_then(|e| e.code.clone())).unwrap_or_default();
            let message = f.message.or_else(|| inner.and_then(|e| e.message)).unwrap_or_else(|| body.to_string());
            ApiFailure { status, code, message }
        }
        Err(_) => ApiFailure { status, code: String::new(), message: body.chars().take(300).collect() },
    }
}

/// The failure behind an error, when it is an API answer.
pub fn api_failure(e: &anyhow::Error) -> Option<&ApiFailure> {
    e.downcast_ref::<ApiFailure>()
}

// ---- the wire types a migration reads (unknown fields are ignored; the writer sends JSON values) ----

/// A project (GetProject / GetProjects).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Settings.
    #[serde(default)]
    pub settings: ProjectSettings,
}

/// The settings a migration carries over.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSettings {
    /// Domain.
    pub domain_id: Option<Uuid>,
    /// `Multiclass` / `Multilabel` (classification projects).
    pub classification_type: Option<String>,
    /// Export platforms.
    #[serde(default)]
    pub target_export_platforms: Vec<String>,
    /// Augmentation settings (`augmentationMethods`), copied as they are.
    #[serde(default)]
    pub image_processing_settings: Option<serde_json::Value>,
}

/// A domain (GetDomains).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Domain {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// `Classification` or `ObjectDetection`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// A tag (GetTags).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tag {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// `Regular`, `Negative` or `GeneralProduct`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

/// An image (GetTaggedImages / GetUntaggedImages / GetImagesByIds, and in upload results).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// Id.
    pub id: Uuid,
    /// Width in pixels (as oriented).
    #[serde(default)]
    pub width: u32,
    /// Height in pixels (as oriented).
    #[serde(default)]
    pub height: u32,
    /// A signed link to the original bytes.
    #[serde(default)]
    pub original_image_uri: Option<String>,
    /// Tags (those of its regions included).
    #[serde(default)]
    pub tags: Option<Vec<ImageTag>>,
    /// Regions.
    #[serde(default)]
    pub regions: Option<Vec<Region>>,
    /// Metadata.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

impl Image {
    /// Tag ids, regions' tags included.
    pub fn tag_ids(&self) -> Vec<Uuid> {
        self.tags.iter().flatten().map(|t| t.tag_id).collect()
    }

    /// Regions (none for a classification image).
    pub fn regions(&self) -> &[Region] {
        self.regions.as_deref().unwrap_or(&[])
    }
}

/// A tag on an image.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageTag {
    /// Tag id.
    pub tag_id: Uuid,
}

/// A region on an image (normalised coordinates).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Region {
    /// Tag id.
    pub tag_id: Uuid,
    /// Left edge, 0–1.
    pub left: f64,
    /// Top edge, 0–1.
    pub top: f64,
    /// Width, 0–1.
    pub width: f64,
    /// Height, 0–1.
    pub height: f64,
}

impl Region {
    /// Same tag and the same box within `1e-6` of the image side.
    pub fn same_as(&self, o: &Region) -> bool {
        const EPS: f64 = 1e-6;
        self.tag_id == o.tag_id
            && (self.left - o.left).abs() < EPS
            && (self.top - o.top).abs() < EPS
            && (self.width - o.width).abs() < EPS
            && (self.height - o.height).abs() < EPS
    }
}

/// One entry of an upload's answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageCreateResult {
    /// `OK`, `OKDuplicate`, or an error status.
    pub status: String,
    /// The image (the existing one for a duplicate).
    #[serde(default)]
    pub image: Option<Image>,
}

/// An upload's answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageCreateSummary {
    /// One per image sent, in order.
    #[serde(default)]
    pub images: Vec<ImageCreateResult>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_error_shapes_are_read() {
        let f = failure(StatusCode::BAD_REQUEST, r#"{"code":"BadRequestInvalidIds","message":"taken"}"#);
        assert_eq!((f.code.as_str(), f.message.as_str()), ("BadRequestInvalidIds", "taken"));
        let f = failure(StatusCode::NOT_FOUND, r#"{"error":{"code":"NotFound","message":"no such project"}}"#);
        assert_eq!((f.code.as_str(), f.message.as_str()), ("NotFound", "no such project"));
        let f = failure(StatusCode::BAD_GATEWAY, "<html>bad gateway</html>");
        assert_eq!(f.code, "");
        assert!(f.message.contains("bad gateway"));
    }

    #[test]
    fn backoff_doubles_honours_retry_after_and_is_capped() {
        let api = TrainingApi::new("http://127.0.0.1:1", "k", RetryPolicy::default()).expect("client");
        let first = api.backoff(1, None);
        let fourth = api.backoff(4, None);
        assert!(first >= Duration::from_millis(200) && first <= Duration::from_millis(300), "{first:?}");
        assert!(fourth >= Duration::from_millis(1600) && fourth <= Duration::from_millis(2400), "{fourth:?}");
        assert_eq!(api.backoff(2, Some(Duration::from_secs(3))), Duration::from_secs(3));
        assert_eq!(api.backoff(30, None), Duration::from_secs(30));
        assert_eq!(api.backoff(1, Some(Duration::from_secs(600))), Duration::from_secs(30));
    }

    #[test]
    fn endpoints_must_be_http_urls() {
        assert!(TrainingApi::new("ftp://example.com", "k", RetryPolicy::default()).is_err());
        assert!(TrainingApi::new("not a url", "k", RetryPolicy::default()).is_err());
        let api = TrainingApi::new("https://x.cognitiveservices.azure.com/", "k", RetryPolicy::default()).expect("ok");
        assert_eq!(api.base(), "https://x.cognitiveservices.azure.com/customvision/v3.3/training");
    }
}
