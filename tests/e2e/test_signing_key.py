"""Signed image links across nodes: API nodes over one data directory given the same `ARGUS_SIGNING_KEY` open
each other's links; a node with another key refuses them (the key given wins over the data directory's)."""

import base64
from urllib.parse import urlsplit

import requests

from helpers import Server, jpeg

KEY = "a-signing-key-shared-by-the-cluster-0123456789"


def test_links_signed_by_one_node_open_on_another_with_the_same_key(tmp_path):
    data = str(tmp_path / "data")
    a = Server("sign-key", data_dir=data, extra_env={"ARGUS_SIGNING_KEY": KEY}, args=["--workers", "0"])
    b = Server("sign-key", data_dir=data, extra_env={"ARGUS_SIGNING_KEY": KEY}, args=["--workers", "0"])
    c = Server("sign-key", data_dir=data, extra_env={"ARGUS_SIGNING_KEY": KEY[::-1]}, args=["--workers", "0"])
    try:
        project = a.call("POST", "/projects", params={"name": "links"})
        tag = a.call("POST", f"/projects/{project['id']}/tags", params={"name": "t"})
        body = jpeg(42)
        out = a.call("POST", f"/projects/{project['id']}/images/files",
                     json={"images": [{"name": "x.jpg", "contents": base64.b64encode(body).decode(),
                                       "tagIds": [tag["id"]]}]})
        link = urlsplit(out["images"][0]["image"]["originalImageUri"])
        path = link.path + "?" + link.query
        assert requests.get(a.url + path, timeout=30).content == body
        r = requests.get(b.url + path, timeout=30)
        assert r.status_code == 200 and r.content == body
        assert requests.get(c.url + path, timeout=30).status_code == 403
    finally:
        for s in (a, b, c):
            s.stop()
