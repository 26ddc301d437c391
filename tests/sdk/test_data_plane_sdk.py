"""Drives the Training API data plane through the official Python SDK
(azure-cognitiveservices-vision-customvision), exactly as a user of the hosted service would."""

import base64
import uuid

import pytest
import requests
from azure.cognitiveservices.vision.customvision.training import CustomVisionTrainingClient
from azure.cognitiveservices.vision.customvision.training.models import (
    CustomVisionErrorException,
    ImageFileCreateBatch,
    ImageFileCreateEntry,
    ImageRegionCreateEntry,
    ImageTagCreateEntry,
    ImageUrlCreateBatch,
    ImageUrlCreateEntry,
    Region,
)
from msrest.authentication import ApiKeyCredentials

from conftest import TRAINING_KEY, jpeg


@pytest.fixture(scope="module")
def trainer(server):
    return CustomVisionTrainingClient(server, ApiKeyCredentials(in_headers={"Training-key": TRAINING_KEY}))


def error_code(excinfo):
    return excinfo.value.error.code


def test_domains(trainer):
    domains = trainer.get_domains()
    names = {(d.type, d.name) for d in domains}
    assert ("Classification", "General") in names
    od = next(d for d in domains if d.type == "ObjectDetection" and d.name == "General")
    assert od.id == "da2e3a8a-40a5-4171-82f4-58522f70fbc1"
    assert trainer.get_domain(od.id).name == "General"
    with pytest.raises(CustomVisionErrorException) as e:
        trainer.get_domain(str(uuid.uuid4()))
    assert error_code(e) == "NotFoundDomain"


def test_project_lifecycle(trainer):
    p = trainer.create_project("SDK project", description="made by the SDK", classification_type="Multilabel")
    assert p.settings.classification_type == "Multilabel"
    assert p.settings.domain_id == "ee85a74c-405e-4adc-bb47-ffa8ca0c9f31"
    assert trainer.get_project(p.id).name == "SDK project"
    assert any(x.id == p.id for x in trainer.get_projects())
    p.name = "Renamed"
    p.description = "new description"
    updated = trainer.update_project(p.id, p)
    assert updated.name == "Renamed" and updated.description == "new description"
    assert trainer.get_project(p.id).name == "Renamed"
    trainer.delete_project(p.id)
    with pytest.raises(CustomVisionErrorException) as e:
        trainer.get_project(p.id)
    assert error_code(e) == "NotFoundProject"
    with pytest.raises(CustomVisionErrorException) as e:
        trainer.create_project("x", domain_id=str(uuid.uuid4()))
    assert error_code(e) == "BadRequestProjectUnknownDomain"


