//! Training over real HTTP with real photographs and the real pretrained backbone: TrainProject → durable
//! job → Completed iteration with cross-validated performance → publish → quick test.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const CROPS: [(f32, f32, f32, f32); 6] = [
    (0.0, 0.0, 0.8, 0.8),
    (0.2, 0.2, 0.8, 0.8),
    (0.1, 0.0, 0.85, 0.9),
    (0.0, 0.15, 0.9, 0.85),
    (0.15, 0.1, 0.7, 0.75),
    (0.05, 0.05, 0.9, 0.9),
];

async fn two_tag_project(s: &TestServer, query: &str) -> (String, String, String) {
    let p = s.project(query).await;
    let cat = s.tag(&p, "cat").await;
    let coffee = s.tag(&p, "coffee").await;
    let (chelsea, cup) = (photo("chelsea.png"), photo("coffee.png"));
    let cats = CROPS.iter().map(|c| crop_jpeg(&chelsea, c.0, c.1, c.2, c.3)).collect();
    let cups = CROPS.iter().map(|c| crop_jpeg(&cup, c.0, c.1, c.2, c.3)).collect();
    assert_eq!(s.upload(&p, cats, &format!("tagIds={cat}")).await.0, 200);
    assert_eq!(s.upload(&p, cups, &format!("tagIds={coffee}")).await.0, 200);
    (p, cat, coffee)
}

/// How many blobs (original, resized, thumbnail) an image has.
async fn image_blobs(s: &TestServer, project: &str, image: &str) -> usize {
    let keys = s.argus.blobs.list(&format!("projects/{project}/images/{image}/")).await.expect("list");
    keys.len()
}

