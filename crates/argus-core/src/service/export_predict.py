"""Classify images with an Argus ONNX export, preprocessing them as the Argus server does.

usage: python predict.py IMAGE [IMAGE ...]      (needs numpy, Pillow and onnxruntime)

Each image is turned upright by its EXIF orientation, converted to RGB, cropped to its central square of
224/256 of the shorter side and resized to the model's input with a triangle (bilinear) filter. The model
normalises the pixels and averages the image with its mirror image itself.
"""

import json
import os
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

HERE = os.path.dirname(os.path.abspath(__file__))


def load(path, size):
    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    w, h = img.size
    side = max(1, round(min(w, h) * 224 / 256))
    side_w, side_h = min(side, w), min(side, h)
    x, y = (w - side_w) // 2, (h - side_h) // 2
    crop = img.crop((x, y, x + side_w, y + side_h)).resize((size, size), Image.BILINEAR)
    return np.asarray(crop, dtype=np.float32).transpose(2, 0, 1)[None]


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    session = ort.InferenceSession(os.path.join(HERE, "model.onnx"), providers=["CPUExecutionProvider"])
    with open(os.path.join(HERE, "labels.txt"), encoding="utf-8") as f:
        labels = [line.rstrip("\n") for line in f if line.strip()]
    size = session.get_inputs()[0].shape[-1]
    for path in sys.argv[1:]:
        probs = session.run(None, {"data": load(path, size)})[0][0]
        ranked = sorted(zip(labels, probs.tolist()), key=lambda p: -p[1])
        print(json.dumps({"image": path, "predictions": [{"tagName": t, "probability": p} for t, p in ranked]}))


if __name__ == "__main__":
    main()
