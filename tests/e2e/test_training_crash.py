"""TrainProject under a crash: the iteration and its training job are written in one transaction, so a process
killed inside it (fault injection in the debug build aborts just before the commit) leaves neither behind, and
after a restart the project trains normally."""

import base64
import signal
import time

import pytest
import requests

from helpers import API, Server, jpeg


def test_a_crash_inside_train_project_leaves_no_iteration_without_a_job(tmp_path):
    data = str(tmp_path / "data")
    srv = Server("crash-key", data_dir=data, extra_env={"ARGUS_FAULT_INJECT": "train-before-commit"})
    project = srv.call("POST", "/projects", params={"name": "crash"})
    for t, name in enumerate(["red", "blue"]):
        tag = srv.call("POST", f"/projects/{project['id']}/tags", params={"name": name})
        images = [{"name": f"{t}-{i}.jpg", "contents": base64.b64encode(jpeg(100 * t + i)).decode(),
                   "tagIds": [tag["id"]]} for i in range(6)]
        srv.call("POST", f"/projects/{project['id']}/images/files", json={"images": images})
    with pytest.raises(requests.ConnectionError):
        requests.post(f"{srv.url}{API}/projects/{project['id']}/train", headers={"Training-Key": srv.key}, timeout=60)
    assert srv.proc.wait(timeout=30) == -signal.SIGABRT

    srv = Server("crash-key", data_dir=data)
    try:
        assert srv.call("GET", f"/projects/{project['id']}/iterations") == []
        iteration = srv.call("POST", f"/projects/{project['id']}/train")
        deadline = time.time() + 300
        while time.time() < deadline:
            it = srv.call("GET", f"/projects/{project['id']}/iterations/{iteration['id']}")
            if it["status"] in ("Completed", "Failed"):
                break
            time.sleep(0.5)
        assert it["status"] == "Completed", it
        assert [i["id"] for i in srv.call("GET", f"/projects/{project['id']}/iterations")] == [iteration["id"]]
    finally:
        srv.stop()
