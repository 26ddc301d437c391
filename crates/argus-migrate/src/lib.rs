//! Moving projects into and out of Argus.
//!
//! - [`client`]: the Custom Vision Training API as a migration uses it, with retries on 429 and 5xx.
//! - [`journal`]: what a migration has done so far, so that a rerun resumes.
//! - [`customvision`]: `argus import customvision`, from any Custom Vision-compatible endpoint.
//! - [`dataset`]: `argus dataset export|import`, a project to and from COCO, YOLO or Pascal VOC.

pub mod client;
pub mod customvision;
pub mod dataset;
pub mod journal;
