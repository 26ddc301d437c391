//! Criterion microbenchmarks of the CPU kernels the backbone runs on, on EfficientNet-Lite0's own layer shapes at
//! 224 px with synthetic weights (no checkpoint needed): the depthwise convolutions (the fused candle op), the
//! 1×1 products planar and channels-last with pooling, and whole inverted-residual blocks planar and
//! channels-last. `cargo bench -p argus-vision --bench kernels`; the whole-network figures are
//! `argus-bench backbone`'s.

use argus_vision::kernels::depthwise::Depthwise;
use argus_vision::kernels::mbconv::MbConv;
use argus_vision::kernels::pointwise::Pointwise;
use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Deterministic small values (a fixed pattern, so every run times the same arithmetic).
fn pattern(n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919) % 101) as f32 / 101.0 * scale - scale / 2.0).collect()
}

fn pointwise(cin: usize, cout: usize, relu6: bool) -> Pointwise {
    match Pointwise::new(pattern(cin * cout, 0.1), pattern(cout, 0.1), cin, relu6) {
        Ok(p) => p,
        Err(e) => panic!("pointwise {cin}→{cout}: {e}"),
    }
}

/// Depthwise layers of Lite0 at 224 px: (channels, kernel, stride, input side).
const DEPTHWISE: [(usize, usize, usize, usize); 5] =
    [(32, 3, 1, 112), (96, 3, 2, 112), (144, 5, 2, 56), (480, 5, 1, 14), (1152, 3, 1, 7)];

fn depthwise(c: &mut Criterion) {
    let mut g = c.benchmark_group("depthwise");
    for (ch, k, s, h) in DEPTHWISE {
        let dw = Depthwise::new(pattern(ch * k * k, 0.2), pattern(ch, 0.1), k, s);
        let x = Tensor::from_vec(pattern(ch * h * h, 2.0), (1, ch, h, h), &Device::Cpu).expect("input");
        let (oh, ow) = dw.output_size(h, h);
        g.throughput(Throughput::Elements((ch * oh * ow * k * k) as u64));
        g.bench_with_input(BenchmarkId::from_parameter(format!("{ch}c k{k} s{s} {h}px")), &x, |b, x| {
            b.iter(|| x.apply_op1_no_bwd(&dw).expect("depthwise"))
        });
    }
    g.finish();
}

fn products(c: &mut Criterion) {
    let mut g = c.benchmark_group("pointwise");
    // The expand of a 28 × 28 block (planar), and the head conv on the 7 × 7 map, channels-last and pooled.
    for (cin, cout, side) in [(40usize, 240usize, 28usize), (192, 1152, 7)] {
        let p = pointwise(cin, cout, true);
        let x = pattern(cin * side * side, 2.0);
        g.throughput(Throughput::Elements((cin * cout * side * side) as u64));
        g.bench_function(format!("planar {cin}→{cout} {side}px"), |b| b.iter(|| p.forward(&x, side * side, None)));
    }
    let head = pointwise(320, 1280, true);
    let x = pattern(320 * 49, 2.0);
    g.throughput(Throughput::Elements((320 * 1280 * 49) as u64));
    g.bench_function("channels-last pooled 320→1280 7px", |b| b.iter(|| head.forward_nhwc_pooled(&x, 49)));
    g.finish();
}

fn blocks(c: &mut Criterion) {
    let mut g = c.benchmark_group("mbconv");
    // (in, expanded, out, kernel, side): a 56 × 56 block of stage 3 and a 14 × 14 block of stage 5.
    for (cin, ce, cout, k, side) in [(24usize, 144usize, 24usize, 3usize, 56usize), (80, 480, 80, 3, 14)] {
        let block = MbConv {
            expand: Some(pointwise(cin, ce, true)),
            depthwise: Depthwise::new(pattern(ce * k * k, 0.2), pattern(ce, 0.1), k, 1),
            project: pointwise(ce, cout, false),
            skip: true,
        };
        let x = pattern(cin * side * side, 2.0);
        g.throughput(Throughput::Elements(((cin * ce + ce * k * k + ce * cout) * side * side) as u64));
        g.bench_function(format!("planar {cin}→{ce}→{cout} {side}px"), |b| {
            b.iter(|| block.forward(&x, side, side))
        });
        g.bench_function(format!("channels-last {cin}→{ce}→{cout} {side}px"), |b| {
            b.iter(|| block.forward_nhwc(&x, side, side))
        });
    }
    g.finish();
}

criterion_group!(benches, depthwise, products, blocks);
criterion_main!(benches);
