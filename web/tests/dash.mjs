// Browser check of DASH playback with captions in headless Debian chromium
// (playwright-core), on a ready CMAF video of the dev page:
//
//   node web/tests/dash.mjs PAGE_URL OUT_DIR VIDEO_ID
//
// 1. English captions are added to the video through the api (the dev
//    page's creator owns it);
// 2. the page opens it over DASH (`#video=ID&protocol=dash`): dash.js
//    fetches the MPD and CMAF segments, and currentTime advances;
// 3. choosing English in the captions menu shows its cue on the video.
// A screenshot goes to OUT_DIR. Exits non-zero with a message on failure.
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";

const [pageUrl, outDir, videoId] = process.argv.slice(2);
if (!pageUrl || !outDir || !videoId) {
  console.error("usage: dash.mjs PAGE_URL OUT_DIR VIDEO_ID");
  process.exit(2);
}
fs.mkdirSync(outDir, { recursive: true });
const CUE = "Hello from the captions";

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required"],
});
let failed = false;
const check = (ok, what) => {
  console.log((ok ? "ok   " : "FAIL ") + what);
  if (!ok) failed = true;
};

try {
  const page = await (await browser.newContext()).newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const fetched = [];
  page.on("request", (r) => fetched.push(r.url()));

  await page.goto(pageUrl, { waitUntil: "load" });
  const put = await page.evaluate(async ([id, cue]) => {
    const s = await (await fetch("/v1/dev/session")).json();
    const r = await fetch(`/v1/videos/${id}/subtitles/en?label=English`, {
      method: "PUT",
      headers: { Authorization: "Bearer " + s.token },
      body: `WEBVTT\n\n00:00.000 --> 01:00.000\n${cue}\n`,
    });
    return r.status;
  }, [videoId, CUE]);
  check(put === 201 || put === 200, `captions added through the api (${put})`);

  await page.goto(pageUrl + "#video=" + videoId + "&protocol=dash", { waitUntil: "load" });
  await page.reload({ waitUntil: "load" });
  await page.waitForFunction(() => document.getElementById("video").currentTime > 0.3, null, { timeout: 60000 });
  check(await page.evaluate(() => document.getElementById("protocol").value === "dash" && !!window.dashjs),
    "the page plays it with dash.js");
  check(fetched.some((u) => u.includes(`/v/${videoId}/manifest.mpd`)), "dash.js fetched the MPD");
  check(fetched.some((u) => /\/segment_\d+\.m4s/.test(u)) && fetched.some((u) => /\/init\.mp4/.test(u)),
    "dash.js fetched CMAF init and media segments");

  await page.selectOption("#captions", "en");
  const shown = await page.waitForFunction((cue) => {
    const tracks = [...document.getElementById("video").textTracks];
    return tracks.some((t) => t.mode === "showing" && t.activeCues &&
      [...t.activeCues].some((c) => c.text.includes(cue)));
  }, CUE, { timeout: 30000 }).then(() => true, () => false);
  check(shown, `the caption cue "${CUE}" shows`);
  await page.screenshot({ path: path.join(outDir, "06-dash-captions.png"), fullPage: true });
  check(errors.length === 0, "no page errors" + (errors.length ? ": " + errors.join("; ") : ""));
} catch (e) {
  console.log("FAIL " + e.message);
  failed = true;
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
