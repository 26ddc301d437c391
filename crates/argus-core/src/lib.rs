//! Argus core: the Custom Vision domain (wire models, error codes, limits, domains), the persistence
//! contracts, and the use-case services that the HTTP layer calls. No HTTP server, no SQL, no tensors.

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
