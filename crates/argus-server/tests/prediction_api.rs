//! The Prediction API v3.0/v3.1 and the stored-prediction query over real HTTP, with a classifier trained on
//! real photographs: every route and its errors, storage, QueryPredictions paging and filters,
//! DeletePrediction, CreateImagesFromPredictions, and unpublishing taking effect at once.

mod common;

use std::collections::HashSet;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const CROPS: [(f32, f32, f32, f32); 5] =
    [(0.0, 0.0, 0.8, 0.8), (0.2, 0.2, 0.8, 0.8), (0.1, 0.0, 0.85, 0.9), (0.0, 0.15, 0.9, 0.85), (0.15, 0.1, 0.7, 0.75)];

async fn query(s: &TestServer, p: &str, token: Value) -> (StatusCode, Value) {
    s.send(s.req(Method::POST, &format!("/projects/{p}/predictions/query")).json(&token)).await
}

#[tokio::test]
async fn prediction_api_serves_stores_and_queries() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = TestServer::start_with(dir.path(), Options { allow_private_urls: true, ..Default::default() }).await;
    let p = s.project("name=Pred").await;
    let cat = s.tag(&p, "cat").await;
    let cup = s.tag(&p, "cup").await;
    let (chelsea, coffee) = (photo("chelsea.png"), photo("coffee.png"));
    s.upload(&p, CROPS.iter().map(|c| crop_jpeg(&chelsea, c.0, c.1, c.2, c.3)).collect(), &format!("tagIds={cat}"))
        .await;
    s.upload(&p, CROPS.iter().map(|c| crop_jpeg(&coffee, c.0, c.1, c.2, c.3)).collect(), &format!("tagIds={cup}"))
        .await;
    let (_, it) = s.call(Method::POST, &format!("/projects/{p}/train")).await;
    let it = it["id"].as_str().expect("id").to_string();
    assert_eq!(wait_trained(&s, &p, &it).await["status"], "Completed");

    let cat_img = crop_jpeg(&chelsea, 0.05, 0.05, 0.9, 0.9);
    let cup_img = crop_jpeg(&coffee, 0.05, 0.05, 0.9, 0.9);
    let route = |name: &str, tail: &str| format!("/{p}/classify/iterations/{name}/{tail}");

    // Not published yet: 404.
    let r = s.send(s.predict_req("v3.1", &route("Model%201", "image")).body(cat_img.clone())).await;
    assert_error(&r, 404, "NotFoundIteration");
    let (st, _) = s
        .call(
            Method::POST,
            &format!("/projects/{p}/iterations/{it}/publish?publishName=Model%201&predictionId=/subscriptions/x"),
        )
        .await;
    assert_eq!(st, 200);

    // Wrong or missing key.
    let r =
        s.send(s.client.post(format!("{}/customvision/v3.1/prediction{}", s.root, route("Model%201", "image")))).await;
    assert_error(&r, 401, "Forbidden");

    // v3.1, raw body, with application: every tag, sorted, with tagType; stored.
    let r = s
        .send(
            s.predict_req("v3.1", &format!("{}?application=mobile", route("Model%201", "image")))
                .header("Content-Type", "application/octet-stream")
                .body(cat_img.clone()),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let preds = r.1["predictions"].as_array().expect("predictions");
    assert_eq!(preds.len(), 2);
    assert_eq!(preds[0]["tagId"], cat.as_str(), "{}", r.1);
    assert!(preds[0]["probability"].as_f64() >= preds[1]["probability"].as_f64());
    assert_eq!(preds[0]["tagType"], "Regular");
    assert_eq!(r.1["iteration"], it.as_str());
    assert_eq!(r.1["project"], p.as_str());
    let first_id = r.1["id"].as_str().expect("id").to_string();

    // v3.0, multipart imageData, case-insensitive path: no tagType.
    let form = reqwest::multipart::Form::new()
        .part("imageData", reqwest::multipart::Part::bytes(cup_img.clone()).file_name("cup.jpg"));
    let r = s
        .send(
            s.client
                .post(format!("{}/customvision/v3.0/Prediction{}", s.root, route("Model%201", "image")))
                .header("Prediction-Key", PREDICTION_KEY)
                .multipart(form),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["predictions"][0]["tagId"], cup.as_str());
    assert!(r.1["predictions"][0].get("tagType").is_none(), "{}", r.1);

    // No store.
    let r = s.send(s.predict_req("v3.1", &route("Model%201", "image/nostore")).body(cup_img.clone())).await;
    assert_eq!(r.0, 200, "{}", r.1);
    let nostore_id = r.1["id"].as_str().expect("id").to_string();

    // From a URL (a signed link of a training image of this server).
    let (_, imgs) = s.call(Method::GET, &format!("/projects/{p}/images/tagged?tagIds={cup}&take=1")).await;
    let url = imgs[0]["originalImageUri"].as_str().expect("uri").to_string();
    let r = s.send(s.predict_req("v3.1", &route("Model%201", "url")).json(&json!({ "url": url }))).await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["predictions"][0]["tagId"], cup.as_str());
    let r = s.send(s.predict_req("v3.1", &route("Model%201", "url/nostore")).json(&json!({ "url": url }))).await;
    assert_eq!(r.0, 200, "{}", r.1);
    let r = s.send(s.predict_req("v3.1", &route("Model%201", "url")).json(&json!({ "url": "" }))).await;
    assert_error(&r, 400, "BadRequestImageUrl");

    // Errors: a classifier on the detect route, bytes that are no image, an image over 4 MB, a bad application.
    let r =
        s.send(s.predict_req("v3.1", &format!("/{p}/detect/iterations/Model%201/image")).body(cat_img.clone())).await;
    assert_error(&r, 400, "BadRequestNotSupported");
    let r = s.send(s.predict_req("v3.1", &route("Model%201", "image")).body(b"not an image".to_vec())).await;
    assert_error(&r, 400, "BadRequestImageFormat");
    let r = s.send(s.predict_req("v3.1", &route("Model%201", "image")).body(vec![0u8; 4 * 1024 * 1024 + 1])).await;
    assert_error(&r, 400, "BadRequestImageSizeBytes");
    let long = "a".repeat(300);
    let r = s
        .send(
            s.predict_req("v3.1", &format!("{}?application={long}", route("Model%201", "image"))).body(cat_img.clone()),
        )
        .await;
    assert_error(&r, 400, "BadRequestPredictionInvalidApplicationName");

    // QuickTest stores too (unless store=false).
    let r = s.send(s.req(Method::POST, &format!("/projects/{p}/quicktest/image")).body(cat_img.clone())).await;
    assert_eq!(r.0, 200, "{}", r.1);
    let r =
        s.send(s.req(Method::POST, &format!("/projects/{p}/quicktest/image?store=false")).body(cat_img.clone())).await;
    assert_eq!(r.0, 200, "{}", r.1);

    // Stored: first, v3.0 multipart, url, quick test = 4; nothing from nostore.
    let (st, all) = query(&s, &p, json!({})).await;
    assert_eq!(st, 200, "{all}");
    let results = all["results"].as_array().expect("results");
    assert_eq!(results.len(), 4, "{all}");
    assert!(results.iter().all(|r| r["id"] != nostore_id.as_str()));
    // Newest first, with signed image links that work.
    assert_eq!(results[3]["id"], first_id.as_str());
    let thumb = results[0]["thumbnailUri"].as_str().expect("thumb");
    assert_eq!(s.client.get(thumb).send().await.expect("get").status(), 200);
    assert!(results[0]["resizedImageUri"].is_string() && results[0]["originalImageUri"].is_string());
    assert_eq!(results[0]["domain"], "ee85a74c-405e-4adc-bb47-ffa8ca0c9f31");
    assert_eq!(all["token"]["continuation"], "");

    // Filters: tag threshold, application, iteration, time.
    let (_, cats) = query(&s, &p, json!({"tags": [{"id": cat, "minThreshold": 0.5, "maxThreshold": 1.0}]})).await;
    assert_eq!(cats["results"].as_array().map(Vec::len), Some(2), "{cats}");
    let (_, mobile) = query(&s, &p, json!({"application": "mobile"})).await;
    assert_eq!(mobile["results"].as_array().map(Vec::len), Some(1));
    assert_eq!(mobile["results"][0]["id"], first_id.as_str());
    let (_, none) = query(&s, &p, json!({"iterationId": uuid_str()})).await;
    assert_eq!(none["results"].as_array().map(Vec::len), Some(0));
    let (_, future) = query(&s, &p, json!({"startTime": "2100-01-01T00:00:00Z"})).await;
    assert_eq!(future["results"].as_array().map(Vec::len), Some(0));
    assert_error(
        &query(&s, &p, json!({"tags": [{"id": cat}, {"id": cup}, {"id": uuid_str()}]})).await,
        400,
        "BadRequestPredictionTagsExceededCount",
    );
    assert_error(
        &query(&s, &p, json!({"orderBy": "Sideways"})).await,
        400,
        "BadRequestPredictionInvalidQueryParameters",
    );
    assert_error(
        &query(&s, &p, json!({"continuation": "garbage"})).await,
        400,
        "BadRequestPredictionInvalidQueryParameters",
    );

    // Paging with a continuation stays stable while new predictions arrive; session is echoed.
    let (_, page1) = query(&s, &p, json!({"maxCount": 3, "session": "s1", "orderBy": "Oldest"})).await;
    assert_eq!(page1["results"].as_array().map(Vec::len), Some(3));
    assert_eq!(page1["token"]["session"], "s1");
    let r = s.send(s.predict_req("v3.1", &route("Model%201", "image")).body(cup_img.clone())).await;
    assert_eq!(r.0, 200);
    let mut token = page1["token"].clone();
    token["maxCount"] = json!(2);
    let (_, page2) = query(&s, &p, token).await;
    let seen: HashSet<String> = page1["results"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(page2["results"].as_array().into_iter().flatten())
        .map(|r| r["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(seen.len(), 5, "no duplicates across pages");
    assert_eq!(page2["token"]["continuation"], "", "{page2}");

    // Suggested: the most uncertain first.
    let (_, suggested) = query(&s, &p, json!({"orderBy": "Suggested"})).await;
    let top = suggested["results"].as_array().expect("results");
    let margin = |r: &Value| {
        let p0 = r["predictions"][0]["probability"].as_f64().unwrap_or(0.0);
        let p1 = r["predictions"][1]["probability"].as_f64().unwrap_or(0.0);
        p0 - p1
    };
    assert!(margin(&top[0]) <= margin(&top[top.len() - 1]) + 1e-9);

    // Promote a stored prediction into the training set.
    let r = s
        .send(s.req(Method::POST, &format!("/projects/{p}/images/predictions")).json(&json!({
            "images": [{"id": first_id, "tagIds": [cat]}, {"id": uuid_str()}]
        })))
        .await;
    assert_eq!(r.0, 207, "{}", r.1);
    assert_eq!(r.1["images"][0]["status"], "OK", "{}", r.1);
    assert_eq!(r.1["images"][1]["status"], "ErrorSource");
    assert_eq!(r.1["images"][0]["image"]["tags"][0]["tagId"], cat.as_str());

    // Delete: errors, then rows and files go.
    assert_error(
        &s.call(Method::DELETE, &format!("/projects/{p}/predictions")).await,
        400,
        "BadRequestPredictionIdsMissing",
    );
    let many: Vec<String> = (0..65).map(|_| uuid_str()).collect();
    assert_error(
        &s.call(Method::DELETE, &format!("/projects/{p}/predictions?ids={}", many.join(","))).await,
        400,
        "BadRequestPredictionIdsExceededCount",
    );
    let (st, _) = s.call(Method::DELETE, &format!("/projects/{p}/predictions?ids={first_id}")).await;
    assert_eq!(st, 204);
    let (_, after) = query(&s, &p, json!({"maxCount": 100})).await;
    assert!(after["results"].as_array().expect("results").iter().all(|r| r["id"] != first_id.as_str()));
    assert_eq!(after["results"].as_array().map(Vec::len), Some(4));

    // Unpublishing takes effect immediately.
    let (st, _) = s.call(Method::DELETE, &format!("/projects/{p}/iterations/{it}/publish")).await;
    assert_eq!(st, 204);
    let r = s.send(s.predict_req("v3.1", &route("Model%201", "image")).body(cat_img.clone())).await;
    assert_error(&r, 404, "NotFoundIteration");
}

fn uuid_str() -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", rand_u32(), rand_u32())
}

fn rand_u32() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0x1234);
    N.fetch_add(7919, Ordering::Relaxed)
}
