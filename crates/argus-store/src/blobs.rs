//! The blob store over `object_store`: a local directory or an S3-compatible bucket.
//!
//! For a local directory, `object_store` writes to a temporary file and renames it into place (atomic);
//! this type adds the `fsync` of the file and its directory so that a blob is durable before the row that
//! refers to it commits. On S3 a `PUT` is atomic and durable once it is answered, so the same ordering (blob
//! answered, then row committed) gives the same guarantee.

use std::path::PathBuf;
use std::sync::Arc;

use argus_core::store::{BlobMeta, BlobReader, BlobStore, ByteRange, StoreError, StoreResult};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload, WriteMultipart};

/// Part size of streamed uploads (S3 wants at least 5 MiB per part but the last).
const PART_BYTES: usize = 8 << 20;

/// Where an S3 blob store is.
#[derive(Debug, Clone, Default)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket (empty: its root).
    pub prefix: String,
    /// A self-hosted server's URL (plain `http://` is allowed for it); AWS when `None`.
    pub endpoint: Option<String>,
    /// Region (default `us-east-1`).
    pub region: Option<String>,
    /// Address the bucket in the path (`endpoint/bucket/key`) rather than in the host name.
    pub path_style: bool,
    /// Access key id and secret; `None`: from the environment.
    pub credentials: Option<(String, String)>,
}

/// Blobs in any `object_store` back end.
#[derive(Debug, Clone)]
pub struct ObjectBlobStore {
    store: Arc<dyn ObjectStore>,
    local_root: Option<PathBuf>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl ObjectBlobStore {
    /// Blobs under a local directory (created if missing).
    pub fn local(root: impl Into<PathBuf>) -> StoreResult<Self> {
        let root: PathBuf = root.into();
        std::fs::create_dir_all(&root).map_err(backend)?;
        let root = root.canonicalize().map_err(backend)?;
        let store = LocalFileSystem::new_with_prefix(&root).map_err(backend)?;
        Ok(Self { store: Arc::new(store), local_root: Some(root) })
    }

    /// Blobs in a bucket of an S3-compatible server. Credentials and anything else not given in `config` come
    /// from the standard `AWS_*` environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`, …).
    pub fn s3(config: &S3Config) -> StoreResult<Self> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_virtual_hosted_style_request(!config.path_style)
            .with_region(config.region.as_deref().unwrap_or("us-east-1"));
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some((id, secret)) = &config.credentials {
            builder = builder.with_access_key_id(id).with_secret_access_key(secret);
        }
        let s3 = builder.build().map_err(backend)?;
        let store: Arc<dyn ObjectStore> = if config.prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, config.prefix.as_str()))
        };
        Ok(Self::new(store))
    }

    /// The underlying `object_store` (for checks of what the server supports).
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store)
    }

    /// Blobs in any other `object_store` (S3-compatible, in-memory, …).
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store, local_root: None }
    }

    fn sync_local(&self, key: &str) -> StoreResult<()> {
        let Some(root) = &self.local_root else { return Ok(()) };
        let path = root.join(key);
        std::fs::File::open(&path).and_then(|f| f.sync_all()).map_err(backend)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(backend)?;
        }
        Ok(())
    }
}

fn path(key: &str) -> StoreResult<Path> {
    Path::parse(key).map_err(backend)
}

#[async_trait]
impl BlobStore for ObjectBlobStore {
    async fn put(&self, key: &str, bytes: Bytes) -> StoreResult<()> {
        self.store.put(&path(key)?, PutPayload::from_bytes(bytes)).await.map_err(backend)?;
        let this = self.clone();
        let key = key.to_string();
        tokio::task::spawn_blocking(move || this.sync_local(&key)).await.map_err(backend)?
    }

