#!/usr/bin/env bash
# Model quality on real photographs beside the linear-probe reference: installs onnxruntime, onnx, numpy,
# scikit-learn and pillow into .venv-bench, then runs `argus-bench quality` (release build). Pass --data DIR
# for photographs elsewhere than ../shared/data; other flags go to the benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv-bench/bin/python ] || python3 -m venv .venv-bench
.venv-bench/bin/pip install -q --disable-pip-version-check onnxruntime onnx numpy scikit-learn pillow
cargo build --release -p argus -p argus-bench
./target/release/argus models pull
./target/release/argus-bench quality --python .venv-bench/bin/python "$@"