#[tokio::test]
async fn classification_trains_evaluates_publishes_and_quick_tests() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(dir.path()).await;
    let (p, cat, coffee) = two_tag_project(&s, "name=T").await;

    // Validation before anything is queued.
    let lonely = s.project("name=Lonely").await;
    let t = s.tag(&lonely, "only").await;
    s.upload(&lonely, (0..5).map(jpeg).collect(), &format!("tagIds={t}")).await;
    assert_error(
        &s.call(Method::POST, &format!("/projects/{lonely}/train")).await,
        400,
        "BadRequestMultiClassClassificationTrainingValidationFailed",
    );
    let few = s.tag(&lonely, "few").await;
    s.upload(&lonely, (10..12).map(jpeg).collect(), &format!("tagIds={few}")).await;
    assert_error(
        &s.call(Method::POST, &format!("/projects/{lonely}/train")).await,
        400,
        "BadRequestClassificationTrainingValidationFailed",
    );
    assert_error(
        &s.call(Method::POST, &format!("/projects/{p}/train?trainingType=Advanced")).await,
        400,
        "BadRequestReservedBudgetInHoursNotEnoughForAdvancedTraining",
    );

    let r = s
        .send(
            s.req(Method::POST, &format!("/projects/{p}/train?reservedBudgetInHours=0&forceTrain=false"))
                .header("content-type", "application/json"),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["status"], "Training");
    let it = r.1["id"].as_str().expect("id").to_string();
    assert_error(
        &s.call(Method::POST, &format!("/projects/{p}/train")).await,
        400,
        "BadRequestTrainingAlreadyInProgress",
    );
    let export = format!("/projects/{p}/iterations/{it}/export?platform=ONNX");
    let (st, body) = s.call(Method::POST, &export).await;
    // Refused while training (or, if training already ended, because General is not a compact domain).
    assert_eq!(st, 400, "{body}");
    assert!(
        ["BadRequestExportWhileTraining", "BadRequestExportValidationFailed"]
            .contains(&body["code"].as_str().unwrap_or("")),
        "{body}"
    );
    let done = wait_trained(&s, &p, &it).await;
    assert_error(&s.call(Method::POST, &export).await, 400, "BadRequestExportValidationFailed");
    assert_eq!(done["exportable"], false, "General is not a compact domain: {done}");
    assert_eq!(s.call(Method::GET, &format!("/projects/{p}/iterations/{it}/export")).await.1, json!([]));
    assert_eq!(done["status"], "Completed", "{done}");
    assert!(done["trainedAt"].is_string());
    assert_error(&s.call(Method::POST, &format!("/projects/{p}/train")).await, 400, "BadRequestTrainingNotNeeded");

    // Honest evaluation: every image predicted by a head that never saw it.
    let (st, perf) = s.call(Method::GET, &format!("/projects/{p}/iterations/{it}/performance")).await;
    assert_eq!(st, 200, "{perf}");
    assert_eq!(perf["perTagPerformance"].as_array().map(Vec::len), Some(2));
    assert!(perf["precision"].as_f64().unwrap_or(0.0) >= 0.9, "{perf}");
    assert!(perf["averagePrecision"].as_f64().unwrap_or(0.0) >= 0.9, "{perf}");
    let (_, strict) =
        s.call(Method::GET, &format!("/projects/{p}/iterations/{it}/performance?threshold=0.999999")).await;
    assert!(strict["recall"].as_f64().unwrap_or(1.0) <= perf["recall"].as_f64().unwrap_or(0.0));
    assert_eq!(s.call(Method::GET, &format!("/projects/{p}/iterations/{it}/performance/images/count")).await.1, 12);
    assert_eq!(
        s.call(Method::GET, &format!("/projects/{p}/iterations/{it}/performance/images/count?tagIds={cat}")).await.1,
        6
    );
    let (_, imgs) =
        s.call(Method::GET, &format!("/projects/{p}/iterations/{it}/performance/images?take=3&orderBy=Oldest")).await;
    let imgs = imgs.as_array().expect("array");
    assert_eq!(imgs.len(), 3);
    assert_eq!(imgs[0]["predictions"].as_array().map(Vec::len), Some(2));
    assert!(imgs[0]["imageUri"].is_string() && imgs[0]["tags"][0]["tagName"].is_string());

    // The iteration's view stays true after the workspace changes.
    let (_, all) = s.call(Method::GET, &format!("/projects/{p}/images/tagged?tagIds={coffee}&take=1")).await;
    let first = all[0]["id"].as_str().expect("id").to_string();
    assert_eq!(
        s.call(Method::DELETE, &format!("/projects/{p}/images/tags?imageIds={first}&tagIds={coffee}")).await.0,
        204
    );
    let (_, tags) = s.call(Method::GET, &format!("/projects/{p}/tags?iterationId={it}")).await;
    let coffee_then =
        tags.as_array().expect("tags").iter().find(|t| t["name"] == "coffee").cloned().unwrap_or(Value::Null);
    assert_eq!(coffee_then["imageCount"], 6);
    assert_eq!(s.call(Method::GET, &format!("/projects/{p}/tags/{coffee}")).await.1["imageCount"], 5);
    assert_eq!(s.call(Method::GET, &format!("/projects/{p}/images/tagged/count?iterationId={it}")).await.1, 12);

    // Region proposals on a real photograph.
    let (st, props) = s.call(Method::POST, &format!("/projects/{p}/images/{first}/regionproposals")).await;
    assert_eq!(st, 200, "{props}");
    assert!(!props["proposals"].as_array().expect("proposals").is_empty(), "{props}");

    // Deleting without allIterations empties the workspace only: the iteration still shows the image (its
    // views and performance images), as the hosted service does. With allIterations it leaves them too.
    let (_, cats) = s.call(Method::GET, &format!("/projects/{p}/images/tagged?tagIds={cat}&take=1")).await;
    let second = cats[0]["id"].as_str().expect("id").to_string();
    assert_eq!(s.call(Method::DELETE, &format!("/projects/{p}/images?imageIds={first}")).await.0, 204);
    assert_eq!(s.call(Method::GET, &format!("/projects/{p}/images/count")).await.1, 11);
    assert_eq!(s.call(Method::GET, &format!("/projects/{p}/images/tagged/count?iterationId={it}")).await.1, 12);
    let (_, kept) = s.call(Method::GET, &format!("/projects/{p}/images/id?imageIds={first}&iterationId={it}")).await;
    assert_eq!(kept[0]["id"], first.as_str(), "{kept}");
    assert_eq!(kept[0]["tags"][0]["tagName"], "coffee", "the iteration's labels: {kept}");
    let original = kept[0]["originalImageUri"].as_str().expect("uri").to_string();
    assert_eq!(s.client.get(&original).send().await.expect("get").status(), 200, "the blobs stay");
    assert_eq!(s.call(Method::GET, &format!("/projects/{p}/images/id?imageIds={first}")).await.1, json!([]));
    assert_eq!(s.call(Method::GET, &format!("/projects/{p}/iterations/{it}/performance/images/count")).await.1, 12);
    let q = format!("/projects/{p}/images?imageIds={second}&allIterations=true");
    assert_eq!(s.call(Method::DELETE, &q).await.0, 202);
    assert_eq!(s.call(Method::GET, &format!("/projects/{p}/images/tagged/count?iterationId={it}")).await.1, 11);
    assert_eq!(s.call(Method::GET, &format!("/projects/{p}/iterations/{it}/performance/images/count")).await.1, 11);
    let (_, perf_imgs) =
        s.call(Method::GET, &format!("/projects/{p}/iterations/{it}/performance/images?take=20")).await;
    assert!(perf_imgs.as_array().expect("array").iter().all(|i| i["id"] != second.as_str()));
    assert_eq!(image_blobs(&s, &p, &second).await, 0);
    assert_eq!(image_blobs(&s, &p, &first).await, 3);

    // Rename, publish, quick test, unpublish, delete.
    let r =
        s.send(s.req(Method::PATCH, &format!("/projects/{p}/iterations/{it}")).json(&json!({"name": "First"}))).await;
    assert_eq!(r.1["name"], "First");
    assert_error(
        &s.call(Method::POST, &format!("/projects/{p}/iterations/{it}/publish?publishName=m")).await,
        400,
        "BadRequestInvalidPublishTarget",
    );
    let r = s
        .call(
            Method::POST,
            &format!("/projects/{p}/iterations/{it}/publish?publishName=catOrCoffee&predictionId=local"),
        )
        .await;
    assert_eq!(r, (StatusCode::OK, json!(true)));
    assert_eq!(s.call(Method::GET, &format!("/projects/{p}/iterations/{it}")).await.1["publishName"], "catOrCoffee");
    assert_error(
        &s.call(Method::DELETE, &format!("/projects/{p}/iterations/{it}")).await,
        400,
        "BadRequestIterationIsPublished",
    );

    let full_cat = crop_jpeg(&photo("chelsea.png"), 0.0, 0.0, 1.0, 1.0);
    let (st, pred) = s
        .send(
            s.req(Method::POST, &format!("/projects/{p}/quicktest/image"))
                .header("content-type", "application/octet-stream")
                .body(full_cat),
        )
        .await;
    assert_eq!(st, 200, "{pred}");
    assert_eq!(pred["predictions"][0]["tagName"], "cat", "{pred}");
    assert_eq!(pred["iteration"], it.as_str());
    let r = s
        .send(
            s.req(Method::POST, &format!("/projects/{p}/quicktest/image"))
                .header("content-type", "application/octet-stream")
                .body(b"nope".to_vec()),
        )
        .await;
    assert_error(&r, 400, "BadRequestImageFormat");

    assert_eq!(s.call(Method::DELETE, &format!("/projects/{p}/iterations/{it}/publish")).await.0, 204);
    assert_error(
        &s.call(Method::DELETE, &format!("/projects/{p}/iterations/{it}/publish")).await,
        400,
        "BadRequestIterationNotPublished",
    );
    assert_eq!(s.call(Method::DELETE, &format!("/projects/{p}/iterations/{it}")).await.0, 204);
    assert_error(&s.call(Method::GET, &format!("/projects/{p}/iterations/{it}")).await, 404, "NotFoundIteration");
    // No iteration shows the image deleted from the workspace any more: its blobs went with the iteration.
    assert_eq!(image_blobs(&s, &p, &first).await, 0);
    assert_error(&s.call(Method::POST, &format!("/projects/{p}/quicktest/image")).await, 415, "UnsupportedMediaType");
    s.stop().await;
}

