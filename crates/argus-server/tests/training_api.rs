//! Training API data plane over real HTTP: a real server on a loopback port, a real SQLite file, real
//! images through the real decoder.

mod common;

use base64::Engine as _;
use common::*;
use image::ImageFormat;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn auth_routing_and_unknown_routes() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(dir.path()).await;
    let r = s.send(s.client.get(format!("{}/projects", s.base))).await;
    assert_error(&r, 401, "Forbidden");
    let r = s.send(s.client.get(format!("{}/projects", s.base)).header("Training-Key", "nope")).await;
    assert_error(&r, 401, "Forbidden");
    for path in [
        "/customvision/v3.3/Training/domains",
        "/customvision/v3.4-preview/training/domains",
        "//customvision/V3.3/TRAINING/domains",
    ] {
        let r = s.send(s.client.get(format!("{}{path}", s.root)).header("training-key", KEY)).await;
        assert_eq!(r.0, StatusCode::OK, "{path}");
        assert_eq!(r.1.as_array().map(Vec::len), Some(18));
    }
    assert_error(&s.call(Method::GET, "/nothing/here").await, 404, "NotFound");
    assert_error(&s.call(Method::PUT, "/projects").await, 405, "BadRequestNotSupported");
    assert_eq!(s.client.get(format!("{}/healthz", s.root)).send().await.expect("h").status(), 200);
    assert_eq!(s.client.get(format!("{}/readyz", s.root)).send().await.expect("r").status(), 200);
    s.stop().await;
}

#[tokio::test]
async fn project_and_tag_validation() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(dir.path()).await;
    assert_error(&s.call(Method::POST, "/projects").await, 400, "BadRequestProjectName");
    assert_error(
        &s.call(Method::POST, "/projects?name=a&classificationType=Both").await,
        400,
        "BadRequestProjectUnknownClassification",
    );
    assert_error(
        &s.call(Method::POST, "/projects?name=a&domainId=not-a-guid").await,
        400,
        "BadRequestProjectUnknownDomain",
    );
    assert_error(
        &s.call(Method::POST, "/projects?name=a&targetExportPlatforms=Nope").await,
        400,
        "BadRequestProjectUnsupportedExportPlatform",
    );
    assert_error(&s.call(Method::GET, "/projects/not-a-guid").await, 400, "BadRequestInvalidIds");
    assert_error(&s.call(Method::GET, &format!("/projects/{}", uuid::Uuid::new_v4())).await, 404, "NotFoundProject");
    let p = s.project("name=P&domainId=0732100f-1a38-4e49-a514-c9b44c697ab5&targetExportPlatforms=ONNX,CoreML").await;
    let (_, v) = s.call(Method::GET, &format!("/projects/{p}")).await;
    assert_eq!(v["settings"]["targetExportPlatforms"], json!(["ONNX", "CoreML"]));

    // UpdateProject: content type, malformed JSON, domain type change; a rejected request changes nothing.
    let r =
        s.send(s.req(Method::PATCH, &format!("/projects/{p}")).header("content-type", "text/plain").body("x")).await;
    assert_error(&r, 415, "UnsupportedMediaType");
    let r = s
        .send(s.req(Method::PATCH, &format!("/projects/{p}")).header("content-type", "application/json").body("{oops"))
        .await;
    assert_error(&r, 400, "BadRequest");
    let body =
        json!({"name": "Q", "description": "", "settings": {"domainId": "da2e3a8a-40a5-4171-82f4-58522f70fbc1"}});
    assert_error(
        &s.send(s.req(Method::PATCH, &format!("/projects/{p}")).json(&body)).await,
        400,
        "BadRequestProjectUnsupportedDomainTypeChange",
    );
    assert_eq!(s.call(Method::GET, &format!("/projects/{p}")).await.1["name"], "P");
    let body = json!({"name": "Q", "description": "d", "settings": {"domainId": "ee85a74c-405e-4adc-bb47-ffa8ca0c9f31", "classificationType": "Multilabel"}});
    let (st, v) = s.send(s.req(Method::PATCH, &format!("/projects/{p}")).json(&body)).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["settings"]["classificationType"], "Multilabel");

    // Tags.
    assert_error(&s.call(Method::POST, &format!("/projects/{p}/tags")).await, 400, "BadRequestTagName");
    assert_error(
        &s.call(Method::POST, &format!("/projects/{p}/tags?name=x&type=Weird")).await,
        400,
        "BadRequestTagType",
    );
    let t = s.tag(&p, "apple").await;
    assert_error(
        &s.call(Method::POST, &format!("/projects/{p}/tags?name=APPLE")).await,
        400,
        "BadRequestTagNameNotUnique",
    );
    s.tag(&p, "pear").await;
    let r = s
        .send(
            s.req(Method::PATCH, &format!("/projects/{p}/tags/{t}"))
                .json(&json!({"name": "pear", "description": "", "type": "Regular"})),
        )
        .await;
    assert_error(&r, 400, "BadRequestTagNameNotUnique");
    assert_error(
        &s.call(Method::GET, &format!("/projects/{p}/tags/{}", uuid::Uuid::new_v4())).await,
        404,
        "NotFoundTag",
    );
    assert_error(
        &s.call(Method::GET, &format!("/projects/{p}/tags?iterationId={}", uuid::Uuid::new_v4())).await,
        404,
        "NotFoundIteration",
    );
    assert_eq!(s.call(Method::DELETE, &format!("/projects/{p}/tags/{t}")).await.0, 204);
    assert_eq!(s.call(Method::DELETE, &format!("/projects/{p}")).await.0, 204);
    assert_error(&s.call(Method::DELETE, &format!("/projects/{p}")).await, 404, "NotFoundProject");
    s.stop().await;
}

