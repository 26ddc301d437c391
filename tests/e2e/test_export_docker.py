"""The DockerFile export end to end: a real `argus serve` trains a compact-domain classifier and a detector,
exports each as a DockerFile package, and the package's own `argus serve-model` (the exporting server's binary,
serving the package's model folder with no store) answers the same predictions as the server, on the hosted
container's routes (`POST /image`, `/url`, the `/{project}/…/iterations/{name}/image` aliases) and the Prediction
API's. Building the image itself needs Docker, which the test command does not have: the test checks the
Dockerfile's instructions against the package's files instead."""

import base64
import http.server
import io
import json
import os
import stat
import subprocess
import threading
import time
import zipfile

import pytest
import requests

from helpers import API, Server, free_port, jpeg, wait_until_up
from test_export_onnx import COMPACT, CROPS, crop, train

DETECT_COMPACT = "a27d5ca5-bb19-49d8-a70a-fec086c47f5b"
PREDICT = "/customvision/v3.0/prediction"


@pytest.fixture(scope="module")
def srv():
    s = Server("docker-key", args=["--min-detection-images-per-tag", "2", "--allow-private-urls", "true"])
    yield s
    s.proc.kill()


def export_docker(srv, project, iteration, tmp_path):
    started = srv.call("POST", f"/projects/{project}/iterations/{iteration}/export",
                       params={"platform": "DockerFile", "flavor": "Linux"})
    assert (started["platform"], started["flavor"], started["status"]) == ("DockerFile", "Linux", "Exporting")
    deadline = time.time() + 300
    while time.time() < deadline:
        mine = [e for e in srv.call("GET", f"/projects/{project}/iterations/{iteration}/export")
                if e["platform"] == "DockerFile"]
        if mine[0]["status"] != "Exporting":
            break
        time.sleep(0.3)
    assert mine[0]["status"] == "Done", mine
    package = zipfile.ZipFile(io.BytesIO(requests.get(mine[0]["downloadUri"], timeout=120).content))
    names = set(package.namelist())
    assert {"Dockerfile", "README.md", "argus", "model/model.json", "model/head.safetensors"} <= names, names
    # The executable keeps its mode in the zip (Docker's COPY keeps it too), and every file the Dockerfile
    # copies is in the package.
    assert stat.S_IMODE(package.getinfo("argus").external_attr >> 16) == 0o755
    dockerfile = package.read("Dockerfile").decode()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            source = line.split()[1]
            assert any(n == source or n.startswith(source + "/") for n in names), line
    assert 'ENTRYPOINT ["argus", "serve-model", "--model", "/model"' in dockerfile
    out = tmp_path / f"package-{iteration}"
    package.extractall(out)
    (out / "argus").chmod(0o755)
    manifest = json.loads(package.read("model/model.json"))
    assert manifest["iteration"] == iteration and manifest["project"] == project
    assert any(n.startswith("model/weights/efficientnet-lite") for n in names)
    return out


