"""The handwriting page in docs/: its JavaScript forward pass and preparation against PyTorch and utils (run
by Node), its committed weight file, and the page itself in headless Chromium."""
from __future__ import annotations

import base64
import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

import utils
from model import Net, count_parameters

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "docs"))
from page_speed import find_chromium, serving  # noqa: E402
from weights_format import net_from_browser_weights  # noqa: E402

DOCS = ROOT / "docs"
WEIGHTS = DOCS / "weights.json"
SCREENSHOT = ROOT / "artifacts" / "page.png"


def missing(tool: str, install: str) -> None:
    """Fail under CI, which installs every tool (.ci/run); elsewhere skip, naming the install command."""
    message = f"not installed: {tool} ({install})"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (bash .ci/run installs it)")
    pytest.skip(message)


def node() -> str:
    path = shutil.which("node")
    if path is None:
        missing("Node.js 20 or newer, which runs docs/network.js", "apt-get install nodejs")
    return path


def run_node(*args: str) -> dict:
    done = subprocess.run([node(), str(ROOT / "tests" / "network_cli.js"), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def write_float64(path: Path, arrays: np.ndarray) -> str:
    np.ascontiguousarray(arrays, dtype="<f8").tofile(path)
    return str(path)


@pytest.fixture(scope="module")
def committed_weights() -> dict:
    return json.loads(WEIGHTS.read_text())


# ------------------------------------------------------------------------------------ Node vs PyTorch


def test_javascript_forward_pass_agrees_with_pytorch_on_500_test_digits(committed_weights, tmp_path):
    images, _ = utils.mnist_tensors(train=False)
    images = images[:500]
    inputs = write_float64(tmp_path / "digits.f64", images.reshape(500, -1).double().numpy() / 255)
    javascript = np.array(run_node("forward", str(WEIGHTS), inputs)["logits"])
    with torch.no_grad():
        pytorch = net_from_browser_weights(committed_weights)(utils.normalize(images)).numpy()
    assert javascript.shape == (500, 10)
    assert np.array_equal(javascript.argmax(1), pytorch.argmax(1))
    assert np.abs(javascript - pytorch).max() < 1e-3


def test_javascript_preparation_agrees_with_python_pixel_by_pixel(tmp_path):
    drawings = [utils.render_strokes(utils.DIGIT_STROKES[digit], **how)
                for digit in (0, 1, 4, 7) for how in utils.UNLIKE_MNIST.values()]
    # A wide, short scribble in a corner: the width, not the height, is fitted to 20 pixels.
    scribble = np.zeros((280, 280))
    scribble[250:262, 150:270] = np.linspace(0.2, 1.0, 120)
    drawings += [scribble, np.zeros((280, 280))]
    out = run_node("prepare", write_float64(tmp_path / "ink.f64", np.stack(drawings)), "280", "280")
    for ink, prepared, downscaled in zip(drawings[:-1], out["prepared"], out["downscaled"]):
        assert np.abs(np.reshape(prepared, (28, 28)) - utils.prepare_like_mnist(ink)).max() < 1e-6
        assert np.abs(np.reshape(downscaled, (28, 28)) - utils.downscale(ink)).max() < 1e-6
    assert out["prepared"][-1] is None  # the empty canvas: nothing to read


def test_javascript_refuses_a_weight_file_that_does_not_match(committed_weights, tmp_path):
    wrong_format = dict(committed_weights, format="some-other-net/2")
    cut = copy.deepcopy(committed_weights)
    data = base64.b64decode(cut["layers"][0]["weight"]["data"])
    cut["layers"][0]["weight"]["data"] = base64.b64encode(data[:-8]).decode()
    script = ("const N = require(process.argv[1]); const w = JSON.parse(require('fs').readFileSync(process.argv[2]));"
              "try { N.loadNetwork(w); console.log('loaded'); } catch (e) { console.log(e.message); }")
    messages = []
    for weights in (wrong_format, cut):
        (tmp_path / "w.json").write_text(json.dumps(weights))
        done = subprocess.run([node(), "-e", script, str(DOCS / "network.js"), str(tmp_path / "w.json")],
                              capture_output=True, text=True, check=True)
        messages.append(done.stdout)
    assert 'reads weight files of format "s6-mnist-net/1"' in messages[0] and '"some-other-net/2"' in messages[0]
    assert "needs 144 numbers, the file has 142" in messages[1]


def test_the_committed_weight_file_scores_what_it_says(committed_weights):
    model = net_from_browser_weights(committed_weights)
    predicted, true = utils.predictions(model, utils.TensorLoader.for_evaluation(*utils.mnist_tensors(train=False)))
    accuracy = 100.0 * (predicted == true).float().mean().item()
    assert round(accuracy, 2) == committed_weights["test_accuracy"]
    assert committed_weights["test_accuracy"] >= utils.MIN_TEST_ACCURACY
    assert committed_weights["parameters"] == count_parameters(Net(n_channels=committed_weights["n_channels"]))


# -------------------------------------------------------------------------------- the page in Chromium


@pytest.fixture(scope="module")
def page_url():
    with serving(DOCS) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    chromium = find_chromium()
    if chromium is None:
        missing("headless Chromium, which the page tests drive", "apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the page tests drive Chromium with Playwright: pip install -r requirements.txt")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, page_url):
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(page_url)
    page.wait_for_function("document.body.dataset.state !== 'loading'")
    yield page
    page.close()
    assert not errors, errors


def draw(page, strokes, box=(0.15, 0.1, 0.85, 0.9)) -> str:
    """Draw strokes (unit-square points) into `box` of the page's canvas with the mouse's pointer events;
    returns what the page then reads."""
    pad = page.locator("#pad").bounding_box()
    left, top, right, bottom = box
    for stroke in strokes:
        points = [(pad["x"] + (left + x * (right - left)) * pad["width"],
                   pad["y"] + (top + y * (bottom - top)) * pad["height"]) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=4)
        page.mouse.up()
    page.wait_for_function("document.body.dataset.reading !== ''")
    return page.evaluate("document.body.dataset.reading")


def test_the_page_asks_for_a_digit_before_anything_is_drawn(page):
    assert page.evaluate("document.body.dataset.state") == "ready"
    assert page.text_content("#message") == "Draw a digit."
    assert page.text_content("#guess") == ""


def test_a_drawn_digit_gets_a_reading_a_prepared_image_and_a_screenshot(page):
    reading = draw(page, utils.DIGIT_STROKES[7])
    assert reading == page.text_content("#guess") and reading.isdigit()
    bars = page.eval_on_selector_all(".bar .value", "rows => rows.map(r => parseFloat(r.textContent))")
    assert len(bars) == 10 and abs(sum(bars) - 100) < 1 and bars[int(reading)] == max(bars)
    ink = page.evaluate("Array.from(document.getElementById('input').getContext('2d')"
                        ".getImageData(0, 0, 28, 28).data).filter((v, k) => k % 4 === 0)")
    prepared = np.reshape(ink, (28, 28)) / 255
    rows, columns = np.nonzero(prepared > utils.INK_THRESHOLD)
    assert max(np.ptp(rows), np.ptp(columns)) + 1 <= 21  # fitted into MNIST's 20x20 box (plus anti-aliasing)
    assert page.locator("#maps canvas").count() == 16 + 16 + 24
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOT, full_page=True)
    picture = matplotlib.image.imread(SCREENSHOT)
    assert picture.shape[1] == 1000 and picture.std() > 0.1  # a page, not a blank
    page.click("#clear")
    page.wait_for_function("document.body.dataset.reading === ''")
    assert page.text_content("#message") == "Draw a digit."


def test_the_page_says_when_the_weight_file_does_not_match(browser, page_url):
    page = browser.new_page()
    weights = json.loads(WEIGHTS.read_text())
    page.route("**/weights.json", lambda route: route.fulfill(
        content_type="application/json", body=json.dumps(dict(weights, format="some-other-net/2"))))
    page.goto(page_url)
    page.wait_for_function("document.body.dataset.state === 'error'")
    assert "weights.json does not match this page" in page.text_content("#message")
    page.close()
