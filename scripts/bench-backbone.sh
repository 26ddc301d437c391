#!/usr/bin/env bash
# Backbone speed beside ONNX Runtime: installs onnxruntime/onnx/numpy into .venv-bench, then runs
# `argus-bench backbone` (release build).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv-bench/bin/python ] || python3 -m venv .venv-bench
.venv-bench/bin/pip install -q --disable-pip-version-check onnxruntime onnx numpy
cargo build --release -p argus -p argus-bench
./target/release/argus models pull
bash scripts/fetch-test-photos.sh
./target/release/argus-bench backbone --python .venv-bench/bin/python "$@"
