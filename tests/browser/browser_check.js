// Opens the demo device's web UI through hom-gateway in Debian's headless Chromium
// (playwright-core, no browser download) and reports what a person would see, as one JSON
// line on stdout. test_web_ui.py starts the peers and judges the report.
//
//   node browser_check.js '{"url": ..., "chromium": ..., "profile": ..., "screenshot": ...,
//                           "timeoutMs": ...}'
"use strict";

const { chromium } = require("playwright-core");

// Chromium stays on this machine: no proxy, no update or sync traffic, no QUIC.
const kArgs = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-proxy-server",
];

async function main() {
  const opts = JSON.parse(process.argv[2]);
  const report = { url: opts.url, failures: [], errors: [], requests: [] };
  const deadline = Date.now() + opts.timeoutMs;
  const left = () => Math.max(1, deadline - Date.now());

  const context = await chromium.launchPersistentContext(opts.profile, {
    executablePath: opts.chromium,
    headless: true,
    args: kArgs,
    viewport: { width: 1100, height: 460 },
    timeout: left(),
  });
  try {
    // Every failed request and every status >= 400 fails the test, whatever asked for it.
    context.on("requestfailed", (r) =>
      report.failures.push(`${r.method()} ${r.url()}: ${r.failure()?.errorText}`),
    );
    context.on("response", (r) => {
      report.requests.push(`${r.request().method()} ${r.url()} ${r.status()}`);
      if (r.status() >= 400) report.failures.push(`${r.request().method()} ${r.url()}: HTTP ${r.status()}`);
    });
    const page = context.pages()[0] || (await context.newPage());
    page.on("pageerror", (e) => report.errors.push(`page error: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error") report.errors.push(`console: ${m.text()}`);
    });

    const started = Date.now();
    await page.goto(opts.url, { waitUntil: "load", timeout: left() });
    // The script fetched JSON from the device through the bridge and rendered it.
    await page.waitForFunction(
      () => {
        const text = (id) => document.getElementById(id)?.textContent;
        return text("latitude") === "48.8584" && text("status") === "ok";
      },
      null,
      { timeout: left() },
    );
    report.renderedMs = Date.now() - started;

    // A POST with a JSON body, from the page's form.
    await page.fill("#dessert-name", "tiramisu", { timeout: left() });
    await page.click("#dessert-form button", { timeout: left() });
    await page.waitForFunction(
      () => document.getElementById("dessert-result").textContent !== "",
      null,
      { timeout: left() },
    );

    const dom = await page.evaluate(() => {
      const logo = document.getElementById("logo");
      const text = (id) => document.getElementById(id).textContent;
      return {
        latitude: text("latitude"),
        service: text("service"),
        status: text("status"),
        dessert: text("dessert-result"),
        error: document.getElementById("error").hidden ? "" : text("error"),
        origin: text("origin"),
        logoComplete: logo.complete,
        logoWidth: logo.naturalWidth,
        logoHeight: logo.naturalHeight,
        stylesheetApplied: getComputedStyle(document.querySelector("header")).display === "flex",
      };
    });
    Object.assign(report, dom);
    await page.waitForLoadState("networkidle", { timeout: left() });
    await page.screenshot({ path: opts.screenshot, fullPage: true, timeout: left() });
    report.screenshot = opts.screenshot;
  } catch (e) {
    report.errors.push(String(e && e.message ? e.message : e));
  } finally {
    await context.close();
  }
  process.stdout.write(JSON.stringify(report) + "\n");
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ errors: [String(e && e.stack ? e.stack : e)] }) + "\n");
  process.exitCode = 1;
});
