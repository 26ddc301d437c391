//! The CDF-style vision API over real HTTP: files (create → signed upload → get/byids/list/download/delete),
//! segmentation jobs with box and point prompts on a real photograph composited onto another (so the true
//! mask is known), the job lifecycle, RLE output, a Custom Vision training image as a file, and every
//! documented validation error in the CDF error shape.

mod common;

use std::io::Cursor;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A 400×300 PNG: a crop of chelsea (the cat) pasted onto grass at a known rectangle.
fn scene() -> (Vec<u8>, (f64, f64, f64, f64)) {
    let mut bg = image::imageops::resize(&photo("grass.png"), 400, 300, image::imageops::FilterType::Triangle);
    let cat = image::imageops::crop_imm(&photo("chelsea.png"), 60, 20, 300, 260).to_image();
    let cat = image::imageops::resize(&cat, 150, 130, image::imageops::FilterType::Triangle);
    image::imageops::overlay(&mut bg, &cat, 120, 80);
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(bg).write_to(&mut out, image::ImageFormat::Png).expect("png");
    (out.into_inner(), (120.0 / 400.0, 80.0 / 300.0, 270.0 / 400.0, 210.0 / 300.0))
}

fn vision(s: &TestServer, method: Method, path: &str) -> reqwest::RequestBuilder {
    s.client.request(method, format!("{}/api/v1/projects/demo{path}", s.root)).bearer_auth(VISION_KEY)
}

