"""The linear-probe reference of `argus-bench quality`.

The textbook probe an ML engineer writes on a pretrained backbone, on the same EfficientNet-Lite0 weights as Argus
(built as an ONNX graph from Argus's converted safetensors by bench_backbone_ort.py's `build`): each photograph's
shorter side resized to 256, the central 224 x 224 cropped, normalised as the network expects ((x - 127) / 128),
the 1280 globally pooled features of the crop and of its mirror image averaged; then scikit-learn's
LogisticRegression with C chosen by 5-fold stratified cross-validation on the training photographs.

Reads one JSON document on stdin: {"weights": PATH, "tasks": [{"name", "train": [[path, label]...],
"test": [[path, label]...]}]}; prints one JSON line per task: {"name", "accuracy", "C"}.
"""

import json
import os
import sys

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper
from PIL import Image, ImageOps
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_backbone_ort import build, load_safetensors  # noqa: E402

GRID = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]


def crop(path):
    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    w, h = img.size
    s = 256 / min(w, h)
    img = img.resize((max(224, round(w * s)), max(224, round(h * s))), Image.BILINEAR)
    w, h = img.size
    x, y = (w - 224) // 2, (h - 224) // 2
    img = img.crop((x, y, x + 224, y + 224))
    a = (np.asarray(img, dtype=np.float32) - 127.0) / 128.0
    return a.transpose(2, 0, 1)


def main():
    job = json.load(sys.stdin)
    model = build(load_safetensors(job["weights"]), 224)
    model.graph.output.append(helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["N", 1280]))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = os.cpu_count() or 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    cache = {}

    def feature(path):
        if path not in cache:
            x = crop(path)
            batch = np.stack([x, x[:, :, ::-1]]).astype(np.float32)
            pooled = sess.run(["pooled"], {"input": batch})[0]
            cache[path] = pooled.mean(axis=0)
        return cache[path]

    for task in job["tasks"]:
        xtr = np.stack([feature(p) for p, _ in task["train"]])
        ytr = np.array([label for _, label in task["train"]])
        xte = np.stack([feature(p) for p, _ in task["test"]])
        yte = np.array([label for _, label in task["test"]])
        folds = min(5, int(np.min(np.unique(ytr, return_counts=True)[1])))
        search = GridSearchCV(LogisticRegression(max_iter=5000), {"C": GRID},
                              cv=StratifiedKFold(folds, shuffle=True, random_state=0))
        search.fit(xtr, ytr)
        accuracy = float((search.predict(xte) == yte).mean())
        print(json.dumps({"name": task["name"], "accuracy": accuracy, "C": search.best_params_["C"]}), flush=True)


if __name__ == "__main__":
    main()