def test_tags_images_and_labels(trainer, image_host):
    p = trainer.create_project("Classify")
    cat = trainer.create_tag(p.id, "cat", description="cats")
    dog = trainer.create_tag(p.id, "dog")
    with pytest.raises(CustomVisionErrorException) as e:
        trainer.create_tag(p.id, "CAT")
    assert error_code(e) == "BadRequestTagNameNotUnique"
    neg = trainer.create_tag(p.id, "none", type="Negative")
    assert neg.type == "Negative"
    with pytest.raises(CustomVisionErrorException) as e:
        trainer.create_tag(p.id, "none2", type="Negative")
    assert error_code(e) == "BadRequestMultipleNegativeTag"

    # Bytes upload (multipart imageData), one image per call as in the quickstarts.
    for seed in range(3):
        r = trainer.create_images_from_data(p.id, jpeg(seed), tag_ids=[cat.id])
        assert r.is_batch_successful, r.images[0].status
        img = r.images[0].image
        assert img.width == 320 and img.height == 240
        assert [t.tag_name for t in img.tags] == ["cat"]
    # The same bytes again: OKDuplicate, pointing at the existing image.
    again = trainer.create_images_from_data(p.id, jpeg(0), tag_ids=[cat.id])
    assert again.images[0].status == "OKDuplicate"
    # As on the hosted service, a duplicate makes the batch unsuccessful (207), so that scripts skip it.
    assert not again.is_batch_successful

    # Base64 files batch with per-image tags and batch metadata.
    batch = ImageFileCreateBatch(
        images=[ImageFileCreateEntry(name=f"dog{i}.jpg", contents=jpeg(100 + i), tag_ids=[dog.id]) for i in range(3)],
        metadata={"camera": "left"},
    )
    r = trainer.create_images_from_files(p.id, batch)
    assert r.is_batch_successful
    assert [i.source_url for i in r.images] == ["dog0.jpg", "dog1.jpg", "dog2.jpg"]
    assert r.images[0].image.metadata == {"camera": "left"}

    # Partial success: one good image, one undecodable -> 207 -> is_batch_successful False with statuses.
    bad = ImageFileCreateBatch(images=[
        ImageFileCreateEntry(name="ok.jpg", contents=jpeg(200)),
        ImageFileCreateEntry(name="bad.jpg", contents=b"definitely not an image"),
    ])
    r = trainer.create_images_from_files(p.id, bad)
    assert not r.is_batch_successful
    assert [i.status for i in r.images] == ["OK", "ErrorImageFormat"]

    # URLs (the server downloads them; loopback allowed for this test server).
    r = trainer.create_images_from_urls(p.id, ImageUrlCreateBatch(images=[
        ImageUrlCreateEntry(url=f"{image_host}/img/300.jpg"),
        ImageUrlCreateEntry(url=f"{image_host}/notimage"),
        ImageUrlCreateEntry(url=f"{image_host}/missing"),
    ]))
    assert [i.status for i in r.images] == ["OK", "ErrorImageFormat", "ErrorSource"]

    assert trainer.get_tagged_image_count(p.id) == 6
    assert trainer.get_untagged_image_count(p.id) == 2
    assert trainer.get_image_count(p.id) == 8
    assert trainer.get_tagged_image_count(p.id, tag_ids=[dog.id]) == 3
    tagged = trainer.get_tagged_images(p.id, take=4)
    assert len(tagged) == 4
    assert len(trainer.get_tagged_images(p.id, skip=4)) == 2
    untagged = trainer.get_untagged_images(p.id)
    assert len(untagged) == 2
    newest = trainer.get_images(p.id, order_by="Newest")
    oldest = trainer.get_images(p.id, order_by="Oldest")
    assert [i.id for i in newest] == [i.id for i in reversed(oldest)]
    assert trainer.get_image_count(p.id, filter="camera eq 'left'") == 3
    assert {t.name: t.image_count for t in trainer.get_tags(p.id)} == {"cat": 3, "dog": 3, "none": 0}

    # Signed links work without a key, and not once tampered with.
    resized = requests.get(tagged[0].resized_image_uri, timeout=5)
    assert resized.status_code == 200 and resized.headers["content-type"] == "image/jpeg"
    assert requests.get(tagged[0].thumbnail_uri.replace("sig=", "sig=00"), timeout=5).status_code == 403

    # Tag and untag.
    ids = [i.id for i in untagged]
    r = trainer.create_image_tags(p.id, tags=[ImageTagCreateEntry(image_id=i, tag_id=dog.id) for i in ids] +
                                  [ImageTagCreateEntry(image_id=ids[0], tag_id=dog.id)])
    assert len(r.created) == 2 and len(r.duplicated) == 1
    with pytest.raises(CustomVisionErrorException) as e:
        trainer.create_image_tags(p.id, tags=[ImageTagCreateEntry(image_id=ids[0], tag_id=neg.id)])
    assert error_code(e) == "BadRequestNegativeAndRegularTagOnSameImage"
    assert trainer.get_untagged_image_count(p.id) == 0
    trainer.delete_image_tags(p.id, ids, [dog.id])
    assert trainer.get_untagged_image_count(p.id) == 2

    # Metadata.
    r = trainer.update_image_metadata(p.id, ids + [str(uuid.uuid4())], {"site": "lab"})
    assert not r.is_batch_successful
    assert [e.status for e in r.images] == ["OK", "OK", "ErrorImageNotFound"]
    got = trainer.get_images_by_ids(p.id, image_ids=ids)
    assert all(i.metadata == {"site": "lab"} for i in got)
    with pytest.raises(CustomVisionErrorException) as e:
        trainer.update_image_metadata(p.id, ids, {"k" * 300: "v"})
    assert error_code(e) == "BadRequestImageMetadataKey"

    # Tag update and delete; image deletion.
    dog.name = "puppy"
    assert trainer.update_tag(p.id, dog.id, dog).name == "puppy"
    assert trainer.get_tag(p.id, dog.id).image_count == 3
    trainer.delete_images(p.id, image_ids=ids)
    assert trainer.get_image_count(p.id) == 6
    trainer.delete_tag(p.id, dog.id)
    with pytest.raises(CustomVisionErrorException) as e:
        trainer.get_tag(p.id, dog.id)
    assert error_code(e) == "NotFoundTag"
    trainer.delete_images(p.id, all_images=True, all_iterations=True)
    assert trainer.get_image_count(p.id) == 0
    trainer.delete_project(p.id)


