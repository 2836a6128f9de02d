// Drives exported charlm pages in headless Chromium (playwright-core, Debian's /usr/bin/chromium).
// stdin: {"chromium": path, "pages": [{"url", "type": [{prime, length, temperature, seed}, ...]?,
//          "probe": [token ids]?, "evaluate": a function's source?, "screenshot": path?}]}
// Each page: open it (and wait for the generation its address may ask for), then for each entry of
// "type" fill the controls and click Generate.
// stdout: one JSON line, a result per page: {outputs: the text after each generation, status,
// about, runs, state, errors, logits?: the step's logits after each probe token, evaluated?}.
"use strict";
const { chromium } = require("playwright-core");

const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

async function visit(browser, job) {
  const page = await browser.newPage({ viewport: { width: 900, height: 560 } });
  const errors = [], outputs = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("response", (r) => { if (r.status() >= 400) errors.push(`${r.status()} ${r.url()}`); });
  const timeout = job.timeout ?? 60000;
  const settled = (n) => page.waitForFunction((n) => document.body.dataset.state === "failed" ||
    document.body.dataset.state === "ready" && Number(document.body.dataset.runs || 0) >= n, n, { timeout });
  await page.goto(job.url);
  await settled(0);           // loaded, and done with a generation its address asked for
  let runs = Number(await page.evaluate(() => document.body.dataset.runs || 0));
  if (runs) outputs.push(await page.textContent("#output"));
  for (const controls of job.type ?? []) {     // type into the controls, click Generate, read the text
    for (const [key, value] of Object.entries(controls)) await page.fill(`#${key}`, String(value));
    await page.click("#generate");
    await settled(++runs);
    outputs.push(await page.textContent("#output"));
  }
  const result = {
    outputs,
    status: await page.textContent("#status"),
    about: await page.textContent("#about"),
    runs: Number(await page.evaluate(() => document.body.dataset.runs || 0)),
    state: await page.evaluate(() => document.body.dataset.state),
    errors,
  };
  if (job.probe) {         // the logits after each of these tokens, from the zero state
    result.logits = await page.evaluate((tokens) => {
      const { step } = window.charlmPage.model;
      let state = step.zeroState();
      return tokens.map((t) => { const r = step.run(t, state); state = r.state; return Array.from(r.logits); });
    }, job.probe);
  }
  if (job.evaluate) result.evaluated = await page.evaluate(`(${job.evaluate})()`);   // a function's source
  if (job.screenshot) await page.screenshot({ path: job.screenshot });
  await page.close();
  return result;
}

(async () => {
  let input = "";
  for await (const chunk of process.stdin) input += chunk;
  const jobs = JSON.parse(input);
  const browser = await chromium.launch({ executablePath: jobs.chromium, args: FLAGS });
  try {
    const results = [];
    for (const job of jobs.pages) results.push(await visit(browser, job));
    process.stdout.write(JSON.stringify(results) + "\n");
  } finally {
    await browser.close();
  }
})().catch((e) => { console.error(e); process.exit(1); });
