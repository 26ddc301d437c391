//! The detector learns real objects: trained on scenes composited from scikit-image photographs (objects
//! pasted on one set of backgrounds), it must find them on scenes built on backgrounds it never saw.

use argus_vision::backbone::EfficientNetLite0;
use argus_vision::composite::{detection_set, scenes};
use argus_vision::heads::detector::{
    detection_view, feature_grids, mean_average_precision, DetectionRecipe, DetectorHead,
};
use argus_vision::weights::{test_models_dir, WEIGHTS_FILE};

#[test]
fn detector_finds_pasted_objects_on_unseen_backgrounds() {
    let path = test_models_dir().join(WEIGHTS_FILE);
    assert!(path.exists(), "{} is missing: run `cargo run -- models pull` (scripts/test.sh does)", path.display());
    let net = EfficientNetLite0::from_file(&path).expect("load weights");
    let set = detection_set(&test_models_dir().join("photos")).expect("photos (run scripts/fetch-test-photos.sh)");
    let classes = set.objects.len();
    let per_tag: usize = std::env::var("ARGUS_DET_PER_TAG").ok().and_then(|v| v.parse().ok()).unwrap_or(15);
    let train = scenes(&set.objects, &set.train_backgrounds, per_tag, 512, 1);
    let test = scenes(&set.objects, &set.test_backgrounds, 8, 512, 2);
    let recipe = DetectionRecipe::regular();
    let t = std::time::Instant::now();
    let mut views = Vec::new();
    let mut boxes = Vec::new();
    for s in &train {
        for v in 0..recipe.views {
            let (img, b) = detection_view(&s.image, &s.boxes, v);
            views.push(img);
            boxes.push(b);
        }
    }
    let grids = feature_grids(&net, &views, recipe.input_size).expect("features");
    let featurised = t.elapsed();
    let refs: Vec<_> = grids.iter().collect();
    let head = DetectorHead::fit(&refs, &boxes, classes, &recipe, &|_| {}).expect("fit");
    let trained = t.elapsed();
    let dets: Vec<_> = test.iter().map(|s| head.detect_image(&net, &s.image).expect("detect")).collect();
    let truth: Vec<_> = test.iter().map(|s| s.boxes.clone()).collect();
    let (map, aps) = mean_average_precision(&dets, &truth, classes, 0.5);
    eprintln!(
        "{per_tag}/tag: mAP@0.5 {map:.3} per tag {aps:?}; featurise {:.1}s, fit {:.1}s ({} views)",
        featurised.as_secs_f64(),
        (trained - featurised).as_secs_f64(),
        views.len()
    );
    assert!(map >= 0.5, "mAP@0.5 {map:.3} on unseen backgrounds is too low");
    let again = DetectorHead::from_bytes(&head.to_bytes().expect("bytes")).expect("load");
    assert_eq!(again.detect_image(&net, &test[0].image).expect("detect"), dets[0]);

    // The ONNX export (run by onnxruntime and OpenVINO in tests/e2e/test_export_onnx.py): the General (compact)
    // [S1] signature, the same bytes twice, half the size with FP16 weights.
    use argus_vision::export::detector::{detector_onnx, DETECTED_BOXES, DETECTED_CLASSES, DETECTED_SCORES};
    use argus_vision::export::onnx::ModelProto;
    use argus_vision::export::Precision;
    use prost::Message;
    let onnx = detector_onnx(&path, &head, Precision::Float32).expect("export");
    assert_eq!(onnx, detector_onnx(&path, &head, Precision::Float32).expect("export"));
    let half = detector_onnx(&path, &head, Precision::Float16).expect("export");
    assert!(half.len() * 10 < onnx.len() * 6, "FP16 {} vs FP32 {} bytes", half.len(), onnx.len());
    let graph = ModelProto::decode(onnx.as_slice()).expect("decode").graph.expect("graph");
    let outputs: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(outputs, [DETECTED_BOXES, DETECTED_SCORES, DETECTED_CLASSES]);
    assert_eq!(graph.input[0].name, "image_tensor");
    let suppressions = graph.node.iter().filter(|n| n.op_type == "NonMaxSuppression").count();
    assert_eq!(suppressions, 2, "the candidate and the per-tag suppression");
}
