#!/usr/bin/env bash
# Fetches real photographs for the tests and benchmarks: the sample photos that ship inside the scikit-image
# wheel (chelsea, coffee, astronaut, …; public domain / CC0), extracted without installing the package.
set -euo pipefail
dest="${1:-argus-models/photos}"
[ -f "$dest/chelsea.png" ] && exit 0
mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --no-deps --only-binary=:all: --disable-pip-version-check -q -d "$tmp" \
  --python-version 3.11 --platform manylinux_2_17_x86_64 "scikit-image==0.24.0"
python3 - "$tmp" "$dest" <<'PY'
import glob, os, sys, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("skimage/data/") and name.endswith((".png", ".jpg")):
            with open(os.path.join(dest, os.path.basename(name)), "wb") as f:
                f.write(z.read(name))
PY
ls "$dest"
