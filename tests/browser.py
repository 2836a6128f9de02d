"""Headless Chromium for the web export: the tests' and the benchmark's one way to open a page.

TensorFlow.js and playwright-core come from the npm registry into a cache folder outside the
repository (``~/.cache/charlm/web-test``, or ``$CHARLM_WEB_TEST_DIR``), installed once;
Chromium is Debian's (``apt-get install chromium``).  ``python3 tests/browser.py --install``
(what ``.ci/run`` calls) installs the npm packages if they are missing and does nothing otherwise.
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from charlm.use.web import TFJS_VERSION  # noqa: E402

CACHE = Path(os.environ.get("CHARLM_WEB_TEST_DIR", Path.home() / ".cache" / "charlm" / "web-test"))
PACKAGES = {"@tensorflow/tfjs": TFJS_VERSION, "@tensorflow/tfjs-backend-wasm": TFJS_VERSION,
            "playwright-core": "1.65.1"}


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def installed() -> bool:
    for name, version in PACKAGES.items():
        meta = CACHE / "node_modules" / name / "package.json"
        if not meta.is_file() or json.loads(meta.read_text()).get("version") != version:
            return False
    return True


def install():
    """npm install the pinned packages into the cache folder, unless they are there already."""
    if installed():
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent",
                    *(f"{n}@{v}" for n, v in PACKAGES.items())], cwd=CACHE, check=True, timeout=900)


def unavailable() -> str | None:
    """Why the browser tests cannot run here (None: they can), installing the npm packages if needed."""
    if chromium() is None:
        return "needs Debian's chromium (apt-get install chromium chromium-driver; .ci/run does)"
    if shutil.which("node") is None:
        return "needs Node.js (node) to drive Chromium"
    if not installed():
        if shutil.which("npm") is None:
            return f"needs npm to install {', '.join(PACKAGES)} into {CACHE}"
        try:
            install()
        except (subprocess.SubprocessError, OSError) as e:
            return f"npm could not install the test packages into {CACHE}: {e}"
    return None


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(folder):
    """Serve ``folder`` over HTTP on localhost, with the npm packages at ``/node_modules``: the base URL."""
    folder = Path(folder)
    link = folder / "node_modules"
    if not link.exists():
        link.symlink_to(CACHE / "node_modules", target_is_directory=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def drive(pages: list[dict], timeout: float = 300) -> list[dict]:
    """Open each page in one headless Chromium (tests/browser_drive.js): a result per page."""
    env = {**os.environ, "NODE_PATH": str(CACHE / "node_modules")}
    proc = subprocess.run(["node", str(HERE / "browser_drive.js")], input=json.dumps(
        {"chromium": chromium(), "pages": pages}), capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"the browser driver failed: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    if sys.argv[1:] != ["--install"]:
        sys.exit("usage: python3 tests/browser.py --install")
    install()
