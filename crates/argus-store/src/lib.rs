//! Argus persistence: the metadata repository over an embedded SQLite file ([`SqliteStore`]: WAL, full fsync,
//! migrations at start-up) or a PostgreSQL database for clusters ([`PostgresStore`]), and the blob store over
//! `object_store` ([`ObjectBlobStore`]: a local directory by default, or an S3-compatible bucket).

mod blobs;
mod fault;
mod postgres;
mod rows;
mod shared;
mod sqlite;

pub use blobs::{ObjectBlobStore, S3Config};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
