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
