"""Fixtures for the official-SDK tests: a real `argus serve` process on a free loopback port over a temporary
data directory, a tiny HTTP server that serves test images (for the URL upload path), and JPEG factories."""

import http.server
import io
import os
import random
import socket
import subprocess
import tempfile
import threading
import time

import pytest
import requests
from PIL import Image, ImageDraw

TRAINING_KEY = "sdk-test-training-key"
MODELS_DIR = os.environ.get("ARGUS_MODELS_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "argus-models"))
PREDICTION_KEY = "sdk-test-prediction-key"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jpeg(seed, size=(320, 240)):
    """A distinct, photo-like JPEG (gradient, shapes, noise) for each seed."""
    rnd = random.Random(seed)
    img = Image.new("RGB", size, (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
    d = ImageDraw.Draw(img)
    for _ in range(8):
        x0, y0 = rnd.randrange(size[0]), rnd.randrange(size[1])
        d.rectangle([x0, y0, x0 + rnd.randrange(10, 120), y0 + rnd.randrange(10, 90)],
                    fill=(rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="session")
def server():
    binary = os.environ.get("ARGUS_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "target", "debug", "argus"))
    data_dir = tempfile.mkdtemp(prefix="argus-sdk-")
    port = free_port()
    env = dict(os.environ, ARGUS_TRAINING_KEY=TRAINING_KEY, ARGUS_PREDICTION_KEY=PREDICTION_KEY, ARGUS_LOG="warn",
               ARGUS_MODELS_DIR=MODELS_DIR)
    proc = subprocess.Popen(
        [binary, "serve", "--data-dir", data_dir, "--bind", f"127.0.0.1:{port}", "--allow-private-urls", "true"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if requests.get(endpoint + "/healthz", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError("argus did not start: " + proc.stderr.read().decode(errors="replace"))
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def image_host():
    """Serves /img/<seed>.jpg as a distinct JPEG and /notimage as text, on loopback."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.startswith("/img/"):
                body = jpeg(int(self.path.split("/")[-1].split(".")[0]))
                ctype = "image/jpeg"
            elif self.path == "/notimage":
                body, ctype = b"hello, not an image", "text/plain"
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def photo_crop_jpeg(name, box):
    """JPEG bytes of a crop (fractions x, y, w, h) of a real photograph shipped with scikit-image."""
    img = Image.open(os.path.join(MODELS_DIR, "photos", name)).convert("RGB")
    w, h = img.size
    x, y, cw, ch = box
    buf = io.BytesIO()
    img.crop((int(w * x), int(h * y), int(w * (x + cw)), int(h * (y + ch)))).save(buf, "JPEG", quality=90)
    return buf.getvalue()
