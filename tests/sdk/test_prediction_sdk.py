"""The official SDK end to end for detection and prediction: trains an object detector on scenes composited
from real photographs (regions uploaded with the images), reads its performance, publishes it and a
classifier, calls every CustomVisionPredictionClient method, then queries, promotes and deletes what the
endpoint stored."""

import io
import os
import random
import time

import pytest
from azure.cognitiveservices.vision.customvision.prediction import CustomVisionPredictionClient
from azure.cognitiveservices.vision.customvision.training import CustomVisionTrainingClient
from azure.cognitiveservices.vision.customvision.training.models import (
    CustomVisionErrorException,
    ImageFileCreateBatch,
    ImageFileCreateEntry,
    ImageIdCreateBatch,
    ImageIdCreateEntry,
    PredictionQueryTag,
    PredictionQueryToken,
    Region,
)
from msrest.authentication import ApiKeyCredentials
from PIL import Image

from conftest import MODELS_DIR, PREDICTION_KEY, TRAINING_KEY, photo_crop_jpeg

DETECTION_DOMAIN = "da2e3a8a-40a5-4171-82f4-58522f70fbc1"
BACKGROUNDS = ["astronaut.png", "brick.png", "camera.png", "grass.png", "gravel.png", "moon.png", "rocket.jpg"]
OBJECTS = {"cat": ("chelsea.png", (20, 0, 400, 300)), "cup": ("coffee.png", (75, 15, 485, 390))}


def open_photo(name):
    return Image.open(os.path.join(MODELS_DIR, "photos", name)).convert("RGB")


def scene(rnd, obj_name, background):
    """A 512x384 JPEG of `background` with the object pasted at a random scale and place, and its box."""
    bg = open_photo(background).resize((512, 384))
    src, box = OBJECTS[obj_name]
    obj = open_photo(src).crop(box)
    side = rnd.uniform(0.3, 0.55) * 384
    w, h = int(side * obj.width / obj.height), int(side)
    x, y = rnd.randrange(0, 512 - w), rnd.randrange(0, 384 - h)
    bg.paste(obj.resize((w, h)), (x, y))
    buf = io.BytesIO()
    bg.save(buf, "JPEG", quality=90)
    return buf.getvalue(), (x / 512, y / 384, w / 512, h / 384)


@pytest.fixture(scope="module")
def trainer(server):
    return CustomVisionTrainingClient(server, ApiKeyCredentials(in_headers={"Training-key": TRAINING_KEY}))


@pytest.fixture(scope="module")
def predictor(server):
    return CustomVisionPredictionClient(server, ApiKeyCredentials(in_headers={"Prediction-key": PREDICTION_KEY}))


def wait(trainer, project_id, iteration):
    deadline = time.time() + 600  # a hang guard: CI trains on two shared cores
    while iteration.status == "Training" and time.time() < deadline:
        time.sleep(0.5)
        iteration = trainer.get_iteration(project_id, iteration.id)
    return iteration


