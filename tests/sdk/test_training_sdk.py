"""Trains, evaluates, publishes, quick-tests and exports classifiers through the official Python SDK."""

import io
import json
import os
import time
import zipfile

import numpy as np
import onnxruntime as ort
import pytest
import requests
from PIL import Image
from azure.cognitiveservices.vision.customvision.training import CustomVisionTrainingClient
from azure.cognitiveservices.vision.customvision.training.models import (
    CustomVisionErrorException,
    SuggestedTagAndRegionQueryToken,
)
from msrest.authentication import ApiKeyCredentials

from conftest import MODELS_DIR, TRAINING_KEY, photo_crop_jpeg

GENERAL_COMPACT = "0732100f-1a38-4e49-a514-c9b44c697ab5"

CROPS = [(0.0, 0.0, 0.8, 0.8), (0.2, 0.2, 0.8, 0.8), (0.1, 0.0, 0.85, 0.9),
         (0.0, 0.15, 0.9, 0.85), (0.15, 0.1, 0.7, 0.75), (0.05, 0.05, 0.9, 0.9)]


@pytest.fixture(scope="module")
def trainer(server):
    return CustomVisionTrainingClient(server, ApiKeyCredentials(in_headers={"Training-key": TRAINING_KEY}))


def test_train_evaluate_publish_quick_test(trainer, image_host):
    project = trainer.create_project("Cat or coffee")
    cat = trainer.create_tag(project.id, "cat")
    cup = trainer.create_tag(project.id, "coffee")
    for box in CROPS:
        assert trainer.create_images_from_data(project.id, photo_crop_jpeg("chelsea.png", box), tag_ids=[cat.id]).is_batch_successful
        assert trainer.create_images_from_data(project.id, photo_crop_jpeg("coffee.png", box), tag_ids=[cup.id]).is_batch_successful

    iteration = trainer.train_project(project.id)
    assert iteration.status == "Training"
    deadline = time.time() + 600  # a hang guard: CI trains on two shared cores
    while iteration.status == "Training" and time.time() < deadline:
        time.sleep(0.5)
        iteration = trainer.get_iteration(project.id, iteration.id)
    assert iteration.status == "Completed"
    with pytest.raises(CustomVisionErrorException) as e:
        trainer.train_project(project.id)
    assert e.value.error.code == "BadRequestTrainingNotNeeded"

    perf = trainer.get_iteration_performance(project.id, iteration.id, threshold=0.5)
    assert {t.name for t in perf.per_tag_performance} == {"cat", "coffee"}
    assert perf.precision >= 0.9 and perf.average_precision >= 0.9
    assert trainer.get_image_performance_count(project.id, iteration.id) == 12
    images = trainer.get_image_performances(project.id, iteration.id, tag_ids=[cat.id], take=10)
    assert len(images) == 6 and all(len(i.predictions) == 2 for i in images)

    renamed = trainer.update_iteration(project.id, iteration.id, name="v1")
    assert renamed.name == "v1"
    assert [i.id for i in trainer.get_iterations(project.id)] == [iteration.id]
    assert trainer.publish_iteration(project.id, iteration.id, "catOrCoffee", "/subscriptions/local/argus") is True
    assert trainer.get_iteration(project.id, iteration.id).publish_name == "catOrCoffee"

    result = trainer.quick_test_image(project.id, photo_crop_jpeg("chelsea.png", (0, 0, 1, 1)), iteration_id=iteration.id)
    assert result.predictions[0].tag_name == "cat"
    assert result.iteration == iteration.id
    by_url = trainer.quick_test_image_url(project.id, url=f"{image_host}/img/7.jpg")
    assert len(by_url.predictions) == 2

    # Smart labeler on two new, untagged photographs.
    new_cat = trainer.create_images_from_data(project.id, photo_crop_jpeg("chelsea.png", (0.3, 0.25, 0.65, 0.7))).images[0].image
    new_cup = trainer.create_images_from_data(project.id, photo_crop_jpeg("coffee.png", (0.25, 0.3, 0.7, 0.65))).images[0].image
    suggestions = trainer.suggest_tags_and_regions(project.id, iteration.id, [new_cat.id, new_cup.id])
    assert {s.id: s.predictions[0].tag_name for s in suggestions} == {new_cat.id: "cat", new_cup.id: "coffee"}
    assert all(0.0 <= s.prediction_uncertainty <= 1.0 for s in suggestions)
    found = trainer.query_suggested_images(
        project.id, iteration.id, SuggestedTagAndRegionQueryToken(tag_ids=[cat.id], threshold=0.5, max_count=10))
    assert [r.id for r in found.results] == [new_cat.id]
    assert found.results[0].thumbnail_uri.startswith("http")
    counts = trainer.query_suggested_image_count(project.id, iteration.id, tag_ids=[cat.id, cup.id], threshold=0.5)
    assert counts == {cat.id: 1, cup.id: 1}

    # General is not a compact domain: its iterations cannot be exported.
    assert iteration.exportable is False and iteration.exportable_to == []
    with pytest.raises(CustomVisionErrorException) as e:
        trainer.export_iteration(project.id, iteration.id, "ONNX")
    assert e.value.error.code == "BadRequestExportValidationFailed"

    with pytest.raises(CustomVisionErrorException) as e:
        trainer.delete_iteration(project.id, iteration.id)
    assert e.value.error.code == "BadRequestIterationIsPublished"
    trainer.unpublish_iteration(project.id, iteration.id)
    trainer.delete_iteration(project.id, iteration.id)
    trainer.delete_project(project.id)


