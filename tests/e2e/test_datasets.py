"""`argus dataset export|import` end to end: each project of a real server is exported as COCO (zip), YOLO and
Pascal VOC (folders) by the real binary, imported back into a new project, and compared image by image (matched
by content): the same tags, the same boxes within one pixel. pycocotools loads the COCO export."""

import json
import os
import subprocess
import zipfile

import pytest
import requests

from helpers import API, BIN, OD_GENERAL, Server, by_content, populate


@pytest.fixture(scope="module")
def source():
    src = Server("dataset-key")
    cls, det = populate(src)
    yield src, cls, det
    src.stop()


def dataset(src, *args):
    run = subprocess.run([BIN, "dataset", *args, "--endpoint", src.url, "--training-key", src.key],
                         capture_output=True, timeout=300)
    assert run.returncode == 0, run.stderr.decode(errors="replace") + run.stdout.decode(errors="replace")
    return run.stdout.decode()


def labels(server, project):
    """Per image content: sorted tag names, and boxes as (tag name, pixel x, y, w, h)."""
    names = {t["id"]: t["name"] for t in server.call("GET", f"/projects/{project}/tags")}
    out = {}
    for digest, image in by_content(server.images(project)).items():
        w, h = image["width"], image["height"]
        region_tags = {r["tagId"] for r in image["regions"] or []}
        tags = sorted(names[t["tagId"]] for t in image["tags"] or [] if t["tagId"] not in region_tags)
        boxes = sorted((names[r["tagId"]], r["left"] * w, r["top"] * h, r["width"] * w, r["height"] * h)
                       for r in image["regions"] or [])
        out[digest] = (tags, boxes)
    return out


def same_within_a_pixel(want, got):
    assert want.keys() == got.keys()
    for digest, (tags, boxes) in want.items():
        assert got[digest][0] == tags
        assert len(got[digest][1]) == len(boxes)
        for a, b in zip(sorted(boxes), sorted(got[digest][1])):
            assert a[0] == b[0] and all(abs(x - y) <= 1.0 for x, y in zip(a[1:], b[1:])), (a, b)


@pytest.mark.parametrize("fmt,out", [("coco", "set.zip"), ("yolo", "set"), ("voc", "set"), ("customvision", "set")])
def test_export_then_import_gives_the_same_labels(source, tmp_path, fmt, out):
    src, cls, det = source
    for project in (det, cls):
        target = tmp_path / f"{project['name']}-{out}"
        dataset(src, "export", project["id"], "--format", fmt, "--out", str(target))
        name = f"{project['name']} via {fmt}"
        text = dataset(src, "import", str(target), "--format", fmt, "--project", name)
        assert "Imported into project" in text
        copy = next(p for p in src.call("GET", "/projects") if p["name"] == name)
        want, got = labels(src, project["id"]), labels(src, copy["id"])
        same_within_a_pixel(want, got)
        if project is cls:
            # The Negative tag comes back as the Negative tag; Multilabel stays Multilabel.
            tags = {t["name"]: t["type"] for t in src.call("GET", f"/projects/{copy['id']}/tags")}
            assert tags["Negative"] == "Negative"
            assert copy["settings"]["classificationType"] == "Multilabel"
        # Importing the same files again finds every image already there.
        text = dataset(src, "import", str(target), "--format", fmt, "--project", name)
        assert f"{len(want)} already there" in text, text


def test_coco_export_loads_in_pycocotools(source, tmp_path):
    from pycocotools.coco import COCO

    src, _, det = source
    target = tmp_path / "det.zip"
    dataset(src, "export", det["name"], "--format", "coco", "--out", str(target))
    with zipfile.ZipFile(target) as z:
        z.extractall(tmp_path / "det")
        names = z.namelist()
    coco = COCO(str(tmp_path / "det" / "annotations" / "instances.json"))
    images = src.images(det["id"])
    assert len(coco.getImgIds()) == len(images)
    assert len(coco.getAnnIds()) == sum(len(i["regions"] or []) for i in images)
    assert sorted(c["name"] for c in coco.loadCats(coco.getCatIds())) == ["blob", "disc"]
    for img in coco.loadImgs(coco.getImgIds()):
        assert img["file_name"] in names
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and x + w <= img["width"] + 0.01 and y + h <= img["height"] + 0.01


def test_bad_datasets_get_clear_errors_and_change_nothing(source, tmp_path):
    src, _, _ = source
    before = len(src.call("GET", "/projects"))
    (tmp_path / "empty").mkdir()
    bad = (tmp_path / "broken.json")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "instances.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "gone.jpg"}],
                                                                    "annotations": [], "categories": []}))
    for path, fmt, needle in [(tmp_path / "empty", "yolo", "no images"),
                              (tmp_path / "broken", "coco", "gone.jpg"),
                              (bad, "voc", "broken.json")]:
        run = subprocess.run([BIN, "dataset", "import", str(path), "--format", fmt, "--project", "never",
                              "--endpoint", src.url, "--training-key", src.key], capture_output=True, timeout=60)
        assert run.returncode != 0
        assert needle in run.stderr.decode(errors="replace"), run.stderr.decode(errors="replace")
    assert len(src.call("GET", "/projects")) == before


def test_the_dataset_api_exports_and_imports_zips(source):
    """The Argus extension the portal uses: GET / POST /projects/{p}/dataset?format=…"""
    src, cls, det = source
    for fmt in ("coco", "yolo", "voc", "customvision"):
        r = requests.get(f"{src.url}{API}/projects/{det['id']}/dataset", params={"format": fmt},
                         headers={"Training-Key": src.key}, timeout=60)
        assert r.status_code == 200 and r.headers["Content-Type"] == "application/zip", r.text
        assert "attachment" in r.headers["Content-Disposition"]
        copy = src.call("POST", "/projects", params={"name": f"api copy {fmt}", "domainId": OD_GENERAL})
        summary = src.call("POST", f"/projects/{copy['id']}/dataset", params={"format": fmt}, data=r.content)
        assert summary["imagesCreated"] == len(src.images(det["id"])) and summary["failed"] == [], summary
        assert summary["regionsCreated"] == sum(len(i["regions"] or []) for i in src.images(det["id"]))
        same_within_a_pixel(labels(src, det["id"]), labels(src, copy["id"]))
        # The same zip again: every image is a duplicate, nothing is added.
        again = src.call("POST", f"/projects/{copy['id']}/dataset", params={"format": fmt}, data=r.content)
        assert again["imagesCreated"] == 0 and again["imagesDuplicate"] == summary["imagesCreated"]

    # Bad requests get the API's error shape and change nothing.
    target = src.call("POST", "/projects", params={"name": "api target"})
    zip_od = requests.get(f"{src.url}{API}/projects/{det['id']}/dataset", params={"format": "coco"},
                          headers={"Training-Key": src.key}, timeout=60).content
    for params, body, code in [({"format": "csv"}, zip_od, "BadRequest"),
                               ({"format": "coco"}, b"not a zip", "BadRequest"),
                               ({"format": "coco"}, zip_od, "BadRequestImageRegions")]:
        r = requests.post(f"{src.url}{API}/projects/{target['id']}/dataset", params=params, data=body,
                          headers={"Training-Key": src.key}, timeout=60)
        assert r.status_code == 400 and r.json()["code"] == code, r.text
    assert src.images(target["id"]) == [] and src.call("GET", f"/projects/{target['id']}/tags") == []
    r = requests.get(f"{src.url}{API}/projects/{det['id']}/dataset", params={"format": "coco"}, timeout=10)
    assert r.status_code == 401
