// charlm's web page: a model exported by `python cli.py export --format web OUT/`, generating in the
// browser with TensorFlow.js.  model.json is the manifest (charlm/use/portable.py: the arrays, the
// cell, the token table), weights.bin the arrays.  The step is the one charlm.nn.model.CharLM.step
// computes; the prime is cut into tokens by charlm.data.vocab.Tokenizer's rules; a token is picked
// from the softmax at 1/temperature (argmax at temperature 0) by an inverse-CDF draw, as
// charlm.use.sampling does, from a seeded generator of the page's own.
"use strict";

const charlm = (() => {
  // -- weights ------------------------------------------------------------------------------------
  const HALF = (() => {          // every float16 bit pattern as a float32
    const table = new Float32Array(65536);
    for (let bits = 0; bits < 65536; bits++) {
      const sign = bits & 0x8000 ? -1 : 1, exp = (bits >> 10) & 0x1f, frac = bits & 0x3ff;
      table[bits] = exp === 0 ? sign * frac * 2 ** -24
        : exp === 31 ? (frac ? NaN : sign * Infinity)
        : sign * (1 + frac / 1024) * 2 ** (exp - 15);
    }
    return table;
  })();

  function readArray(buffer, entry, dtype) {
    if (dtype === "float32") return new Float32Array(buffer, entry.offset, entry.size);
    const bits = new Uint16Array(buffer, entry.offset, entry.size), out = new Float32Array(entry.size);
    for (let k = 0; k < bits.length; k++) out[k] = HALF[bits[k]];
    return out;
  }

  async function load(base = ".") {
    const manifest = await (await fetch(`${base}/model.json`)).json();
    const buffer = await (await fetch(`${base}/${manifest.weights_file}`)).arrayBuffer();
    const weights = {}, host = {};
    for (const entry of manifest.weights) {
      host[entry.name] = readArray(buffer, entry, manifest.dtype);
      // the matrices the step multiplies by live in the backend; tables and biases stay here
      if (entry.shape.length === 2 && entry.name !== "input" && entry.name !== "embedding") {
        weights[entry.name] = tf.tensor(host[entry.name], entry.shape, "float32");
      }
    }
    return { manifest, weights, host, tokens: tokenizer(manifest), step: stepper(manifest, weights, host) };
  }

  // -- text <-> tokens (charlm.data.vocab.Tokenizer) -------------------------------------------------
  function tokenizer(m) {
    // by code point, as Python's strings are (a JavaScript string's index counts UTF-16 units)
    const list = [...m.chars], V = list.length;
    const ids = new Map(list.map((c, k) => [c, k]));
    const pairs = new Map();
    if (m.layout === "sparse") m.tokens.forEach((t, k) => { if (k >= V) pairs.set(t, k); });
    const text = m.tokens;
    return {
      text,
      // prime -> {known: the prime's known characters, tokens, open: a character id the first
      // generated token must start with (or -1), dropped: characters the model never saw}
      encode(prime) {
        const chars = [...prime], known = chars.filter((c) => ids.has(c));
        const dropped = [...new Set(chars.filter((c) => !ids.has(c)))];
        const a = known.map((c) => ids.get(c));
        let tokens = [], open = -1;
        if (m.layout === "char") tokens = a;
        else if (m.layout === "dense") {
          for (let k = 0; k + 1 < a.length; k += 2) tokens.push(a[k] * V + a[k + 1]);
          if (a.length % 2) open = a[a.length - 1];
        } else {          // greedy, left to right: a known pair, else one character
          for (let k = 0; k < a.length;) {
            const pair = k + 1 < a.length ? pairs.get(known[k] + known[k + 1]) : undefined;
            if (pair !== undefined) { tokens.push(pair); k += 2; } else { tokens.push(a[k]); k += 1; }
          }
          // a cut ending in a single character leaves it open: the model may still pair it
          if (tokens.length && tokens[tokens.length - 1] < V) open = tokens.pop();
        }
        return { known: known.join(""), tokens, open, dropped };
      },
      // the tokens a generation may start with: all, or those that begin with the open character
      startingWith(open) {
        if (open < 0) return null;
        const c = list[open].codePointAt(0);
        return text.map((t) => t.codePointAt(0) === c);
      },
    };
  }

  // -- the step: token, state -> logits, state (charlm.nn.model.CharLM.step) -----------------------------
  // TensorFlow.js does the matmuls (nearly all of the work: for 512 units, 2M of the step's ~2.1M
  // multiply-adds); the gates, a few thousand numbers, are computed here in plain JavaScript.
  // Measured (benchmarks/web_speed.py, benchmarks/README.md): this runs 2,100-2,200 chars/s at 512
  // units, while the cell written as TensorFlow.js ops, with the state kept in the backend, ran
  // ~2,900; that version (git d1e6070) is the faster one to return to.
  const sigmoid = (x) => 1 / (1 + Math.exp(-x));

  // Each cell: (z: x @ W_x + b of every gate, hw: h @ W_h, state {h, c}, H, params) -> new state,
  // with the gate columns in charlm.nn.cells' order.  LSTM and RNN take z + hw only, so their
  // step passes `hw` already added into `z`.
  const CELLS = {
    lstm: { summed: true, step(z, hw, { c }, H) {        // [i | f | g | o]
      const h2 = new Float32Array(H), c2 = new Float32Array(H);
      for (let k = 0; k < H; k++) {
        c2[k] = sigmoid(z[H + k]) * c[k] + sigmoid(z[k]) * Math.tanh(z[2 * H + k]);
        h2[k] = sigmoid(z[3 * H + k]) * Math.tanh(c2[k]);
      }
      return { h: h2, c: c2 };
    } },
    gru: { summed: false, step(xw, hw, { h, c }, H, bHn) {        // [z | r | n], reset after the matmul
      const h2 = new Float32Array(H);
      for (let k = 0; k < H; k++) {
        const z = sigmoid(xw[k] + hw[k]), r = sigmoid(xw[H + k] + hw[H + k]);
        const n = Math.tanh(xw[2 * H + k] + r * (hw[2 * H + k] + bHn[k]));
        h2[k] = n + z * (h[k] - n);
      }
      return { h: h2, c };
    } },
    rnn: { summed: true, step(z, hw, { c }, H) {
      return { h: z.map(Math.tanh), c };
    } },
  };

  const matvec = (x, w) => tf.tidy(() => tf.matMul(tf.tensor2d(x, [1, x.length]), w).dataSync());
  const plus = (a, b) => { const out = new Float32Array(a.length); for (let k = 0; k < a.length; k++) out[k] = a[k] + b[k]; return out; };

  // The output layer: the top layer's h -> logits.
  function output(m, w, host, h) {
    return plus(matvec(h, w.out_w), host.out_b);
  }

  function stepper(m, w, host) {
    const H = m.hidden, G = m.gates * H, cell = CELLS[m.cell];
    // layer 0's x @ W_x + b: a row of the lookup table, or the embedding row times its kernel rows
    const input = (token) => (host.input ? host.input.subarray(token * G, (token + 1) * G)
      : plus(matvec(host.embedding.subarray(token * m.embedding_size, (token + 1) * m.embedding_size), w.w_x0), host.b0));
    return {
      zeroState: () => Array.from({ length: m.layers }, () => ({ h: new Float32Array(H), c: new Float32Array(H) })),
      // one token: {logits: Float32Array, state}
      run(token, state) {
        let x = null;
        const next = state.map((s, l) => {
          const xw = l === 0 ? input(token) : plus(matvec(x, w[`w_x${l}`]), host[`b${l}`]);
          const hw = matvec(s.h, w[`w_h${l}`]);
          const out = cell.summed ? cell.step(plus(xw, hw), null, s, H) : cell.step(xw, hw, s, H, host[`b_hn${l}`]);
          x = out.h;
          return out;
        });
        return { logits: output(m, w, host, x), state: next };
      },
    };
  }

  // -- picking a token (charlm.use.sampling.pick) -----------------------------------------------------
  function random(seed) {          // mulberry32: a seeded uniform [0, 1)
    let s = seed >>> 0;
    return () => {
      s = (s + 0x6d2b79f5) >>> 0;
      let t = s;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  function pick(logits, temperature, rand, allowed) {
    let best = -1;
    for (let k = 0; k < logits.length; k++) {
      if ((!allowed || allowed[k]) && (best < 0 || logits[k] > logits[best])) best = k;
    }
    if (!(temperature > 0)) return best;
    const cdf = new Float64Array(logits.length);
    let total = 0;
    for (let k = 0; k < logits.length; k++) {
      if (!allowed || allowed[k]) total += Math.exp((logits[k] - logits[best]) / temperature);
      cdf[k] = total;
    }
    const u = rand() * total;
    for (let k = 0; k < logits.length; k++) if (cdf[k] > u && (!allowed || allowed[k])) return k;
    return best;
  }

  // -- generating ---------------------------------------------------------------------------------------
  // Yields the generated text piece by piece (the prime's known characters first); returns when
  // `length` characters are out.  `seed`: same seed, same text (in this page).
  async function* generate(model, { prime = "", length = 500, temperature = 1, seed = null } = {}) {
    const { tokens: tok, step, host } = model;
    const cut = tok.encode(prime);
    const rand = random(seed === null || seed === "" ? crypto.getRandomValues(new Uint32Array(1))[0] : Number(seed));
    yield cut.known;
    let state = step.zeroState(), logits = host.out_b;          // no token read: the output bias
    for (const t of cut.tokens) ({ logits, state } = step.run(t, state));
    let allowed = tok.startingWith(cut.open), skip = cut.open >= 0 ? 1 : 0, made = 0;
    let piece = "", yielded = performance.now();
    while (made < length) {
      const t = pick(logits, temperature, rand, allowed);
      allowed = null;
      let chars = [...tok.text[t]].slice(skip);
      skip = 0;
      chars = chars.slice(0, length - made);
      made += chars.length;
      piece += chars.join("");
      if (made < length) ({ logits, state } = step.run(t, state));
      if (performance.now() - yielded > 50 || made >= length) {
        yield piece;
        piece = "";
        yielded = performance.now();
      }
    }
  }

  return { load, generate, tokenizer, pick, random, output, CELLS };
})();

// -- the page ---------------------------------------------------------------------------------------------
(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  let model = null, running = false;

  async function chooseBackend() {
    const wanted = params.get("backend");
    for (const name of wanted ? [wanted] : ["wasm", "webgl", "cpu"]) {
      try {
        if (await tf.setBackend(name)) { await tf.ready(); return name; }
      } catch (e) { /* not available here: try the next */ }
    }
    throw new Error("no TensorFlow.js backend works in this browser");
  }

  function sizeText(bytes) {
    return bytes >= 1 << 20 ? `${(bytes / (1 << 20)).toFixed(1)} MB` : `${(bytes / 1024).toFixed(1)} KB`;
  }

  async function run(options) {
    if (running) return null;
    running = true;
    $("generate").disabled = true;
    const out = $("output");
    out.textContent = "";
    const started = performance.now();
    let text = "", first = true, generated = 0;
    try {
      for await (const piece of charlm.generate(model, options)) {
        text += piece;
        if (first) first = false; else generated += [...piece].length;
        out.textContent = text;
        await new Promise((resolve) => setTimeout(resolve, 0));     // let the page draw the text
      }
    } finally {
      running = false;
      $("generate").disabled = false;
    }
    const seconds = (performance.now() - started) / 1000;
    const dropped = model.tokens.encode(options.prime || "").dropped;
    $("status").textContent = `${generated.toLocaleString()} characters in ${seconds.toFixed(2)} s ` +
      `(${Math.round(generated / seconds).toLocaleString()} chars/s, ${tf.getBackend()})` +
      (dropped.length ? `; left out of the prime, unknown to the model: ${dropped.join(" ")}` : "");
    document.body.dataset.runs = Number(document.body.dataset.runs || 0) + 1;
    return { text, generated, seconds };
  }

  function readControls() {
    return { prime: $("prime").value, length: Number($("length").value),
             temperature: Number($("temperature").value), seed: $("seed").value };
  }

  async function start() {
    const backend = await chooseBackend();
    model = await charlm.load(".");
    const m = model.manifest;
    $("name").textContent = m.name;
    $("about").textContent = `${m.cell.toUpperCase()}, ${m.layers} × ${m.hidden} units, ` +
      `${m.kind} tokens (${m.num_tokens.toLocaleString()}), ${m.parameters.toLocaleString()} parameters, ` +
      `${sizeText(m.weights_bytes)} of ${m.dtype} weights; TensorFlow.js ${tf.version.tfjs} on ${backend}`;
    for (const key of ["prime", "length", "temperature", "seed"]) if (params.has(key)) $(key).value = params.get(key);
    $("generate").disabled = false;
    $("generate").addEventListener("click", () => run(readControls()));
    $("status").textContent = "ready";
    window.charlmPage = { model, run: (options) => run({ ...readControls(), ...options }) };
    if (["prime", "length", "temperature", "seed"].some((k) => params.has(k))) await run(readControls());
    document.body.dataset.state = "ready";
  }

  start().catch((e) => {
    $("status").textContent = `Error: ${e.message}`;
    document.body.dataset.state = "failed";
  });
})();
