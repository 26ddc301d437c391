"""Argus as a cluster, for real: two stateless API nodes (`argus serve --workers 0`) and two `argus worker`
processes over one PostgreSQL database and one S3 bucket (SeaweedFS), each node with a data directory of its own
that nothing is written to. The test command starts both servers (scripts/cluster-services.sh) and passes them in
`ARGUS_TEST_POSTGRES_URL` / `ARGUS_TEST_S3_*`; without them the module fails, unless `ARGUS_SKIP_CLUSTER=1`.

- The official Python SDK trains through node A while its prediction client asks node B; the worker that
  claimed the training is killed with SIGKILL and the other one finishes it.
- A link signed by one node opens on the other (the signing key lives in the database).
- An API node killed with SIGKILL during a 64-image upload loses none of the images it acknowledged.
- 16 clients for 30 s across both nodes (listings, reads and predictions): no errors.
"""

import os
import signal
import subprocess
import tempfile
import threading
import time
import uuid

import pytest
import requests
from azure.cognitiveservices.vision.customvision.prediction import CustomVisionPredictionClient
from azure.cognitiveservices.vision.customvision.training import CustomVisionTrainingClient
from azure.cognitiveservices.vision.customvision.training.models import ImageFileCreateBatch, ImageFileCreateEntry
from msrest.authentication import ApiKeyCredentials

from helpers import API, BIN, MODELS_DIR, free_port, jpeg, wait_until_up

KEY = "cluster-training-key"
PREDICTION_KEY = "cluster-prediction-key"


