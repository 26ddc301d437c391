//! The web portal: the static files of `web/` at `/ui` (embedded in release builds, read from disk in debug
//! builds), `/` redirecting there, and the browser's sign-in.
//!
//! Sign-in trades the Training key for an HttpOnly, `SameSite=Strict` session cookie (`POST /ui/api/session`).
//! The auth layer of all three APIs ([`crate::auth`]) accepts that cookie in place of their keys
//! ([`session_allows`]); a request that changes state must also carry the `X-Argus-Portal: 1` header, which a cross-site form cannot send, so
//! the cookie cannot be ridden by another origin. The cookie is an expiring HMAC over a fingerprint of the
//! Training key, signed with the store's signing key: it is valid on every node of a cluster, and rotating the
//! Training key signs every browser out.

use argus_core::ErrorCode;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use rust_embed::RustEmbed;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::error::HttpError;
use crate::extract::{json_body, key_matches};
use crate::AppState;

/// The portal's sources, `web/` at the workspace root.
#[derive(RustEmbed)]
#[folder = "../../web"]
struct Assets;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "argus_session";
/// Header every state-changing portal request carries (the CSRF check).
pub const PORTAL_HEADER: &str = "x-argus-portal";
/// How long a sign-in lasts.
const SESSION_SECONDS: i64 = 12 * 3600;

/// Content-Security-Policy of every portal response: only this origin's scripts, styles and connections.
const CSP: &str = "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The portal's routes (merged into the main router).
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/ui") }))
        .route("/ui", get(index))
        .route("/ui/api/session", get(session_status).post(sign_in).delete(sign_out))
        .route("/ui/api/keys", get(keys))
        .route("/ui/{*path}", get(asset))
}

fn subject(state: &AppState) -> String {
    let fp = hex::encode(&Sha256::digest(state.keys.training.as_bytes())[..12]);
    format!("portal-session:{fp}")
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Expiry of the valid session cookie in `headers`, if there is one.
fn session_expiry(headers: &HeaderMap, state: &AppState) -> Option<i64> {
    let token = cookie_value(headers, SESSION_COOKIE)?;
    let (expires, sig) = token.split_once('.')?;
    let expires: i64 = expires.parse().ok()?;
    let now = chrono::Utc::now().timestamp();
    state.argus.signer.verify(&subject(state), expires, sig, now).then_some(expires)
}

/// True when the request is the signed-in portal's: a valid session cookie and, for a method that changes
/// state, the [`PORTAL_HEADER`].
pub fn session_allows(method: &Method, headers: &HeaderMap, state: &AppState) -> bool {
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    (safe || headers.contains_key(PORTAL_HEADER)) && session_expiry(headers, state).is_some()
}

fn unauthorized(message: &str) -> HttpError {
    HttpError::with_status(ErrorCode::Forbidden, StatusCode::UNAUTHORIZED, message)
}

fn csrf_checked(headers: &HeaderMap) -> Result<(), HttpError> {
    if headers.contains_key(PORTAL_HEADER) {
        Ok(())
    } else {
        Err(HttpError::with_status(
            ErrorCode::Forbidden,
            StatusCode::FORBIDDEN,
            "Portal requests that change state must carry the X-Argus-Portal header.",
        ))
    }
}

/// True when the browser reached the server over HTTPS (directly configured, or through a proxy that says so).
fn over_https(headers: &HeaderMap, state: &AppState) -> bool {
    let forwarded = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok());
    forwarded.is_some_and(|p| p.eq_ignore_ascii_case("https"))
        || state.public_url.as_deref().is_some_and(|u| u.starts_with("https://"))
}

fn session_cookie(value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let c = format!("{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("argus_session=; Path=/; Max-Age=0"))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignIn {
    training_key: String,
}

async fn sign_in(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, HttpError> {
    csrf_checked(&headers)?;
    let req: SignIn = json_body(&headers, &body)?;
    if !key_matches(req.training_key.trim(), &state.keys.training) {
        tracing::warn!(target: "argus::portal", "portal sign-in refused: wrong Training key");
        return Err(unauthorized("That is not this server's Training key."));
    }
    let expires = chrono::Utc::now().timestamp() + SESSION_SECONDS;
    let sig = state.argus.signer.sign(&subject(&state), expires);
    tracing::info!(target: "argus::portal", expires, "portal sign-in");
    let mut resp = Json(json!({"signedIn": true, "expires": expires})).into_response();
    let cookie = session_cookie(&format!("{expires}.{sig}"), SESSION_SECONDS, over_https(&headers, &state));
    resp.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(resp)
}

async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, HttpError> {
    csrf_checked(&headers)?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(header::SET_COOKIE, session_cookie("", 0, over_https(&headers, &state)));
    Ok(resp)
}

async fn session_status(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let expires = session_expiry(&headers, &state);
    let mut resp = Json(json!({"signedIn": expires.is_some(), "expires": expires})).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The keys a signed-in user may look up: the Prediction key (shown on request next to a published
/// iteration's URL) and the vision API's bearer key.
async fn keys(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, HttpError> {
    if session_expiry(&headers, &state).is_none() {
        return Err(unauthorized("Sign in to the portal first."));
    }
    let mut resp =
        Json(json!({"predictionKey": state.keys.prediction, "visionKey": state.keys.vision})).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = (!path.split('/').any(|s| s == "..")).then(|| Assets::get(path)).flatten() else {
        return (StatusCode::NOT_FOUND, [(header::CONTENT_SECURITY_POLICY, CSP)], "No such portal file.")
            .into_response();
    };
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mime = file.metadata.mimetype().to_string();
    let common = [
        (header::ETAG, etag),
        (header::CACHE_CONTROL, "no-cache".to_string()),
        (header::CONTENT_SECURITY_POLICY, CSP.to_string()),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
        (header::REFERRER_POLICY, "same-origin".to_string()),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (common, [(header::CONTENT_TYPE, mime)], file.data.into_owned()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; argus_session=123.abc; b=2"));
        assert_eq!(cookie_value(&h, SESSION_COOKIE), Some("123.abc"));
        assert_eq!(cookie_value(&h, "c"), None);
    }

    #[test]
    fn every_portal_file_is_embedded_with_a_type() {
        let names: Vec<_> = Assets::iter().collect();
        assert!(names.iter().any(|n| n == "index.html"), "{names:?}");
        for n in names {
            let f = Assets::get(&n).expect("listed file");
            assert!(!f.metadata.mimetype().is_empty(), "{n}");
        }
    }
}
