"""Run an Argus ONNX export on images, preprocessing them as the Argus server does.

usage: python predict.py IMAGE [IMAGE ...]      (needs numpy, Pillow and onnxruntime)

Each image is turned upright by its EXIF orientation and converted to RGB. A classifier (input `data`) then
takes the central square of 224/256 of the shorter side, resized to the model's input with a triangle
(bilinear) filter, and prints the probability of every tag. A detector (input `image_tensor`) takes the whole
image resized (stretched) to the model's input with the same filter, and prints its boxes in the Prediction
API's shape. The model normalises the pixels (and averages the image with its mirror image) itself.
"""

import json
import os
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

HERE = os.path.dirname(os.path.abspath(__file__))


def upright(path):
    return ImageOps.exif_transpose(Image.open(path)).convert("RGB")


def classifier_input(img, size):
    w, h = img.size
    side = max(1, round(min(w, h) * 224 / 256))
    side_w, side_h = min(side, w), min(side, h)
    x, y = (w - side_w) // 2, (h - side_h) // 2
    crop = img.crop((x, y, x + side_w, y + side_h)).resize((size, size), Image.BILINEAR)
    return np.asarray(crop, dtype=np.float32).transpose(2, 0, 1)[None]


def detector_input(img, size):
    resized = img if img.size == (size, size) else img.resize((size, size), Image.BILINEAR)
    return np.asarray(resized, dtype=np.float32).transpose(2, 0, 1)[None]


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    session = ort.InferenceSession(os.path.join(HERE, "model.onnx"), providers=["CPUExecutionProvider"])
    with open(os.path.join(HERE, "labels.txt"), encoding="utf-8") as f:
        labels = [line.rstrip("\n") for line in f if line.strip()]
    model_input = session.get_inputs()[0]
    size = model_input.shape[-1]
    for path in sys.argv[1:]:
        img = upright(path)
        if model_input.name == "image_tensor":
            boxes, scores, classes = session.run(
                ["detected_boxes", "detected_scores", "detected_classes"], {"image_tensor": detector_input(img, size)})
            predictions = [{"tagName": labels[int(c)], "probability": float(s),
                            "boundingBox": {"left": float(b[0]), "top": float(b[1]),
                                            "width": float(b[2] - b[0]), "height": float(b[3] - b[1])}}
                           for b, s, c in zip(boxes[0], scores[0], classes[0])]
        else:
            probs = session.run(None, {"data": classifier_input(img, size)})[0][0]
            ranked = sorted(zip(labels, probs.tolist()), key=lambda p: -p[1])
            predictions = [{"tagName": t, "probability": p} for t, p in ranked]
        print(json.dumps({"image": path, "predictions": predictions}))


if __name__ == "__main__":
    main()
