// SPEC §12 in the dashboard (started by tests/ui.rs): a route removed from the
// config while deliveries wait shows as an orphan with Move and Delete buttons;
// Delete (after the browser's confirm) drops them. Env: ADMIN (no token).
import { chromium } from "playwright-core";

const { ADMIN } = process.env;
const step = (name) => console.log("orphans step:", name);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
try {
  const page = await browser.newPage();
  page.on("dialog", (d) => d.accept());
  step("the orphaned route is shown with its buttons");
  await page.goto(ADMIN + "/ui");
  const row = page.locator('#queues-body tr[data-orphaned][data-route="orders"]');
  await row.waitFor();
  const text = await row.innerText();
  if (!text.includes("orphaned")) throw new Error("no orphaned badge: " + text);
  await row.locator("button.orphan-move").waitFor();
  step("Delete drops its deliveries");
  await row.locator("button.orphan-delete").click();
  await row.waitFor({ state: "detached", timeout: 8000 });
  console.log("all steps passed");
} catch (e) {
  console.error("orphans: FAILED:", e.message);
  process.exitCode = 1;
} finally {
  await browser.close();
}
