//! Throwaway: pass-time percentiles. `passes THREADS BATCH [PASSES]`; STAGES=1 prints stage minima.
use argus_vision::backbone::EfficientNetLite0;
use candle_core::{Device, Tensor};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2);
    let batch: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1);
    let passes: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(200);
    let net = EfficientNetLite0::from_file(std::path::Path::new("argus-models/efficientnet-lite0.safetensors"))
        .expect("weights");
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
    let x = Tensor::randn(0f32, 1.0, (batch, 3, 224, 224), &Device::Cpu).expect("x");
    pool.install(|| {
        if std::env::var("STAGES").is_ok() {
            let mut mins: Vec<(String, f64)> = Vec::new();
            for r in 0..passes {
                let t = net.stage_times(&x).expect("stages");
                if r == 0 {
                    mins = t;
                } else {
                    for (m, (_, v)) in mins.iter_mut().zip(t) {
                        m.1 = m.1.min(v);
                    }
                }
            }

            for (n, v) in &mins {
                println!("{n:>10} {v:.3}");
            }
            return;
        }
        for _ in 0..20 {
            net.feature_maps(&x).expect("pass");
        }
        let mut t = Vec::new();
        let pooled = std::env::var("POOLED").is_ok();
        let logits = std::env::var("LOGITS").is_ok();
        let gap: u64 = std::env::var("GAP").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        for i in 0..passes {
            if gap > 0 && i % 10 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(gap));
                net.feature_maps(&x).expect("pass");
            }
            let s = std::time::Instant::now();
            if logits {
                net.imagenet_logits(&x).expect("pass");
            } else if pooled {
                net.pooled(&x).expect("pass");
            } else {
                net.feature_maps(&x).expect("pass");
            }
            t.push(s.elapsed().as_secs_f64() * 1e3 / batch as f64);
        }
        t.sort_by(|a, b| a.total_cmp(b));
        println!(
            "ms/image p10 {:.3} p50 {:.3} p90 {:.3} min {:.3}",
            t[t.len() / 10],
            t[t.len() / 2],
            t[t.len() * 9 / 10],
            t[0]
        );
    });
}
