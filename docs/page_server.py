"""The handwriting page served on a local port, and the system's Chromium to open it: what the page's tests
(tests/test_page.py) and its timing (benchmarks/page_speed.py) both need."""
from __future__ import annotations

import functools
import http.server
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

DOCS = Path(__file__).resolve().parent


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
