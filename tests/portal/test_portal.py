"""The web portal in a real browser: Playwright driving Debian's headless Chromium against a real `argus serve`.

Each step is done through the UI only, and the server's state is then checked through the Training API (a tag
really exists, a region really has the coordinates drawn), not through pixels. Screenshots of every page are
kept in $ARGUS_PORTAL_SHOTS (default target/portal-screenshots). No page may log a console error.
"""

import io
import json
import os
import sys
import tempfile
import time
import zipfile

import pytest
import requests
from PIL import Image
from playwright.sync_api import expect, sync_playwright

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
from helpers import API, MODELS_DIR, Server  # noqa: E402

KEY = "portal-training-key"
GENERAL_COMPACT = "0732100f-1a38-4e49-a514-c9b44c697ab5"
OD_GENERAL_COMPACT = "a27d5ca5-bb19-49d8-a70a-fec086c47f5b"
SHOTS = os.environ.get("ARGUS_PORTAL_SHOTS",
                       os.path.join(os.path.dirname(__file__), "..", "..", "target", "portal-screenshots"))
CHROMIUM = os.environ.get("ARGUS_CHROMIUM", "/usr/bin/chromium")
CROPS = [(0.0, 0.0, 0.8, 0.8), (0.2, 0.2, 0.8, 0.8), (0.1, 0.0, 0.85, 0.9),
         (0.0, 0.15, 0.9, 0.85), (0.15, 0.1, 0.7, 0.75), (0.05, 0.05, 0.9, 0.9)]


def crop_file(folder, name, box, out):
    """Writes a JPEG crop (fractions x, y, w, h) of a scikit-image photograph and returns its path."""
    img = Image.open(os.path.join(MODELS_DIR, "photos", name)).convert("RGB")
    w, h = img.size
    x, y, cw, ch = box
    path = os.path.join(folder, out)
    img.crop((int(w * x), int(h * y), int(w * (x + cw)), int(h * (y + ch)))).save(path, "JPEG", quality=90)
    return path


@pytest.fixture(scope="module")
def server():
    s = Server(KEY)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: scripts/test.sh installs Debian's chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


class Console:
    """Collects console errors and uncaught exceptions of a page."""

    def __init__(self, page):
        self.errors = []
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    def assert_clean(self):
        assert self.errors == [], self.errors


