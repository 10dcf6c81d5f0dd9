// Browser check of the dev page in headless Debian chromium (playwright-core).
//
//   node web/tests/browser.mjs PAGE_URL OUT_DIR UPLOAD_FILE
//
// 1. the page loads and lists the demo video;
// 2. the demo video plays: currentTime advances;
// 3. the player has the video's thumbnail as its poster, and it loads;
//    watching it raises its view count (beacons → bus → counts);
// 4. the quality menu lists the whole ladder (the demo is 1080p: 240p,
//    720p and 1080p), and choosing each fetches a segment of it;
// 5. an upload through the form (as CMAF) completes (tus-js-client);
// 6. searching for the demo's title lists it with the words highlighted,
//    as-you-type suggestions offer it, and its Play button plays it;
// 7. the demo offers its 720p MP4 download; a webhook added through the
//    form shows its secret once, lists the upload's event as a delivery
//    (to a port where nothing listens: pending, with the error), and
//    Replay adds a delivery;
// Screenshots go to OUT_DIR. Exits non-zero with a message on failure.
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";

const [pageUrl, outDir, uploadFile] = process.argv.slice(2);
if (!pageUrl || !outDir || !uploadFile) {
  console.error("usage: browser.mjs PAGE_URL OUT_DIR UPLOAD_FILE");
  process.exit(2);
}
fs.mkdirSync(outDir, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required"],
});
const shot = (page, name) => page.screenshot({ path: path.join(outDir, name + ".png"), fullPage: true });
let failed = false;
const check = (ok, what) => {
  console.log((ok ? "ok   " : "FAIL ") + what);
  if (!ok) failed = true;
};

