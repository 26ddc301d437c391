//! Segmentation prompts: GrabCut on the image's colours, or Segment Anything with its image embeddings shared
//! between processes through the port's [`SharedEmbeddings`] (a prompt on an image another worker already
//! encoded decodes at once here too, and an image encoded here is stored for the others).

use argus_core::compute::{RleMask, SegmentMethod, SegmentRequest, Segmentation, SharedEmbeddings};
use argus_vision::image::RgbImage;
use argus_vision::segmentation::sam::{ImageEmbedding, SamEngine};
use argus_vision::segmentation::segment::{self as seg, coco_rle, grabcut, mask_polygons, upsample_mask};
use sha2::{Digest, Sha256};

use crate::images::decode;
use crate::VisionEngine;

/// Reads the stored embedding of `key` into the engine's cache, unless it is cached already.
fn load_shared(sam: &SamEngine, key: &[u8; 32], shared: &dyn SharedEmbeddings) {
    if sam.cached(key).is_some() {
        return;
    }
    if let Some(stored) = shared.load(sam.fingerprint(), key) {
        match ImageEmbedding::from_bytes(&stored) {
            Ok(e) => sam.remember(*key, e),
            Err(e) => tracing::warn!(error = %e, "unreadable stored SAM embedding"),
        }
    }
}

fn store_shared(
    sam: &SamEngine,
    key: &[u8; 32],
    embedding: &ImageEmbedding,
    shared: &dyn SharedEmbeddings,
) -> Result<(), String> {
    shared.store(sam.fingerprint(), key, embedding.to_bytes().map_err(|e| e.to_string())?);
    Ok(())
}

/// Runs a prompt (see [`argus_core::compute::Compute::segment`]).
pub fn segment(
    engine: &VisionEngine,
    req: &SegmentRequest,
    shared: &dyn SharedEmbeddings,
) -> Result<Option<Segmentation>, String> {
    let decode =
        || -> Result<RgbImage, String> { Ok(decode(&req.image, req.limits).map_err(|e| e.to_string())?.0.to_rgb8()) };
    let points: Vec<seg::PromptPoint> =
        req.points.iter().map(|p| seg::PromptPoint { x: p.x, y: p.y, foreground: p.foreground }).collect();
    let bbox = req.bbox.map(|b| seg::PromptBox { x_min: b.x_min, y_min: b.y_min, x_max: b.x_max, y_max: b.y_max });
    if req.prepare {
        let sam = engine.sam()?;
        let key: [u8; 32] = Sha256::digest(&req.image).into();
        load_shared(&sam, &key, shared);
        if sam.cached(&key).is_none() {
            let embedding = sam.model().embed(&decode()?).map_err(|e| e.to_string())?;
            store_shared(&sam, &key, &embedding, shared)?;
            sam.remember(key, embedding);
        }
        return Ok(None);
    }
    let (mask, score, full) = match req.method {
        SegmentMethod::Sam => {
            let sam = engine.sam()?;
            let key: [u8; 32] = Sha256::digest(&req.image).into();
            load_shared(&sam, &key, shared);
            let m = sam.segment(key, decode, &points, bbox).map_err(|e| e.to_string())?;
            if !m.cached_embedding {
                if let Some(embedding) = sam.cached(&key) {
                    store_shared(&sam, &key, &embedding, shared)?;
                }
            }
            let full =
                if req.rle { Some(m.mask(m.original.0, m.original.1).map_err(|e| e.to_string())?) } else { None };
            (m.working_mask().map_err(|e| e.to_string())?, m.score, full)
        }
        SegmentMethod::GrabCut => {
            let rgb = decode()?;
            let s = grabcut(&rgb, &points, bbox);
            let full = req.rle.then(|| upsample_mask(&s.mask, rgb.width(), rgb.height()));
            (s.mask, s.score, full)
        }
    };
    Ok(Some(Segmentation {
        score,
        polygons: mask_polygons(&mask, req.min_area),
        rle: full.map(|f| RleMask { width: f.width(), height: f.height(), counts: coco_rle(&f) }),
    }))
}
