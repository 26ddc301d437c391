//! Argus persistence: [`SqliteStore`] implements the metadata repository over an embedded SQLite file (WAL,
//! full fsync, migrations at start-up) and [`ObjectBlobStore`] implements the blob store over
//! `object_store` (a local directory by default; S3-compatible stores plug into the same type).

mod blobs;
mod fault;
mod sqlite;

pub use blobs::ObjectBlobStore;
pub use sqlite::SqliteStore;