def test_detector_and_prediction_client(trainer, predictor, image_host):
    rnd = random.Random(3)
    project = trainer.create_project("Cats and cups", domain_id=DETECTION_DOMAIN)
    tags = {name: trainer.create_tag(project.id, name) for name in OBJECTS}
    entries = []
    for i in range(15):
        for name in OBJECTS:
            data, (l, t, w, h) = scene(rnd, name, BACKGROUNDS[(i + len(name)) % len(BACKGROUNDS)])
            region = Region(tag_id=tags[name].id, left=l, top=t, width=w, height=h)
            entries.append(ImageFileCreateEntry(name=f"{name}{i}.jpg", contents=data, regions=[region]))
    for start in range(0, len(entries), 16):
        summary = trainer.create_images_from_files(project.id, ImageFileCreateBatch(images=entries[start:start + 16]))
        assert summary.is_batch_successful

    iteration = wait(trainer, project.id, trainer.train_project(project.id))
    assert iteration.status == "Completed"
    perf = trainer.get_iteration_performance(project.id, iteration.id, threshold=0.3, overlap_threshold=0.3)
    assert {t.name for t in perf.per_tag_performance} == set(OBJECTS)
    assert perf.average_precision > 0.5
    images = trainer.get_image_performances(project.id, iteration.id, take=5)
    assert images and images[0].predictions[0].bounding_box is not None and images[0].regions
    trainer.publish_iteration(project.id, iteration.id, "boxes", "/subscriptions/local/argus")

    held_out, truth = scene(random.Random(99), "cup", "motorcycle_left.png")
    quick = trainer.quick_test_image(project.id, held_out, iteration_id=iteration.id, store=False)
    assert quick.predictions[0].tag_name == "cup" and quick.predictions[0].bounding_box is not None
    found = predictor.detect_image(project.id, "boxes", held_out, application="sdk")
    best = found.predictions[0]
    assert best.tag_name == "cup" and best.bounding_box is not None
    assert abs(best.bounding_box.left - truth[0]) < 0.15 and abs(best.bounding_box.top - truth[1]) < 0.15
    assert predictor.detect_image_with_no_store(project.id, "boxes", held_out).predictions[0].tag_name == "cup"
    stored_url = trainer.get_tagged_images(project.id, take=1)[0].original_image_uri
    assert predictor.detect_image_url(project.id, "boxes", stored_url).predictions

    # A classifier, for the classify methods.
    cls = trainer.create_project("Cat or cup")
    cat, cup = trainer.create_tag(cls.id, "cat"), trainer.create_tag(cls.id, "cup")
    for box in [(0.0, 0.0, 0.8, 0.8), (0.2, 0.2, 0.8, 0.8), (0.1, 0.0, 0.85, 0.9), (0.0, 0.15, 0.9, 0.85),
                (0.15, 0.1, 0.7, 0.75)]:
        trainer.create_images_from_data(cls.id, photo_crop_jpeg("chelsea.png", box), tag_ids=[cat.id])
        trainer.create_images_from_data(cls.id, photo_crop_jpeg("coffee.png", box), tag_ids=[cup.id])
    it = wait(trainer, cls.id, trainer.train_project(cls.id))
    assert it.status == "Completed"
    trainer.publish_iteration(cls.id, it.id, "cats", "/subscriptions/local/argus")
    cat_jpeg = photo_crop_jpeg("chelsea.png", (0.05, 0.05, 0.9, 0.9))
    first = predictor.classify_image(cls.id, "cats", cat_jpeg, application="sdk")
    assert first.predictions[0].tag_name == "cat" and first.predictions[0].tag_type == "Regular"
    assert predictor.classify_image_with_no_store(cls.id, "cats", cat_jpeg).predictions[0].tag_name == "cat"
    assert len(predictor.classify_image_url(cls.id, "cats", f"{image_host}/img/3.jpg").predictions) == 2
    assert len(predictor.classify_image_url_with_no_store(cls.id, "cats", f"{image_host}/img/4.jpg").predictions) == 2
    with pytest.raises(Exception):
        predictor.classify_image(cls.id, "no-such-name", cat_jpeg)

    # What the endpoint saw: query, page, promote, delete.
    result = trainer.query_predictions(cls.id, PredictionQueryToken(order_by="Newest"))
    assert [r.id for r in result.results][-1] == first.id and len(result.results) == 2
    assert result.results[0].thumbnail_uri.startswith("http")
    cats_only = trainer.query_predictions(
        cls.id, PredictionQueryToken(tags=[PredictionQueryTag(id=cat.id, min_threshold=0.5, max_threshold=1.0)]))
    assert first.id in {r.id for r in cats_only.results}
    assert all(any(p.tag_id == cat.id and p.probability >= 0.5 for p in r.predictions) for r in cats_only.results)
    sdk_app = trainer.query_predictions(cls.id, PredictionQueryToken(application="sdk", max_count=1))
    assert [r.id for r in sdk_app.results] == [first.id]
    page = trainer.query_predictions(cls.id, PredictionQueryToken(max_count=1, session="abc"))
    assert len(page.results) == 1 and page.token.continuation and page.token.session == "abc"
    rest = trainer.query_predictions(cls.id, page.token)
    assert len(rest.results) == 1 and rest.results[0].id != page.results[0].id
    with pytest.raises(CustomVisionErrorException) as e:
        trainer.query_predictions(cls.id, PredictionQueryToken(
            tags=[PredictionQueryTag(id=cat.id), PredictionQueryTag(id=cup.id), PredictionQueryTag(id=cat.id)]))
    assert e.value.error.code == "BadRequestPredictionTagsExceededCount"

    promoted = trainer.create_images_from_predictions(
        cls.id, ImageIdCreateBatch(images=[ImageIdCreateEntry(id=first.id)], tag_ids=[cat.id]))
    assert promoted.is_batch_successful and promoted.images[0].image.tags[0].tag_name == "cat"
    trainer.delete_prediction(cls.id, [first.id])
    assert first.id not in {r.id for r in trainer.query_predictions(cls.id, PredictionQueryToken()).results}
    detections = trainer.query_predictions(project.id, PredictionQueryToken())
    assert len(detections.results) == 2 and detections.results[0].predictions[0].bounding_box is not None

    trainer.unpublish_iteration(cls.id, it.id)
    with pytest.raises(Exception):
        predictor.classify_image(cls.id, "cats", cat_jpeg)
    trainer.unpublish_iteration(project.id, iteration.id)
    trainer.delete_project(cls.id)
    trainer.delete_project(project.id)