    async fn put_file(&self, key: &str, source: &std::path::Path) -> StoreResult<()> {
        use tokio::io::AsyncReadExt;
        let mut file = tokio::fs::File::open(source).await.map_err(backend)?;
        let upload = self.store.put_multipart(&path(key)?).await.map_err(backend)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).await.map_err(backend)?;
            if n == 0 {
                break;
            }
            writer.wait_for_capacity(4).await.map_err(backend)?;
            writer.write(&buf[..n]);
        }
        writer.finish().await.map_err(backend)?;
        let this = self.clone();
        let key = key.to_string();
        tokio::task::spawn_blocking(move || this.sync_local(&key)).await.map_err(backend)?
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Bytes>> {
        // A key that cannot be an object path (control characters, say) names no stored blob.
        let Ok(p) = Path::parse(key) else { return Ok(None) };
        match self.store.get(&p).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(backend)?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    async fn open(&self, key: &str, range: Option<ByteRange>) -> StoreResult<Option<BlobReader>> {
        let Ok(p) = Path::parse(key) else { return Ok(None) };
        // A whole blob is one request (its size comes with it); a range needs the size first, to clamp to it.
        let bounded = match range {
            None => None,
            Some(r) => {
                let total = match self.store.head(&p).await {
                    Ok(meta) => meta.size,
                    Err(object_store::Error::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(backend(e)),
                };
                let (start, end) = r.clamp(total);
                if start >= end {
                    let stream = futures::stream::empty().boxed();
                    return Ok(Some(BlobReader { total, start, end: start, stream }));
                }
                Some(GetRange::Bounded(start..end))
            }
        };
        match self.store.get_opts(&p, GetOptions { range: bounded, ..Default::default() }).await {
            Ok(r) => {
                let (total, served) = (r.meta.size, r.range.clone());
                let stream = r.into_stream().map_err(backend).boxed();
                Ok(Some(BlobReader { total, start: served.start, end: served.end, stream }))
            }
            // Absent, or deleted since the size was read.
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        match self.store.delete(&path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> StoreResult<()> {
        for meta in self.list(prefix).await? {
            self.delete(&meta.key).await?;
        }
        if let Some(root) = &self.local_root {
            let dir = root.join(prefix.trim_end_matches('/'));
            if dir.starts_with(root) && dir != *root {
                match tokio::fs::remove_dir_all(&dir).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(backend(e)),
                }
            }
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<BlobMeta>> {
        let p = path(prefix.trim_end_matches('/'))?;
        let items: Vec<_> = self.store.list(Some(&p)).try_collect().await.map_err(backend)?;
        Ok(items
            .into_iter()
            .map(|m| BlobMeta { key: m.location.to_string(), last_modified: m.last_modified })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_list_delete_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ObjectBlobStore::local(dir.path()).expect("store");
        store.put("projects/p/images/i/original", Bytes::from_static(b"abc")).await.expect("put");
        assert!(dir.path().join("projects/p/images/i/original").exists());
        assert_eq!(store.get("projects/p/images/i/original").await.expect("get").as_deref(), Some(&b"abc"[..]));
        assert!(store.get("projects/p/nothing").await.expect("get").is_none());
        assert_eq!(store.list("projects/").await.expect("list").len(), 1);
        store.delete_prefix("projects/p/").await.expect("delete");
        assert!(store.list("projects/").await.expect("list").is_empty());
        assert!(!dir.path().join("projects/p").exists());
        store.delete("projects/p/images/i/original").await.expect("idempotent delete");
    }

    async fn read(store: &ObjectBlobStore, key: &str, range: Option<ByteRange>) -> Option<(u64, u64, u64, Vec<u8>)> {
        let r = store.open(key, range).await.expect("open")?;
        let chunks: Vec<Bytes> = r.stream.try_collect().await.expect("read");
        Some((r.total, r.start, r.end, chunks.concat()))
    }

    #[tokio::test]
    async fn a_file_is_stored_in_parts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ObjectBlobStore::local(dir.path().join("blobs")).expect("store");
        let source = dir.path().join("big.bin");
        let body: Vec<u8> = (0..(PART_BYTES * 2 + 12_345)).map(|i| (i % 253) as u8).collect();
        std::fs::write(&source, &body).expect("write");
        store.put_file("exports/big.zip", &source).await.expect("put file");
        assert_eq!(store.get("exports/big.zip").await.expect("get").as_deref(), Some(body.as_slice()));
    }

    #[tokio::test]
    async fn blobs_stream_whole_or_by_range() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ObjectBlobStore::local(dir.path()).expect("store");
        store.put("a/b", Bytes::from_static(b"0123456789")).await.expect("put");
        assert_eq!(read(&store, "a/b", None).await, Some((10, 0, 10, b"0123456789".to_vec())));
        let r = |start, end| Some(ByteRange::From { start, end });
        assert_eq!(read(&store, "a/b", r(2, Some(5))).await, Some((10, 2, 6, b"2345".to_vec())));
        assert_eq!(read(&store, "a/b", r(7, None)).await, Some((10, 7, 10, b"789".to_vec())));
        assert_eq!(read(&store, "a/b", r(8, Some(99))).await, Some((10, 8, 10, b"89".to_vec())));
        assert_eq!(read(&store, "a/b", r(10, None)).await, Some((10, 10, 10, Vec::new())), "past the end: nothing");
        assert_eq!(read(&store, "a/b", Some(ByteRange::Last(3))).await, Some((10, 7, 10, b"789".to_vec())));
        assert_eq!(read(&store, "a/b", Some(ByteRange::Last(99))).await, Some((10, 0, 10, b"0123456789".to_vec())));
        assert_eq!(read(&store, "a/missing", None).await, None);
    }
}
