//! The blob store on a real S3-compatible server (SeaweedFS, started by the test command; see
//! `scripts/cluster-services.sh`): what Argus relies on (put, get, list, delete under a prefix) and what the
//! server must offer a cluster (range reads, create-if-absent, refusing a wrong secret).

use argus_core::store::BlobStore;
use argus_store::{ObjectBlobStore, S3Config};
use bytes::Bytes;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};

fn config(prefix: &str) -> Option<S3Config> {
    let Ok(endpoint) = std::env::var("ARGUS_TEST_S3_ENDPOINT") else {
        if std::env::var("ARGUS_SKIP_CLUSTER").as_deref() == Ok("1") {
            eprintln!("SKIPPED: the S3 blob store tests (ARGUS_SKIP_CLUSTER=1)");
            return None;
        }
        panic!("ARGUS_TEST_S3_ENDPOINT is not set: run `bash scripts/test.sh` (it starts SeaweedFS), or set ARGUS_SKIP_CLUSTER=1");
    };
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
    Some(S3Config {
        bucket: var("ARGUS_TEST_S3_BUCKET"),
        prefix: format!("{prefix}-{}", uuid::Uuid::new_v4().simple()),
        endpoint: Some(endpoint),
        region: None,
        path_style: true,
        credentials: Some((var("ARGUS_TEST_S3_ACCESS_KEY"), var("ARGUS_TEST_S3_SECRET_KEY"))),
    })
}

#[tokio::test]
async fn blobs_round_trip_under_a_prefix_on_s3() {
    let Some(cfg) = config("blobs") else { return };
    let store = ObjectBlobStore::s3(&cfg).expect("configure");
    let body = Bytes::from((0..200_000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    store.put("projects/p/images/i/original", body.clone()).await.expect("put");
    store.put("projects/p/images/j/original", Bytes::from_static(b"j")).await.expect("put");
    store.put("projects/q/images/k/original", Bytes::from_static(b"k")).await.expect("put");
    assert_eq!(store.get("projects/p/images/i/original").await.expect("get"), Some(body.clone()));
    assert_eq!(store.get("projects/p/nothing").await.expect("get"), None);
    // Streamed by range, as the signed links serve large packages.
    let part = store
        .open("projects/p/images/i/original", Some(argus_core::store::ByteRange::From { start: 1000, end: Some(1999) }))
        .await
        .expect("open")
        .expect("present");
    assert_eq!((part.total, part.start, part.end), (200_000, 1000, 2000));
    let chunks: Vec<Bytes> = futures::TryStreamExt::try_collect(part.stream).await.expect("stream");
    assert_eq!(chunks.concat(), body[1000..2000].to_vec());
    let mut keys: Vec<String> = store.list("projects/p/").await.expect("list").into_iter().map(|m| m.key).collect();
    keys.sort();
    assert_eq!(keys, ["projects/p/images/i/original", "projects/p/images/j/original"]);
    // A file larger than one upload part goes up in parts.
    let dir = tempfile::tempdir().expect("tmp");
    let big: Vec<u8> = (0..(17u32 << 20)).map(|i| (i % 241) as u8).collect();
    std::fs::write(dir.path().join("big"), &big).expect("write");
    store.put_file("projects/q/exports/big.zip", &dir.path().join("big")).await.expect("put file");
    assert_eq!(store.get("projects/q/exports/big.zip").await.expect("get").as_deref(), Some(big.as_slice()));
    store.delete_prefix("projects/p/").await.expect("delete prefix");
    assert!(store.list("projects/p/").await.expect("list").is_empty());
    assert_eq!(store.list("projects/").await.expect("list").len(), 2, "another prefix is untouched");
    store.delete("projects/p/images/i/original").await.expect("deleting a missing blob is not an error");
}

#[tokio::test]
async fn the_server_offers_range_reads_and_create_if_absent() {
    let Some(cfg) = config("features") else { return };
    let store = ObjectBlobStore::s3(&cfg).expect("configure").object_store();
    let path = object_store::path::Path::from("ranged");
    store.put(&path, PutPayload::from_static(b"0123456789")).await.expect("put");
    let part = store.get_range(&path, 2..6).await.expect("range read");
    assert_eq!(&part[..], b"2345");
    let create = PutOptions { mode: PutMode::Create, ..Default::default() };
    let fresh = object_store::path::Path::from("created-once");
    store.put_opts(&fresh, PutPayload::from_static(b"first"), create.clone()).await.expect("create");
    let again = store.put_opts(&fresh, PutPayload::from_static(b"second"), create).await;
    assert!(matches!(again, Err(object_store::Error::AlreadyExists { .. })), "{again:?}");
    let kept = store.get(&fresh).await.expect("get").bytes().await.expect("bytes");
    assert_eq!(&kept[..], b"first");
}

#[tokio::test]
async fn a_wrong_secret_is_refused() {
    let Some(mut cfg) = config("auth") else { return };
    if let Some((_, secret)) = cfg.credentials.as_mut() {
        secret.push_str("-wrong");
    }
    let store = ObjectBlobStore::s3(&cfg).expect("configure");
    let put = store.put("refused", Bytes::from_static(b"x")).await;
    assert!(put.is_err(), "a put with a wrong secret must fail");
    let get = store.get("refused").await;
    assert!(get.is_err(), "a get with a wrong secret must fail, not read as missing: {get:?}");
}