#[tokio::test]
async fn uploads_200_207_400_and_formats() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(dir.path()).await;
    let p = s.project("name=U").await;
    let t = s.tag(&p, "t").await;

    // Every supported format in one multipart batch: 200.
    let formats = [ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::Bmp, ImageFormat::Gif, ImageFormat::WebP];
    let imgs = formats.iter().enumerate().map(|(i, f)| image_bytes(i as u32, 40, 30, *f)).collect();
    let (st, v) = s.upload(&p, imgs, &format!("tagIds={t}")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["isBatchSuccessful"], true);
    for img in v["images"].as_array().expect("images") {
        assert_eq!(img["status"], "OK");
        assert_eq!((img["image"]["width"].as_u64(), img["image"]["height"].as_u64()), (Some(40), Some(30)));
        assert_eq!(img["image"]["tags"][0]["tagName"], "t");
    }

    // Raw octet-stream body.
    let r = s
        .send(
            s.req(Method::POST, &format!("/projects/{p}/images"))
                .header("content-type", "application/octet-stream")
                .body(jpeg(50)),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);

    // Partial success: 207 with per-image statuses, including a 6 MB+ image and a decompression bomb.
    let mut bomb = image_bytes(1, 1, 1, ImageFormat::Png);
    bomb[16..20].copy_from_slice(&50_000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&50_000u32.to_be_bytes());
    let big = vec![0xFFu8; 6 * 1024 * 1024 + 1];
    let (st, v) = s.upload(&p, vec![jpeg(60), b"garbage".to_vec(), big, bomb, jpeg(60)], "").await;
    assert_eq!(st, 207, "{v}");
    assert_eq!(v["isBatchSuccessful"], false);
    let statuses: Vec<&str> =
        v["images"].as_array().expect("a").iter().map(|i| i["status"].as_str().unwrap_or("")).collect();
    assert!(
        matches!(
            statuses.as_slice(),
            ["OK", "ErrorImageFormat", "ErrorImageSize", "ErrorImageSize" | "ErrorImageFormat", "OKDuplicate"]
        ),
        "{statuses:?}"
    );
    assert_eq!(v["images"][4]["image"]["id"], v["images"][0]["image"]["id"]);

    // Duplicates alone still make the batch unsuccessful (207), as the hosted service answers; the
    // multipart file name is the part's real name, unquoted.
    let boundary = "argus-test-boundary";
    let mut body = Vec::new();
    for (name, bytes) in [("horse.png", jpeg(60)), ("a \\\"b\\\".jpg", jpeg(61))] {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"imageData\"; filename=\"{name}\"\r\nContent-Type: image/jpeg\r\n\r\n").as_bytes());
        body.extend_from_slice(&bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let r = s
        .send(
            s.req(Method::POST, &format!("/projects/{p}/images"))
                .header("content-type", format!("multipart/form-data; boundary={boundary}"))
                .body(body),
        )
        .await;
    assert_eq!(r.0, 207, "{}", r.1);
    assert_eq!(r.1["isBatchSuccessful"], false);
    assert_eq!(r.1["images"][0]["status"], "OKDuplicate");
    assert_eq!(r.1["images"][0]["sourceUrl"], "horse.png");
    assert_eq!(r.1["images"][1]["status"], "OK");
    assert_eq!(r.1["images"][1]["sourceUrl"], "a \"b\".jpg");

    // Whole-request rejections change nothing.
    let before = s.call(Method::GET, &format!("/projects/{p}/images/count")).await.1;
    assert_error(
        &s.upload(&p, vec![jpeg(70)], &format!("tagIds={}", uuid::Uuid::new_v4())).await,
        400,
        "BadRequestImageTags",
    );
    assert_error(&s.upload(&p, (0..65).map(|i| jpeg(100 + i)).collect(), "").await, 400, "BadRequestExceededBatchSize");
    let r = s
        .send(s.req(Method::POST, &format!("/projects/{p}/images")).header("content-type", "text/plain").body("hi"))
        .await;
    assert_error(&r, 415, "UnsupportedMediaType");
    let many_tags = (0..21).map(|_| uuid::Uuid::new_v4().to_string()).collect::<Vec<_>>().join(",");
    assert_error(
        &s.upload(&p, vec![jpeg(71)], &format!("tagIds={many_tags}")).await,
        400,
        "BadRequestExceededBatchSize",
    );
    let body = json!({"images": [{"name": "a", "contents": base64::engine::general_purpose::STANDARD.encode(jpeg(72)),
        "regions": [{"tagId": t, "left": 0.5, "top": 0.5, "width": 0.6, "height": 0.1}]}]});
    assert_error(
        &s.send(s.req(Method::POST, &format!("/projects/{p}/images/files")).json(&body)).await,
        400,
        "BadRequestImageRegions",
    );
    assert_error(
        &s.call(Method::POST, &format!("/projects/{p}/images/files")).await,
        400,
        "BadRequestRequiredParamIsNull",
    );
    assert_eq!(s.call(Method::GET, &format!("/projects/{p}/images/count")).await.1, before);
    assert_eq!(before, 8);
    s.stop().await;
}

