// SPEC §11 as a user's browser meets it (started by tests/ui.rs): Debian's headless
// chromium visits a page of another origin that tries to retry every dead letter on
// the admin listener (a no-cors POST, which needs no CORS answer to be sent), and a
// DNS-rebinding host name (evil.test, mapped to 127.0.0.1) that tries to read the
// delivery log. Env: ADMIN (admin base URL, no token set), ADMIN_PORT.
// Prints "all steps passed" when both were refused.
import http from "node:http";
import { chromium } from "playwright-core";

const { ADMIN, ADMIN_PORT } = process.env;
const step = (name) => console.log("cross-origin step:", name);

// The other site: a page whose script fires the write and reports what it could see.
const attacker = http.createServer((req, res) => {
  res.setHeader("content-type", "text/html");
  res.end(`<!doctype html><title>other site</title><script>
    fetch(${JSON.stringify(ADMIN + "/queue/dead/retry")}, { method: "POST", mode: "no-cors" })
      .then((r) => { document.title = "sent:" + r.type; })
      .catch((e) => { document.title = "failed:" + e; });
  </script>`);
});
await new Promise((r) => attacker.listen(0, "127.0.0.1", r));
const other = `http://localhost:${attacker.address().port}/`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP evil.test 127.0.0.1"],
});
try {
  const page = await browser.newPage();
  const seen = [];
  page.on("response", (r) => { if (r.url().includes("/queue/dead/retry")) seen.push(r.status()); });

  step("a page of another origin POSTs /queue/dead/retry with mode no-cors");
  await page.goto(other);
  await page.waitForFunction(() => document.title.startsWith("sent:") || document.title.startsWith("failed:"));
  // An opaque answer hides the status from the page; the browser's network log has it.
  await page.waitForTimeout(200);
  if (!seen.includes(403)) throw new Error("the cross-origin POST was not refused with 403: " + JSON.stringify(seen));

  step("a DNS-rebinding host name reads /deliveries");
  const rebound = await page.goto(`http://evil.test:${ADMIN_PORT}/deliveries`);
  const text = await rebound.text();
  if (rebound.status() !== 403 || !text.includes("bad_host")) {
    throw new Error(`evil.test read the log: ${rebound.status()} ${text.slice(0, 200)}`);
  }

  step("the dashboard itself still works on 127.0.0.1");
  const ui = await page.goto(ADMIN + "/ui");
  if (ui.status() !== 200) throw new Error("GET /ui: " + ui.status());
  console.log("all steps passed");
} finally {
  await browser.close();
  attacker.close();
}