def test_export_a_compact_classifier_to_onnx(trainer):
    compact = [d for d in trainer.get_domains() if d.id == GENERAL_COMPACT][0]
    assert compact.exportable
    if hasattr(compact, "exportable_platforms"):  # SDK 3.1 reads it; 3.0's Domain has no such field
        assert compact.exportable_platforms == ["ONNX", "DockerFile"]
    project = trainer.create_project("Exportable", domain_id=GENERAL_COMPACT)
    cat = trainer.create_tag(project.id, "cat")
    cup = trainer.create_tag(project.id, "coffee")
    for box in CROPS:
        trainer.create_images_from_data(project.id, photo_crop_jpeg("chelsea.png", box), tag_ids=[cat.id])
        trainer.create_images_from_data(project.id, photo_crop_jpeg("coffee.png", box), tag_ids=[cup.id])
    iteration = trainer.train_project(project.id)
    deadline = time.time() + 600  # a hang guard: CI trains on two shared cores
    while iteration.status == "Training" and time.time() < deadline:
        time.sleep(0.5)
        iteration = trainer.get_iteration(project.id, iteration.id)
    assert iteration.status == "Completed" and iteration.exportable and iteration.exportable_to == ["ONNX", "DockerFile"]

    with pytest.raises(CustomVisionErrorException) as e:
        trainer.export_iteration(project.id, iteration.id, "CoreML")
    assert e.value.error.code == "BadRequestExportValidationFailed"
    started = trainer.export_iteration(project.id, iteration.id, "ONNX")
    assert (started.platform, started.status) == ("ONNX", "Exporting")
    deadline = time.time() + 300
    exports = trainer.get_exports(project.id, iteration.id)
    while exports[0].status == "Exporting" and time.time() < deadline:
        time.sleep(0.3)
        exports = trainer.get_exports(project.id, iteration.id)
    assert len(exports) == 1 and exports[0].status == "Done" and not exports[0].newer_version_available
    package = zipfile.ZipFile(io.BytesIO(requests.get(exports[0].download_uri, timeout=60).content))
    assert package.read("model.onnx")[:2] == b"\x08\x08"  # ModelProto.ir_version = 8
    labels = package.read("labels.txt").decode().split()
    assert sorted(labels) == ["cat", "coffee"]
    assert json.loads(package.read("cvexport.manifest"))["IterationId"] == iteration.id
    # The downloaded model runs (onnxruntime) and answers what the server's QuickTestImage answers, on a
    # 256 px square whose central 224 px (the classifier's own crop) need no resampling.
    session = ort.InferenceSession(package.read("model.onnx"), providers=["CPUExecutionProvider"])
    for name in ("chelsea.png", "coffee.png", "astronaut.png"):
        square = Image.open(os.path.join(MODELS_DIR, "photos", name)).convert("RGB").resize((256, 256))
        png = io.BytesIO()
        square.save(png, "PNG")
        want = trainer.quick_test_image(project.id, png.getvalue(), iteration_id=iteration.id, store=False)
        want = {p.tag_name: p.probability for p in want.predictions}
        x = np.asarray(square, dtype=np.float32)[16:240, 16:240].transpose(2, 0, 1)[None].copy()
        got = session.run(None, {"data": x})[0][0]
        assert max(abs(float(g) - want[label]) for g, label in zip(got, labels)) <= 1e-4, (got, want)

    # The other ONNX flavours and OpenVino, as the SDK asks for them.
    for platform, flavor in [("ONNX", "OnnxFloat16"), ("OpenVino", None)]:
        started = trainer.export_iteration(project.id, iteration.id, platform, flavor=flavor)
        assert (started.platform, started.flavor, started.status) == (platform, flavor, "Exporting")
        deadline = time.time() + 300
        while time.time() < deadline:
            mine = [e for e in trainer.get_exports(project.id, iteration.id) if (e.platform, e.flavor) == (platform, flavor)]
            if mine[0].status != "Exporting":
                break
            time.sleep(0.3)
        assert mine[0].status == "Done", mine[0].status
        package = zipfile.ZipFile(io.BytesIO(requests.get(mine[0].download_uri, timeout=60).content))
        assert json.loads(package.read("cvexport.manifest"))["Platform"] == platform
        assert ort.InferenceSession(package.read("model.onnx"), providers=["CPUExecutionProvider"]).run(
            None, {"data": x})[0].shape == (1, 2)

    # The DockerFile flavor: Argus itself and the model folder it serves.
    started = trainer.export_iteration(project.id, iteration.id, "DockerFile", flavor="Linux")
    assert (started.platform, started.flavor, started.status) == ("DockerFile", "Linux", "Exporting")
    deadline = time.time() + 300
    docker = [e for e in trainer.get_exports(project.id, iteration.id) if e.platform == "DockerFile"]
    while docker[0].status == "Exporting" and time.time() < deadline:
        time.sleep(0.3)
        docker = [e for e in trainer.get_exports(project.id, iteration.id) if e.platform == "DockerFile"]
    assert docker[0].status == "Done", docker[0].status
    package = zipfile.ZipFile(io.BytesIO(requests.get(docker[0].download_uri, timeout=120).content))
    assert {"Dockerfile", "argus", "model/model.json", "model/head.safetensors"} <= set(package.namelist())
    assert b"serve-model" in package.read("Dockerfile")
    assert json.loads(package.read("model/model.json"))["iteration"] == iteration.id
    trainer.delete_project(project.id)