#[tokio::test]
async fn exif_orientation_is_honoured_on_upload() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(dir.path()).await;
    let p = s.project("name=E").await;
    let jpg = image_bytes(3, 40, 20, ImageFormat::Jpeg);
    let tiff: Vec<u8> =
        [b"MM\0\x2a\0\0\0\x08\0\x01".as_slice(), &[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0], &[0, 0, 0, 0]].concat();
    let seg = [b"Exif\0\0".as_slice(), &tiff].concat();
    let app1 = [&[0xFF, 0xE1][..], &((seg.len() + 2) as u16).to_be_bytes(), &seg].concat();
    let rotated = [&jpg[..2], &app1, &jpg[2..]].concat();
    let (st, v) = s.upload(&p, vec![rotated], "").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["images"][0]["image"]["width"].as_u64(), v["images"][0]["image"]["height"].as_u64()),
        (Some(20), Some(40))
    );
    s.stop().await;
}

#[tokio::test]
async fn listings_counts_filters_and_paging() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(dir.path()).await;
    let p = s.project("name=L").await;
    let a = s.tag(&p, "a").await;
    let b = s.tag(&p, "b").await;
    s.upload(&p, (0..5).map(jpeg).collect(), &format!("tagIds={a}")).await;
    s.upload(&p, (5..8).map(jpeg).collect(), &format!("tagIds={b}")).await;
    s.upload(&p, (8..10).map(jpeg).collect(), "").await;
    let sr = &s;
    let count = |q: String| async move { sr.call(Method::GET, &q).await.1 };
    assert_eq!(count(format!("/projects/{p}/images/count")).await, 10);
    assert_eq!(count(format!("/projects/{p}/images/count?taggingStatus=Tagged")).await, 8);
    assert_eq!(count(format!("/projects/{p}/images/count?taggingStatus=Untagged")).await, 2);
    assert_eq!(count(format!("/projects/{p}/images/tagged/count?tagIds={a}")).await, 5);
    assert_eq!(count(format!("/projects/{p}/images/tagged/count?tagIds={a},{b}")).await, 8);
    assert_eq!(count(format!("/projects/{p}/images/untagged/count")).await, 2);
    let (_, all) = s.call(Method::GET, &format!("/projects/{p}/images?take=256")).await;
    let ids: Vec<String> =
        all.as_array().expect("a").iter().map(|i| i["id"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(ids.len(), 10);
    let (_, page) = s.call(Method::GET, &format!("/projects/{p}/images?take=3&skip=3&orderBy=Newest")).await;
    assert_eq!(
        page.as_array().expect("a").iter().map(|i| i["id"].as_str().unwrap_or("")).collect::<Vec<_>>(),
        ids[3..6].iter().map(String::as_str).collect::<Vec<_>>()
    );
    let (_, oldest) = s.call(Method::GET, &format!("/projects/{p}/images?orderBy=Oldest&take=1")).await;
    assert_eq!(oldest[0]["id"].as_str(), ids.last().map(String::as_str));
    let (_, def) = s.call(Method::GET, &format!("/projects/{p}/images/untagged")).await;
    assert_eq!(def.as_array().map(Vec::len), Some(2));

    // Metadata and $filter.
    let first3 = ids[..3].join(",");
    let (st, v) = s
        .send(
            s.req(Method::POST, &format!("/projects/{p}/images/metadata?imageIds={first3}"))
                .json(&json!({"cam": "left", "site": "x"})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(count(format!("/projects/{p}/images/count?$filter=cam%20eq%20'left'")).await, 3);
    assert_eq!(count(format!("/projects/{p}/images/count?$filter=cam%20ne%20'left'")).await, 7);
    assert_eq!(count(format!("/projects/{p}/images/count?$filter=cam%20eq%20'left'%20and%20site%20eq%20'y'")).await, 0);
    assert_eq!(count(format!("/projects/{p}/images/count?$filter=cam%20eq%20'left'%20or%20site%20eq%20'y'")).await, 3);
    assert_error(&s.call(Method::GET, &format!("/projects/{p}/images?$filter=cam%20gt%201")).await, 400, "BadRequest");
    let fifty: serde_json::Map<String, Value> = (0..49).map(|i| (format!("k{i}"), json!("v"))).collect();
    let (st, v) = s
        .send(
            s.req(Method::POST, &format!("/projects/{p}/images/metadata?imageIds={},{}", ids[0], ids[9])).json(&fifty),
        )
        .await;
    assert_eq!(st, 207, "{v}");
    assert_eq!(v["images"][0]["status"], "ErrorLimitExceed");
    assert_eq!(v["images"][1]["status"], "OK");
    let r = s
        .send(
            s.req(Method::POST, &format!("/projects/{p}/images/metadata?imageIds={}", ids[0]))
                .json(&json!({"k": "v".repeat(513)})),
        )
        .await;
    assert_error(&r, 400, "BadRequestImageMetadataValue");
    let sixty_five = (0..65).map(|_| uuid::Uuid::new_v4().to_string()).collect::<Vec<_>>().join(",");
    let r = s
        .send(
            s.req(Method::POST, &format!("/projects/{p}/images/metadata?imageIds={sixty_five}"))
                .json(&json!({"k": "v"})),
        )
        .await;
    assert_error(&r, 400, "BadRequestExceededBatchSize");

    // Bad parameters.
    assert_error(&s.call(Method::GET, &format!("/projects/{p}/images?take=257")).await, 400, "BadRequest");
    assert_error(&s.call(Method::GET, &format!("/projects/{p}/images?orderBy=Random")).await, 400, "BadRequest");
    assert_error(&s.call(Method::GET, &format!("/projects/{p}/images?tagIds=zzz")).await, 400, "BadRequestInvalidIds");
    let many = (0..21).map(|_| uuid::Uuid::new_v4().to_string()).collect::<Vec<_>>().join(",");
    assert_error(
        &s.call(Method::GET, &format!("/projects/{p}/images/tagged?tagIds={many}")).await,
        400,
        "BadRequestExceededBatchSize",
    );

    // By ids (order kept, unknown skipped), delete by ids (204) and all (202).
    let (_, got) = s
        .call(Method::GET, &format!("/projects/{p}/images/id?imageIds={},{},{}", ids[2], uuid::Uuid::new_v4(), ids[0]))
        .await;
    assert_eq!(
        got.as_array().expect("a").iter().map(|i| i["id"].as_str().unwrap_or("")).collect::<Vec<_>>(),
        vec![ids[2].as_str(), ids[0].as_str()]
    );
    assert_eq!(s.call(Method::DELETE, &format!("/projects/{p}/images?imageIds={}", ids[0])).await.0, 204);
    assert_eq!(count(format!("/projects/{p}/images/count")).await, 9);
    assert_error(&s.call(Method::DELETE, &format!("/projects/{p}/images")).await, 400, "BadRequestInvalidIds");
    // allIterations alone, or with allImages=false, deletes only the named images (202, as the spec says).
    assert_error(
        &s.call(Method::DELETE, &format!("/projects/{p}/images?allIterations=true")).await,
        400,
        "BadRequestInvalidIds",
    );
    assert_eq!(count(format!("/projects/{p}/images/count")).await, 9);
    let q = format!("/projects/{p}/images?imageIds={},{}&allIterations=true", ids[1], ids[2]);
    assert_eq!(s.call(Method::DELETE, &q).await.0, 202);
    assert_eq!(count(format!("/projects/{p}/images/count")).await, 7);
    let (_, left) =
        s.call(Method::GET, &format!("/projects/{p}/images/id?imageIds={},{},{}", ids[1], ids[2], ids[3])).await;
    assert_eq!(left.as_array().map(Vec::len), Some(1), "only the named images are gone: {left}");
    let q = format!("/projects/{p}/images?imageIds={}&allIterations=true&allImages=false", ids[3]);
    assert_eq!(s.call(Method::DELETE, &q).await.0, 202);
    assert_eq!(count(format!("/projects/{p}/images/count")).await, 6);
    // Both flags: allImages wins and everything goes.
    let q = format!("/projects/{p}/images?allImages=true&allIterations=true");
    assert_eq!(s.call(Method::DELETE, &q).await.0, 202);
    assert_eq!(count(format!("/projects/{p}/images/count")).await, 0);
    let blobs = s.argus.blobs.list("projects/").await.expect("list");
    assert!(blobs.is_empty(), "{} blobs left", blobs.len());
    s.stop().await;
}

#[tokio::test]
async fn regions_created_duplicated_exceeded() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(dir.path()).await;
    let p = s.project("name=R&domainId=da2e3a8a-40a5-4171-82f4-58522f70fbc1").await;
    let t = s.tag(&p, "obj").await;
    let (_, v) = s.upload(&p, vec![jpeg(1)], "").await;
    let img = v["images"][0]["image"]["id"].as_str().expect("id").to_string();
    let region = |i: usize| json!({"imageId": img, "tagId": t, "left": (i % 10) as f64 * 0.05, "top": (i / 10) as f64 * 0.04, "width": 0.05, "height": 0.04});

    // 64 regions: 200, all created.
    let batch: Vec<Value> = (0..64).map(region).collect();
    let (st, v) =
        s.send(s.req(Method::POST, &format!("/projects/{p}/images/regions")).json(&json!({"regions": batch}))).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["created"].as_array().map(Vec::len), Some(64));
    assert!(
        v["created"][0]["regionId"].is_string()
            && v["created"][0]["tagName"] == "obj"
            && v["created"][0]["created"].is_string()
    );
    // 65 entries: 400, nothing created.
    let batch: Vec<Value> = (100..165).map(region).collect();
    assert_error(
        &s.send(s.req(Method::POST, &format!("/projects/{p}/images/regions")).json(&json!({"regions": batch}))).await,
        400,
        "BadRequestExceededBatchSize",
    );
    // Duplicate of an existing box: 207 with duplicated.
    let (st, v) = s
        .send(
            s.req(Method::POST, &format!("/projects/{p}/images/regions"))
                .json(&json!({"regions": [region(0), region(64)]})),
        )
        .await;
    assert_eq!(st, 207, "{v}");
    assert_eq!((v["created"].as_array().map(Vec::len), v["duplicated"].as_array().map(Vec::len)), (Some(1), Some(1)));
    // Fill up to the per-image limit (200), then one more is exceeded.
    for chunk in (65..200).collect::<Vec<_>>().chunks(64) {
        let batch: Vec<Value> = chunk.iter().map(|i| region(*i)).collect();
        assert_eq!(
            s.send(s.req(Method::POST, &format!("/projects/{p}/images/regions")).json(&json!({"regions": batch})))
                .await
                .0,
            200
        );
    }
    let extra = json!({"imageId": img, "tagId": t, "left": 0.9, "top": 0.9, "width": 0.01, "height": 0.01});
    let (st, v) =
        s.send(s.req(Method::POST, &format!("/projects/{p}/images/regions")).json(&json!({"regions": [extra]}))).await;
    assert_eq!(st, 207, "{v}");
    assert_eq!(v["exceeded"].as_array().map(Vec::len), Some(1));
    // Invalid boxes and references.
    for bad in [
        json!({"imageId": img, "tagId": t, "left": 0.8, "top": 0.0, "width": 0.3, "height": 0.1}),
        json!({"imageId": img, "tagId": t, "left": 0.1, "top": 0.1, "width": -0.1, "height": 0.1}),
        json!({"imageId": img, "tagId": uuid::Uuid::new_v4(), "left": 0.1, "top": 0.1, "width": 0.1, "height": 0.1}),
    ] {
        assert_error(
            &s.send(s.req(Method::POST, &format!("/projects/{p}/images/regions")).json(&json!({"regions": [bad]})))
                .await,
            400,
            "BadRequestImageRegions",
        );
    }
    // Argus's outline extension is checked too: rings of 3+ vertices inside the image.
    for polygon in [
        json!([[{"x": 0.1, "y": 0.1}, {"x": 0.2, "y": 0.1}]]),
        json!([[{"x": 0.1, "y": 0.1}, {"x": 1.2, "y": 0.1}, {"x": 0.1, "y": 0.3}]]),
        json!([]),
    ] {
        let bad = json!({"imageId": img, "tagId": t, "left": 0.1, "top": 0.1, "width": 0.1, "height": 0.2, "polygon": polygon});
        assert_error(
            &s.send(s.req(Method::POST, &format!("/projects/{p}/images/regions")).json(&json!({"regions": [bad]})))
                .await,
            400,
            "BadRequestImageRegions",
        );
    }
    let ghost =
        json!({"imageId": uuid::Uuid::new_v4(), "tagId": t, "left": 0.1, "top": 0.1, "width": 0.1, "height": 0.1});
    assert_error(
        &s.send(s.req(Method::POST, &format!("/projects/{p}/images/regions")).json(&json!({"regions": [ghost]}))).await,
        404,
        "NotFoundImage",
    );
    // Delete regions.
    let (_, imgv) = s.call(Method::GET, &format!("/projects/{p}/images/id?imageIds={img}")).await;
    let rid: Vec<String> = imgv[0]["regions"]
        .as_array()
        .expect("r")
        .iter()
        .take(3)
        .map(|r| r["regionId"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        s.call(Method::DELETE, &format!("/projects/{p}/images/regions?regionIds={}", rid.join(","))).await.0,
        204
    );
    let (_, imgv) = s.call(Method::GET, &format!("/projects/{p}/images/id?imageIds={img}")).await;
    assert_eq!(imgv[0]["regions"].as_array().map(Vec::len), Some(197));
    assert!(imgv[0]["regions"][0].get("polygon").is_none(), "a region without an outline has no polygon field");
    assert_error(&s.call(Method::DELETE, &format!("/projects/{p}/images/regions")).await, 400, "BadRequestInvalidIds");
    let (st, v) = s.call(Method::POST, &format!("/projects/{p}/images/{img}/regionproposals")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["imageId"], img.as_str());
    for prop in v["proposals"].as_array().expect("proposals") {
        let b = &prop["boundingBox"];
        let (l, w) = (b["left"].as_f64().unwrap_or(-1.0), b["width"].as_f64().unwrap_or(-1.0));
        assert!(l >= 0.0 && w > 0.0 && l + w <= 1.0 + 1e-9, "{prop}");
        assert!((0.0..=1.0).contains(&prop["confidence"].as_f64().unwrap_or(-1.0)));
    }
    let confidences: Vec<f64> =
        v["proposals"].as_array().into_iter().flatten().filter_map(|p| p["confidence"].as_f64()).collect();
    assert!(confidences.windows(2).all(|c| c[0] >= c[1]), "best first: {confidences:?}");
    let unknown = uuid::Uuid::new_v4();
    assert_error(
        &s.call(Method::POST, &format!("/projects/{p}/images/{unknown}/regionproposals")).await,
        404,
        "NotFoundImage",
    );
    s.stop().await;
}

#[tokio::test]
async fn url_uploads_are_guarded_against_ssrf() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(dir.path()).await; // private URLs not allowed
    let p = s.project("name=S").await;
    let body = json!({"images": [
        {"url": format!("{}/healthz", s.root)},
        {"url": "http://169.254.169.254/latest/meta-data"},
        {"url": "file:///etc/passwd"},
        {"url": "ftp://example.com/a.jpg"}
    ]});
    let (st, v) = s.send(s.req(Method::POST, &format!("/projects/{p}/images/urls")).json(&body)).await;
    assert_eq!(st, 207, "{v}");
    for img in v["images"].as_array().expect("a") {
        assert_eq!(img["status"], "ErrorSource");
    }
    s.stop().await;
}

#[tokio::test]
async fn signed_links_expire_and_artifacts_are_confined() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(dir.path()).await;
    let p = s.project("name=B").await;
    let (_, v) = s.upload(&p, vec![jpeg(5)], "").await;
    let img = &v["images"][0]["image"];
    let orig = img["originalImageUri"].as_str().expect("uri");
    assert!(orig.starts_with(&s.root));
    let resp = s.client.get(orig).send().await.expect("get");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.expect("b").as_ref(), jpeg(5).as_slice());
    // Byte ranges (how large packages are fetched in parts): a range, a suffix, an open end, one past the end.
    let whole = jpeg(5);
    let n = whole.len();
    for (range, want) in [
        ("bytes=0-1", (0, 1)),
        ("bytes=-2", (n - 2, n - 1)),
        (&format!("bytes={}-", n - 3) as &str, (n - 3, n - 1)),
        (&format!("bytes=5-{}", n + 100) as &str, (5, n - 1)),
    ] {
        let resp = s.client.get(orig).header("Range", range).send().await.expect("get");
        assert_eq!(resp.status(), 206, "{range}");
        let content_range = resp.headers()["content-range"].to_str().expect("ascii").to_string();
        assert_eq!(content_range, format!("bytes {}-{}/{n}", want.0, want.1), "{range}");
        assert_eq!(resp.bytes().await.expect("b").as_ref(), &whole[want.0..=want.1], "{range}");
    }
    let resp = s.client.get(orig).header("Range", format!("bytes={n}-")).send().await.expect("get");
    assert_eq!(resp.status(), 416);
    assert_eq!(resp.headers()["content-range"], format!("bytes */{n}").as_str());
    let resp = s.client.get(orig).header("Range", "bytes=0-1,4-5").send().await.expect("get");
    assert_eq!((resp.status().as_u16(), resp.headers()["accept-ranges"].to_str().ok()), (200, Some("bytes")));
    assert_eq!(resp.headers()["content-type"], "image/jpeg");
    let key = format!("projects/{p}/images/{}/original", img["id"].as_str().expect("id"));
    let past = chrono::Utc::now().timestamp() - 10;
    let sig = argus_core::signing::UrlSigner::new(SIGNING).sign(&key, past);
    assert_eq!(
        s.client.get(format!("{}/blobs/{key}?se={past}&sig={sig}", s.root)).send().await.expect("g").status(),
        403
    );
    assert_eq!(s.client.get(format!("{}/blobs/{key}", s.root)).send().await.expect("g").status(), 403);
    let r = s.call(Method::GET, &format!("/projects/{p}/artifacts?path=../../secrets.json")).await;
    assert_error(&r, 400, "BadRequestInvalidArtifactUri");
    let r = s.call(Method::GET, &format!("/projects/{p}/artifacts?path=images/none/original")).await;
    assert_error(&r, 404, "NotFound");
    s.stop().await;
}

