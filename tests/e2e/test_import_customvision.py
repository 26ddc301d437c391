"""`argus import customvision` end to end: a source Argus with a classification and a detection project (tagged and
untagged images over several pages, regions, metadata, a Negative tag) is migrated into a second Argus by the real
binary. The first run is killed with SIGKILL halfway; the rerun goes through a proxy that answers 429 and 500 now
and then; the result is compared image by image (original bytes, tags, regions, metadata), with no duplicates; a
third run finds everything already there."""

import json
import os
import signal
import subprocess
import time

import pytest
import requests

from helpers import API, BIN, FaultyProxy, Server, by_content, populate


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
        assert got["settings"].get("imageProcessingSettings") == want["settings"].get("imageProcessingSettings")
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
