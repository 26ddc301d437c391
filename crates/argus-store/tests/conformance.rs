//! The store conformance suite (`argus_core::conformance`) on the SQLite store, each check on a fresh database.

use argus_store::SqliteStore;

#[tokio::test]
async fn sqlite_passes_the_store_conformance_suite() {
    let dir = tempfile::tempdir().expect("tmp");
    let counter = std::sync::atomic::AtomicUsize::new(0);
    argus_core::conformance::run(|| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.path().join(format!("db-{n}"));
        async move { SqliteStore::open(&path).await.expect("open a fresh SQLite store") }
    })
    .await;
}

/// The server the test command starts (`scripts/cluster-services.sh`), or `None` when the cluster tests are
/// switched off with `ARGUS_SKIP_CLUSTER=1`; anything else without a server is a failure, not a skip.
pub fn postgres_url() -> Option<String> {
    if let Ok(url) = std::env::var("ARGUS_TEST_POSTGRES_URL") {
        return Some(url);
    }
    if std::env::var("ARGUS_SKIP_CLUSTER").as_deref() == Ok("1") {
        eprintln!("SKIPPED: the PostgreSQL conformance suite (ARGUS_SKIP_CLUSTER=1)");
        return None;
    }
    panic!("ARGUS_TEST_POSTGRES_URL is not set: run `bash scripts/test.sh` (it starts PostgreSQL), or set ARGUS_SKIP_CLUSTER=1");
}

#[tokio::test]
async fn postgres_passes_the_store_conformance_suite() {
    let Some(url) = postgres_url() else { return };
    let base = url.rsplit_once('/').map(|(b, _)| b.to_string()).expect("a database URL");
    let run = uuid::Uuid::new_v4().simple().to_string();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    argus_core::conformance::run(|| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let url = format!("{base}/conformance_{run}_{n}");
        async move {
            argus_store::PostgresStore::create_database_if_missing(&url).await.expect("create a fresh database");
            argus_store::PostgresStore::connect(&url).await.expect("open a fresh PostgreSQL store")
        }
    })
    .await;
}