async fn wait_job(s: &TestServer, id: i64) -> Value {
    for _ in 0..400 {
        let (st, v) = s.send(vision(s, Method::GET, &format!("/context/vision/segment/{id}"))).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        if v["status"] == "Completed" || v["status"] == "Failed" {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("segmentation job {id} did not finish");
}

fn polygon_box(v: &Value) -> (f64, f64, f64, f64) {
    let (mut x0, mut y0, mut x1, mut y1) = (1.0f64, 1.0f64, 0.0f64, 0.0f64);
    for poly in v["items"][0]["segments"][0]["polygons"].as_array().expect("polygons") {
        let verts = poly["vertices"].as_array().expect("vertices");
        assert!(verts.len() >= 3 && verts.len() <= 1000);
        for p in verts {
            let (x, y) = (p["x"].as_f64().expect("x"), p["y"].as_f64().expect("y"));
            assert!((0.0..=1.0).contains(&x) && (0.0..=1.0).contains(&y));
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
    }
    (x0, y0, x1, y1)
}

fn iou(a: (f64, f64, f64, f64), b: (f64, f64, f64, f64)) -> f64 {
    let ix = (a.2.min(b.2) - a.0.max(b.0)).max(0.0);
    let iy = (a.3.min(b.3) - a.1.max(b.1)).max(0.0);
    let inter = ix * iy;
    inter / ((a.2 - a.0) * (a.3 - a.1) + (b.2 - b.0) * (b.3 - b.1) - inter)
}

#[tokio::test]
async fn files_and_segmentation_jobs() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(dir.path()).await;
    let (png, truth) = scene();

    // Files: create metadata, upload through the signed URL, read back.
    let (st, f) = s
        .send(
            vision(&s, Method::POST, "/files")
                .json(&json!({"name": "cat.png", "externalId": "cat-1", "mimeType": "image/png"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{f}");
    assert_eq!(f["uploaded"], false);
    let id = f["id"].as_i64().expect("id");
    let upload = f["uploadUrl"].as_str().expect("uploadUrl").to_string();
    let r = s.client.put(&upload).body(png.clone()).send().await.expect("put");
    assert_eq!(r.status(), StatusCode::OK);
    let r = s.client.put(format!("{upload}x")).body(png.clone()).send().await.expect("put");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (_, got) = s.send(vision(&s, Method::GET, &format!("/files/{id}"))).await;
    assert_eq!(got["uploaded"], true);
    assert_eq!(got["externalId"], "cat-1");
    let (_, by) =
        s.send(vision(&s, Method::POST, "/files/byids").json(&json!({"items": [{"externalId": "cat-1"}]}))).await;
    assert_eq!(by["items"][0]["id"], id);
    let (_, list) = s.send(vision(&s, Method::GET, "/files?limit=10")).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    let (_, links) =
        s.send(vision(&s, Method::POST, "/files/downloadlink").json(&json!({"items": [{"id": id}]}))).await;
    let url = links["items"][0]["downloadUrl"].as_str().expect("url");
    assert_eq!(s.client.get(url).send().await.expect("get").bytes().await.expect("bytes").to_vec(), png);
    let (st, dup) =
        s.send(vision(&s, Method::POST, "/files").json(&json!({"name": "x.png", "externalId": "cat-1"}))).await;
    assert_eq!(st, StatusCode::CONFLICT, "{dup}");

    // A box prompt.
    let bbox = json!({"xMin": truth.0 - 0.03, "yMin": truth.1 - 0.03, "xMax": truth.2 + 0.03, "yMax": truth.3 + 0.03});
    let (st, job) = s
        .send(vision(&s, Method::POST, "/context/vision/segment").header("cdf-version", "20230101-beta").json(&json!({
            "items": [{"fileExternalId": "cat-1"}], "boundingBox": bbox
        })))
        .await;
    assert_eq!(st, StatusCode::OK, "{job}");
    assert_eq!(job["status"], "Queued");
    assert_eq!(job["items"][0]["fileId"], id);
    assert_eq!(job["items"][0]["fileExternalId"], "cat-1");
    assert!(job["boundingBox"].is_object() && job["createdTime"].is_i64() && job["errorMessage"].is_null());
    let done = wait_job(&s, job["jobId"].as_i64().expect("jobId")).await;
    assert_eq!(done["status"], "Completed", "{done}");
    assert!(done["prompt"]["boundingBox"].is_object());
    let score = done["items"][0]["segments"][0]["score"].as_f64().expect("score");
    assert!((0.0..=1.0).contains(&score));
    let found = polygon_box(&done);
    assert!(iou(found, truth) > 0.75, "box prompt: {found:?} vs {truth:?}");

    // One foreground click, with the mask as COCO RLE too.
    let (_, job) = s
        .send(vision(&s, Method::POST, "/context/vision/segment").json(&json!({
            "items": [{"fileId": id}], "points": [{"x": (truth.0 + truth.2) / 2.0, "y": (truth.1 + truth.3) / 2.0, "label": 1}],
            "rle": true
        })))
        .await;
    let done = wait_job(&s, job["jobId"].as_i64().expect("jobId")).await;
    assert_eq!(done["status"], "Completed", "{done}");
    assert!(iou(polygon_box(&done), truth) > 0.5, "click: {:?}", polygon_box(&done));
    let rle = &done["items"][0]["segments"][0]["rle"];
    assert_eq!(rle["size"], json!([300, 400]));
    let total: u64 = rle["counts"].as_array().expect("counts").iter().filter_map(Value::as_u64).sum();
    assert_eq!(total, 120_000);

    // A file with a data-modeling instance id, referenced by it (Files byids and a segment job).
    let inst = json!({"space": "site-a", "externalId": "cam-7/frame-1"});
    let (st, f2) = s
        .send(
            vision(&s, Method::POST, "/files")
                .json(&json!({"name": "frame.png", "mimeType": "image/png", "instanceId": inst})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{f2}");
    assert_eq!(f2["instanceId"], inst);
    let r = s.client.put(f2["uploadUrl"].as_str().expect("uploadUrl")).body(png.clone()).send().await.expect("put");
    assert_eq!(r.status(), StatusCode::OK);
    let (_, by) =
        s.send(vision(&s, Method::POST, "/files/byids").json(&json!({"items": [{"instanceId": inst}]}))).await;
    assert_eq!(by["items"][0]["id"], f2["id"], "{by}");
    let (st, dup) =
        s.send(vision(&s, Method::POST, "/files").json(&json!({"name": "again.png", "instanceId": inst}))).await;
    assert_eq!(st, StatusCode::CONFLICT, "{dup}");
    let (st, job) = s
        .send(vision(&s, Method::POST, "/context/vision/segment").json(&json!({
            "items": [{"fileInstanceId": inst}], "boundingBox": bbox
        })))
        .await;
    assert_eq!(st, StatusCode::OK, "{job}");
    assert_eq!(job["items"][0]["fileId"], f2["id"]);
    assert_eq!(job["items"][0]["fileInstanceId"], inst);
    assert_eq!(job["startTime"], job["createdTime"], "a queued job reports its creation as its start");
    let done = wait_job(&s, job["jobId"].as_i64().expect("jobId")).await;
    assert_eq!(done["status"], "Completed", "{done}");
    assert!(iou(polygon_box(&done), truth) > 0.75, "instance id: {done}");
    let (start, created, status) =
        (done["startTime"].as_i64(), done["createdTime"].as_i64(), done["statusTime"].as_i64());
    assert!(start >= created && start <= status, "startTime is when a worker took the job: {done}");
    let unknown = json!({"space": "site-a", "externalId": "nope"});
    let (st, e) = s
        .send(vision(&s, Method::POST, "/context/vision/segment").json(&json!({
            "items": [{"fileInstanceId": unknown}], "boundingBox": bbox
        })))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"]["missing"], json!([{"fileInstanceId": unknown}]));

    // A Custom Vision training image is a file too.
    let p = s.project("name=Seg").await;
    let (_, up) = s.upload(&p, vec![png.clone()], "").await;
    let img = up["images"][0]["image"]["id"].as_str().expect("image id").to_string();
    let (st, job) = s
        .send(vision(&s, Method::POST, "/context/vision/segment").json(&json!({
            "items": [{"fileExternalId": format!("customvision:{p}/{img}")}], "boundingBox": bbox
        })))
        .await;
    assert_eq!(st, StatusCode::OK, "{job}");
    let done = wait_job(&s, job["jobId"].as_i64().expect("jobId")).await;
    assert!(iou(polygon_box(&done), truth) > 0.75, "training image: {done}");

    // Validation, in the CDF error shape.
    let post = |body: Value| vision(&s, Method::POST, "/context/vision/segment").json(&body);
    for (body, what) in [
        (json!({"items": [{"fileId": id}, {"fileId": id}], "points": [{"x": 0.5, "y": 0.5}]}), "two items"),
        (json!({"items": [{"fileId": id}]}), "no prompt"),
        (json!({"items": [{"fileId": id}], "points": [{"x": 1.5, "y": 0.5}]}), "x out of range"),
        (json!({"items": [{"fileId": id}], "points": [{"x": 0.5, "y": 0.5, "label": 3}]}), "bad label"),
        (
            json!({"items": [{"fileId": id}], "boundingBox": {"xMin": 0.5, "yMin": 0.1, "xMax": 0.4, "yMax": 0.9}}),
            "bad box",
        ),
        (json!({"items": [{"fileId": id, "fileExternalId": "cat-1"}], "points": [{"x": 0.5, "y": 0.5}]}), "two refs"),
    ] {
        let (st, e) = s.send(post(body)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{what}: {e}");
        assert_eq!(e["error"]["code"], 400, "{what}");
        assert!(e["error"]["message"].is_string());
    }
    let (st, e) = s.send(post(json!({"items": [{"fileId": 999}], "points": [{"x": 0.5, "y": 0.5}]}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"]["missing"], json!([{"fileId": 999}]));
    let (_, gif) =
        s.send(vision(&s, Method::POST, "/files").json(&json!({"name": "a.gif", "mimeType": "image/gif"}))).await;
    let (st, _) = s.send(post(json!({"items": [{"fileId": gif["id"]}], "points": [{"x": 0.5, "y": 0.5}]}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, e) = s.send(vision(&s, Method::GET, "/context/vision/segment/424242")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"]["message"], "Job with id 424242 not found");
    let (st, e) = s
        .send(
            s.client
                .post(format!("{}/api/v1/projects/demo/context/vision/segment", s.root))
                .bearer_auth("wrong")
                .json(&json!({})),
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(e["error"]["code"], 401);

    // Delete.
    let (st, _) = s.send(vision(&s, Method::POST, "/files/delete").json(&json!({"items": [{"id": id}]}))).await;
    assert_eq!(st, StatusCode::OK);
    let (st, e) = s.send(vision(&s, Method::GET, &format!("/files/{id}"))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"]["missing"], json!([{"id": id}]));
}

async fn upload_scene(s: &TestServer) -> i64 {
    let (_, f) =
        s.send(vision(s, Method::POST, "/files").json(&json!({"name": "scene.png", "mimeType": "image/png"}))).await;
    let upload = f["uploadUrl"].as_str().expect("uploadUrl").to_string();
    let r = s.client.put(&upload).body(scene().0).send().await.expect("put");
    assert_eq!(r.status(), StatusCode::OK);
    f["id"].as_i64().expect("id")
}

async fn segment(s: &TestServer, body: Value) -> (StatusCode, Value) {
    s.send(vision(s, Method::POST, "/context/vision/segment").json(&body)).await
}

/// The SAM engine end to end with a small random-initialised checkpoint the test writes (no SAM weights can be
/// downloaded here): point, box and point+box prompts complete with valid polygons, scores and RLE, the engine
/// is echoed, and GrabCut stays selectable beside it. Random weights make the masks meaningless, so only the
/// plumbing is checked.
#[tokio::test]
async fn sam_engine_with_user_supplied_weights() {
    let dir = tempfile::tempdir().expect("tmp");
    let weights = dir.path().join("sam-small.safetensors");
    let spec = argus_vision::segmentation::sam::EncoderSpec::Vit {
        embed_dim: 32,
        depth: 2,
        heads: 2,
        global_attention: vec![1],
    };
    argus_vision::segmentation::sam::write_random_checkpoint(&spec, &weights, 3).expect("checkpoint");
    let s =
        TestServer::start_with(dir.path(), Options { sam_weights: Some(weights.clone()), ..Default::default() }).await;
    let id = upload_scene(&s).await;
    // Preparing the image (what the portal does when it opens one) encodes it ahead of the first prompt.
    let (st, prep) = s
        .send(vision(&s, Method::POST, "/context/vision/segment/prepare").json(&json!({"items": [{"fileId": id}]})))
        .await;
    assert_eq!(st, StatusCode::OK, "{prep}");
    assert_eq!((prep["engine"].as_str(), prep["items"][0]["fileId"].as_i64()), (Some("sam"), Some(id)));
    let done = wait_job(&s, prep["jobId"].as_i64().expect("jobId")).await;
    assert_eq!(done["status"], "Completed", "{done}");
    assert_eq!(done["items"][0]["segments"], json!([]));
    assert_eq!(s.argus.blobs.list("sam-embeddings/").await.expect("list").len(), 1);
    let bbox = json!({"xMin": 0.25, "yMin": 0.2, "xMax": 0.7, "yMax": 0.75});
    let prompts = [
        json!({"items": [{"fileId": id}], "points": [{"x": 0.5, "y": 0.5, "label": 1}], "rle": true}),
        json!({"items": [{"fileId": id}], "boundingBox": bbox, "engine": "sam"}),
        json!({"items": [{"fileId": id}], "boundingBox": bbox, "points": [{"x": 0.5, "y": 0.5}, {"x": 0.1, "y": 0.1, "label": 0}]}),
    ];
    for body in prompts {
        let (st, job) = segment(&s, body.clone()).await;
        assert_eq!(st, StatusCode::OK, "{job}");
        assert_eq!(job["engine"], "sam", "SAM is the default once weights are configured");
        let done = wait_job(&s, job["jobId"].as_i64().expect("jobId")).await;
        assert_eq!(done["status"], "Completed", "{body}: {done}");
        assert_eq!(done["engine"], "sam");
        let seg = &done["items"][0]["segments"][0];
        assert!((0.0..=1.0).contains(&seg["score"].as_f64().expect("score")), "{seg}");
        polygon_box(&done);
        if body["rle"] == true {
            assert_eq!(seg["rle"]["size"], json!([300, 400]));
            let total: u64 = seg["rle"]["counts"].as_array().expect("counts").iter().filter_map(Value::as_u64).sum();
            assert_eq!(total, 300 * 400);
        }
    }
    let (st, job) = segment(&s, json!({"items": [{"fileId": id}], "boundingBox": bbox, "engine": "grabcut"})).await;
    assert_eq!(st, StatusCode::OK, "{job}");
    let done = wait_job(&s, job["jobId"].as_i64().expect("jobId")).await;
    assert_eq!((done["status"].as_str(), done["engine"].as_str()), (Some("Completed"), Some("grabcut")));
    let (st, e) = segment(&s, json!({"items": [{"fileId": id}], "boundingBox": bbox, "engine": "sam2"})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");

    // The image was encoded once, and its embedding stored for every other process.
    let stored = s.argus.blobs.list("sam-embeddings/").await.expect("list");
    assert_eq!(stored.len(), 1, "{stored:?}");
    s.stop().await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // Another process (a fresh engine, nothing cached) segments the same file from the stored embedding: it
    // does not encode the image again, so it does not write the embedding again.
    let other =
        TestServer::start_with(dir.path(), Options { sam_weights: Some(weights.clone()), ..Default::default() }).await;
    let (st, job) = segment(&other, json!({"items": [{"fileId": id}], "boundingBox": bbox})).await;
    assert_eq!(st, StatusCode::OK, "{job}");
    let done = wait_job(&other, job["jobId"].as_i64().expect("jobId")).await;
    assert_eq!(done["status"], "Completed", "{done}");
    let again = other.argus.blobs.list("sam-embeddings/").await.expect("list");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].last_modified, stored[0].last_modified, "the stored embedding was reused, not rewritten");
    // Stored embeddings go with the segmentation retention.
    other.argus.sweep_vision_jobs(chrono::Duration::zero()).await.expect("sweep");
    assert!(other.argus.blobs.list("sam-embeddings/").await.expect("list").is_empty());
    other.stop().await;
}

/// Without weights, asking for SAM is a clear 400 that says how to enable it, and GrabCut (the default) works.
#[tokio::test]
async fn sam_without_weights_is_a_clear_error_and_grabcut_keeps_working() {
    let dir = tempfile::tempdir().expect("tmp");
    let missing = dir.path().join("no-such-sam.safetensors");
    for weights in [None, Some(missing)] {
        let s =
            TestServer::start_with(dir.path(), Options { sam_weights: weights.clone(), ..Default::default() }).await;
        let id = upload_scene(&s).await;
        let (st, e) =
            segment(&s, json!({"items": [{"fileId": id}], "points": [{"x": 0.5, "y": 0.5}], "engine": "sam"})).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
        let message = e["error"]["message"].as_str().expect("message");
        assert!(message.contains("ARGUS_SAM_WEIGHTS") && message.contains("grabcut"), "{message}");
        if weights.is_some() {
            assert!(message.contains("no-such-sam.safetensors"), "{message}");
        }
        let (st, job) = segment(&s, json!({"items": [{"fileId": id}], "points": [{"x": 0.5, "y": 0.5}]})).await;
        assert_eq!(st, StatusCode::OK, "{job}");
        assert_eq!(job["engine"], "grabcut");
        let done = wait_job(&s, job["jobId"].as_i64().expect("jobId")).await;
        assert_eq!(done["status"], "Completed", "{done}");
        s.stop().await;
    }
}

#[tokio::test]
async fn running_jobs_are_capped_per_project() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = TestServer::start_with(dir.path(), Options { max_running_vision_jobs: 0, ..Default::default() }).await;
    let (_, f) =
        s.send(vision(&s, Method::POST, "/files").json(&json!({"name": "a.png", "mimeType": "image/png"}))).await;
    let upload = f["uploadUrl"].as_str().expect("uploadUrl").to_string();
    s.client.put(&upload).body(scene().0).send().await.expect("put");
    let (st, e) = s
        .send(
            vision(&s, Method::POST, "/context/vision/segment")
                .json(&json!({"items": [{"fileId": f["id"]}], "points": [{"x": 0.5, "y": 0.5}]})),
        )
        .await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{e}");
    assert_eq!(e["error"]["code"], 429);
    let message = e["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("At most 0 segmentation jobs"), "the message names the cap: {message}");
}

/// Without SAM weights there is nothing to prepare: GrabCut answers at once, with no job; bad references are
/// refused like a segment request's.
#[tokio::test]
async fn preparing_without_sam_is_a_no_op() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(dir.path()).await;
    let id = upload_scene(&s).await;
    let (st, prep) = s
        .send(vision(&s, Method::POST, "/context/vision/segment/prepare").json(&json!({"items": [{"fileId": id}]})))
        .await;
    assert_eq!(st, StatusCode::OK, "{prep}");
    assert_eq!((prep["engine"].as_str(), prep["jobId"].is_null()), (Some("grabcut"), true), "{prep}");
    for bad in [json!({}), json!({"items": []}), json!({"items": [{"fileId": 999_999}]})] {
        let (st, e) = s.send(vision(&s, Method::POST, "/context/vision/segment/prepare").json(&bad)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {e}");
        assert!(e["error"]["message"].is_string(), "{e}");
    }
    s.stop().await;
}
