// SPEC §17 in the dashboard (started by tests/ui.rs): the charts drawn from
// GET /stats, search by delivery ID, a delivery's detail view (redacted
// headers, pretty JSON body) and its Replay button, and Retry all for dead
// letters. Env: ADMIN (no token), SCREENSHOT (PNG path).
import { chromium } from "playwright-core";

const { ADMIN, SCREENSHOT } = process.env;
const step = (name) => console.log("observe step:", name);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1360, height: 1000 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("dialog", (d) => d.accept());
  await page.goto(ADMIN + "/ui");

  step("charts: requests per minute by outcome and latency, per source");
  const card = page.locator('#charts-body .chart-card[data-source="obs"]');
  await card.waitFor();
  await card.locator('svg.requests rect.bar[data-group="delivered"]').first().waitFor();
  await card.locator('svg.requests rect.bar[data-group="rejected"]').first().waitFor();
  await card.locator('svg.latency polyline[data-line="p50"]').waitFor({ state: "attached" });
  await card.locator('svg.latency polyline[data-line="p99"]').waitFor({ state: "attached" });
  const external = await page.evaluate(() => performance.getEntriesByType("resource")
    .map((r) => r.name).filter((n) => !n.startsWith(location.origin)));
  if (external.length) throw new Error("loaded from elsewhere: " + external.join(", "));

  step("search by delivery ID");
  await page.fill("#f-id", "obs-2");
  await page.locator('#deliveries-body tr[data-id="obs-1"]').waitFor({ state: "detached" });
  const rows = await page.locator("#deliveries-body tbody tr").count();
  if (rows !== 1) throw new Error("search shows " + rows + " rows");

  step("open the delivery: redacted headers, pretty JSON");
  await page.click('#deliveries-body tr[data-id="obs-2"]');
  await page.locator("#detail").waitFor({ state: "visible" });
  const headers = await page.locator("#detail-body table.headers").innerText();
  if (!headers.includes("[redacted]")) throw new Error("the signature is not shown redacted: " + headers);
  if (headers.includes("obs-secret")) throw new Error("a secret is shown: " + headers);
  const json = await page.locator("#detail-json").innerText();
  if (!json.includes('"order": "obs-2"') || !json.includes("\n  ")) throw new Error("not pretty JSON: " + json);
  const when = await page.locator("#detail-body dl").innerText();
  if (!/\d{4}-\d\d-\d\dT/.test(when)) throw new Error("no absolute time: " + when);

  step("Replay sends it again");
  await page.click("#detail-replay");
  await page.locator("#detail-result", { hasText: "replayed" }).waitFor();
  await page.fill("#f-id", "");
  await page.locator('#deliveries-body tr[data-id="obs-2"] .pill.info', { hasText: "replay" }).waitFor();

  step("Retry all for dead letters");
  await page.locator("#dead-body button.retry").first().waitFor();
  await page.click("#retry-all");
  await page.locator("#replay-result", { hasText: "retried 1" }).waitFor();

  await page.click("#detail-close");
  await page.locator("#detail").waitFor({ state: "hidden" });
  if (SCREENSHOT) await page.screenshot({ path: SCREENSHOT, fullPage: true });
  if (errors.length) throw new Error("page errors: " + errors.join("; "));
  console.log("all steps passed");
} catch (e) {
  console.error("observe: FAILED:", e.message);
  process.exitCode = 1;
} finally {
  await browser.close();
}
