"""``export --format web``: a folder that generates text in the browser with TensorFlow.js.

::

    OUT/index.html    the page: prime, temperature, length, seed, Generate; ?prime=&length=... runs at once
    OUT/charlm.js     the page's script: the step, the tokenizer and the sampling (charlm/use/webpage/)
    OUT/model.json    the manifest: shapes, the cell, the vocabulary and token table (charlm.use.portable)
    OUT/weights.bin   the arrays, little-endian float32 or float16, at the manifest's offsets

The page loads TensorFlow.js (``@tensorflow/tfjs``) and its WebAssembly backend from the jsDelivr
CDN, or from ``tfjs_url``: the address of a folder laid out like ``node_modules`` after
``npm install @tensorflow/tfjs@4.22.0 @tensorflow/tfjs-backend-wasm@4.22.0`` (offline use).
Any static web server serves the folder (``python -m http.server -d OUT``); browsers refuse
``fetch`` from ``file://`` pages.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from charlm.use.portable import describe, step_arrays

TFJS_VERSION = "4.22.0"
CDN = "https://cdn.jsdelivr.net/npm"
PAGE = Path(__file__).with_name("webpage")
WEIGHT_DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}
ALIGN = 8


def tfjs_scripts(tfjs_url: str | None) -> tuple[str, str]:
    """The addresses of TensorFlow.js and of its WebAssembly backend (whose .wasm files sit beside it)."""
    if tfjs_url is None:
        base, version = CDN, f"@{TFJS_VERSION}"
    else:
        base, version = tfjs_url.rstrip("/"), ""
    return (f"{base}/@tensorflow/tfjs{version}/dist/tf.min.js",
            f"{base}/@tensorflow/tfjs-backend-wasm{version}/dist/tf-backend-wasm.min.js")


def write_web(model, tokenizer, folder: Path, name: str, dtype: str = "float32", tfjs_url: str | None = None):
    """Write the page's four files into ``folder`` (which exists and is empty)."""
    folder = Path(folder)
    store = WEIGHT_DTYPES[dtype]
    entries, blobs, offset = [], [], 0
    for key, array in step_arrays(model).items():
        data = np.ascontiguousarray(array, dtype=store).tobytes()
        entries.append({"name": key, "shape": list(array.shape), "offset": offset, "size": int(array.size)})
        pad = -len(data) % ALIGN
        blobs.append(data + b"\0" * pad)
        offset += len(data) + pad
    manifest = {**describe(model, tokenizer, name), "dtype": dtype, "weights_file": "weights.bin",
                "weights_bytes": offset, "weights": entries}
    (folder / "weights.bin").write_bytes(b"".join(blobs))
    (folder / "model.json").write_text(json.dumps(manifest, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / "charlm.js").write_text((PAGE / "charlm.js").read_text(encoding="utf-8"), encoding="utf-8")
    tfjs, wasm = tfjs_scripts(tfjs_url)
    page = (PAGE / "index.html").read_text(encoding="utf-8")
    for key, value in (("NAME", name), ("TFJS_WASM", wasm), ("TFJS", tfjs)):
        page = page.replace("{{%s}}" % key, html.escape(value))
    (folder / "index.html").write_text(page, encoding="utf-8")
