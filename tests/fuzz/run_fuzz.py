"""Schema fuzzing of a real `argus serve` with schemathesis, against Microsoft's own OpenAPI files.

Starts the server on a free loopback port over a temporary data directory, gives the fuzzer real objects to work
on (a trained and published classification project, its tags, images and iteration; a second project that the
destructive operations may delete), writes a schemathesis config with those ids and the reviewed allow-list
(`allowlist.toml` beside this file), and runs schemathesis for Training v3.3 and Prediction v3.0 / v3.1 with the
checks not_a_server_error, response_schema_conformance, status_code_conformance and content_type_conformance.
Generation is deterministic and bounded (`--max-examples`); the script exits non-zero on any failure.

usage: python run_fuzz.py --bin target/debug/argus --models-dir argus-models [--max-examples 12]
"""

import argparse
import io
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import tomllib

import requests
from PIL import Image, ImageDraw

HERE = os.path.dirname(os.path.abspath(__file__))
TRAINING_KEY = "fuzz-training-key"
GENERAL_COMPACT = "0732100f-1a38-4e49-a514-c9b44c697ab5"
PREDICTION_KEY = "fuzz-prediction-key"
CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"
SPECS = [
    ("Training v3.3", "Training/stable/v3.3/Training.json", "/customvision/v3.3/training", "Training-Key"),
    ("Prediction v3.0", "Prediction/stable/v3.0/Prediction.json", "/customvision/v3.0/prediction", "Prediction-Key"),
    ("Prediction v3.1", "Prediction/stable/v3.1/Prediction.json", "/customvision/v3.1/prediction", "Prediction-Key"),
]
# Operations that destroy what they are given work on a project of their own, so that the rest of the run
# keeps real objects to test.
DESTRUCTIVE = ["DeleteProject", "DeleteImages", "DeleteIteration", "DeleteTag", "UnpublishIteration",
               "DeletePrediction", "DeleteImageTags", "DeleteImageRegions"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jpeg(seed, tint):
    rnd = random.Random(seed)
    img = Image.new("RGB", (256, 192), tint)
    d = ImageDraw.Draw(img)
    for _ in range(10):
        x0, y0 = rnd.randrange(256), rnd.randrange(192)
        d.ellipse([x0, y0, x0 + rnd.randrange(10, 80), y0 + rnd.randrange(10, 60)],
                  fill=(rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


class Api:
    def __init__(self, root):
        self.base = root + "/customvision/v3.3/training"
        self.s = requests.Session()
        self.s.headers["Training-Key"] = TRAINING_KEY

    def call(self, method, path, **kw):
        r = self.s.request(method, self.base + path, timeout=120, **kw)
        if r.status_code >= 300 and r.status_code != 207:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text}")
        return r.json() if r.content else None

    def project(self, name, tags, images_per_tag, train, domain=None):
        p = self.call("POST", f"/projects?name={name}" + (f"&domainId={domain}" if domain else ""))["id"]
        tag_ids = [self.call("POST", f"/projects/{p}/tags?name={t}")["id"] for t in tags]
        images = []
        for k, (t, tint) in enumerate(zip(tag_ids, [(200, 40, 40), (40, 40, 200)])):
            files = [("imageData", (f"{t}-{i}.jpg", jpeg(100 * k + i, tint), "image/jpeg"))
                     for i in range(images_per_tag)]
            r = self.call("POST", f"/projects/{p}/images?tagIds={t}", files=files)
            images += [i["image"]["id"] for i in r["images"]]
        iteration = None
        if train:
            iteration = self.call("POST", f"/projects/{p}/train")["id"]
            for _ in range(600):
                it = self.call("GET", f"/projects/{p}/iterations/{iteration}")
                if it["status"] != "Training":
                    break
                time.sleep(0.5)
            if it["status"] != "Completed":
                raise RuntimeError(f"fixture training ended {it['status']}")
            self.call("POST", f"/projects/{p}/iterations/{iteration}/publish?publishName=fuzzModel&predictionId=fuzz")
        return p, tag_ids, images, iteration


def operation_ids(spec):
    with open(spec) as f:
        doc = json.load(f)
    return {op.get("operationId") for ops in doc["paths"].values() for op in ops.values() if isinstance(op, dict)}


def config(path, spec, ids, allow, max_examples, seed):
    """The schemathesis config: the four checks, ids as fixed parameter values, the destructive operations on the
    scratch project, and the allow-list's per-operation exclusions (for the operations this spec has)."""
    present = operation_ids(spec)
    lines = [f"seed = {seed}", "[generation]", f"max-examples = {max_examples}", "deterministic = true", ""]
    lines += ["[checks]", "enabled = false"] + [f"{c}.enabled = true" for c in CHECKS.split(",")] + [""]
    lines += ["[parameters]"]
    for k, v in ids["main"].items():
        lines.append(f'{k} = "{v}"')
    lines.append("")
    for op in (o for o in DESTRUCTIVE if o in present):
        lines += ["[[operations]]", f'include-operation-id = "{op}"', "[operations.parameters]"]
        for k, v in ids["doomed" if op == "DeleteProject" else "scratch"].items():
            lines.append(f'{k} = "{v}"')
        lines.append("")
    for entry in (e for e in allow.get("exclusion", []) if e["operation"] in present):
        lines += ["[[operations]]", f'include-operation-id = "{entry["operation"]}"']
        for check in entry["checks"]:
            lines.append(f"checks.{check}.enabled = false")
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--models-dir", required=True)
    ap.add_argument("--schemathesis", default="schemathesis")
    ap.add_argument("--max-examples", type=int, default=12)
    ap.add_argument("--seed", type=int, default=20261201)
    args = ap.parse_args()
    # Paths given relative to the caller's directory stay valid when schemathesis runs in the data directory.
    for name in ("bin", "models_dir", "schemathesis"):
        value = getattr(args, name)
        if os.sep in value:
            setattr(args, name, os.path.abspath(value))
    with open(os.path.join(HERE, "allowlist.toml"), "rb") as f:
        allow = tomllib.load(f)
    for entry in allow.get("exclusion", []):
        if not entry.get("reason") or not entry.get("evidence"):
            sys.exit(f"allow-list entry {entry.get('operation')} needs a reason and evidence")

    data_dir = tempfile.mkdtemp(prefix="argus-fuzz-")
    port = free_port()
    root = f"http://127.0.0.1:{port}"
    env = dict(os.environ, ARGUS_TRAINING_KEY=TRAINING_KEY, ARGUS_PREDICTION_KEY=PREDICTION_KEY, ARGUS_LOG="warn",
               ARGUS_MODELS_DIR=args.models_dir)
    log = open(os.path.join(data_dir, "server.log"), "wb")
    proc = subprocess.Popen([args.bin, "serve", "--data-dir", data_dir, "--bind", f"127.0.0.1:{port}"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(400):
            try:
                if requests.get(root + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.05)
        else:
            sys.exit("argus did not start")
        api = Api(root)
        # On a compact domain, so that ExportIteration / GetExports run real exports.
        p, tags, images, it = api.project("fuzz", ["red", "blue"], 5, train=True, domain=GENERAL_COMPACT)
        q, qtags, qimages, qit = api.project("fuzz-scratch", ["a", "b"], 5, train=True)
        doomed, _, _, _ = api.project("fuzz-doomed", ["x", "y"], 1, train=False)
        ids = {
            "doomed": {"projectId": doomed},
            "main": {"projectId": p, "tagId": tags[0], "imageId": images[0], "iterationId": it,
                     "publishedName": "fuzzModel"},
            "scratch": {"projectId": q, "tagId": qtags[0], "imageId": qimages[0], "iterationId": qit,
                        "publishedName": "fuzzModel"},
        }
        failed = []
        for name, spec, base, header in SPECS:
            cfg = os.path.join(data_dir, "schemathesis.toml")
            spec_path = os.path.join(HERE, "specs", spec)
            config(cfg, spec_path, ids, allow, args.max_examples, args.seed)
            key = TRAINING_KEY if header == "Training-Key" else PREDICTION_KEY
            cmd = [args.schemathesis, "--config-file", cfg, "run", spec_path,
                   "--url", root + base, "-H", f"{header}: {key}",
                   "--phases", "examples,coverage,fuzzing", "--workers", "1", "--no-color",
                   "--suppress-health-check", "all", "--request-timeout", "60",
                   "--generation-database", "none", "--output-truncate", "true"]
            print(f"==> schemathesis: {name}", flush=True)
            t0 = time.time()
            rc = subprocess.call(cmd, cwd=data_dir)
            print(f"==> {name}: exit {rc} in {time.time() - t0:.0f} s", flush=True)
            if rc != 0:
                failed.append(name)
        if proc.poll() is not None:
            sys.exit(f"argus exited during fuzzing (code {proc.returncode}); log in {data_dir}/server.log")
        if failed:
            sys.exit("schemathesis found failures in: " + ", ".join(failed))
        print("==> fuzzing: no server errors and no schema violations")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
