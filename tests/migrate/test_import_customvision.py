"""`argus import customvision` end to end: a source Argus with a classification and a detection project (tagged and
untagged images over several pages, regions, metadata, a Negative tag) is migrated into a second Argus by the real
binary. The first run is killed with SIGKILL halfway; the rerun goes through a proxy that answers 429 and 500 now
and then; the result is compared image by image (original bytes, tags, regions, metadata), with no duplicates; a
third run finds everything already there."""

import base64
import hashlib
import http.server
import io
import json
import os
import random
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest
import requests
from PIL import Image, ImageDraw

BIN = os.environ.get("ARGUS_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "target", "debug", "argus"))
API = "/customvision/v3.3/training"
OD_GENERAL = "da2e3a8a-40a5-4171-82f4-58522f70fbc1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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

    def __init__(self, key, data_dir=None):
        self.key = key
        self.dir = data_dir or tempfile.mkdtemp(prefix="argus-migrate-")
        port = free_port()
        env = dict(os.environ, ARGUS_TRAINING_KEY=key, ARGUS_PREDICTION_KEY=key + "-p", ARGUS_LOG="warn")
        self.proc = subprocess.Popen([BIN, "serve", "--data-dir", self.dir, "--bind", f"127.0.0.1:{port}"],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{port}"
        for _ in range(400):
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.05)
        self.proc.kill()
        raise RuntimeError("argus did not start: " + self.proc.stderr.read().decode(errors="replace"))

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


def import_cmd(source_url, src, dst, tmp, *extra):
    return [BIN, "import", "customvision", "--endpoint", source_url, "--training-key", src.key,
            "--into", dst.url, "--into-key", dst.key, "--journal", os.path.join(tmp, "journal.json"),
            "--report", os.path.join(tmp, "report.json"), "--page-size", "16", *extra]


@pytest.fixture(scope="module")
def servers():
    src, dst = Server("source-key"), Server("destination-key")
    yield src, dst
    src.stop()
    dst.stop()


def test_import_survives_a_kill_and_a_flaky_source_and_copies_everything(servers, tmp_path):
    src, dst = servers
    cls, det = populate(src)
    tmp = str(tmp_path)
    # Every run reads the source through the proxy (a journal belongs to one source URL); run 2 turns faults on.
    proxy = FaultyProxy(src.url)

    # Run 1, killed halfway through the classification project's images.
    proc = subprocess.Popen(import_cmd(proxy.url, src, dst, tmp, "--batch-size", "2", "--downloads", "1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        r = requests.get(f"{dst.url}{API}/projects/{cls['id']}/images/tagged/count",
                         headers={"Training-Key": dst.key}, timeout=10)
        if r.status_code == 200 and r.json() >= 20:
            proc.send_signal(signal.SIGKILL)
            killed_at = r.json()
            break
        time.sleep(0.01)
    out = proc.communicate(timeout=30)[0].decode(errors="replace")
    assert killed_at is not None and proc.returncode == -signal.SIGKILL, f"the import was not cut short:\n{out}"
    assert killed_at < 96

    # Run 2, through a source that answers 429 and 500 now and then: it completes.
    proxy.rates.update({"429": 0.12, "500": 0.08})
    run = subprocess.run(import_cmd(proxy.url, src, dst, tmp), capture_output=True, timeout=600)
    proxy.rates.update({"429": 0.0, "500": 0.0})
    text = run.stdout.decode(errors="replace") + run.stderr.decode(errors="replace")
    assert run.returncode == 0, text
    assert proxy.faults["429"] > 3 and proxy.faults["500"] > 3, proxy.faults
    assert "(same id)" in text
    report = json.load(open(os.path.join(tmp, "report.json")))
    assert report["summary"]["failures"] == []

    for project in (cls, det):
        # The same id, name, description, domain and classification type.
        got = dst.call("GET", f"/projects/{project['id']}")
        want = src.call("GET", f"/projects/{project['id']}")
        assert (got["name"], got["description"]) == (want["name"], want["description"])
        assert got["settings"]["domainId"] == want["settings"]["domainId"]
        assert got["settings"].get("classificationType") == want["settings"].get("classificationType")
        # The same tags with the same ids, types and descriptions.
        key = lambda t: (t["id"], t["name"], t["type"], t.get("description") or "")
        assert sorted(map(key, dst.call("GET", f"/projects/{project['id']}/tags"))) == \
            sorted(map(key, src.call("GET", f"/projects/{project['id']}/tags")))
        # Every image once, with the same bytes, tags, regions and metadata.
        source_images, dest_images = src.images(project["id"]), dst.images(project["id"])
        assert len(dest_images) == len(source_images)
        for listing in ("tagged", "untagged"):
            path = f"/projects/{project['id']}/images/{listing}/count"
            assert dst.call("GET", path) == src.call("GET", path)
        mine, theirs = by_content(source_images), by_content(dest_images)
        assert mine.keys() == theirs.keys()
        for digest, s in mine.items():
            d = theirs[digest]
            assert sorted(t["tagId"] for t in d["tags"] or []) == sorted(t["tagId"] for t in s["tags"] or [])
            box = lambda r: (r["tagId"], round(r["left"], 6), round(r["top"], 6), round(r["width"], 6),
                             round(r["height"], 6))
            assert sorted(map(box, d["regions"] or [])) == sorted(map(box, s["regions"] or []))
            assert (d.get("metadata") or {}) == (s.get("metadata") or {})

    # Run 3: everything is already there.
    run = subprocess.run(import_cmd(proxy.url, src, dst, tmp), capture_output=True, timeout=300)
    proxy.stop()
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    summary = json.load(open(os.path.join(tmp, "report.json")))["summary"]
    assert summary["imagesCopied"] == 0 and summary["tagsCopied"] == 0 and summary["projectsCreated"] == 0
    assert summary["imagesSkipped"] == 104 + 40


def test_import_into_a_data_directory_without_a_journal_finds_what_is_there(servers, tmp_path):
    """The default destination: a data directory, served in-process. A lost journal costs time, not duplicates."""
    src, _ = servers
    projects = src.call("GET", "/projects")
    name = projects[0]["name"]
    data = tmp_path / "data"
    cmd = [BIN, "import", "customvision", "--endpoint", src.url, "--training-key", src.key, "--project", name,
           "--data-dir", str(data), "--report", str(tmp_path / "r.json")]
    models = os.environ.get("ARGUS_MODELS_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "argus-models"))
    for attempt in range(2):
        journal = tmp_path / f"journal-{attempt}.json"
        # The second run also retrains the project, in the in-process server, and waits for it.
        train = ["--train", "--models-dir", models] if attempt == 1 else []
        run = subprocess.run(cmd + ["--journal", str(journal)] + train, capture_output=True, timeout=600)
        assert run.returncode == 0, run.stderr.decode(errors="replace") + run.stdout.decode(errors="replace")
    summary = json.load(open(tmp_path / "r.json"))["summary"]
    assert summary["projects"] == 1 and summary["projectsCreated"] == 0 and summary["imagesCopied"] == 0
    assert summary["imagesSkipped"] == len(src.images(projects[0]["id"]))
    assert summary["trained"] == {name: "Completed"}, summary
    # `argus serve` on the directory serves the project under its source id, with every image.
    local = Server("local-key", data_dir=str(data))
    try:
        assert local.call("GET", f"/projects/{projects[0]['id']}")["name"] == name
        assert len(local.images(projects[0]["id"])) == summary["imagesSkipped"]
        iterations = local.call("GET", f"/projects/{projects[0]['id']}/iterations")
        assert [i["status"] for i in iterations] == ["Completed"]
    finally:
        local.stop()
