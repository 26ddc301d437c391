//! Interactive segmentation from point and box prompts: GrabCut on colour models with a min-cut ([`segment`],
//! [`maxflow`]) and the Segment Anything model ([`sam`]).

pub mod maxflow;
pub mod sam;
pub mod segment;
