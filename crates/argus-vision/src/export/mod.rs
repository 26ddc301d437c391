//! Model export writers: trained Argus models as files other runtimes load. [`onnx`] holds the ONNX schema
//! subset and a graph builder; [`classifier_onnx`] writes a classifier (backbone, framing and head) and
//! [`detector::detector_onnx`] a detector (backbone, dense head, second stage, suppression) as one ONNX graph
//! that computes what the server computes.

pub mod detector;
pub mod onnx;

use crate::backbone::{block_plan, fold, Weights, INPUT_MEAN, INPUT_SCALE};
use crate::heads::classifier::{Framing, HeadKind, LinearHead, Pooling};
use crate::kernels::same_padding;
use onnx::{tensor_info, AttributeProto, GraphBuilder, FLOAT};

/// Name of the classifier's input: `[1, 3, S, S]` float RGB in 0–255 (the framed image; see [`classifier_onnx`]).
pub const CLASSIFIER_INPUT: &str = "data";
/// Name of the classifier's output: `[1, C]` probabilities in `labels.txt` order.
pub const CLASSIFIER_OUTPUT: &str = "model_output";

/// Numeric precision of the weights in an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// FP32 weights.
    Float32,
    /// Weights rounded to FP16 (computed in FP32): half the file size.
    Float16,
}

/// Writes a classifier as an ONNX model (opset 13): input [`CLASSIFIER_INPUT`] `[1, 3, S, S]` float RGB 0–255
/// of the already framed image (for centre-crop heads: the central square of 224/256 of the shorter side,
/// resized to `S` with a triangle filter), output [`CLASSIFIER_OUTPUT`] `[1, C]` probabilities (softmax, or a
/// sigmoid per tag for multilabel heads). Inside the graph: the server's normalisation, the mirror image scored
/// beside the image (features averaged), the backbone with BatchNorm folded, the head's pooling and its
/// standardised linear map. `weights` is the backbone checkpoint (safetensors) the head was trained on.
/// Deterministic bytes.
pub fn classifier_onnx(
    weights: &std::path::Path,
    head: &LinearHead,
    precision: Precision,
) -> Result<Vec<u8>, crate::weights::WeightsError> {
    let weights = crate::weights::load_safetensors(weights)?;
    Ok(classifier_graph(&weights, head, precision)?)
}

fn classifier_graph(weights: &Weights, head: &LinearHead, precision: Precision) -> candle_core::Result<Vec<u8>> {
    let mut g = GraphBuilder::new(precision == Precision::Float16);
    let size = head.input_size as usize;
    let (mean, scale) = (g.scalar(INPUT_MEAN), g.scalar(1.0 / INPUT_SCALE));
    let centred = g.node("Sub", &[CLASSIFIER_INPUT, &mean], vec![]);
    let mut x = g.node("Mul", &[&centred, &scale], vec![]);
    let mirrored = head.framing == Framing::CentreCrop;
    if mirrored {
        // The image and its mirror as a batch of two (reverse the width axis).
        let (starts, ends, axes, steps) = (g.int64s(&[-1]), g.int64s(&[i64::MIN]), g.int64s(&[3]), g.int64s(&[-1]));
        let flipped = g.node("Slice", &[&x, &starts, &ends, &axes, &steps], vec![]);
        x = g.node("Concat", &[&x, &flipped], vec![AttributeProto::int("axis", 0)]);
    }
    let (_, top) = backbone(&mut g, weights, &x, size)?;
    let mean_pool = g.node("GlobalAveragePool", &[&top], vec![]);
    let pooled = match head.pooling {
        Pooling::Mean => mean_pool,
        Pooling::MeanMax => {
            let max_pool = g.node("GlobalMaxPool", &[&top], vec![]);
            g.node("Concat", &[&mean_pool, &max_pool], vec![AttributeProto::int("axis", 1)])
        }
    };
    let mut feature = g.node("Flatten", &[&pooled], vec![AttributeProto::int("axis", 1)]);
    if mirrored {
        feature = g.node(
            "ReduceMean",
            &[&feature],
            vec![AttributeProto::ints("axes", &[0]), AttributeProto::int("keepdims", 1)],
        );
    }
    let (w, b) = head.folded_affine();
    let classes = head.classes();
    let dim = w.len() / classes.max(1);
    let (wn, bn) = (g.floats(&[classes, dim], &w), g.floats(&[classes], &b));
    let logits = g.node("Gemm", &[&feature, &wn, &bn], vec![AttributeProto::int("transB", 1)]);
    match head.kind {
        HeadKind::Multiclass => {
            g.node_into("Softmax", &[&logits], vec![AttributeProto::int("axis", 1)], CLASSIFIER_OUTPUT)
        }
        HeadKind::Multilabel => g.node_into("Sigmoid", &[&logits], vec![], CLASSIFIER_OUTPUT),
    }
    let s = size as i64;
    Ok(g.finish(
        "argus_classifier",
        vec![tensor_info(CLASSIFIER_INPUT, FLOAT, &[1, 3, s, s])],
        vec![tensor_info(CLASSIFIER_OUTPUT, FLOAT, &[1, classes as i64])],
        &image_metadata(),
        "Argus image classifier: EfficientNet-Lite features and a linear head.",
    ))
}