def test_detection_regions_export_import(trainer):
    od = next(d for d in trainer.get_domains() if d.type == "ObjectDetection" and d.name == "General")
    p = trainer.create_project("Detect", domain_id=od.id)
    assert p.settings.classification_type is None
    fork = trainer.create_tag(p.id, "fork")
    scissors = trainer.create_tag(p.id, "scissors")
    batch = ImageFileCreateBatch(images=[
        ImageFileCreateEntry(name=f"{i}.jpg", contents=jpeg(500 + i),
                             regions=[Region(tag_id=fork.id, left=0.1, top=0.1, width=0.3, height=0.4)])
        for i in range(3)
    ])
    r = trainer.create_images_from_files(p.id, batch)
    assert r.is_batch_successful
    img = r.images[0].image
    assert len(img.regions) == 1 and img.regions[0].tag_name == "fork"
    assert trainer.get_tagged_image_count(p.id) == 3

    entries = [
        ImageRegionCreateEntry(image_id=img.id, tag_id=scissors.id, left=0.5, top=0.5, width=0.2, height=0.2),
        ImageRegionCreateEntry(image_id=img.id, tag_id=fork.id, left=0.1, top=0.1, width=0.3, height=0.4),
    ]
    r = trainer.create_image_regions(p.id, regions=entries)
    assert len(r.created) == 1 and len(r.duplicated) == 1
    assert r.created[0].tag_name == "scissors" and r.created[0].region_id
    with pytest.raises(CustomVisionErrorException) as e:
        trainer.create_image_regions(p.id, regions=[ImageRegionCreateEntry(
            image_id=img.id, tag_id=fork.id, left=0.9, top=0.1, width=0.3, height=0.1)])
    assert error_code(e) == "BadRequestImageRegions"
    with pytest.raises(CustomVisionErrorException) as e:
        trainer.create_image_regions(p.id, regions=[entries[0]] * 65)
    assert error_code(e) == "BadRequestExceededBatchSize"
    trainer.delete_image_regions(p.id, [r.created[0].region_id])
    assert len(trainer.get_images_by_ids(p.id, image_ids=[img.id])[0].regions) == 1
    proposals = trainer.get_image_region_proposals(p.id, img.id)
    assert proposals.image_id == img.id
    for prop in proposals.proposals:
        box = prop.bounding_box
        assert 0 <= box.left and box.width > 0 and box.left + box.width <= 1 + 1e-9 and 0 <= prop.confidence <= 1

    exported = trainer.export_project(p.id)
    assert exported.image_count == 3 and exported.tag_count == 2 and exported.region_count == 3
    copy = trainer.import_project(exported.token, name="Detect copy")
    assert copy.id != p.id and copy.name == "Detect copy"
    assert copy.settings.domain_id == od.id
    assert {t.name: t.image_count for t in trainer.get_tags(copy.id)} == {"fork": 3, "scissors": 0}
    copied = trainer.get_tagged_images(copy.id)
    assert len(copied) == 3 and all(len(i.regions) == 1 for i in copied)
    assert requests.get(copied[0].original_image_uri, timeout=5).content[:2] == b"\xff\xd8"
    with pytest.raises(CustomVisionErrorException) as e:
        trainer.import_project("not-a-token")
    assert error_code(e) == "BadRequestInvalidImportToken"
    trainer.delete_project(copy.id)
    trainer.delete_project(p.id)


def test_artifact_and_wrong_key(trainer, server):
    p = trainer.create_project("Artifacts")
    r = trainer.create_images_from_data(p.id, jpeg(900))
    image_id = r.images[0].image.id
    data = b"".join(trainer.get_artifact(p.id, f"images/{image_id}/original"))
    assert data == jpeg(900)
    bad = CustomVisionTrainingClient(server, ApiKeyCredentials(in_headers={"Training-key": "wrong"}))
    with pytest.raises(CustomVisionErrorException) as e:
        bad.get_projects()
    assert e.value.response.status_code == 401
    trainer.delete_project(p.id)
