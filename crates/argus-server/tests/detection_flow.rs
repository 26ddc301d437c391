//! Object detection over real HTTP: regions drawn on scenes composited from real photographs → TrainProject
//! → cross-validated mAP with `overlapThreshold` → performance images with boxes → publish → quick test finds
//! the object on a scene built on a background it never saw.

mod common;

use std::io::Cursor;

use argus_vision::composite::{detection_set, scenes, Scene};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const DETECTION_DOMAIN: &str = "da2e3a8a-40a5-4171-82f4-58522f70fbc1";

fn scene_jpeg(scene: &Scene) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(scene.image.clone()).write_to(&mut out, image::ImageFormat::Jpeg).expect("encode");
    out.into_inner()
}

#[tokio::test]
async fn detection_trains_evaluates_publishes_and_finds_objects() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(dir.path()).await;
    let set = detection_set(&argus_vision_models_dir().join("photos")).expect("photos");
    // Two tags: cat and cup.
    let objects = &set.objects[..2];
    let train = scenes(objects, &set.train_backgrounds, 15, 512, 11);
    let p = s.project(&format!("name=Det&domainId={DETECTION_DOMAIN}")).await;
    let tags = [s.tag(&p, "cat").await, s.tag(&p, "cup").await];

    // Upload with regions (ImageFileCreateBatch with regions), all but one cup scene first.
    let entries: Vec<Value> = train
        .iter()
        .enumerate()
        .map(|(i, sc)| {
            let regions: Vec<Value> = sc
                .boxes
                .iter()
                .map(|b| {
                    json!({"tagId": tags[b.class], "left": b.left, "top": b.top, "width": b.width, "height": b.height})
                })
                .collect();
            json!({"name": format!("scene{i}.jpg"), "contents": B64.encode(scene_jpeg(sc)), "regions": regions})
        })
        .collect();
    // Hold back cup scenes until only 14 images have a cup box.
    let with_cup: Vec<usize> = (0..train.len()).filter(|i| train[*i].boxes.iter().any(|b| b.class == 1)).collect();
    let held_back: Vec<usize> = with_cup[14..].to_vec();
    let first: Vec<Value> =
        entries.iter().enumerate().filter(|(i, _)| !held_back.contains(i)).map(|(_, e)| e.clone()).collect();
    for chunk in first.chunks(16) {
        let r =
            s.send(s.req(Method::POST, &format!("/projects/{p}/images/files")).json(&json!({"images": chunk}))).await;
        assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    }
    // 14 cup images: the detection minimum of 15 is not met.
    assert_error(
        &s.call(Method::POST, &format!("/projects/{p}/train")).await,
        400,
        "BadRequestDetectionTrainingValidationFailed",
    );
    let rest: Vec<Value> = held_back.iter().map(|i| entries[*i].clone()).collect();
    let r = s.send(s.req(Method::POST, &format!("/projects/{p}/images/files")).json(&json!({"images": rest}))).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);

    let (st, it) = s.call(Method::POST, &format!("/projects/{p}/train")).await;
    assert_eq!(st, StatusCode::OK, "{it}");
    let id = it["id"].as_str().expect("id").to_string();
    let it = wait_trained(&s, &p, &id).await;
    assert_eq!(it["status"], "Completed", "{it}");

    let (st, perf) = s.call(Method::GET, &format!("/projects/{p}/iterations/{id}/performance")).await;
    assert_eq!(st, StatusCode::OK, "{perf}");
    let map = perf["averagePrecision"].as_f64().expect("mAP");
    assert!(map > 0.5, "cross-validated mAP@0.3 {map}: {perf}");
    assert_eq!(perf["perTagPerformance"].as_array().map(Vec::len), Some(2));
    // A stricter overlap can only lower the average precision.
    let (_, strict) =
        s.call(Method::GET, &format!("/projects/{p}/iterations/{id}/performance?overlapThreshold=0.9")).await;
    assert!(strict["averagePrecision"].as_f64().expect("mAP") < map, "{strict}");
    assert_error(
        &s.call(Method::GET, &format!("/projects/{p}/iterations/{id}/performance?overlapThreshold=2")).await,
        400,
        "BadRequest",
    );

    let (st, images) = s.call(Method::GET, &format!("/projects/{p}/iterations/{id}/performance/images?take=5")).await;
    assert_eq!(st, StatusCode::OK, "{images}");
    let first = &images.as_array().expect("list")[0];
    assert!(!first["regions"].as_array().expect("regions").is_empty());
    let bb = &first["predictions"][0]["boundingBox"];
    assert!(bb["width"].as_f64().expect("width") > 0.0, "{first}");

    // Quick test on a scene whose background was never seen.
    let test = scenes(objects, &set.test_backgrounds, 1, 512, 5);
    let cup_scene = test.iter().find(|sc| sc.boxes[0].class == 1).expect("cup scene");
    let r = s
        .send(
            s.req(Method::POST, &format!("/projects/{p}/quicktest/image?iterationId={id}"))
                .header("Content-Type", "application/octet-stream")
                .body(scene_jpeg(cup_scene)),
        )
        .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let top = &r.1["predictions"][0];
    assert_eq!(top["tagId"], tags[1].as_str(), "{}", r.1);
    let b = cup_scene.boxes[0];
    let (l, t) = (top["boundingBox"]["left"].as_f64().expect("l"), top["boundingBox"]["top"].as_f64().expect("t"));
    let (w, h) = (top["boundingBox"]["width"].as_f64().expect("w"), top["boundingBox"]["height"].as_f64().expect("h"));
    let ix = ((l + w).min((b.left + b.width) as f64) - l.max(b.left as f64)).max(0.0);
    let iy = ((t + h).min((b.top + b.height) as f64) - t.max(b.top as f64)).max(0.0);
    let iou = ix * iy / (w * h + (b.width * b.height) as f64 - ix * iy);
    assert!(iou > 0.5, "IoU {iou} of {top} with {b:?}");
    // Published, it answers on the Prediction API's detect routes (stored and not), not on classify.
    let (st, _) = s
        .call(Method::POST, &format!("/projects/{p}/iterations/{id}/publish?publishName=boxes&predictionId=res"))
        .await;
    assert_eq!(st, StatusCode::OK);
    for tail in ["image", "image/nostore"] {
        let r = s
            .send(s.predict_req("v3.1", &format!("/{p}/detect/iterations/boxes/{tail}")).body(scene_jpeg(cup_scene)))
            .await;
        assert_eq!(r.0, StatusCode::OK, "{}", r.1);
        assert_eq!(r.1["predictions"][0]["tagId"], tags[1].as_str(), "{}", r.1);
        assert!(r.1["predictions"][0]["boundingBox"]["left"].is_number());
        assert!(r.1["predictions"].as_array().map(Vec::len).unwrap_or(0) <= 200);
    }
    let r = s
        .send(s.predict_req("v3.1", &format!("/{p}/classify/iterations/boxes/image")).body(scene_jpeg(cup_scene)))
        .await;
    assert_error(&r, 400, "BadRequestNotSupported");
    let (_, stored) = s.send(s.req(Method::POST, &format!("/projects/{p}/predictions/query")).json(&json!({}))).await;
    // The quick test above and the stored detect call.
    assert_eq!(stored["results"].as_array().map(Vec::len), Some(2), "{stored}");

    // Nothing changed: training again is not needed.
    assert_error(&s.call(Method::POST, &format!("/projects/{p}/train")).await, 400, "BadRequestTrainingNotNeeded");
}
