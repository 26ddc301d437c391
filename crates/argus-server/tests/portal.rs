//! The portal's server side over real HTTP: `/` redirects to `/ui`, the static files carry a strict CSP and an
//! ETag (304 on revalidation), and the browser's session cookie is accepted by the three API auth layers, only
//! with the `X-Argus-Portal` header for requests that change state, and never in place of a wrong key.

mod common;

use common::{TestServer, KEY, PREDICTION_KEY};
use reqwest::{header, Method, StatusCode};
use serde_json::{json, Value};

async fn sign_in(s: &TestServer, key: &str) -> reqwest::Response {
    s.client
        .post(format!("{}/ui/api/session", s.root))
        .header("X-Argus-Portal", "1")
        .json(&json!({"trainingKey": key}))
        .send()
        .await
        .expect("sign in")
}

#[tokio::test]
async fn static_files_session_cookie_and_csrf_check() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(dir.path()).await;
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");

    // `/` → `/ui`; the page and its modules come with a CSP and an ETag.
    let r = plain.get(format!("{}/", s.root)).send().await.expect("root");
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(r.headers()[header::LOCATION], "/ui");
    let r = plain.get(format!("{}/ui", s.root)).send().await.expect("ui");
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()[header::CONTENT_SECURITY_POLICY].to_str().expect("csp").to_string();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert!(r.text().await.expect("html").contains("/ui/app.js"));
    let r = plain.get(format!("{}/ui/app.js", s.root)).send().await.expect("js");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()[header::CONTENT_TYPE].to_str().expect("type").contains("javascript"));
    let etag = r.headers()[header::ETAG].clone();
    let r = plain.get(format!("{}/ui/app.js", s.root)).header(header::IF_NONE_MATCH, etag).send().await.expect("304");
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    for missing in ["/ui/nothing.js", "/ui/../Cargo.toml", "/ui/pages/../../Cargo.toml"] {
        let r = plain.get(format!("{}{missing}", s.root)).send().await.expect("missing");
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{missing}");
    }

    // Signing in: the header is required, a wrong key is refused, the right one gets an HttpOnly cookie.
    let r = s.client.post(format!("{}/ui/api/session", s.root)).json(&json!({"trainingKey": KEY})).send().await;
    assert_eq!(r.expect("no header").status(), StatusCode::FORBIDDEN);
    let r = sign_in(&s, "wrong").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get(header::SET_COOKIE).is_none());
    let r = sign_in(&s, KEY).await;
    assert_eq!(r.status(), StatusCode::OK);
    let set = r.headers()[header::SET_COOKIE].to_str().expect("cookie").to_string();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && !set.contains("Secure"), "{set}");
    let cookie = set.split(';').next().expect("pair").to_string();
    // Behind an HTTPS proxy the cookie is Secure.
    let r = s
        .client
        .post(format!("{}/ui/api/session", s.root))
        .header("X-Argus-Portal", "1")
        .header("X-Forwarded-Proto", "https")
        .json(&json!({"trainingKey": KEY}))
        .send()
        .await
        .expect("https");
    assert!(r.headers()[header::SET_COOKIE].to_str().expect("cookie").contains("; Secure"));

    let with_cookie =
        |m: Method, path: &str| s.client.request(m, format!("{}{path}", s.root)).header(header::COOKIE, &cookie);
    let training = "/customvision/v3.3/training";
    let (st, status) = s.send(with_cookie(Method::GET, "/ui/api/session")).await;
    assert_eq!((st, status["signedIn"].as_bool()), (StatusCode::OK, Some(true)));
    // Reads need only the cookie; writes also need the portal header.
    assert_eq!(s.send(with_cookie(Method::GET, &format!("{training}/projects"))).await.0, StatusCode::OK);
    let (st, e) = s.send(with_cookie(Method::POST, &format!("{training}/projects?name=csrf"))).await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("Forbidden")), "{e}");
    let (st, p) = s
        .send(with_cookie(Method::POST, &format!("{training}/projects?name=portal")).header("X-Argus-Portal", "1"))
        .await;
    assert_eq!(st, StatusCode::OK, "{p}");
    // A wrong key header is not rescued by the cookie.
    let r = with_cookie(Method::GET, &format!("{training}/projects")).header("Training-Key", "wrong");
    assert_eq!(s.send(r).await.0, StatusCode::UNAUTHORIZED);
    // The Prediction and vision surfaces accept the session too.
    let pid = p["id"].as_str().expect("id");
    let r = with_cookie(Method::POST, &format!("/customvision/v3.0/prediction/{pid}/classify/iterations/x/image"))
        .header("X-Argus-Portal", "1")
        .body(vec![0u8; 4]);
    assert_ne!(s.send(r).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(s.send(with_cookie(Method::GET, "/api/v1/projects/portal/files")).await.0, StatusCode::OK);
    // The keys are shown only to a signed-in browser.
    let (st, keys) = s.send(with_cookie(Method::GET, "/ui/api/keys")).await;
    assert_eq!((st, keys["predictionKey"].as_str()), (StatusCode::OK, Some(PREDICTION_KEY)));
    assert_eq!(s.send(s.client.get(format!("{}/ui/api/keys", s.root))).await.0, StatusCode::UNAUTHORIZED);
    // A forged or expired cookie is nothing.
    for forged in ["argus_session=99999999999.00", "argus_session=1.abc", "argus_session=garbage"] {
        let r = s.client.get(format!("{}{training}/projects", s.root)).header(header::COOKIE, forged);
        assert_eq!(s.send(r).await.0, StatusCode::UNAUTHORIZED, "{forged}");
    }
    // Sign-out clears the cookie.
    let r = with_cookie(Method::DELETE, "/ui/api/session").header("X-Argus-Portal", "1").send().await.expect("out");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(r.headers()[header::SET_COOKIE].to_str().expect("cookie").contains("Max-Age=0"));
    let (_, v): (_, Value) = s.send(s.client.get(format!("{}/ui/api/session", s.root))).await;
    assert_eq!(v["signedIn"], false);
    s.stop().await;
}
