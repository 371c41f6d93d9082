// Drives Debian's headless chromium against hookgate's /ui (started by tests/ui.rs).
// Env: ADMIN (admin base URL), WEBHOOK (the `ui` source's URL), TOKEN, SCREENSHOT (PNG path).
// Exits 0 when every step passed; otherwise prints the failed step and exits 1.
import { chromium } from "playwright-core";

const { ADMIN, WEBHOOK, TOKEN, SCREENSHOT } = process.env;
const step = (name) => console.log("ui step:", name);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1360, height: 900 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));

  step("the page asks for the token");
  const first = await page.goto(ADMIN + "/ui");
  if (first.status() !== 401) throw new Error("GET /ui without a token: " + first.status());
  await page.locator("#login").waitFor({ state: "visible" });

  step("a wrong token is refused");
  await page.fill("#token", "not-the-token");
  await page.click("#login button[type=submit]");
  await page.locator("#login-error", { hasText: "not accepted" }).waitFor();

  step("the right token opens the dashboard");
  await page.fill("#token", TOKEN);
  await page.click("#login button[type=submit]");
  await page.locator("#app").waitFor({ state: "visible" });
  for (const id of ["ui-sync-1", "ui-sync-2", "ui-order-1"]) {
    await page.locator(`#deliveries-body tr[data-id="${id}"]`).waitFor();
  }
  const forwarded = page.locator('#deliveries-body tr[data-id="ui-sync-1"] .pill.ok');
  if ((await forwarded.count()) < 1) throw new Error("a forwarded delivery is not shown in green");
  const ago = await page.locator('#deliveries-body tr[data-id="ui-sync-1"] td').first().innerText();
  if (!/\d+ (s|min) ago/.test(ago)) throw new Error("times are not relative: " + ago);

  step("a new delivery appears without reloading");
  const res = await fetch(WEBHOOK, {
    method: "POST",
    headers: { "X-Token": "ui-secret", "X-Id": "ui-live-1", "X-Event": "user.updated", "Content-Type": "application/json" },
    body: '{"live":true}',
  });
  if (res.status !== 200) throw new Error("live delivery: " + res.status);
  await page.locator('#deliveries-body tr[data-id="ui-live-1"]').waitFor({ timeout: 8000 });

  step("filters by outcome and source");
  await page.selectOption("#f-outcome", "invalid_signature");
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll("#deliveries-body tr[data-outcome]")];
    return rows.length > 0 && rows.every((r) => r.dataset.outcome === "invalid_signature");
  });
  await page.selectOption("#f-outcome", "");
  await page.selectOption("#f-source", "ui");
  await page.locator('#deliveries-body tr[data-id="ui-live-1"]').waitFor();
  await page.selectOption("#f-source", "");

  step("the queue shows the route with its dead letter");
  const queueRow = page.locator('#queues-body tr[data-source="ui"][data-route="orders"]');
  await queueRow.waitFor();
  const cells = await queueRow.locator("td").allInnerTexts();
  if (cells[6].trim() !== "1") throw new Error("dead count in the queue table: " + cells.join(" | "));
  await page.locator("#dead-body tr[data-entry]").first().waitFor();
  const deadText = await page.locator("#dead-body").innerText();
  if (!deadText.includes("ui-order-1") || !deadText.includes("422")) throw new Error("dead letter row: " + deadText);

  if (SCREENSHOT) {
    step("screenshot");
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
  }

  step("pause and resume the queue route with its buttons");
  await queueRow.locator("button.route-pause").click();
  await queueRow.locator(".pill.warn", { hasText: "paused" }).waitFor({ timeout: 8000 });
  const paused = await (await fetch(ADMIN + "/queue", { headers: { Authorization: "Bearer " + TOKEN } })).json();
  const orders = paused.routes.find((r) => r.source === "ui" && r.route === "orders");
  if (!orders.paused || !orders.paused.reason.includes("admin API")) throw new Error("not paused: " + JSON.stringify(orders));
  await queueRow.locator("button.route-resume").click();
  await queueRow.locator("button.route-pause").waitFor({ timeout: 8000 });

  step("bulk replay retries only the dead letters matching its filters");
  page.on("dialog", (d) => d.accept());
  await page.fill("#r-status", "5xx");
  await page.click("#r-go");
  await page.locator("#replay-result", { hasText: "retried 0" }).waitFor({ timeout: 8000 });
  await page.fill("#r-status", "4xx");
  await page.fill("#r-route", "billing");
  await page.click("#r-go");
  await page.locator("#replay-result", { hasText: "could not do that" }).or(page.locator("#replay-result", { hasText: "retried 0" })).waitFor({ timeout: 8000 });
  await page.fill("#r-route", "");
  await page.fill("#r-status", "");
  if ((await page.locator("#dead-body tr[data-entry]").count()) !== 1) throw new Error("the 422 dead letter should still be there");

  step("retry the dead letter with its button");
  await page.click("#dead-body button.retry");
  await page.locator("#dead-body .empty", { hasText: "No dead letters" }).waitFor({ timeout: 8000 });

  if (errors.length) throw new Error("page errors: " + errors.join("; "));
  console.log("ui: all steps passed");
} catch (e) {
  console.error("ui: FAILED:", e.message);
  process.exitCode = 1;
} finally {
  await browser.close();
}