#[tokio::test]
async fn data_survives_restart_and_orphans_are_swept() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(dir.path()).await;
    let p = s.project("name=D").await;
    let t = s.tag(&p, "t").await;
    let (st, v) = s.upload(&p, vec![jpeg(1), jpeg(2)], &format!("tagIds={t}")).await;
    assert_eq!(st, 200, "{v}");
    // A blob whose row never committed (as after a crash between the two writes).
    let orphan = format!("projects/{p}/images/{}/original", uuid::Uuid::new_v4());
    s.argus.blobs.put(&orphan, bytes::Bytes::from_static(b"half")).await.expect("put");
    s.stop().await;

    let s = TestServer::start(dir.path()).await;
    let (_, v) = s.call(Method::GET, &format!("/projects/{p}/images")).await;
    assert_eq!(v.as_array().map(Vec::len), Some(2));
    assert_eq!(s.call(Method::GET, &format!("/projects/{p}/tags/{t}")).await.1["imageCount"], 2);
    let report = s.argus.sweep_orphans(chrono::Duration::zero()).await.expect("sweep");
    assert_eq!(report.deleted, 1);
    assert!(s.argus.blobs.get(&orphan).await.expect("get").is_none());
    let uri = v[0]["thumbnailUri"].as_str().expect("uri");
    assert_eq!(s.client.get(uri).send().await.expect("get").status(), 200);
    s.stop().await;
}