@pytest.fixture(scope="module")
def ui(server, browser):
    os.makedirs(SHOTS, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(30_000)
    console = Console(page)
    yield page, context, console
    context.close()


@pytest.fixture(scope="module")
def files():
    return tempfile.mkdtemp(prefix="argus-portal-")


def shot(page, name):
    page.wait_for_load_state("networkidle")
    page.evaluate("() => document.getElementById('toasts').replaceChildren()")
    page.screenshot(path=os.path.join(SHOTS, f"{name}.png"))


def api(server, method, path, **kw):
    r = requests.request(method, server.url + API + path, headers={"Training-Key": KEY}, timeout=60, **kw)
    assert r.status_code in (200, 204, 207), f"{method} {path}: {r.status_code} {r.text}"
    return r.json() if r.content else None


STATE = {}


def test_sign_in_with_a_session_cookie(server, ui):
    page, context, console = ui
    page.goto(server.url + "/")
    assert page.url.endswith("/ui")
    shot(page, "01-sign-in")
    page.fill("#training-key", "not-the-key")
    page.click("form.signin button[type=submit]")
    expect(page.locator("form.signin .error")).to_contain_text("not this server's Training key")
    # The refused sign-in's 401 is logged by Chromium as a failed resource; it is the one expected error.
    assert all("401" in e for e in console.errors), console.errors
    console.errors.clear()
    page.fill("#training-key", KEY)
    page.click("form.signin button[type=submit]")
    expect(page.locator(".pagehead h1")).to_have_text("Projects")
    cookie = next(c for c in context.cookies() if c["name"] == "argus_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("() => JSON.stringify(localStorage) + document.cookie") == "{}"
    # The cookie alone does not change state: a request without the portal header is refused (CSRF check) ...
    status = page.evaluate("""async () => (await fetch('/customvision/v3.3/training/projects?name=x',
        {method: 'POST'})).status""")
    assert status == 401
    # ... and API 404s keep the official JSON shape.
    body = page.evaluate("async () => (await fetch('/customvision/v3.3/training/nothing')).json()")
    assert body["code"] == "NotFound"
    console.errors.clear()  # the two refusals above are logged as failed resources
    shot(page, "02-projects-empty")


def test_classification_project_upload_train_and_threshold(server, ui, files):
    page, _, console = ui
    page.click("text=+ New project")
    page.fill("dialog input[name=name]", "Cats and coffee")
    page.fill("dialog textarea[name=description]", "Made in the browser")
    page.select_option("dialog select[name=type]", "Multiclass")
    page.select_option("dialog select[name=domainId]", GENERAL_COMPACT)
    page.click("dialog button[type=submit]")
    expect(page.locator(".pagehead h1")).to_have_text("Training images")
    project = next(p for p in api(server, "GET", "/projects") if p["name"] == "Cats and coffee")
    assert project["description"] == "Made in the browser"
    assert project["settings"]["domainId"] == GENERAL_COMPACT
    assert project["settings"]["classificationType"] == "Multiclass"
    pid = STATE["classification"] = project["id"]

    for name in ("cat", "coffee"):
        page.fill("input[aria-label='New tag name']", name)
        page.click("aside form button[type=submit]")
        expect(page.locator(".taglist")).to_contain_text(name)
    tags = {t["name"]: t["id"] for t in api(server, "GET", f"/projects/{pid}/tags")}
    assert set(tags) == {"cat", "coffee"}

    page.click("text=+ Add images")
    for tag, photo in (("cat", "chelsea.png"), ("coffee", "coffee.png")):
        paths = [crop_file(files, photo, box, f"{tag}-{i}.jpg") for i, box in enumerate(CROPS)]
        chip = page.locator(".upload label.chip", has_text=tag)
        chip.locator("input").check()
        for other in page.locator(".upload label.chip").all():
            if other.inner_text().strip() != tag:
                other.locator("input").uncheck()
        page.set_input_files("#upload-files", paths)
        expect(page.locator(".upload .outcome")).to_contain_text(f"{len(CROPS)} OK")
        expect(page.locator(".upload .progress")).to_have_attribute("data-percent", "100")
        shot(page, f"03-upload-{tag}")
    for tag, tag_id in tags.items():
        n = api(server, "GET", f"/projects/{pid}/images/tagged/count", params={"tagIds": tag_id})
        assert n == len(CROPS), (tag, n)

    # The gallery filters: Untagged is empty, a tag filter shows that tag's images.
    page.click("button.filter:has-text('Untagged')")
    expect(page.locator(".gallery .empty")).to_contain_text("No untagged images")
    page.click("button.filter:has-text('All')")
    page.locator(f".taglist input[data-tag-id='{tags['cat']}']").check()
    expect(page.locator(".gallery .tile")).to_have_count(len(CROPS))
    page.locator(f".taglist input[data-tag-id='{tags['cat']}']").uncheck()
    expect(page.locator(".gallery .tile")).to_have_count(2 * len(CROPS))
    shot(page, "04-gallery")

    # Bulk: among the cat images, select two and untag them; the labeller's number key tags one again and
    # the bulk Tag button the other.
    page.locator(f".taglist input[data-tag-id='{tags['cat']}']").check()
    expect(page.locator(".gallery .tile")).to_have_count(len(CROPS))
    tiles = page.locator(".gallery .tile")
    two = [tiles.nth(i).get_attribute("data-image-id") for i in range(2)]
    for i in range(2):
        tiles.nth(i).locator("input").check()
    expect(page.locator(".toolbar")).to_contain_text("2 selected")
    page.select_option(".toolbar select", tags["cat"])
    page.click(".toolbar button:has-text('Untag')")
    expect(page.locator(".toast.ok").last).to_contain_text("Untagged 2")
    assert all(im["tags"] == [] for im in api(server, "GET", f"/projects/{pid}/images/id", params={"imageIds": ",".join(two)}))
    page.locator(f".taglist input[data-tag-id='{tags['cat']}']").uncheck()
    page.click("button.filter:has-text('Untagged')")
    expect(page.locator(".gallery .tile")).to_have_count(2)

    page.locator(f".gallery .tile[data-image-id='{two[0]}']").click()
    expect(page.locator(".pagehead h1")).to_have_text("Tag image")
    key = str(1 + [b.get_attribute("data-tag-id") for b in page.locator("button.tagkey").all()].index(tags["cat"]))
    page.keyboard.press(key)
    expect(page.locator(f"button.tagkey[data-tag-id='{tags['cat']}']")).to_have_attribute("aria-pressed", "true")
    shot(page, "05-tag-image")
    image = api(server, "GET", f"/projects/{pid}/images/id", params={"imageIds": two[0]})[0]
    assert [t["tagName"] for t in image["tags"]] == ["cat"]
    page.click("a:has-text('← Images')")
    expect(page.locator(".gallery .tile")).to_have_count(1)
    page.locator(".gallery .tile input").first.check()
    page.select_option(".toolbar select", tags["cat"])
    page.locator(".toolbar").get_by_role("button", name="Tag", exact=True).click()
    expect(page.locator(".toast.ok").last).to_contain_text("Tagged 1")
    assert api(server, "GET", f"/projects/{pid}/images/untagged/count") == 0

    # Train (Quick), with the progress bar reaching 100 %.
    page.click("a.tab:has-text('Performance')")
    expect(page.locator(".empty")).to_contain_text("Nothing trained yet")
    page.click(".pagehead button:has-text('Train')")
    shot(page, "06-train-dialog")
    page.click("dialog button[type=submit]")
    expect(page.locator("[data-training]")).to_be_visible()
    shot(page, "07-training")
    expect(page.locator("[data-training]")).to_have_attribute("data-percent", "100", timeout=600_000)
    expect(page.locator(".metric strong[data-metric=precision]")).to_be_visible(timeout=60_000)
    iteration = api(server, "GET", f"/projects/{pid}/iterations")[0]
    assert iteration["status"] == "Completed"
    STATE["iteration"] = iteration

    # The probability slider: the numbers shown are the API's at that threshold.
    def shown():
        return {m: page.locator(f".metric strong[data-metric={m}]").inner_text() for m in ("precision", "recall", "averagePrecision")}

    def fmt(x):
        return f"{100 * x:.1f} %"

    for threshold in (0.5, 0.97):
        page.eval_on_selector("#probability-threshold",
                              f"e => {{ e.value = {int(threshold * 100)}; e.dispatchEvent(new Event('input')); }}")
        expect(page.locator(".metrics")).to_have_attribute("data-threshold", str(threshold).rstrip("0").rstrip("."))
        perf = api(server, "GET", f"/projects/{pid}/iterations/{iteration['id']}/performance", params={"threshold": threshold})
        assert shown() == {m: fmt(perf[m]) for m in ("precision", "recall", "averagePrecision")}
        for t in perf["perTagPerformance"]:
            row = page.locator(f"table.pertag tr[data-tag-id='{t['id']}']")
            expect(row).to_contain_text(fmt(t["recall"]))
    expect(page.locator("figure.curve")).to_have_count(2)
    expect(page.locator("table.confusion")).to_be_visible()
    shot(page, "08-performance")
    console.assert_clean()


def test_quick_test_publish_and_promote(server, ui, files):
    page, _, console = ui
    pid, iteration = STATE["classification"], STATE["iteration"]
    page.click("a.tab:has-text('Quick test')")
    page.set_input_files("#quicktest-file", crop_file(files, "chelsea.png", (0, 0, 1, 1), "whole-cat.jpg"))
    expect(page.locator("table.predictions tbody tr").first).to_contain_text("cat")
    shot(page, "09-quick-test")
    # The threshold slider filters the table: both tags at 0 %, only the winner of the two at 50 %.
    for value, rows in ((0, "2"), (50, "1")):
        page.eval_on_selector("#quicktest-threshold", f"e => {{ e.value = {value}; e.dispatchEvent(new Event('input')); }}")
        expect(page.locator(".results")).to_have_attribute("data-rows", rows)

    page.click("a.tab:has-text('Performance')")
    page.click(".pagehead.sub button:has-text('Publish')")
    page.fill("dialog input[name=publishName]", "catOrCoffee")
    page.click("dialog button[type=submit]")
    expect(page.locator(".published")).to_contain_text("catOrCoffee")
    assert api(server, "GET", f"/projects/{pid}/iterations/{iteration['id']}")["publishName"] == "catOrCoffee"
    page.click(".published button:has-text('Show')")
    expect(page.locator(".published code.key")).to_have_text(KEY + "-p")
    url = page.locator(".published code.url").first.inner_text()
    r = requests.post(url, headers={"Prediction-Key": KEY + "-p"}, data=open(os.path.join(files, "whole-cat.jpg"), "rb").read(), timeout=60)
    assert r.status_code == 200 and r.json()["predictions"][0]["tagName"] == "cat"
    shot(page, "10-published")

    # Export (General (compact) is exportable): the export job runs and its download is offered.
    page.click(".exports button:has-text('Export ONNX')")
    expect(page.locator(".exports a:has-text('Download')")).to_be_visible(timeout=120_000)
    exports = api(server, "GET", f"/projects/{pid}/iterations/{iteration['id']}/export")
    assert [(e["platform"], e["status"]) for e in exports] == [("ONNX", "Done")]
    href = page.locator(".exports a:has-text('Download')").get_attribute("href")
    assert requests.get(href, timeout=60).status_code == 200

    before = api(server, "GET", f"/projects/{pid}/images/count")
    page.click("a.tab:has-text('Predictions')")
    cards = page.locator(".card.pred")
    expect(cards).to_have_count(2)  # the quick test and the Prediction API call above
    shot(page, "11-predictions")
    card = cards.first
    prediction_id = card.get_attribute("data-prediction-id")
    card.locator("button:has-text('Add to training')").click()
    page.locator("dialog label.chip", has_text="cat").locator("input").check()
    page.click("dialog button[type=submit]")
    expect(card).to_have_class("card pred promoted")
    assert api(server, "GET", f"/projects/{pid}/images/count") == before + 1
    newest = api(server, "GET", f"/projects/{pid}/images", params={"orderBy": "Newest", "take": 1})[0]
    assert [t["tagName"] for t in newest["tags"]] == ["cat"]
    stored = api(server, "POST", f"/projects/{pid}/predictions/query", json={"maxCount": 10})["results"]
    assert prediction_id in [p["id"] for p in stored]

    page.click("a.tab:has-text('Smart labeler')")
    expect(page.locator(".pagehead h1")).to_have_text("Smart labeler")
    shot(page, "12-smart-labeler")
    console.assert_clean()


def in_polygon(pt, poly):
    """Even-odd point-in-polygon test on normalised vertices."""
    x, y = pt
    hit = False
    for i in range(len(poly)):
        a, b = poly[i], poly[i - 1]
        if (a["y"] > y) != (b["y"] > y) and x < (b["x"] - a["x"]) * (y - a["y"]) / (b["y"] - a["y"]) + a["x"]:
            hit = not hit
    return hit


def region_set(server, pid, image_id):
    return api(server, "GET", f"/projects/{pid}/images/id", params={"imageIds": image_id})[0]["regions"]


def test_detection_boxes_proposals_and_click_to_segment(server, ui, files):
    page, _, console = ui
    page.goto(server.url + "/ui#/projects")
    page.click("text=+ New project")
    page.fill("dialog input[name=name]", "Mugs")
    page.select_option("dialog select[name=type]", "ObjectDetection")
    page.select_option("dialog select[name=domainId]", OD_GENERAL_COMPACT)
    page.click("dialog button[type=submit]")
    expect(page.locator(".pagehead h1")).to_have_text("Training images")
    pid = next(p for p in api(server, "GET", "/projects") if p["name"] == "Mugs")["id"]
    page.fill("input[aria-label='New tag name']", "mug")
    page.click("aside form button[type=submit]")
    expect(page.locator(".taglist")).to_contain_text("mug")
    page.click("text=+ Add images")
    page.set_input_files("#upload-files", [crop_file(files, "coffee.png", (0, 0, 1, 1), "coffee.jpg")])
    expect(page.locator(".upload .outcome")).to_contain_text("1 OK")
    page.locator(".gallery .tile").first.click()
    expect(page.locator("canvas.labelcanvas")).to_be_visible()
    image_id = page.url.rsplit("/", 1)[1]
    page.wait_for_function("() => window.argusLabeller && window.argusLabeller.img.complete")

    def at(x, y):
        return page.evaluate(f"() => window.argusLabeller.pagePoint({x}, {y})")

    def idle():
        """Waits until every edit made so far has been saved (the labeller saves them one at a time)."""
        expect(page.locator("canvas.labelcanvas")).to_have_attribute("data-pending", "0")

    # Draw a box with the mouse.
    a, b = at(0.1, 0.2), at(0.4, 0.6)
    page.mouse.move(a["x"], a["y"])
    page.mouse.down()
    page.mouse.move((a["x"] + b["x"]) / 2, (a["y"] + b["y"]) / 2)
    page.mouse.move(b["x"], b["y"])
    page.mouse.up()
    idle()
    expect(page.locator(".regions li")).to_have_count(1)
    regions = region_set(server, pid, image_id)
    assert len(regions) == 1
    r = regions[0]
    assert abs(r["left"] - 0.1) < 0.01 and abs(r["top"] - 0.2) < 0.01
    assert abs(r["width"] - 0.3) < 0.01 and abs(r["height"] - 0.4) < 0.01
    shot(page, "13-label-box")

    # Move it: drag from inside the box.
    c, d = at(0.25, 0.4), at(0.35, 0.45)
    page.mouse.move(c["x"], c["y"])
    page.mouse.down()
    page.mouse.move(d["x"], d["y"])
    page.mouse.up()
    idle()
    page.wait_for_function(f"""async () => {{
        const r = await fetch('/customvision/v3.3/training/projects/{pid}/images/id?imageIds={image_id}');
        const [im] = await r.json();
        return im.regions.length === 1 && Math.abs(im.regions[0].left - 0.2) < 0.01;
    }}""")
    moved = region_set(server, pid, image_id)[0]
    assert abs(moved["left"] - 0.2) < 0.01 and abs(moved["top"] - 0.25) < 0.01 and abs(moved["width"] - 0.3) < 0.01

    # Undo the move, then undo the box; redo brings the box back.
    page.keyboard.press("Control+z")
    idle()
    page.wait_for_function(f"""async () => {{
        const [im] = await (await fetch('/customvision/v3.3/training/projects/{pid}/images/id?imageIds={image_id}')).json();
        return im.regions.length === 1 && Math.abs(im.regions[0].left - 0.1) < 0.01;
    }}""")
    page.keyboard.press("Control+z")
    idle()
    expect(page.locator(".regions li")).to_have_count(0)
    assert region_set(server, pid, image_id) == []
    page.keyboard.press("Control+Shift+z")
    idle()
    expect(page.locator(".regions li")).to_have_count(1)
    assert len(region_set(server, pid, image_id)) == 1

    # Delete key removes the selected box.
    page.evaluate("() => window.argusLabeller.select(window.argusLabeller.boxes[0].id)")
    page.keyboard.press("Delete")
    idle()
    expect(page.locator(".regions li")).to_have_count(0)
    assert region_set(server, pid, image_id) == []

    # Region proposals: accept the first with a click inside it.
    page.click(".tools button:has-text('Proposals')")
    page.wait_for_function("() => Number(document.querySelector('canvas.labelcanvas').dataset.proposals || 0) > 0")
    shot(page, "14-label-proposals")
    proposals = page.evaluate("() => window.argusLabeller.proposals.map(p => ({left: p.left, top: p.top, width: p.width, height: p.height}))")
    target = max(proposals, key=lambda q: q["width"] * q["height"])
    cx, cy = target["left"] + target["width"] / 2, target["top"] + target["height"] / 2
    # A click takes the smallest proposal under the pointer.
    inside = [q for q in proposals if q["left"] <= cx <= q["left"] + q["width"] and q["top"] <= cy <= q["top"] + q["height"]]
    prop = min(inside, key=lambda q: q["width"] * q["height"])
    pt = at(cx, cy)
    page.mouse.click(pt["x"], pt["y"])
    idle()
    expect(page.locator(".regions li")).to_have_count(1)
    r = region_set(server, pid, image_id)[0]
    assert all(abs(r[k] - prop[k]) < 1e-3 for k in ("left", "top", "width", "height")), (r, prop)
    api(server, "DELETE", f"/projects/{pid}/images/regions", params={"regionIds": r["regionId"]})
    page.reload()
    page.wait_for_function("() => window.argusLabeller && window.argusLabeller.img.complete")
    expect(page.locator(".regions li")).to_have_count(0)

    # Click-to-segment: S, a click on the cup, wait for the polygon, Enter accepts its box.
    page.keyboard.press("s")
    p = at(0.5, 0.45)
    page.mouse.click(p["x"], p["y"])
    page.wait_for_function("() => ['ready', 'empty', 'failed'].includes(document.querySelector('canvas.labelcanvas').dataset.segment)",
                           timeout=120_000)
    assert page.eval_on_selector("canvas.labelcanvas", "c => c.dataset.segment") == "ready"
    shot(page, "15-label-segment")
    polys = page.evaluate("() => window.argusLabeller.polygons")
    # The region is the box of the polygon(s) under the click, not of stray fragments elsewhere.
    under = [poly for poly in polys if in_polygon((0.5, 0.45), poly)]
    assert under, polys
    xs = [v["x"] for poly in under for v in poly]
    ys = [v["y"] for poly in under for v in poly]
    page.keyboard.press("Enter")
    idle()
    expect(page.locator(".regions li")).to_have_count(1)
    r = region_set(server, pid, image_id)[0]
    assert abs(r["left"] - min(xs)) < 1e-3 and abs(r["top"] - min(ys)) < 1e-3
    assert abs(r["left"] + r["width"] - max(xs)) < 1e-3 and abs(r["top"] + r["height"] - max(ys)) < 1e-3
    assert r["left"] <= 0.5 <= r["left"] + r["width"] and r["top"] <= 0.45 <= r["top"] + r["height"]
    # The outline is kept with the region (an Argus extension of the region JSON) ...
    assert len(r["polygon"]) == len(under)
    for got, want in zip(r["polygon"], under):
        assert [(round(v["x"], 6), round(v["y"], 6)) for v in got] == [(round(v["x"], 6), round(v["y"], 6)) for v in want]
    # ... and the COCO export carries it as the annotation's polygon segmentation.
    z = requests.get(server.url + API + f"/projects/{pid}/dataset", params={"format": "coco"},
                     headers={"Training-Key": KEY}, timeout=60)
    assert z.status_code == 200, z.text
    with zipfile.ZipFile(io.BytesIO(z.content)) as zf:
        coco = json.loads(zf.read("annotations/instances.json"))
    (ann,) = coco["annotations"]
    (img,) = coco["images"]
    assert len(ann["segmentation"]) == len(under)
    assert abs(ann["segmentation"][0][0] - under[0][0]["x"] * img["width"]) < 0.01

    page.click("a.tab:has-text('Settings')")
    expect(page.locator(".pagehead h1")).to_have_text("Settings")
    shot(page, "16-settings")
    # The dataset panel: download the project as COCO (the outline goes with it), then add that zip back:
    # every image is already there.
    page.select_option("select[aria-label='Dataset format to download']", "coco")
    with page.expect_download() as got:
        page.click("#dataset-download")
    path = os.path.join(files, "mugs-coco.zip")
    got.value.save_as(path)
    with zipfile.ZipFile(path) as zf:
        (ann,) = json.loads(zf.read("annotations/instances.json"))["annotations"]
    assert ann["segmentation"], ann
    # A new project made from that zip (the dataset API) has the outline on its region again.
    copy = api(server, "POST", "/projects", params={"name": "Mugs from COCO", "domainId": OD_GENERAL_COMPACT})
    with open(path, "rb") as f:
        summary = api(server, "POST", f"/projects/{copy['id']}/dataset", params={"format": "coco"}, data=f.read())
    assert (summary["imagesCreated"], summary["regionsCreated"]) == (1, 1), summary
    (copied,) = api(server, "GET", f"/projects/{copy['id']}/images")
    assert len(copied["regions"][0]["polygon"]) == len(ann["segmentation"]), copied["regions"]
    page.select_option("select[aria-label='Format of the dataset to add']", "coco")
    page.set_input_files("#dataset-zip", path)
    expect(page.locator("section[aria-label=Dataset] p[aria-live]")).to_contain_text("0 image(s) added, 1 already there")
    page.fill("form input[name=name]", "Mugs and cups")
    page.click("form button:has-text('Save changes')")
    expect(page.locator("#project-nav")).to_contain_text("Mugs and cups")
    assert api(server, "GET", f"/projects/{pid}")["name"] == "Mugs and cups"
    page.click("button:has-text('Delete project')")
    page.click("dialog button:has-text('Delete')")
    expect(page.locator(".pagehead h1")).to_have_text("Projects")
    assert all(p["id"] != pid for p in api(server, "GET", "/projects"))
    shot(page, "17-projects")
    console.assert_clean()


def test_sign_out_ends_the_session(server, ui):
    page, context, console = ui
    page.click("#sign-out")
    expect(page.locator("form.signin")).to_be_visible()
    assert not any(c["name"] == "argus_session" and c["value"] for c in context.cookies())
    status = page.evaluate("async () => (await fetch('/customvision/v3.3/training/projects')).status")
    assert status == 401