/// The `metadata_props` of every exported model: the input is 8-bit sRGB, RGB order, values 0–255 (the keys
/// Windows ML and the hosted service's exports carry).
pub(crate) fn image_metadata() -> [(&'static str, String); 3] {
    [
        ("Image.BitmapPixelFormat", "Rgb8".to_string()),
        ("Image.ColorSpaceGamma", "SRGB".to_string()),
        ("Image.NominalPixelRange", "Normalized_0_255".to_string()),
    ]
}

/// The EfficientNet-Lite backbone up to its head convolution (ReLU6 applied), as in [`crate::backbone`]: TF
/// SAME padding, BatchNorm folded. Returns the names of the stride-16 map (the output of the last block before
/// stage 5, what the detector reads) and of the top feature map.
pub(crate) fn backbone(
    g: &mut GraphBuilder,
    w: &Weights,
    input: &str,
    size: usize,
) -> candle_core::Result<(String, String)> {
    let (mut x, mut hw) = conv(g, w, input, "_conv_stem", "_bn0", 2, false, true, size)?;
    let plan = block_plan(w)?;
    let s16_block = plan.iter().rposition(|b| b.5 < 5).unwrap_or(0);
    let mut s16 = x.clone();
    for (i, (_, stride, expand, inp, out, _)) in plan.into_iter().enumerate() {
        let p = format!("_blocks.{i}");
        let mut h = x.clone();
        if expand {
            h = conv(g, w, &h, &format!("{p}._expand_conv"), &format!("{p}._bn0"), 1, false, true, hw)?.0;
        }
        let (d, dhw) = conv(g, w, &h, &format!("{p}._depthwise_conv"), &format!("{p}._bn1"), stride, true, true, hw)?;
        let (mut y, _) = conv(g, w, &d, &format!("{p}._project_conv"), &format!("{p}._bn2"), 1, false, false, dhw)?;
        if stride == 1 && inp == out {
            y = g.node("Add", &[&y, &x], vec![]);
        }
        x = y;
        hw = dhw;
        if i == s16_block {
            s16 = x.clone();
        }
    }
    Ok((s16, conv(g, w, &x, "_conv_head", "_bn1", 1, false, true, hw)?.0))
}

/// One convolution with BatchNorm folded (depthwise when `depthwise`), ReLU6 when `relu6`; returns its output's
/// name and side.
#[allow(clippy::too_many_arguments)]
fn conv(
    g: &mut GraphBuilder,
    w: &Weights,
    x: &str,
    conv: &str,
    bn: &str,
    stride: usize,
    depthwise: bool,
    relu6: bool,
    hw: usize,
) -> candle_core::Result<(String, usize)> {
    let (weight, bias) = fold(w, conv, bn)?;
    let (o, i, k, _) = weight.dims4()?;
    let (out, before, after) = same_padding(hw, k, stride);
    let (pt, pb) = (before as i64, after as i64);
    let wn = g.floats(&[o, i, k, k], &weight.flatten_all()?.to_vec1::<f32>()?);
    let bn_ = g.floats(&[o], &bias.to_vec1::<f32>()?);
    let mut attrs = vec![
        AttributeProto::ints("kernel_shape", &[k as i64, k as i64]),
        AttributeProto::ints("strides", &[stride as i64, stride as i64]),
        AttributeProto::ints("pads", &[pt, pt, pb, pb]),
    ];
    if depthwise {
        attrs.push(AttributeProto::int("group", o as i64));
    }
    let mut y = g.node("Conv", &[x, &wn, &bn_], attrs);
    if relu6 {
        let (lo, hi) = (g.scalar(0.0), g.scalar(6.0));
        y = g.node("Clip", &[&y, &lo, &hi], vec![]);
    }
    Ok((y, out))
}