class ModelServer:
    def __init__(self, package):
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([str(package / "argus"), "serve-model", "--model", str(package / "model"),
                                      "--bind", f"127.0.0.1:{port}", "--allow-private-urls", "true"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until_up(self.url + "/healthz", self.proc, lambda: self.proc.stderr.read().decode(errors="replace"))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def same(a, b):
    """Two ImagePrediction answers agree: the same tags in the same order, probabilities and boxes to 1e-6."""
    pa, pb = a["predictions"], b["predictions"]
    assert [p["tagId"] for p in pa] == [p["tagId"] for p in pb], (pa, pb)
    for x, y in zip(pa, pb):
        assert abs(x["probability"] - y["probability"]) <= 1e-6, (x, y)
        assert x["tagName"] == y["tagName"]
        if x.get("boundingBox") or y.get("boundingBox"):
            for k in ("left", "top", "width", "height"):
                assert abs(x["boundingBox"][k] - y["boundingBox"][k]) <= 1e-6, (x, y)
    assert a["project"] == b["project"] and a["iteration"] == b["iteration"]


@pytest.fixture(scope="module")
def image_host():
    photos = {f"/p{i}.jpg": crop(name, box) for i, (name, box) in
              enumerate([("chelsea.png", (0.1, 0.1, 0.8, 0.8)), ("coffee.png", (0.0, 0.0, 1.0, 1.0))])}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = photos.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_classifier_container_answers_as_the_server(srv, image_host, tmp_path):
    project, it = train(srv, "Multiclass", "Regular")
    assert it["exportableTo"] == ["ONNX", "DockerFile"]
    srv.call("POST", f"/projects/{project}/iterations/{it['id']}/publish",
             params={"publishName": "live", "predictionId": "local"})
    package = export_docker(srv, project, it["id"], tmp_path)
    model = ModelServer(package)
    try:
        pkey = {"Prediction-Key": srv.key + "-p"}
        images = [crop("chelsea.png", (0.05, 0.0, 0.9, 0.8)), crop("coffee.png", (0.1, 0.2, 0.9, 0.7)),
                  crop("astronaut.png", (0.0, 0.0, 0.9, 1.0)), jpeg(5)]
        for image in images:
            want = requests.post(f"{srv.url}{PREDICT}/{project}/classify/iterations/live/image/nostore",
                                 headers=pkey, data=image, timeout=120).json()
            for path in ["/image", f"/{project}/classify/iterations/live/image",
                         f"{PREDICT}/{project}/classify/iterations/live/image",
                         f"/customvision/v3.1/Prediction/{project}/classify/iterations/live/image/nostore"]:
                r = requests.post(model.url + path, data=image, timeout=120)
                assert r.status_code == 200, (path, r.text)
                same(r.json(), want)
                # v3.1 adds each tag's type, as the server's v3.1 does; the other routes answer as v3.0.
                assert all(("tagType" in p) == ("v3.1" in path) for p in r.json()["predictions"]), r.json()
            # Multipart, as the SDKs send it.
            r = requests.post(model.url + "/image", files={"imageData": ("x.jpg", image, "image/jpeg")}, timeout=120)
            same(r.json(), want)
        want = requests.post(f"{srv.url}{PREDICT}/{project}/classify/iterations/live/url/nostore", headers=pkey,
                             json={"url": image_host + "/p0.jpg"}, timeout=120).json()
        same(requests.post(model.url + "/url", json={"url": image_host + "/p0.jpg"}, timeout=120).json(), want)
        # The server's errors, in its shape.
        r = requests.post(f"{model.url}/{project}/detect/iterations/live/image", data=images[0], timeout=60)
        assert r.status_code == 400 and r.json()["code"] == "BadRequestNotSupported", r.text
        r = requests.post(f"{model.url}/00000000-0000-0000-0000-000000000000/classify/iterations/live/image",
                          data=images[0], timeout=60)
        assert r.status_code == 404 and r.json()["code"] == "NotFoundProject", r.text
        r = requests.post(f"{model.url}/{project}/classify/iterations/nope/image", data=images[0], timeout=60)
        assert r.status_code == 404 and r.json()["code"] == "NotFoundIteration", r.text
        r = requests.post(model.url + "/image", data=b"not an image", timeout=60)
        assert r.status_code == 400 and r.json()["code"] == "BadRequestImageFormat", r.text
    finally:
        model.stop()


def test_a_detector_container_answers_as_the_server(srv, tmp_path):
    p = srv.call("POST", "/projects", params={"name": "docker-detector", "domainId": DETECT_COMPACT})
    tags = [srv.call("POST", f"/projects/{p['id']}/tags", params={"name": n}) for n in ("cat", "cup")]
    for tag, photo in zip(tags, ("chelsea.png", "coffee.png")):
        for i, box in enumerate(CROPS[:4]):
            image = base64.b64encode(crop(photo, box)).decode()
            srv.call("POST", f"/projects/{p['id']}/images/files", json={"images": [{
                "name": f"{photo}-{i}.jpg", "contents": image,
                "regions": [{"tagId": tag["id"], "left": 0.2, "top": 0.2, "width": 0.6, "height": 0.6}]}]})
    it = srv.call("POST", f"/projects/{p['id']}/train")
    deadline = time.time() + 900  # a hang guard: CI trains on two shared cores
    while it["status"] == "Training" and time.time() < deadline:
        time.sleep(1)
        it = srv.call("GET", f"/projects/{p['id']}/iterations/{it['id']}")
    assert it["status"] == "Completed", it
    assert it["exportableTo"] == ["ONNX", "DockerFile"]
    srv.call("POST", f"/projects/{p['id']}/iterations/{it['id']}/publish",
             params={"publishName": "boxes", "predictionId": "local"})
    package = export_docker(srv, p["id"], it["id"], tmp_path)
    model = ModelServer(package)
    try:
        for image in [crop("chelsea.png", (0.0, 0.0, 1.0, 1.0)), crop("coffee.png", (0.1, 0.1, 0.8, 0.8))]:
            want = requests.post(f"{srv.url}{PREDICT}/{p['id']}/detect/iterations/boxes/image/nostore",
                                 headers={"Prediction-Key": srv.key + "-p"}, data=image, timeout=120).json()
            assert want["predictions"], want
            for path in ["/image", f"/{p['id']}/detect/iterations/boxes/image"]:
                r = requests.post(model.url + path, data=image, timeout=120)
                assert r.status_code == 200, r.text
                same(r.json(), want)
    finally:
        model.stop()
