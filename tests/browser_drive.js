// Drives exported charlm pages in headless Chromium (playwright-core, Debian's /usr/bin/chromium).
// stdin: {"chromium": path, "pages": [{"url", "type": {prime, length, temperature, seed}?,
//          "runs": generations to wait for, "screenshot": path?}]}
// stdout: one JSON line, a result per page: {output, status, about, runs, errors}.
"use strict";
const { chromium } = require("playwright-core");

const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

async function visit(browser, job) {
  const page = await browser.newPage({ viewport: { width: 900, height: 560 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("response", (r) => { if (r.status() >= 400) errors.push(`${r.status()} ${r.url()}`); });
  await page.goto(job.url);
  const runs = job.runs ?? (job.type ? 1 : 0);
  if (job.type) {
    await page.waitForSelector("body[data-state=ready]", { timeout: job.timeout ?? 60000 });
    for (const [key, value] of Object.entries(job.type)) await page.fill(`#${key}`, String(value));
    await page.click("#generate");
  }
  await page.waitForFunction(
    (n) => ["ready", "failed"].includes(document.body.dataset.state) && Number(document.body.dataset.runs || 0) >= n
      || document.body.dataset.state === "failed", runs, { timeout: job.timeout ?? 60000 });
  const result = {
    output: await page.textContent("#output"),
    status: await page.textContent("#status"),
    about: await page.textContent("#about"),
    runs: Number(await page.evaluate(() => document.body.dataset.runs || 0)),
    state: await page.evaluate(() => document.body.dataset.state),
    errors,
  };
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
