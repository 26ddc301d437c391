"""Shared parts of the end-to-end tests (the real binary as processes): `argus serve` on loopback ports, distinct
JPEGs, a fault-injecting proxy, and a source populated with a classification and a detection project."""

import base64
import hashlib
import http.server
import io
import json
import os
import random
import socket
import subprocess
import tempfile
import threading
import time

import requests
from PIL import Image, ImageDraw

BIN = os.environ.get("ARGUS_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "target", "debug", "argus"))
API = "/customvision/v3.3/training"
OD_GENERAL = "da2e3a8a-40a5-4171-82f4-58522f70fbc1"
MODELS_DIR = os.environ.get("ARGUS_MODELS_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "argus-models"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url, proc, log, tries=600):
    """Polls `url` until it answers 200; kills `proc` and fails with `log()` when it exits or never answers."""
    for _ in range(tries):
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{url} never answered: {log()}")


def jpeg(seed):
    rnd = random.Random(seed)
    img = Image.new("RGB", (200, 150), (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
    d = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rnd.randrange(200), rnd.randrange(150)
        d.ellipse([x0, y0, x0 + rnd.randrange(10, 80), y0 + rnd.randrange(10, 60)],
                  fill=(rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


class Server:
    """A real `argus serve` on a loopback port over its own data directory."""

    def __init__(self, key, data_dir=None, extra_env=None, args=()):
        self.key = key
        self.dir = data_dir or tempfile.mkdtemp(prefix="argus-e2e-")
        port = free_port()
        env = dict(os.environ, ARGUS_TRAINING_KEY=key, ARGUS_PREDICTION_KEY=key + "-p", ARGUS_LOG="warn",
                   ARGUS_MODELS_DIR=MODELS_DIR, **(extra_env or {}))
        self.proc = subprocess.Popen([BIN, "serve", "--data-dir", self.dir, "--bind", f"127.0.0.1:{port}", *args],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{port}"
        wait_until_up(self.url + "/healthz", self.proc, lambda: self.proc.stderr.read().decode(errors="replace"),
                      tries=400)

    def call(self, method, path, **kw):
        r = requests.request(method, self.url + API + path, headers={"Training-Key": self.key}, timeout=60, **kw)
        assert r.status_code in (200, 207), f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def images(self, project):
        out = []
        for listing in ("tagged", "untagged"):
            skip = 0
            while True:
                page = self.call("GET", f"/projects/{project}/images/{listing}", params={"take": 256, "skip": skip})
                out += page
                if len(page) < 256:
                    break
                skip += len(page)
        return out

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


class FaultyProxy:
    """Forwards to a server, answering 429 (with Retry-After) or 500 instead for a seeded share of requests."""

    def __init__(self, target, seed=11):
        rnd = random.Random(seed)
        self.rates = {"429": 0.0, "500": 0.0}
        rates = self.rates
        lock = threading.Lock()
        self.faults = {"429": 0, "500": 0, "forwarded": 0}
        faults = self.faults

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with lock:
                    roll = rnd.random()
                p429, p500 = rates["429"], rates["500"]
                if roll < p429 + p500:
                    status = 429 if roll < p429 else 500
                    with lock:
                        faults[str(status)] += 1
                    payload = json.dumps({"error": {"code": "TooManyRequests" if status == 429 else "InternalServerError",
                                                    "message": "injected"}}).encode()
                    self.send_response(status)
                    if status == 429:
                        self.send_header("Retry-After", "0.05")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                # The Host header goes along: the source signs image links for the host it was asked on.
                headers = {k: v for k, v in self.headers.items() if k.lower() != "content-length"}
                r = requests.request(self.command, target + self.path, headers=headers, data=body, timeout=60)
                with lock:
                    faults["forwarded"] += 1
                self.send_response(r.status_code)
                self.send_header("Content-Type", r.headers.get("Content-Type", "application/octet-stream"))
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            do_GET = do_POST = do_PATCH = do_DELETE = handle_any

            def log_message(self, *args):
                pass

        class Quiet(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # the killed import drops its connections mid-request; that is the point

        self.srv = Quiet(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}"

    def stop(self):
        self.srv.shutdown()


def populate(src):
    """A classification project (3 tags, Negative included; tagged, negative and untagged images, metadata) and a
    detection project (regions, two per image sometimes, metadata, untagged images)."""
    cls = src.call("POST", "/projects", params={"name": "pets", "description": "cats and dogs",
                                                "classificationType": "Multilabel"})
    src.call("PATCH", f"/projects/{cls['id']}", json={"settings": {"imageProcessingSettings": {
        "augmentationMethods": {"rotation": True, "scaling": False}}}})
    cat = src.call("POST", f"/projects/{cls['id']}/tags", params={"name": "cat", "description": "felines"})
    dog = src.call("POST", f"/projects/{cls['id']}/tags", params={"name": "dog"})
    neg = src.call("POST", f"/projects/{cls['id']}/tags", params={"name": "Negative", "type": "Negative"})
    entries = []
    for i in range(90):
        tags = [cat["id"]] if i % 3 == 0 else [dog["id"]] if i % 3 == 1 else [cat["id"], dog["id"]]
        entries.append({"name": f"{i}.jpg", "contents": base64.b64encode(jpeg(i)).decode(), "tagIds": tags})
    for i in range(90, 96):
        entries.append({"name": f"{i}.jpg", "contents": base64.b64encode(jpeg(i)).decode(), "tagIds": [neg["id"]]})
    for i in range(96, 104):
        entries.append({"name": f"{i}.jpg", "contents": base64.b64encode(jpeg(i)).decode()})
    ids = []
    for k in range(0, len(entries), 64):
        out = src.call("POST", f"/projects/{cls['id']}/images/files", json={"images": entries[k:k + 64]})
        ids += [r["image"]["id"] for r in out["images"]]
    for k, image_id in enumerate(ids[:20]):
        src.call("POST", f"/projects/{cls['id']}/images/metadata", params={"imageIds": image_id},
                 json={"camera": f"cam-{k % 3}", "shot": str(k)})

    det = src.call("POST", "/projects", params={"name": "boxes", "domainId": OD_GENERAL})
    a = src.call("POST", f"/projects/{det['id']}/tags", params={"name": "disc"})
    b = src.call("POST", f"/projects/{det['id']}/tags", params={"name": "blob"})
    rnd = random.Random(5)
    entries = []
    for i in range(200, 236):
        regions = [{"tagId": a["id"], "left": round(rnd.uniform(0, .4), 4), "top": round(rnd.uniform(0, .4), 4),
                    "width": round(rnd.uniform(.1, .5), 4), "height": round(rnd.uniform(.1, .5), 4)}]
        if i % 2:
            regions.append({"tagId": b["id"], "left": .5, "top": .5, "width": .3, "height": .25})
        entries.append({"name": f"{i}.jpg", "contents": base64.b64encode(jpeg(i)).decode(), "regions": regions})
    for i in range(236, 240):
        entries.append({"name": f"{i}.jpg", "contents": base64.b64encode(jpeg(i)).decode()})
    out = src.call("POST", f"/projects/{det['id']}/images/files", json={"images": entries})
    assert all(r["status"] == "OK" for r in out["images"])
    src.call("POST", f"/projects/{det['id']}/images/metadata",
             params={"imageIds": ",".join(r["image"]["id"] for r in out["images"][:5])}, json={"site": "lab"})
    return cls, det


def original(url):
    r = requests.get(url, timeout=30)
    assert r.status_code == 200
    return r.content


def by_content(images):
    return {hashlib.sha256(original(i["originalImageUri"])).hexdigest(): i for i in images}