def cluster_env():
    url = os.environ.get("ARGUS_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("ARGUS_SKIP_CLUSTER") == "1":
            pytest.skip("SKIPPED: the cluster tests (ARGUS_SKIP_CLUSTER=1)")
        raise AssertionError("ARGUS_TEST_POSTGRES_URL is not set: run `bash scripts/test.sh` (it starts PostgreSQL "
                             "and SeaweedFS), or set ARGUS_SKIP_CLUSTER=1")
    database = "cluster_" + uuid.uuid4().hex[:12]
    subprocess.run(["psql", url, "-qc", f"CREATE DATABASE {database}"], check=True)
    return dict(
        os.environ,
        ARGUS_DATABASE_URL=url.rsplit("/", 1)[0] + "/" + database,
        ARGUS_BLOBS_URL=f"s3://{os.environ['ARGUS_TEST_S3_BUCKET']}/{database}",
        AWS_ENDPOINT_URL=os.environ["ARGUS_TEST_S3_ENDPOINT"],
        AWS_ACCESS_KEY_ID=os.environ["ARGUS_TEST_S3_ACCESS_KEY"],
        AWS_SECRET_ACCESS_KEY=os.environ["ARGUS_TEST_S3_SECRET_KEY"],
        ARGUS_TRAINING_KEY=KEY,
        ARGUS_PREDICTION_KEY=PREDICTION_KEY,
        ARGUS_MODELS_DIR=MODELS_DIR,
        ARGUS_LOG="info,sqlx=warn,tower_http=warn",
    )


class Process:
    """`argus serve --workers 0` or `argus worker` over the cluster's stores, its log in a file."""

    def __init__(self, env, kind, log_dir):
        self.env, self.kind, self.log_dir = env, kind, log_dir
        self.start()

    def start(self):
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        data_dir = tempfile.mkdtemp(prefix=f"argus-{self.kind}-")
        if self.kind == "node":
            cmd = [BIN, "serve", "--workers", "0", "--bind", f"127.0.0.1:{port}", "--data-dir", data_dir]
        else:
            cmd = [BIN, "worker", "--kinds", "train,export,segment", "--metrics-bind", f"127.0.0.1:{port}",
                   "--data-dir", data_dir]
        self.data_dir = data_dir
        self.log_path = os.path.join(self.log_dir, f"{self.kind}-{port}.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=self.log)
        wait_until_up(self.url + "/readyz", self.proc, lambda: open(self.log_path).read())

    def logged(self, text):
        with open(self.log_path, "rb") as f:
            return text.encode() in f.read()

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.log.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.log.close()

    def call(self, method, path, **kw):
        r = requests.request(method, self.url + API + path, headers={"Training-Key": KEY}, timeout=120, **kw)
        assert r.status_code in (200, 207), f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    env = cluster_env()
    logs = str(tmp_path_factory.mktemp("cluster-logs"))
    # The first process migrates the database; the others then start on it at once.
    a = Process(env, "node", logs)
    b, w1, w2 = Process(env, "node", logs), Process(env, "worker", logs), Process(env, "worker", logs)
    c = {"a": a, "b": b, "workers": [w1, w2], "env": env, "logs": logs}
    yield c
    for p in [c["a"], c["b"], *c["workers"]]:
        p.stop()


def trainer(node):
    return CustomVisionTrainingClient(node.url, ApiKeyCredentials(in_headers={"Training-key": KEY}))


def predictor(node):
    return CustomVisionPredictionClient(node.url, ApiKeyCredentials(in_headers={"Prediction-key": PREDICTION_KEY}))


def trained_project(cluster, name, kill_the_trainer):
    """A two-tag classifier trained through node A with the official SDK; with `kill_the_trainer`, the worker
    that claims the training is killed with SIGKILL and a fresh one takes its place."""
    sdk = trainer(cluster["a"])
    project = sdk.create_project(name)
    for t, tag_name in enumerate(["red", "blue"]):
        tag = sdk.create_tag(project.id, tag_name)
        entries = [ImageFileCreateEntry(name=f"{t}-{i}.jpg", contents=jpeg(500 * t + i), tag_ids=[tag.id])
                   for i in range(6)]
        result = sdk.create_images_from_files(project.id, ImageFileCreateBatch(images=entries))
        assert result.is_batch_successful
    iteration = sdk.train_project(project.id)
    if kill_the_trainer:
        deadline = time.time() + 120
        claimed = None
        while claimed is None and time.time() < deadline:
            claimed = next((w for w in cluster["workers"] if w.logged("job started")), None)
            time.sleep(0.1)
        assert claimed is not None, "no worker claimed the training"
        claimed.kill()
        cluster["workers"].remove(claimed)
        cluster["workers"].append(Process(cluster["env"], "worker", cluster["logs"]))
    deadline = time.time() + 900
    while time.time() < deadline:
        iteration = sdk.get_iteration(project.id, iteration.id)
        if iteration.status in ("Completed", "Failed"):
            break
        time.sleep(1)
    assert iteration.status == "Completed", iteration.status
    sdk.publish_iteration(project.id, iteration.id, "live", "local")
    return project


def test_the_sdk_trains_on_node_a_a_killed_worker_is_replaced_and_node_b_predicts(cluster):
    project = trained_project(cluster, "cluster-sdk", kill_the_trainer=True)
    tags = {t.id: t.name for t in trainer(cluster["a"]).get_tags(project.id)}
    result = predictor(cluster["b"]).classify_image(project.id, "live", jpeg(3))
    assert sorted(p.tag_id for p in result.predictions) == sorted(tags)
    assert abs(sum(p.probability for p in result.predictions) - 1) < 1e-3
    # Node B recorded the prediction; node A lists it (QueryPredictions reads the shared database).
    stored = cluster["a"].call("POST", f"/projects/{project.id}/predictions/query", json={})
    assert any(r["id"] == result.id for r in stored["results"])
    cluster["project"] = project


def test_a_link_signed_by_one_node_opens_on_the_other(cluster):
    project = cluster.get("project") or trained_project(cluster, "cluster-links", kill_the_trainer=False)
    image = cluster["a"].call("GET", f"/projects/{project.id}/images/tagged", params={"take": 1})[0]
    link = image["originalImageUri"]
    assert link.startswith(cluster["a"].url)
    on_b = cluster["b"].url + link[len(cluster["a"].url):]
    r = requests.get(on_b, timeout=30)
    assert r.status_code == 200 and r.content[:2] == b"\xff\xd8", r.status_code


def test_a_portal_session_signed_in_on_one_node_works_on_the_other(cluster):
    """The browser's session cookie is signed with the shared signing key: behind a load balancer, a sign-in on
    node A is a sign-in on node B, reads and (with the portal header) writes."""
    a, b = cluster["a"], cluster["b"]
    r = requests.post(a.url + "/ui/api/session", json={"trainingKey": KEY}, headers={"X-Argus-Portal": "1"}, timeout=30)
    assert r.status_code == 200, r.text
    cookie = {"argus_session": r.cookies["argus_session"]}
    assert requests.get(b.url + "/ui/api/session", cookies=cookie, timeout=30).json()["signedIn"] is True
    r = requests.post(b.url + "/customvision/v3.3/training/projects", params={"name": "portal-on-b"},
                      cookies=cookie, headers={"X-Argus-Portal": "1"}, timeout=30)
    assert r.status_code == 200, r.text
    assert any(p["name"] == "portal-on-b" for p in a.call("GET", "/projects"))
    assert requests.get(b.url + "/ui", timeout=30).headers["Content-Security-Policy"].startswith("default-src 'self'")


def test_an_api_node_killed_during_an_upload_loses_no_acknowledged_image(cluster):
    a, b = cluster["a"], cluster["b"]
    project = a.call("POST", "/projects", params={"name": "cluster-upload"})
    tag = a.call("POST", f"/projects/{project['id']}/tags", params={"name": "thing"})
    acknowledged, stop = [], threading.Event()

    def upload():
        for batch in range(16):
            files = [(f"f{i}", (f"{batch}-{i}.jpg", jpeg(9000 + 4 * batch + i), "image/jpeg")) for i in range(4)]
            try:
                r = requests.post(f"{b.url}{API}/projects/{project['id']}/images", files=files,
                                  params={"tagIds": tag["id"]}, headers={"Training-Key": KEY}, timeout=60)
            except requests.RequestException:
                return
            if r.status_code != 200:
                return
            acknowledged.extend(i["image"]["id"] for i in r.json()["images"] if i["status"] == "OK")
            if stop.is_set():
                return

    thread = threading.Thread(target=upload)
    thread.start()
    deadline = time.time() + 120
    while len(acknowledged) < 24 and time.time() < deadline and thread.is_alive():
        time.sleep(0.01)
    b.kill()
    stop.set()
    thread.join(timeout=120)
    assert 24 <= len(acknowledged) < 64, len(acknowledged)
    found = []
    for i in range(0, len(acknowledged), 64):
        chunk = acknowledged[i:i + 64]
        found += a.call("GET", f"/projects/{project['id']}/images/id", params={"imageIds": ",".join(chunk)})
    assert sorted(i["id"] for i in found) == sorted(acknowledged)
    for image in found:
        r = requests.get(image["originalImageUri"], timeout=30)
        assert r.status_code == 200 and r.content[:2] == b"\xff\xd8"
    b.start()


def test_sixteen_clients_for_thirty_seconds_across_both_nodes_see_no_errors(cluster):
    project = cluster.get("project") or trained_project(cluster, "cluster-load", kill_the_trainer=False)
    nodes = [cluster["a"], cluster["b"]]
    counts, errors, lock = [0], [], threading.Lock()
    body = jpeg(11)
    end = time.time() + 30

    def client(n):
        s = requests.Session()
        k = 0
        while time.time() < end:
            node = nodes[(n + k) % 2]
            k += 1
            what = k % 4
            try:
                if what == 0:
                    r = s.post(f"{node.url}/customvision/v3.0/prediction/{project.id}/classify/iterations/live/image",
                               data=body, headers={"Prediction-Key": PREDICTION_KEY}, timeout=120)
                elif what == 1:
                    r = s.get(f"{node.url}{API}/projects/{project.id}/images/tagged", params={"take": 20},
                              headers={"Training-Key": KEY}, timeout=60)
                elif what == 2:
                    r = s.get(f"{node.url}{API}/projects/{project.id}/tags", headers={"Training-Key": KEY}, timeout=60)
                else:
                    r = s.get(f"{node.url}{API}/projects/{project.id}/iterations", headers={"Training-Key": KEY},
                              timeout=60)
                ok = r.status_code == 200
                detail = f"{r.status_code} {r.text[:200]}"
            except requests.RequestException as e:
                ok, detail = False, repr(e)
            with lock:
                counts[0] += 1
                if not ok:
                    errors.append(detail)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"16 clients, 30 s, both nodes: {counts[0]} requests, {len(errors)} errors")
    assert counts[0] > 100
    assert errors == []
