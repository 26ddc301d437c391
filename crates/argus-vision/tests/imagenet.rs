//! Proves the converted weights load correctly: ImageNet top-1 of real photographs that ship with
//! scikit-image (`scripts/fetch-test-photos.sh`; `scripts/test.sh` fetches them and the weights).

use argus_vision::backbone::{preprocess, EfficientNetLite0};
use argus_vision::weights::{test_models_dir, WEIGHTS_FILE};

fn model() -> EfficientNetLite0 {
    let path = test_models_dir().join(WEIGHTS_FILE);
    assert!(path.exists(), "{} is missing: run `cargo run -- models pull` (scripts/test.sh does)", path.display());
    EfficientNetLite0::from_file(&path).expect("load weights")
}

fn top5(m: &EfficientNetLite0, photo: &str) -> Vec<usize> {
    let path = test_models_dir().join("photos").join(photo);
    let img =
        image::open(&path).unwrap_or_else(|e| panic!("{}: {e} (run scripts/fetch-test-photos.sh)", path.display()));
    let x = preprocess(&img.to_rgb8(), 224).expect("input");
    let logits: Vec<f32> = m.imagenet_logits(&x).expect("forward").squeeze(0).expect("squeeze").to_vec1().expect("vec");
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|a, b| logits[*b].total_cmp(&logits[*a]));
    idx.truncate(5);
    idx
}

#[test]
fn imagenet_top1_on_sample_photos() {
    let m = model();
    let chelsea = top5(&m, "chelsea.png");
    assert!((281..=285).contains(&chelsea[0]), "chelsea top-5 {chelsea:?}: expected a cat class 281-285 first");
    let coffee = top5(&m, "coffee.png");
    assert_eq!(coffee[0], 967, "coffee top-5 {coffee:?}: expected espresso (967) first");
}

#[test]
fn feature_maps_have_expected_shapes() {
    let m = model();
    let x =
        candle_core::Tensor::zeros((2, 3, 224, 224), candle_core::DType::F32, &candle_core::Device::Cpu).expect("x");
    let (s16, s32) = m.feature_maps(&x).expect("forward");
    assert_eq!(s16.dims(), &[2, 112, 14, 14]);
    assert_eq!(s32.dims(), &[2, 1280, 7, 7]);
    assert_eq!(m.pooled(&x).expect("pooled").dims(), &[2, 1280]);
}

/// A batch (split across threads inside the backbone) gives each image the features it gets alone.
#[test]
fn a_batch_gives_each_image_its_own_features() {
    let m = model();
    let photos = ["chelsea.png", "coffee.png", "astronaut.png"];
    let inputs: Vec<candle_core::Tensor> = photos
        .iter()
        .map(|p| {
            let img = image::open(test_models_dir().join("photos").join(p)).expect("photo");
            preprocess(&img.to_rgb8(), 224).expect("input")
        })
        .collect();
    let batch = candle_core::Tensor::cat(&inputs, 0).expect("batch");
    let (b16, b32) = m.feature_maps(&batch).expect("batch forward");
    for (i, x) in inputs.iter().enumerate() {
        let (s16, s32) = m.feature_maps(x).expect("single forward");
        for (a, b) in [(&b16, &s16), (&b32, &s32)] {
            let diff: f32 = (a.narrow(0, i, 1).expect("row") - b)
                .and_then(|d| d.abs())
                .and_then(|d| d.max_all())
                .and_then(|d| d.to_scalar())
                .expect("diff");
            assert!(diff < 1e-4, "{}: batch and single features differ by {diff}", photos[i]);
        }
    }
}

/// The pooled features a classifier reads (pooled from the head's output as it is computed) equal the mean and
/// maximum of the top feature map, on a 224-pixel input (channels-last head) and on one so large that the
/// head's input is more than 28 × 28 (planar head).
#[test]
fn pooled_features_are_the_pooled_top_map() {
    let m = model();
    let img = image::open(test_models_dir().join("photos").join("coffee.png")).expect("photo");
    for size in [224, 928] {
        let x = preprocess(&img.to_rgb8(), size).expect("input");
        let (_, top) = m.feature_maps(&x).expect("forward");
        let mean = top.mean((2, 3)).expect("mean");
        let max = top.flatten_from(2).and_then(|t| t.max(2)).expect("max");
        let both = candle_core::Tensor::cat(&[&mean, &max], 1).expect("cat");
        for (ours, want) in [(m.pooled(&x).expect("pooled"), mean), (m.pooled_mean_max(&x).expect("mean, max"), both)] {
            assert_eq!(ours.dims(), want.dims());
            let diff: f32 = (ours - want)
                .and_then(|d| d.abs())
                .and_then(|d| d.max_all())
                .and_then(|d| d.to_scalar())
                .expect("diff");
            assert!(diff < 1e-4, "{size} px: pooled features differ from the pooled map by {diff}");
        }
    }
}

/// EfficientNet-Lite2 (wider and deeper, its blocks read off its checkpoint) loads with the same code and
/// classifies the same photographs at its native 260 px.
#[test]
fn lite2_loads_and_classifies() {
    use argus_vision::weights::Variant;
    let path = test_models_dir().join(Variant::Lite2.file());
    assert!(path.exists(), "{} is missing: run `cargo run -- models pull` (scripts/test.sh does)", path.display());
    let m = EfficientNetLite0::from_file(&path).expect("load Lite2");
    let top = |photo: &str| -> usize {
        let img = image::open(test_models_dir().join("photos").join(photo)).expect("photo");
        let x = preprocess(&img.to_rgb8(), 260).expect("input");
        let logits: Vec<f32> =
            m.imagenet_logits(&x).expect("forward").squeeze(0).expect("squeeze").to_vec1().expect("vec");
        (0..logits.len()).max_by(|a, b| logits[*a].total_cmp(&logits[*b])).unwrap_or(0)
    };
    assert!((281..=285).contains(&top("chelsea.png")), "chelsea: {}", top("chelsea.png"));
    assert_eq!(top("coffee.png"), 967);
    let x =
        candle_core::Tensor::zeros((1, 3, 260, 260), candle_core::DType::F32, &candle_core::Device::Cpu).expect("x");
    let (s16, s32) = m.feature_maps(&x).expect("maps");
    assert_eq!(s16.dims(), &[1, 120, 17, 17]);
    assert_eq!(s32.dims(), &[1, 1280, 9, 9]);
}