try {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  // The page runs under a Content-Security-Policy: anything it blocks
  // (an inline script, a worker, a media or playlist URL) is a failure.
  const blocked = [];
  page.on("console", (m) => {
    if (/Content Security Policy/i.test(m.text())) blocked.push(m.text());
  });
  await context.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) => {
      console.error("Content Security Policy violation: " + e.violatedDirective + " " + e.blockedURI);
    });
  });
  const segments = new Set();
  page.on("request", (r) => {
    const m = r.url().match(/\/v\/[^/]+\/([^/]+)\/segment_\d+\.ts/);
    if (m) segments.add(m[1]);
  });

  const served = await page.goto(pageUrl, { waitUntil: "load" });
  const csp = (await served.allHeaders())["content-security-policy"] || "";
  check(csp.includes("script-src 'self'") && csp.includes("frame-ancestors 'none'"),
    "the page is served with its Content-Security-Policy");
  await page.waitForSelector("#videos tbody tr", { timeout: 30000 });
  check(true, "page loads and lists videos");
  await shot(page, "01-page");

  // The page plays the first ready video by itself.
  await page.waitForFunction(() => document.getElementById("video").currentTime > 1.0, null, { timeout: 60000 });
  const t1 = await page.evaluate(() => document.getElementById("video").currentTime);
  await page.waitForTimeout(1500);
  const t2 = await page.evaluate(() => document.getElementById("video").currentTime);
  check(t2 > t1, `video plays (currentTime ${t1.toFixed(2)} → ${t2.toFixed(2)})`);
  await shot(page, "02-playing");

  // The poster is the video's default thumbnail, served by the origin.
  const poster = await page.evaluate(() => document.getElementById("video").poster);
  check(/\/t\/[^/]+\/default\.jpg/.test(poster), `the player's poster is the thumbnail (${poster})`);
  const posterType = await page.evaluate(async (u) => {
    const r = await fetch(u);
    return r.ok ? r.headers.get("content-type") : "HTTP " + r.status;
  }, poster);
  check(posterType === "image/jpeg", `the poster loads as a JPEG (${posterType})`);

  // Every rendition: pick it in the quality menu, wait for one of its segments.
  const options = await page.$$eval("#quality option", (os) => os.map((o) => [o.value, o.textContent]));
  const levels = options.filter(([v]) => v !== "-1");
  const rungs = levels.map(([, label]) => label.split(" ")[0]).sort();
  const ladder = (process.env.EXPECT_RUNGS || "").split(",").filter(Boolean).sort();
  check(ladder.length === 0 || JSON.stringify(rungs) === JSON.stringify(ladder),
    `quality menu lists ${rungs.join(", ")}` + (ladder.length ? ` (expected ${ladder.join(", ")})` : ""));
  for (const [value, label] of levels) {
    const rung = label.split(" ")[0];
    await page.selectOption("#quality", value);
    const deadline = Date.now() + 30000;
    while (!segments.has(rung) && Date.now() < deadline) await page.waitForTimeout(200);
    check(segments.has(rung), `a ${rung} segment is fetched after choosing ${label}`);
  }
  await shot(page, "03-qualities");

  // Watching counts a view: a fresh playback session of the demo sends
  // beacons (api → event bus → vodfarm counts → Redis; the flush moves
  // them into PostgreSQL) until its view count rises.
  const demoId = await page.evaluate(() => state.selected);
  await page.evaluate((id) => play(id), demoId);
  await page.waitForTimeout(7000); // the previous session's last beacons land
  const viewsOf = (id) => page.evaluate(async (v) =>
    (await (await fetch("/v1/videos/" + encodeURIComponent(v))).json()).view_count, id);
  const before = await viewsOf(demoId);
  await page.waitForFunction(() => beacons.watched >= 16, null, { timeout: 90000 });
  let after = before;
  const viewsDeadline = Date.now() + 30000;
  while (after <= before && Date.now() < viewsDeadline) {
    await page.waitForTimeout(1000);
    after = await viewsOf(demoId);
  }
  check(after > before, `playing the demo raised its view count (${before} → ${after})`);
  const shown = await page.evaluate(() => document.getElementById("views").textContent);
  check(/views?$/.test(shown), `the player shows views (${shown})`);

  // Sprite preview on hover over the scrub bar.
  const box = await page.locator("#scrub").boundingBox();
  await page.mouse.move(box.x + box.width * 0.5, box.y + box.height / 2);
  await page.waitForTimeout(300);
  const preview = await page.evaluate(() => !document.getElementById("preview").hidden &&
    document.getElementById("preview-img").style.backgroundImage.includes("sprite.jpg"));
  check(preview, "scrubbing shows a sprite preview");
  await shot(page, "04-preview");

  // A webhook (nothing listens on port 9: its deliveries stay pending).
  await page.fill("#webhook-url", "http://127.0.0.1:9/hook");
  await page.click("#webhook-form button[type=submit]");
  await page.waitForFunction(() => document.getElementById("webhook-secret").textContent.includes("whsec_"),
    null, { timeout: 10000 }).then(
    () => check(true, "adding a webhook shows its signing secret once"),
    () => check(false, "adding a webhook shows its signing secret once"));
  await page.waitForSelector("#webhooks tbody tr", { timeout: 10000 });

  // Upload through the form.
  await page.setInputFiles("#file", uploadFile);
  await page.fill("#title", "browser upload");
  // As CMAF: dash.mjs then plays it over DASH.
  await page.selectOption("#packaging", "cmaf");
  await page.click("#upload-form button[type=submit]");
  await page.waitForFunction(() => document.getElementById("upload-status").textContent.startsWith("uploaded"),
    null, { timeout: 120000 });
  const uploaded = await page.evaluate(() => document.getElementById("upload-status").dataset.videoId);
  check(Boolean(uploaded), `upload through the form completes (${uploaded})`);
  await page.waitForFunction((id) => !!document.querySelector(`#videos tr[data-video-id="${id}"]`), uploaded,
    { timeout: 30000 });
  check(true, "the uploaded video appears in the list");
  await shot(page, "05-uploaded");
  // Search for the demo by its title.
  await page.fill("#search-q", "vodfarm demo");
  await page.click("#search-form button[type=submit]");
  await page.waitForSelector("#search-results li", { timeout: 30000 });
  const hit = await page.$eval("#search-results li", (li) => ({
    id: li.dataset.videoId,
    title: li.querySelector(".hit-title").textContent,
    marks: [...li.querySelectorAll(".hit-title mark")].map((m) => m.textContent),
    thumb: (li.querySelector("img") || {}).src || "",
  }));
  check(hit.title === "vodfarm demo", `searching "vodfarm demo" lists the demo first (${hit.title})`);
  check(JSON.stringify(hit.marks) === JSON.stringify(["vodfarm", "demo"]),
    `the title's matching words are highlighted (${hit.marks.join(", ")})`);
  check(/\/t\/[^/]+\/default\.jpg/.test(hit.thumb), `the hit shows its thumbnail (${hit.thumb})`);
  const summary = await page.textContent("#search-summary");
  check(/\d+ results?/.test(summary), `the summary counts the results (${summary})`);
  await page.fill("#search-q", "vodfarm dem");
  await page.waitForFunction(() => [...document.querySelectorAll("#search-suggest option")]
    .some((o) => o.value === "vodfarm demo"), null, { timeout: 10000 }).then(
    () => check(true, "as-you-type suggests the demo's title"),
    () => check(false, "as-you-type suggests the demo's title"));
  // Clear the title, so only the hit's button can set it again.
  await page.evaluate(() => { document.getElementById("player-title").textContent = ""; });
  await page.click("#search-results li button");
  await page.waitForFunction((id) => document.getElementById("player-title").textContent === "vodfarm demo",
    hit.id, { timeout: 10000 });
  check(true, "the hit's Play button loads the demo");
  await shot(page, "06-search");
  // The demo's MP4 download (dev uploads it with mp4_renditions 720p).
  await page.waitForSelector("#player-downloads a", { timeout: 10000 }).then(
    async () => {
      const href = await page.getAttribute("#player-downloads a", "href");
      check(/\/v\/[^/]+\/720p\/video\.mp4$/.test(href), `the player offers the MP4 download (${href})`);
    },
    () => check(false, "the player offers the MP4 download"));
  // The webhook's deliveries: the upload's event, then a replay.
  await page.click("#webhooks tbody tr button");
  await page.waitForFunction(() => [...document.querySelectorAll("#deliveries tbody tr")]
    .some((tr) => tr.textContent.includes("upload.completed")), null, { timeout: 30000 }).then(
    () => check(true, "the webhook lists the upload's event as a delivery"),
    () => check(false, "the webhook lists the upload's event as a delivery"));
  const deliveriesBefore = await page.$$eval("#deliveries tbody tr", (rows) => rows.length);
  await page.click("#deliveries tbody tr button");
  await page.waitForFunction((n) => document.querySelectorAll("#deliveries tbody tr").length > n, deliveriesBefore,
    { timeout: 10000 }).then(
    () => check(true, "Replay adds a delivery"),
    () => check(false, "Replay adds a delivery"));
  await shot(page, "07-webhooks");
  check(errors.length === 0, "no page errors" + (errors.length ? ": " + errors.join("; ") : ""));
  check(blocked.length === 0, "the policy blocked nothing" + (blocked.length ? ": " + blocked.join("; ") : ""));
  if (uploaded) fs.writeFileSync(path.join(outDir, "uploaded-video-id.txt"), uploaded);
} catch (e) {
  console.log("FAIL " + e.message);
  failed = true;
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
