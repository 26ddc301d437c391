"""Jobs in worker processes: `argus serve --workers 0` serves HTTP only and `argus worker` processes on the same
data directory run the jobs. A worker killed with SIGKILL in the middle of a training or an export loses nothing:
once its lease lapses another worker runs the job to the end; the serving process answers predictions from the head
a worker wrote and hands out the package another wrote."""

import base64
import io
import os
import signal
import subprocess
import time
import zipfile

import requests

from helpers import BIN, MODELS_DIR, Server, free_port, jpeg


def gauge(url, name, kind):
    """The value of gauge `name{kind=...}` on a /metrics page."""
    text = requests.get(url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(f'{name}{{kind="{kind}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} for {kind} in:\n{text}")


def wait_status(srv, path, done, timeout=600):
    """Polls an iteration until its status is one of `done` (a hang guard: CI trains on two shared cores)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        it = srv.call("GET", path)
        if it["status"] in done:
            return it
        time.sleep(0.5)
    return it


class Worker:
    """A real `argus worker` on a data directory, its log in a file."""

    def __init__(self, data_dir, key, log_path, kinds="train,export"):
        self.url = f"http://127.0.0.1:{free_port()}"
        env = dict(os.environ, ARGUS_TRAINING_KEY=key, ARGUS_PREDICTION_KEY=key + "-p", ARGUS_LOG="info",
                   ARGUS_MODELS_DIR=MODELS_DIR)
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen([BIN, "worker", "--data-dir", data_dir, "--kinds", kinds,
                                      "--metrics-bind", self.url[len("http://"):]], env=env,
                                     stdout=subprocess.DEVNULL, stderr=self.log)

    def wait_for(self, text, timeout, poll=0.2):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with open(self.log_path, "rb") as f:
                if text.encode() in f.read():
                    return
            assert self.proc.poll() is None, "the worker exited: " + open(self.log_path).read()
            time.sleep(poll)
        raise AssertionError(f"the worker never logged {text!r}: " + open(self.log_path).read())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.log.close()


def test_a_worker_killed_mid_training_is_replaced_and_the_server_predicts_with_its_head(tmp_path):
    data = str(tmp_path / "data")
    srv = Server("worker-key", data_dir=data, args=["--workers", "0"])
    workers = []
    try:
        project = srv.call("POST", "/projects", params={"name": "workers"})
        tags = []
        for t, name in enumerate(["red", "blue"]):
            tag = srv.call("POST", f"/projects/{project['id']}/tags", params={"name": name})
            tags.append(tag["id"])
            images = [{"name": f"{t}-{i}.jpg", "contents": base64.b64encode(jpeg(300 * t + i)).decode(),
                       "tagIds": [tag["id"]]} for i in range(6)]
            srv.call("POST", f"/projects/{project['id']}/images/files", json={"images": images})
        iteration = srv.call("POST", f"/projects/{project['id']}/train")
        path = f"/projects/{project['id']}/iterations/{iteration['id']}"
        # The server runs no jobs itself: with no worker the iteration waits.
        time.sleep(2)
        assert srv.call("GET", path)["status"] == "Training"
        assert gauge(srv.url, "argus_jobs_queued", "train") == 1

        first = Worker(data, srv.key, str(tmp_path / "worker-1.log"))
        workers.append(first)
        first.wait_for("job started", timeout=60)
        # Every process reports the queue it shares.
        assert gauge(first.url, "argus_jobs_running", "train") == 1
        assert gauge(srv.url, "argus_jobs_queued", "train") == 0
        assert requests.get(first.url + "/readyz", timeout=10).status_code == 200
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=10)

        second = Worker(data, srv.key, str(tmp_path / "worker-2.log"))
        workers.append(second)
        it = wait_status(srv, path, ("Completed", "Failed"))
        assert it["status"] == "Completed", it
        second.wait_for("job completed", timeout=10)
        assert gauge(second.url, "argus_jobs_running", "train") == 0

        srv.call("POST", f"{path}/publish", params={"publishName": "live", "predictionId": "local"})
        r = requests.post(f"{srv.url}/customvision/v3.0/prediction/{project['id']}/classify/iterations/live/image",
                          headers={"Prediction-Key": srv.key + "-p"}, data=jpeg(7), timeout=120)
        assert r.status_code == 200, r.text
        assert sorted(p["tagId"] for p in r.json()["predictions"]) == sorted(tags)
    finally:
        for w in workers:
            w.stop()
        srv.stop()


COMPACT = "0732100f-1a38-4e49-a514-c9b44c697ab5"


def test_an_export_whose_worker_is_killed_is_finished_by_another(tmp_path):
    data = str(tmp_path / "data")
    srv = Server("export-key", data_dir=data, args=["--workers", "0"])
    workers = []
    try:
        trainer = Worker(data, srv.key, str(tmp_path / "trainer.log"), kinds="train")
        workers.append(trainer)
        project = srv.call("POST", "/projects", params={"name": "export-kill", "domainId": COMPACT})
        for t, name in enumerate(["red", "blue"]):
            tag = srv.call("POST", f"/projects/{project['id']}/tags", params={"name": name})
            images = [{"name": f"{t}-{i}.jpg", "contents": base64.b64encode(jpeg(500 * t + i)).decode(),
                       "tagIds": [tag["id"]]} for i in range(6)]
            srv.call("POST", f"/projects/{project['id']}/images/files", json={"images": images})
        iteration = srv.call("POST", f"/projects/{project['id']}/train")
        path = f"/projects/{project['id']}/iterations/{iteration['id']}"
        assert wait_status(srv, path, ("Completed", "Failed"))["status"] == "Completed"

        srv.call("POST", f"{path}/export", params={"platform": "ONNX"})
        # Only export workers from here on: the first dies in the middle of writing the package.
        first = Worker(data, srv.key, str(tmp_path / "export-1.log"), kinds="export")
        workers.append(first)
        first.wait_for("job started", timeout=60, poll=0.01)
        with open(first.log_path, "rb") as f:
            assert b"job completed" not in f.read(), "the export finished before the worker could be killed"
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=10)
        assert srv.call("GET", f"{path}/export")[0]["status"] == "Exporting"

        second = Worker(data, srv.key, str(tmp_path / "export-2.log"), kinds="export")
        workers.append(second)
        deadline = time.time() + 600
        while time.time() < deadline:
            exports = srv.call("GET", f"{path}/export")
            if exports[0]["status"] != "Exporting":
                break
            time.sleep(0.5)
        assert exports[0]["status"] == "Done", exports
        package = requests.get(exports[0]["downloadUri"], timeout=60)
        assert package.status_code == 200
        with zipfile.ZipFile(io.BytesIO(package.content)) as z:
            assert {"model.onnx", "labels.txt"} <= set(z.namelist())
            assert sorted(z.read("labels.txt").decode().split()) == ["blue", "red"]
    finally:
        for w in workers:
            w.stop()
        srv.stop()
