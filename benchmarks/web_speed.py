#!/usr/bin/env python
"""The exported web page's generation speed in headless Chromium, and where its time goes.

    python benchmarks/web_speed.py                       # a 512-unit model (the fast preset's shape)
    python benchmarks/web_speed.py --checkpoint RUN      # any run folder

Without --checkpoint it trains the `fast` preset's model (char, 64-wide embedding, 512 units) for
one step on the corpus's first 200,000 characters: the speed of a step does not depend on what
the weights learned.  It exports the run with `export --format web`, serves it on localhost and
opens it in Debian's Chromium (tests/browser.py), then

* generates --length characters of one sequence on the page, as a user does (Generate, the text
  drawn as it comes, temperature 1): the figure the page prints, in chars/s, once per backend;
* times the step's parts over --steps steps: the whole step (the TensorFlow.js ops and reading
  the logits back), the recurrent matmul alone with its read-back, and one tiny op with its read-back;
* samples the same length from the same run in TensorFlow (charlm's Sampler, compiled, one
  sequence) for comparison.

Prints one JSON line.
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import ROOT, emit, find_corpus, log, read_corpus  # noqa: E402

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
import browser  # noqa: E402

# Runs inside the page: milliseconds per step for the whole step and for its parts.
PARTS = """async () => {
  const { step, weights } = window.charlmPage.model, n = STEPS;
  const time = (fn) => { fn(); const t0 = performance.now(); for (let k = 0; k < n; k++) fn(); return (performance.now() - t0) / n; };
  let state = step.zeroState(), token = 1;
  const whole = time(() => { const r = step.run(token, state); state = r.state; });
  const h = state[0].h, tiny = tf.zeros([1]);
  const matmul = time(() => tf.tidy(() => tf.matMul(tf.tensor2d(h, [1, h.length]), weights.w_h0).dataSync()));
  const readback = time(() => { const y = tf.add(tiny, tiny); y.dataSync(); y.dispose(); });
  const alive = tf.memory().numTensors;      // the same after any number of steps: nothing leaks
  return { whole_step_ms: whole, recurrent_matmul_ms: matmul, one_tiny_op_ms: readback, tensors_alive: alive };
}"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="a run folder (default: train a 512-unit one for one step)")
    parser.add_argument("--corpus", help="text8 (or its first 10M characters); see benchmarks/common.py")
    parser.add_argument("--length", type=int, default=3000, help="characters to generate on the page")
    parser.add_argument("--steps", type=int, default=300, help="steps per timing of the step's parts")
    parser.add_argument("--backends", nargs="+", default=["wasm", "cpu"], help="TensorFlow.js backends")
    args = parser.parse_args()
    reason = browser.unavailable()
    if reason:
        log(f"cannot run: {reason}")
        sys.exit(2)
    import charlm
    from charlm.run.checkpoint import load_model
    from charlm.use.sampling import Sampler

    with tempfile.TemporaryDirectory(prefix="charlm-web-speed-") as tmp:
        tmp = Path(tmp)
        run = args.checkpoint
        if run is None:
            run = tmp / "run"
            log("training a 512-unit model for one step")
            charlm.train(text=read_corpus(find_corpus(args.corpus), 200_000), checkpoint_dir=run, preset="fast",
                         steps=1, time_limit=None, auto_dropout=False, log=lambda m: None)
        site = tmp / "site"
        charlm.export(run, site / "page", format="web", tfjs_url="/node_modules")
        manifest = json.loads((site / "page" / "model.json").read_text())
        jobs = []
        for backend in args.backends:
            generate = {"prime": "the ", "length": args.length, "temperature": 1, "seed": 1}
            jobs.append({"url": f"/page/?backend={backend}", "type": [generate, generate],
                         "evaluate": PARTS.replace("STEPS", str(args.steps)), "timeout": 600000})
        with browser.serve(site) as url:
            for job in jobs:
                job["url"] = url + job["url"]
            pages = browser.drive(jobs, timeout=1200)
        result = {"model": {k: manifest[k] for k in ("name", "cell", "layers", "hidden", "num_tokens", "parameters")},
                  "length": args.length}
        for backend, page in zip(args.backends, pages):
            if page["errors"] or page["state"] != "ready":
                log(f"{backend}: the page failed: {page['errors']} {page['status']}")
                continue
            # the second generation's figure (the first also warms the backend up)
            rate = float(page["status"].split("(")[1].split(" chars/s")[0].replace(",", ""))
            result[backend] = {"chars_per_s": rate, **{k: round(v, 4) for k, v in page["evaluated"].items()}}
            log(f"{backend}: {rate:,.0f} chars/s; {page['evaluated']}")
        model, tokenizer, _ = load_model(run)
        sampler = Sampler(model, tokenizer)
        sampler.generate("the ", args.length, seed=1)              # compiles
        started = time.perf_counter()
        sampler.generate("the ", args.length, seed=1)
        result["tensorflow_chars_per_s"] = round(args.length / (time.perf_counter() - started))
        log(f"TensorFlow (charlm sample, compiled): {result['tensorflow_chars_per_s']:,} chars/s")
    emit(result)


if __name__ == "__main__":
    main()
