"""How long the handwriting page (docs/) takes to prepare a drawing and run the network, in headless Chromium.

    python benchmarks/page_speed.py            # needs Chromium and Playwright, as tests/test_page.py does

serves docs/ on a local port, loads the page, and times docs/network.js on a drawn bar (a 1) inside the
page: the mean of 50 calls each, after 5 to warm up. Prints one JSON line, in milliseconds.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "docs"))  # the page's server, run as a script
from page_server import find_chromium, serving  # noqa: E402

TIMING = """async () => {
  const network = Network.loadNetwork(await (await fetch("weights.json")).json());
  const ink = new Float64Array(280 * 280);
  for (let y = 60; y < 220; y++) for (let x = 130; x < 150; x++) ink[y * 280 + x] = 1;
  const image = Network.prepareLikeMnist(ink, 280, 280);
  for (let k = 0; k < 5; k++) Network.forward(network, image);
  const time = (f) => { const start = performance.now(); for (let k = 0; k < 50; k++) f(); return (performance.now() - start) / 50; };
  return { prepare_ms: time(() => Network.prepareLikeMnist(ink, 280, 280)),
           forward_ms: time(() => Network.forward(network, image)), browser: navigator.userAgent };
}"""


def main() -> None:
    from playwright.sync_api import sync_playwright

    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("needs Chromium: apt-get install chromium")
    with serving() as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        page = browser.new_page()
        page.goto(url)
        page.wait_for_function("document.body.dataset.state === 'ready'")
        print(json.dumps(page.evaluate(TIMING)))
        browser.close()


if __name__ == "__main__":
    main()
