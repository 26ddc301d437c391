//! Argus core: the Custom Vision domain (wire models, error codes, limits, domains), the persistence
//! contracts, the use-case services that the HTTP layer calls, and the ports they need (store, blobs, queue, fetcher, and
//! [`compute`] for the vision engine). No HTTP server, no SQL, no tensors.

pub mod compute;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod domains;
pub mod error;
pub mod filter;
pub mod jobs;
pub mod limits;
pub mod model;
pub mod service;
pub mod signing;
pub mod store;

pub use error::{ApiError, ApiResult, ErrorCode};
pub use service::{Argus, ServiceConfig, UrlContext};