/// Polls GetExports until the iteration's export to `platform` is Done; returns its entry.
async fn wait_export(s: &TestServer, project: &str, iteration: &str, platform: &str) -> Value {
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(600) {
        let (st, list) = s.call(Method::GET, &format!("/projects/{project}/iterations/{iteration}/export")).await;
        assert_eq!(st, 200, "{list}");
        let entry = list.as_array().into_iter().flatten().find(|e| e["platform"] == platform).cloned();
        match entry {
            Some(e) if e["status"] == "Done" => return e,
            Some(e) => assert_eq!(e["status"], "Exporting", "{e}"),
            None => panic!("no {platform} export listed: {list}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the export did not finish in 600 s");
}

/// QuickTestImage against one iteration: (tag name, probability) most probable first.
async fn quick_test(s: &TestServer, project: &str, iteration: &str, image: Vec<u8>) -> Vec<(String, f64)> {
    let (st, pred) = s
        .send(
            s.req(Method::POST, &format!("/projects/{project}/quicktest/image?iterationId={iteration}"))
                .header("content-type", "application/octet-stream")
                .body(image),
        )
        .await;
    assert_eq!(st, 200, "{pred}");
    pred["predictions"]
        .as_array()
        .expect("predictions")
        .iter()
        .map(|p| (p["tagName"].as_str().unwrap_or("").to_string(), p["probability"].as_f64().unwrap_or(-1.0)))
        .collect()
}

#[tokio::test]
async fn a_trained_project_moves_to_another_server_with_its_iterations_and_exports() {
    let (a_dir, b_dir) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    let a = TestServer::start(a_dir.path()).await;
    let b = TestServer::start_with(b_dir.path(), Options { allow_private_urls: true, ..Default::default() }).await;
    let (p, _, coffee) = two_tag_project(&a, "name=Moving&domainId=0732100f-1a38-4e49-a514-c9b44c697ab5").await;
    let (_, it) = a.call(Method::POST, &format!("/projects/{p}/train")).await;
    let it = it["id"].as_str().expect("id").to_string();
    let done = wait_trained(&a, &p, &it).await;
    assert_eq!(done["status"], "Completed", "{done}");
    assert_eq!(a.call(Method::POST, &format!("/projects/{p}/iterations/{it}/export?platform=ONNX")).await.0, 200);
    wait_export(&a, &p, &it, "ONNX").await;
    // An image the iteration shows but the workspace no longer has (deleted without allIterations).
    let (_, cups) = a.call(Method::GET, &format!("/projects/{p}/images/tagged?tagIds={coffee}&take=1")).await;
    let gone = cups[0]["id"].as_str().expect("id").to_string();
    assert_eq!(a.call(Method::DELETE, &format!("/projects/{p}/images?imageIds={gone}")).await.0, 204);
    let perf_a = a.call(Method::GET, &format!("/projects/{p}/iterations/{it}/performance")).await.1;
    let cat_photo = crop_jpeg(&photo("chelsea.png"), 0.0, 0.0, 1.0, 1.0);
    let pred_a = quick_test(&a, &p, &it, cat_photo.clone()).await;

    let (st, exp) = a.call(Method::GET, &format!("/projects/{p}/export")).await;
    assert_eq!(st, 200, "{exp}");
    assert_eq!((exp["iterationCount"].as_i64(), exp["imageCount"].as_i64()), (Some(1), Some(11)), "{exp}");
    let token = exp["token"].as_str().expect("token");
    let (st, copy) = b.send(b.req(Method::POST, "/projects/import").query(&[("token", token)])).await;
    assert_eq!(st, 200, "{copy}");
    let c = copy["id"].as_str().expect("id").to_string();

    // The iteration arrives trained, unpublished, under a new id, with the same name and figures.
    let (_, its) = b.call(Method::GET, &format!("/projects/{c}/iterations")).await;
    assert_eq!(its.as_array().map(Vec::len), Some(1), "{its}");
    let moved = its[0]["id"].as_str().expect("id").to_string();
    assert_ne!(moved, it);
    assert_eq!((its[0]["status"].clone(), its[0]["name"].clone()), (json!("Completed"), done["name"].clone()));
    assert_eq!((its[0]["publishName"].clone(), its[0]["exportable"].clone()), (json!(""), json!(true)));
    let perf_b = b.call(Method::GET, &format!("/projects/{c}/iterations/{moved}/performance")).await.1;
    for k in ["precision", "recall", "averagePrecision"] {
        assert_eq!(perf_a[k], perf_b[k], "{k}: {perf_a} vs {perf_b}");
    }
    assert_eq!(perf_b["perTagPerformance"].as_array().map(Vec::len), Some(2), "{perf_b}");
    assert_eq!(b.call(Method::GET, &format!("/projects/{c}/iterations/{moved}/performance/images/count")).await.1, 12);
    // The retained image's bytes came along: every performance image of the copy can be fetched.
    let (_, perf_imgs) =
        b.call(Method::GET, &format!("/projects/{c}/iterations/{moved}/performance/images?take=20")).await;
    let perf_imgs = perf_imgs.as_array().expect("array");
    assert_eq!(perf_imgs.len(), 12);
    for img in perf_imgs {
        let uri = img["imageUri"].as_str().expect("uri");
        assert_eq!(b.client.get(uri).send().await.expect("get").status(), 200, "{img}");
    }
    // The same model: the same predictions, to the bit.
    assert_eq!(quick_test(&b, &c, &moved, cat_photo).await, pred_a);
    // The finished ONNX export was queued again on the importing server, which rebuilds it.
    let onnx = wait_export(&b, &c, &moved, "ONNX").await;
    let uri = onnx["downloadUri"].as_str().expect("downloadUri");
    assert_eq!(b.client.get(uri).send().await.expect("get").status(), 200);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn multilabel_trains_too() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(dir.path()).await;
    let (p, _, _) = two_tag_project(&s, "name=M&classificationType=Multilabel").await;
    let (st, it) = s.call(Method::POST, &format!("/projects/{p}/train")).await;
    assert_eq!(st, 200, "{it}");
    let done = wait_trained(&s, &p, it["id"].as_str().expect("id")).await;
    assert_eq!(done["status"], "Completed", "{done}");
    assert_eq!(done["classificationType"], "Multilabel");
    let full_cup = crop_jpeg(&photo("coffee.png"), 0.0, 0.0, 1.0, 1.0);
    let (_, pred) = s
        .send(
            s.req(Method::POST, &format!("/projects/{p}/quicktest/image"))
                .header("content-type", "application/octet-stream")
                .body(full_cup),
        )
        .await;
    assert_eq!(pred["predictions"][0]["tagName"], "coffee", "{pred}");

    // Training is deterministic: the same photographs uploaded to another project (new, random image ids) train
    // the same model, to the bit.
    let iteration = it["id"].as_str().expect("id").to_string();
    let (again, _, _) = two_tag_project(&s, "name=M2&classificationType=Multilabel").await;
    let (_, it2) = s.call(Method::POST, &format!("/projects/{again}/train")).await;
    let iteration2 = it2["id"].as_str().expect("id").to_string();
    assert_eq!(wait_trained(&s, &again, &iteration2).await["status"], "Completed");
    let cat = crop_jpeg(&photo("chelsea.png"), 0.0, 0.0, 1.0, 1.0);
    assert_eq!(quick_test(&s, &again, &iteration2, cat.clone()).await, quick_test(&s, &p, &iteration, cat).await);
    s.stop().await;
}

/// Regular training uses the small backbone in compact domains and the larger one elsewhere: moving a trained
/// project from General (compact) to General is a change worth training again (not BadRequestTrainingNotNeeded),
/// and the new iteration is another model that still tells the tags apart.
#[tokio::test]
async fn regular_trains_on_the_larger_backbone_outside_compact_domains() {
    const COMPACT: &str = "0732100f-1a38-4e49-a514-c9b44c697ab5";
    const GENERAL: &str = "ee85a74c-405e-4adc-bb47-ffa8ca0c9f31";
    let dir = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(dir.path()).await;
    let (p, _, _) = two_tag_project(&s, &format!("name=Domains&domainId={COMPACT}")).await;
    let (st, it) = s.call(Method::POST, &format!("/projects/{p}/train")).await;
    assert_eq!(st, 200, "{it}");
    let compact = it["id"].as_str().expect("id").to_string();
    assert_eq!(wait_trained(&s, &p, &compact).await["status"], "Completed");
    let body = json!({"name": "Domains", "description": "", "settings": {"domainId": GENERAL}});
    let (st, v) = s.send(s.req(Method::PATCH, &format!("/projects/{p}")).json(&body)).await;
    assert_eq!(st, 200, "{v}");
    let (st, it) = s.call(Method::POST, &format!("/projects/{p}/train")).await;
    assert_eq!(st, 200, "moving to General calls for a new training: {it}");
    let larger = it["id"].as_str().expect("id").to_string();
    let done = wait_trained(&s, &p, &larger).await;
    assert_eq!(done["status"], "Completed", "{done}");
    assert_eq!(done["domainId"], GENERAL, "{done}");
    let cup = crop_jpeg(&photo("coffee.png"), 0.0, 0.0, 1.0, 1.0);
    let (a, b) = (quick_test(&s, &p, &compact, cup.clone()).await, quick_test(&s, &p, &larger, cup).await);
    assert_eq!((a[0].0.as_str(), b[0].0.as_str()), ("coffee", "coffee"), "{a:?} {b:?}");
    // The winning score saturates; the other tag's tells the models apart.
    let cat = |v: &[(String, f64)]| v.iter().find(|(t, _)| t == "cat").map(|p| p.1).unwrap_or(-1.0);
    let (ca, cb) = (cat(&a), cat(&b));
    assert!(
        ca > 0.0 && cb > 0.0 && (ca - cb).abs() > 1e-3 * ca.max(cb),
        "the same scores from another backbone: {a:?} {b:?}"
    );
    // Trained again on the same domain and photographs, nothing changed.
    assert_error(&s.call(Method::POST, &format!("/projects/{p}/train")).await, 400, "BadRequestTrainingNotNeeded");
    s.stop().await;
}

#[tokio::test]
async fn training_survives_a_crash_mid_job() {
    let dir = tempfile::tempdir().expect("tmp");
    let lease = std::time::Duration::from_millis(800);
    let s = TestServer::start_with(dir.path(), Options { lease, ..Default::default() }).await;
    let (p, _, _) = two_tag_project(&s, "name=Crash").await;
    let (st, it) = s.call(Method::POST, &format!("/projects/{p}/train")).await;
    assert_eq!(st, 200, "{it}");
    let it = it["id"].as_str().expect("id").to_string();
    // Wait until a worker has started on it, then crash.
    for _ in 0..200 {
        let (_, v) = s.call(Method::GET, &format!("/projects/{p}/iterations/{it}")).await;
        if v["trainingProgress"].as_f64().unwrap_or(0.0) > 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    s.kill().await;

    let s = TestServer::start_with(dir.path(), Options { lease, ..Default::default() }).await;
    let (_, during) = s.call(Method::GET, &format!("/projects/{p}/iterations/{it}")).await;
    assert_eq!(during["status"], "Training");
    let done = wait_trained(&s, &p, &it).await;
    assert_eq!(done["status"], "Completed", "{done}");
    assert_eq!(s.call(Method::GET, &format!("/projects/{p}/iterations/{it}/performance")).await.0, 200);
    s.stop().await;
}
