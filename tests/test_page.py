"""The handwriting page in docs/: its JavaScript forward pass and preparation against PyTorch and utils (run
by Node), its committed weight file, and the page itself in headless Chromium."""
from __future__ import annotations

import base64
import copy
import json
import os
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

import utils
from model import Net, count_parameters
from page_server import find_chromium, serving
from weights_format import decode_tensor, encode_tensor, net_from_browser_weights

ROOT = Path(__file__).resolve().parent.parent
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


LOAD_IN_NODE = """
const Network = require(process.argv[1]);
const weights = JSON.parse(require("fs").readFileSync(process.argv[2], "utf8"));
try {
  console.log(`loaded: ${Network.describeNetwork(Network.loadNetwork(weights))}`);
} catch (error) {
  console.log(error.message);
}"""


def load_in_node(weights: dict, tmp_path: Path) -> str:
    """What docs/network.js makes of a weight file: "loaded: " and what the page says of the network, or
    the message loadNetwork refuses it with."""
    path = tmp_path / "weights.json"
    path.write_text(json.dumps(weights))
    done = subprocess.run([node(), "-e", LOAD_IN_NODE, str(DOCS / "network.js"), str(path)],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def with_number(weights: dict, layer: int, tensor: str, value: float, position: int = 7) -> dict:
    """A copy of a weight file whose layer `layer` holds `value` at `position` of its `tensor` ("weight", "bias")."""
    changed = copy.deepcopy(weights)
    values = decode_tensor(changed["layers"][layer][tensor]).copy()
    values.flat[position] = value
    changed["layers"][layer][tensor] = encode_tensor(values)
    return changed


def without_layer(weights: dict, layer: int) -> dict:
    return dict(weights, layers=weights["layers"][:layer] + weights["layers"][layer + 1:])


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
    assert load_in_node(dict(committed_weights, format="some-other-net/2"), tmp_path) == (
        'this page reads weight files of format "s6-mnist-net/1", this one is "some-other-net/2"')
    cut = copy.deepcopy(committed_weights)
    data = base64.b64decode(cut["layers"][0]["weight"]["data"])
    cut["layers"][0]["weight"]["data"] = base64.b64encode(data[:-8]).decode()
    assert load_in_node(cut, tmp_path) == (
        "layer 0 (conv) weight: a tensor of shape [16,1,3,3] needs 144 numbers (576 bytes), the file has 568 bytes")


@pytest.mark.parametrize("layer, tensor, value, shown",
                         [(3, "weight", np.nan, "NaN"), (11, "bias", np.inf, "Infinity")])
def test_javascript_refuses_a_weight_file_with_a_number_that_is_not_finite(committed_weights, tmp_path,
                                                                             layer, tensor, value, shown):
    kind = committed_weights["layers"][layer]["kind"]
    assert load_in_node(with_number(committed_weights, layer, tensor, value), tmp_path) == (
        f"layer {layer} ({kind}) {tensor} holds {shown} at position 7, expected only finite numbers")


def test_javascript_refuses_a_linear_layer_that_does_not_read_what_the_mean_gives(committed_weights, tmp_path):
    narrow = copy.deepcopy(committed_weights)
    narrow["layers"][-1]["weight"] = encode_tensor(np.zeros((10, 20)))
    width = committed_weights["layers"][-1]["weight"]["shape"][1]
    assert load_in_node(narrow, tmp_path) == (
        f"layer 11 (linear) reads 20 features, but the layer before gives {width}")


def test_javascript_refuses_a_network_with_a_convolution_missing(committed_weights, tmp_path):
    # The 1x1 convolution after the second max-pool changes the width: without it the chain breaks.
    assert committed_weights["layers"][6]["kind"] == "maxpool"
    wide, narrow = committed_weights["layers"][7]["weight"]["shape"][:2]
    assert load_in_node(without_layer(committed_weights, 7), tmp_path) == (
        f"layer 7 (conv) reads {wide} channels, but the layer before gives {narrow}")
    # A 3x3 convolution that keeps the width leaves the chain whole; the count of numbers tells.
    removed = committed_weights["layers"][4]
    held = committed_weights["folded_parameters"] - sum(np.prod(removed[key]["shape"]) for key in ("weight", "bias"))
    assert load_in_node(without_layer(committed_weights, 4), tmp_path) == (
        f"the layers hold {held} numbers, but the file's folded_parameters says "
        f"{committed_weights['folded_parameters']}: a layer is missing, extra or changed")


def test_a_weight_file_without_test_accuracy_loads_and_its_description_leaves_it_out(committed_weights, tmp_path):
    parameters = f"{committed_weights['parameters']:,} parameters"
    assert load_in_node(committed_weights, tmp_path) == (
        f"loaded: {parameters}, {committed_weights['test_accuracy']:.2f}% on MNIST's test digits")
    without_accuracy = {key: value for key, value in committed_weights.items() if key != "test_accuracy"}
    assert load_in_node(without_accuracy, tmp_path) == f"loaded: {parameters}"


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


SERVE_OVER_HTTP = "Serve this folder over HTTP"  # the advice for a page opened as a file, and only for that


def open_page(browser, url: str, weights_response: dict | None = None):
    """A new page at `url`, once it has loaded or failed; `weights_response` (route.fulfill's arguments)
    replaces the server's weights.json. Returns the page and the JavaScript errors it threw."""
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    if weights_response is not None:
        page.route("**/weights.json", lambda route: route.fulfill(content_type="application/json", **weights_response))
    page.goto(url)
    page.wait_for_function("document.body.dataset.state !== 'loading'")
    return page, errors


@pytest.mark.parametrize("weights_response, expected", [
    (lambda text: dict(body=text[:len(text) // 2]),
     ["weights.json is not valid JSON, perhaps truncated", "Re-export it with python docs/export_weights.py."]),
    (lambda text: dict(body=json.dumps(with_number(json.loads(text), 3, "weight", np.nan))),
     ["weights.json does not match this page: layer 3 (conv) weight holds NaN at position 7"]),
    (lambda text: dict(body=json.dumps(dict(json.loads(text), format="some-other-net/2"))),
     ['weights.json does not match this page: this page reads weight files of format "s6-mnist-net/1"']),
    (lambda text: dict(status=404, body="File not found"),
     ["Could not load weights.json: the server answered HTTP 404, expected 200."]),
], ids=["truncated", "NaN", "other format", "HTTP 404"])
def test_the_page_says_why_it_cannot_use_the_weight_file(browser, page_url, weights_response, expected):
    page, errors = open_page(browser, page_url, weights_response(WEIGHTS.read_text()))
    message = page.text_content("#message")
    assert page.evaluate("document.body.dataset.state") == "error" and not errors
    assert all(part in message for part in expected), message
    assert SERVE_OVER_HTTP not in message
    assert page.text_content("#about") == "" and page.locator("#maps canvas").count() == 0  # nothing drawn
    page.close()


def test_the_page_shows_a_weight_file_without_test_accuracy(browser, page_url, committed_weights):
    without_accuracy = {key: value for key, value in committed_weights.items() if key != "test_accuracy"}
    page, errors = open_page(browser, page_url, dict(body=json.dumps(without_accuracy)))
    assert page.evaluate("document.body.dataset.state") == "ready" and not errors
    assert page.text_content("#about") == f" ({committed_weights['parameters']:,} parameters)"
    page.close()


def test_the_page_opened_as_a_file_says_to_serve_the_folder_over_http(browser):
    page, errors = open_page(browser, (DOCS / "index.html").as_uri())
    assert page.evaluate("document.body.dataset.state") == "error" and not errors
    assert SERVE_OVER_HTTP in page.text_content("#message")
    page.close()
