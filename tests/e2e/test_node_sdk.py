"""Microsoft's Node.js SDK packages (`@azure/cognitiveservices-customvision-training` and `-prediction` from npm,
with `@azure/ms-rest-js`) driving a real `argus serve` through the quickstarts' classification and object
detection flows (`tests/node/quickstart.js`). The images are crops of scikit-image photographs and, for the
detector, those photographs' objects pasted on real textures at known places."""

import json
import os
import random
import shutil
import subprocess

import pytest
from PIL import Image

from helpers import MODELS_DIR, Server

NODE_DIR = os.path.join(os.path.dirname(__file__), "..", "node")
CROPS = [(0.0, 0.0, 0.8, 0.8), (0.2, 0.2, 0.8, 0.8), (0.1, 0.0, 0.85, 0.9),
         (0.0, 0.15, 0.9, 0.85), (0.15, 0.1, 0.7, 0.75), (0.05, 0.05, 0.9, 0.9)]
# Objects for the detector (fractions x, y, w, h of the photograph) and the textures they are pasted on.
OBJECTS = {"cup": ("coffee.png", (0.2, 0.05, 0.55, 0.55)), "cat": ("chelsea.png", (0.2, 0.0, 0.6, 0.75))}
BACKGROUNDS = ["grass.png", "gravel.png", "brick.png"]


def photo(name):
    return Image.open(os.path.join(MODELS_DIR, "photos", name)).convert("RGB")


def crop(img, box):
    w, h = img.size
    x, y, cw, ch = box
    return img.crop((int(w * x), int(h * y), int(w * (x + cw)), int(h * (y + ch))))


def composite(obj, seed):
    """The object pasted at a random place and scale on a texture: (image, normalised region)."""
    rnd = random.Random(seed)
    bg = photo(BACKGROUNDS[seed % len(BACKGROUNDS)]).resize((320, 240))
    scale = rnd.uniform(0.35, 0.6)
    ow = int(320 * scale)
    oh = max(8, int(ow * obj.height / obj.width))
    oh = min(oh, 220)
    x, y = rnd.randrange(0, 320 - ow), rnd.randrange(0, 240 - oh)
    bg.paste(obj.resize((ow, oh)), (x, y))
    return bg, [x / 320, y / 240, ow / 320, oh / 240]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("node-images")
    for tag, name in (("cat", "chelsea.png"), ("coffee", "coffee.png")):
        folder = root / "classification" / tag
        folder.mkdir(parents=True)
        for i, box in enumerate(CROPS):
            crop(photo(name), box).save(folder / f"{tag}-{i}.jpg", "JPEG", quality=90)
    photo("chelsea.png").save(root / "test-cat.jpg", "JPEG", quality=90)
    regions = {}
    for tag, (name, box) in OBJECTS.items():
        folder = root / "detection" / tag
        folder.mkdir(parents=True)
        obj = crop(photo(name), box)
        regions[tag] = {}
        for i in range(15):
            img, region = composite(obj, 100 * len(regions) + i)
            img.save(folder / f"{tag}-{i}.jpg", "JPEG", quality=90)
            regions[tag][f"{tag}-{i}.jpg"] = region
    (root / "detection" / "regions.json").write_text(json.dumps(regions))
    composite(crop(photo("coffee.png"), OBJECTS["cup"][1]), 999)[0].save(root / "test-cup.jpg", "JPEG", quality=90)
    return root


def test_the_node_quickstarts_run_unchanged(images):
    node = shutil.which("node")
    assert node, "Node.js is missing"
    assert os.path.isdir(os.path.join(NODE_DIR, "node_modules", "@azure")), \
        "tests/node/node_modules is missing: scripts/test.sh runs `npm ci` there"
    server = Server("node-training-key")
    try:
        env = dict(os.environ, ARGUS_ENDPOINT=server.url, ARGUS_TRAINING_KEY=server.key,
                   ARGUS_PREDICTION_KEY=server.key + "-p", ARGUS_IMAGES=str(images))
        run = subprocess.run([node, "quickstart.js"], cwd=NODE_DIR, env=env, capture_output=True, text=True,
                             timeout=1500)
        assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
        assert "Node quickstarts passed." in run.stdout, run.stdout
    finally:
        server.stop()
