"""How long the handwriting page (docs/) takes to prepare a drawing and run the network, in headless Chromium.

    python benchmarks/page_speed.py            # needs Chromium and Playwright, as tests/test_page.py does

serves docs/ on a local port, loads the page, and times docs/network.js on a drawn bar (a 1) inside the
page: the mean of 50 calls each, after 5 to warm up. Prints one JSON line, in milliseconds.
"""
from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

DOCS = Path(__file__).resolve().parent.parent / "docs"

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


@contextmanager
def serving(directory: Path = DOCS) -> Iterator[str]:
    """`directory` served over HTTP on a free local port, as `python -m http.server` would; yields the URL
    of its index.html."""
    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=directory))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/index.html"
    finally:
        server.shutdown()


def find_chromium() -> str | None:
    """The path of the system's Chromium (Debian's `chromium`, or `chromium-browser`), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


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