#[tokio::test]
async fn image_quota_is_enforced() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = TestServer::start_with(dir.path(), Options { max_images_per_project: 2, ..Default::default() }).await;
    let p = s.project("name=Q").await;
    let (st, v) = s.upload(&p, vec![jpeg(1), jpeg(2), jpeg(3)], "").await;
    assert_eq!(st, 207, "{v}");
    assert_eq!(v["images"][2]["status"], "ErrorLimitExceed");
    assert_eq!(s.call(Method::GET, &format!("/projects/{p}/images/count")).await.1, 2);
    s.stop().await;
}

#[tokio::test]
async fn export_imports_on_another_server() {
    let a_dir = tempfile::tempdir().expect("tmp");
    let b_dir = tempfile::tempdir().expect("tmp");
    let a = TestServer::start(a_dir.path()).await;
    let b = TestServer::start_with(b_dir.path(), Options { allow_private_urls: true, ..Default::default() }).await;
    let p = a.project("name=Src&domainId=da2e3a8a-40a5-4171-82f4-58522f70fbc1").await;
    let t = a.tag(&p, "thing").await;
    // The region carries an outline (Argus extension): upload entries take it, and the project export keeps it.
    let outline = json!([[{"x": 0.1, "y": 0.2}, {"x": 0.4, "y": 0.2}, {"x": 0.25, "y": 0.6}]]);
    let body = json!({"images": [{"name": "x.jpg", "contents": base64::engine::general_purpose::STANDARD.encode(jpeg(9)),
        "regions": [{"tagId": t, "left": 0.1, "top": 0.2, "width": 0.3, "height": 0.4, "polygon": outline}]}],
        "metadata": {"m": "1"}});
    assert_eq!(a.send(a.req(Method::POST, &format!("/projects/{p}/images/files")).json(&body)).await.0, 200);
    a.upload(&p, vec![jpeg(10)], "").await;
    let (st, exp) = a.call(Method::GET, &format!("/projects/{p}/export")).await;
    assert_eq!(st, 200, "{exp}");
    assert_eq!(
        (exp["imageCount"].as_i64(), exp["tagCount"].as_i64(), exp["regionCount"].as_i64()),
        (Some(2), Some(1), Some(1))
    );
    let token = exp["token"].as_str().expect("token");
    let (st, copy) = b.send(b.req(Method::POST, "/projects/import").query(&[("token", token), ("name", "Copy")])).await;
    assert_eq!(st, 200, "{copy}");
    let c = copy["id"].as_str().expect("id");
    assert_eq!(copy["name"], "Copy");
    let (_, imgs) = b.call(Method::GET, &format!("/projects/{c}/images?orderBy=Oldest")).await;
    assert_eq!(imgs.as_array().map(Vec::len), Some(2));
    assert_eq!(imgs[0]["metadata"]["m"], "1");
    assert_eq!(imgs[0]["regions"][0]["tagName"], "thing");
    assert!((imgs[0]["regions"][0]["top"].as_f64().unwrap_or(0.0) - 0.2).abs() < 1e-9);
    assert_eq!(imgs[0]["regions"][0]["polygon"], outline);
    let orig = b
        .client
        .get(imgs[0]["originalImageUri"].as_str().expect("u"))
        .send()
        .await
        .expect("g")
        .bytes()
        .await
        .expect("b");
    assert_eq!(orig.as_ref(), jpeg(9).as_slice());
    // A tampered token is refused and leaves no project behind.
    let before = b.call(Method::GET, "/projects").await.1.as_array().map(Vec::len);
    assert_error(
        &b.send(b.req(Method::POST, "/projects/import").query(&[("token", "eyJ2IjoxfQ")])).await,
        400,
        "BadRequestInvalidImportToken",
    );
    assert_eq!(b.call(Method::GET, "/projects").await.1.as_array().map(Vec::len), before);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn metrics_count_and_time_requests_by_surface() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(dir.path()).await;
    s.project("name=M").await;
    let _ = s.call(Method::GET, "/projects").await;
    let r = s.client.get(format!("{}/metrics", s.root)).send().await.expect("metrics");
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().expect("ct").starts_with("text/plain"));
    let text = r.text().await.expect("body");
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("argus_http_requests_total{")
                && l.contains("group=\"training\"")
                && l.contains("method=\"GET\"")
        })
        .unwrap_or_else(|| panic!("no training GET counter in:\n{text}"));
    let count: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a number");
    assert!(count >= 1.0, "{line}");
    assert!(text.contains("argus_http_request_duration_seconds_bucket{group=\"training\",le=\"0.005\"}"), "{text}");
    // The queue depth is read at each scrape, every known kind reported.
    for kind in ["train", "export", "segment"] {
        assert!(text.contains(&format!("argus_jobs_queued{{kind=\"{kind}\"}} 0")), "{kind} queued in:\n{text}");
        assert!(text.contains(&format!("argus_jobs_running{{kind=\"{kind}\"}} 0")), "{kind} running in:\n{text}");
    }
}
