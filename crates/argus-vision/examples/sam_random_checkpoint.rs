//! Writes a Segment Anything checkpoint with random weights, to try the `sam` engine's plumbing (or time it)
//! without real weights: `cargo run --release -p argus-vision --example sam_random_checkpoint -- OUT [vit-b|mobilesam|small]`.
//! Masks from random weights mean nothing.

use argus_vision::segmentation::sam::{write_random_checkpoint, EncoderSpec};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args.next().ok_or("usage: sam_random_checkpoint OUT [vit-b|mobilesam|small]")?;
    let spec = match args.next().as_deref().unwrap_or("small") {
        "vit-b" => EncoderSpec::vit_b(),
        "mobilesam" => EncoderSpec::TinyVit,
        "small" => EncoderSpec::Vit { embed_dim: 32, depth: 2, heads: 2, global_attention: vec![1] },
        other => return Err(format!("unknown shape {other}: vit-b, mobilesam or small").into()),
    };
    write_random_checkpoint(&spec, std::path::Path::new(&out), 1)?;
    println!("wrote {out} ({})", spec.name());
    Ok(())
}
