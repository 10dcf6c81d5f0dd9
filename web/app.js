// vodfarm dev page: search with highlighted results and as-you-type
// titles, videos with live status, tus uploads that resume after a reload,
// an hls.js / dash.js player with quality and captions menus and sprite
// previews (`#video=ID&protocol=dash` opens a video over DASH), MP4
// download links, webhooks with their deliveries, and the job queue. Plain browser JavaScript: no build step, scripts vendored.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { token: null, channel: null, selected: null, hls: null, dash: null, storyboard: [], dev: false };

async function api(path, options = {}) {
  const headers = Object.assign({ "Content-Type": "application/json" }, options.headers || {});
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  const text = await resp.text();
  const body = text ? JSON.parse(text) : null;
  if (!resp.ok) {
    // A stored token that expired or was revoked: sign in again.
    if (resp.status === 401 && state.token && !state.dev) forgetSession();
    const msg = body && body.error ? body.error.message : resp.statusText;
    throw new Error(msg);
  }
  return body;
}

function forgetSession() {
  state.token = null;
  localStorage.removeItem("vodfarm.token");
  $("logout").hidden = true;
  $("app").hidden = true;
  $("login").hidden = false;
}

// Signing out revokes the token on the server, not only here.
$("logout").addEventListener("click", async () => {
  try {
    await api("/v1/tokens/current", { method: "DELETE" });
  } catch (_) { /* gone already */ }
  forgetSession();
  $("who").textContent = "";
});

// ---- session -------------------------------------------------------------

async function startSession() {
  // `vodfarm dev` hands the page its demo creator; elsewhere, sign in.
  try {
    const dev = await api("/v1/dev/session");
    state.token = dev.token;
    state.channel = dev.channel_id;
    state.dev = true;
    $("who").textContent = dev.username + " (dev)";
  } catch (_) {
    state.token = localStorage.getItem("vodfarm.token");
    state.channel = localStorage.getItem("vodfarm.channel");
  }
  if (!state.token || !state.channel) {
    $("login").hidden = false;
    return;
  }
  $("login").hidden = true;
  $("app").hidden = false;
  // The dev session's token is dev.env's too: it is not signed out here.
  $("logout").hidden = state.dev;
  refreshVideos();
  refreshQueue();
  if (!state.polling) {
    state.polling = true;
    setInterval(() => { if (state.token) refreshVideos(); }, 2000);
    setInterval(() => { if (state.token) refreshQueue(); }, 3000);
  }
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  const action = ev.submitter ? ev.submitter.value : "login";
  try {
    if (action === "register") {
      const u = await api("/v1/users", { method: "POST", body: JSON.stringify({
        username: f.username.value, email: f.email.value, password: f.password.value }) });
      state.token = u.token;
      const c = await api("/v1/channels", { method: "POST", body: JSON.stringify({
        name: f.username.value + "'s channel", description: "" }) });
      state.channel = c.channel_id;
    } else {
      const t = await api("/v1/tokens", { method: "POST", body: JSON.stringify({
        username: f.username.value, password: f.password.value }) });
      state.token = t.token;
      state.channel = localStorage.getItem("vodfarm.channel");
      if (!state.channel) {
        const c = await api("/v1/channels", { method: "POST", body: JSON.stringify({
          name: f.username.value + "'s channel", description: "" }) });
        state.channel = c.channel_id;
      }
    }
    localStorage.setItem("vodfarm.token", state.token);
    localStorage.setItem("vodfarm.channel", state.channel);
    $("who").textContent = f.username.value;
    startSession();
  } catch (e) {
    $("login-error").textContent = e.message;
  }
});

// ---- videos --------------------------------------------------------------

function fmtDuration(s) {
  if (!s) return "";
  return Math.floor(s / 60) + ":" + String(Math.round(s % 60)).padStart(2, "0");
}

async function refreshVideos() {
  let page;
  try {
    page = await api("/v1/channels/" + encodeURIComponent(state.channel) + "/videos?limit=50");
  } catch (e) {
    return;
  }
  const tbody = $("videos").querySelector("tbody");
  tbody.textContent = "";
  for (const v of page.videos || []) {
    const tr = document.createElement("tr");
    tr.dataset.videoId = v.video_id;
    if (v.video_id === state.selected) tr.className = "selected";
    const progress = v.processing_progress || 0;
    tr.innerHTML =
      "<td></td><td class='status-" + v.status + "'>" + v.status + "</td>" +
      "<td><progress max='100' value='" + progress + "'></progress> " + progress + "%</td>" +
      "<td>" + fmtDuration(v.duration_seconds) + "</td><td></td>";
    tr.children[0].textContent = v.title;
    if (v.status === "ready") {
      const b = document.createElement("button");
      b.textContent = "Play";
      b.className = "play";
      b.onclick = () => play(v.video_id);
      tr.children[4].appendChild(b);
    }
    tbody.appendChild(tr);
  }
  if (!state.selected) {
    const wanted = fromHash();
    const ready = (page.videos || []).filter((v) => v.status === "ready");
    const first = ready.find((v) => v.video_id === wanted.video) || ready[0];
    if (first) play(first.video_id, first.video_id === wanted.video ? wanted.protocol : null);
  }
}

// ---- player --------------------------------------------------------------

function parseStoryboard(text, base) {
  // WebVTT cues "HH:MM:SS.mmm --> HH:MM:SS.mmm" followed by "sprite.jpg#xywh=x,y,w,h".
  const toSec = (t) => t.split(":").reduce((acc, p) => acc * 60 + parseFloat(p), 0);
  const cues = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const m = lines[i].match(/^([\d:.]+)\s+-->\s+([\d:.]+)/);
    if (!m || i + 1 >= lines.length) continue;
    const ref = lines[i + 1].trim();
    const xy = ref.match(/#xywh=(\d+),(\d+),(\d+),(\d+)/);
    if (!xy) continue;
    cues.push({ start: toSec(m[1]), end: toSec(m[2]), url: new URL(ref.split("#")[0], base).href,
      x: +xy[1], y: +xy[2], w: +xy[3], h: +xy[4] });
  }
  return cues;
}

// The video and protocol the address asks for: `#video=ID&protocol=dash`.
function fromHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  return { video: p.get("video"), protocol: p.get("protocol") };
}

function fillQualities(levels) {
  const sel = $("quality");
  sel.innerHTML = "<option value='-1'>Auto</option>";
  levels.forEach((l, i) => {
    const o = document.createElement("option");
    o.value = i;
    o.textContent = l.height + "p (" + Math.round(l.bitrate / 1000) + " kb/s)";
    sel.appendChild(o);
  });
}

// Captions: the video's subtitle tracks (GET …/subtitles) as <track>s the
// browser renders itself, whichever protocol plays; the menu picks one.
async function loadCaptions(videoId) {
  const video = $("video");
  video.querySelectorAll("track").forEach((t) => t.remove());
  const sel = $("captions");
  sel.innerHTML = "<option value=''>Off</option>";
  let list = [];
  try {
    list = (await api("/v1/videos/" + encodeURIComponent(videoId) + "/subtitles")).subtitles || [];
  } catch (_) { /* captions are optional */ }
  for (const s of list) {
    const t = document.createElement("track");
    t.kind = "subtitles";
    t.srclang = s.lang;
    t.label = s.label;
    t.src = s.url;
    t.dataset.lang = s.lang;
    video.appendChild(t);
    const o = document.createElement("option");
    o.value = s.lang;
    o.textContent = s.label;
    sel.appendChild(o);
  }
}

$("captions").addEventListener("change", (ev) => {
  for (const t of $("video").querySelectorAll("track")) {
    t.track.mode = t.dataset.lang === ev.target.value ? "showing" : "disabled";
  }
});

$("protocol").addEventListener("change", (ev) => {
  if (state.selected) play(state.selected, ev.target.value);
});

async function play(videoId, protocol) {
  state.selected = videoId;
  const v = await api("/v1/videos/" + encodeURIComponent(videoId));
  beacons.begin(videoId);
  showStats(v);
  refreshRelated(videoId);
  refreshContinue();
  const playback = v.playback || {};
  const master = playback.master_url || playback.hls_url || v.playback_url;
  if (!master) return;
  const dashUrl = playback.dash_url;
  const useDash = protocol === "dash" && dashUrl && window.dashjs;
  $("protocol").querySelector("option[value=dash]").disabled = !dashUrl;
  $("protocol").value = useDash ? "dash" : "hls";
  $("player-title").textContent = v.title;
  $("player-links").textContent = useDash ? "manifest.mpd: " + dashUrl : "master.m3u8: " + master;
  const downloads = $("player-downloads");
  downloads.textContent = "";
  for (const d of v.downloads || []) {
    const a = document.createElement("a");
    a.href = d.url;
    a.textContent = "Download MP4 " + d.rendition + " (" + (d.size_bytes / 1048576).toFixed(1) + " MiB)";
    downloads.appendChild(a);
  }
  const video = $("video");
  // The poster: the default thumbnail (a frame from the video) until the
  // first frame plays, so the player never starts as a black box.
  const poster = playback.thumbnail_url ||
    ((v.thumbnails || []).find((t) => t.kind === "default") || {}).url;
  if (poster) video.poster = poster; else video.removeAttribute("poster");
  if (state.hls) { state.hls.destroy(); state.hls = null; }
  if (state.dash) { state.dash.reset(); state.dash = null; }
  await loadCaptions(videoId);
  if (useDash) {
    const player = dashjs.MediaPlayer().create();
    // Captions come from the <track>s (the same files the MPD lists).
    player.updateSettings({ streaming: { text: { defaultEnabled: false } } });
    state.dash = player;
    player.on(dashjs.MediaPlayer.events.STREAM_INITIALIZED, () => {
      fillQualities(player.getBitrateInfoListFor("video"));
    });
    player.on(dashjs.MediaPlayer.events.QUALITY_CHANGE_RENDERED, (e) => {
      if (e.mediaType !== "video") return;
      const l = player.getBitrateInfoListFor("video")[e.newQuality];
      $("level-info").textContent = l ? "playing " + l.height + "p (DASH)" : "";
    });
    player.initialize(video, dashUrl, true);
  } else {
    // Captions from the <track>s here too, not the master's SUBTITLES group.
    const hls = new Hls({ capLevelToPlayerSize: false, enableWebVTT: false });
    state.hls = hls;
    hls.loadSource(master);
    hls.attachMedia(video);
    hls.on(Hls.Events.MANIFEST_PARSED, (_, data) => {
      fillQualities(data.levels);
      video.play().catch(() => {});
    });
    hls.on(Hls.Events.LEVEL_SWITCHED, (_, data) => {
      const l = hls.levels[data.level];
      $("level-info").textContent = l ? "playing " + l.height + "p" : "";
    });
  }
  state.storyboard = [];
  const sbThumb = (v.thumbnails || []).find((t) => t.kind === "storyboard");
  const sb = sbThumb ? sbThumb.url : null;
  if (sb) {
    try {
      const text = await (await fetch(sb)).text();
      state.storyboard = parseStoryboard(text, sb);
    } catch (_) { /* previews are optional */ }
  }
}

// ---- views, likes, related, continue watching --------------------------

function showStats(v) {
  $("views").textContent = fmtViews(v.view_count || 0);
  $("likes").textContent = (v.like_count || 0) + " likes";
}

$("like").addEventListener("click", async () => {
  if (!state.selected) return;
  try {
    const r = await api("/v1/videos/" + encodeURIComponent(state.selected) + "/like", { method: "PUT" });
    $("likes").textContent = r.like_count + " likes";
  } catch (_) { /* signed out */ }
});

function fillCards(list, cards, onPick, extra) {
  list.textContent = "";
  for (const c of cards) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.className = "card";
    b.textContent = c.title || (c.video && c.video.title) || "";
    b.onclick = () => onPick(c.video ? c.video.video_id : c.video_id);
    li.appendChild(b);
    if (extra) li.appendChild(document.createTextNode(" " + extra(c)));
    list.appendChild(li);
  }
}

async function refreshRelated(videoId) {
  try {
    const r = await api("/v1/videos/" + encodeURIComponent(videoId) + "/related?limit=6");
    fillCards($("related"), r.videos || [], (id) => play(id), (c) => fmtViews(c.view_count));
  } catch (_) { $("related").textContent = ""; }
}

async function refreshContinue() {
  try {
    const r = await api("/v1/me/continue-watching?limit=6");
    fillCards($("continue"), r.items || [], (id) => play(id),
      (c) => "at " + fmtDuration(c.position_seconds) + " of " + fmtDuration(c.duration_seconds));
  } catch (_) { $("continue").textContent = ""; }
}

// Playback beacons: a session per play(), its cumulative watch time from
// the player's clock, sent every 5 s and when playback ends or the page
// is hidden (keepalive, so a closing tab still delivers them). Event ids
// are ours: a resent batch counts once.
const beacons = {
  videoId: null, session: null, watched: 0, last: null, queue: [], timer: null,
  begin(videoId) {
    this.flush();
    this.videoId = videoId;
    this.session = crypto.randomUUID();
    this.watched = 0;
    this.last = null;
    this.queue = [];
    this.push("start");
    clearInterval(this.timer);
    this.timer = setInterval(() => { if (!$("video").paused) this.push("progress"); this.flush(); }, 5000);
  },
  tick(t) {
    if (this.last !== null && t > this.last && t - this.last < 2) this.watched += t - this.last;
    this.last = t;
  },
  push(kind) {
    if (!this.videoId) return;
    const v = $("video");
    const duration = Number.isFinite(v.duration) ? v.duration : 0;
    const pos = Math.max(0, Math.min(v.currentTime || 0, duration || Infinity));
    this.queue.push({ event_id: crypto.randomUUID(), kind, position_seconds: pos,
      watched_seconds: this.watched, at: Date.now() / 1000 });
  },
  flush() {
    if (!this.videoId || this.queue.length === 0) return;
    const batch = this.queue.splice(0, 100);
    const headers = { "Content-Type": "application/json" };
    if (state.token) headers.Authorization = "Bearer " + state.token;
    fetch("/v1/videos/" + encodeURIComponent(this.videoId) + "/beacons", {
      method: "POST", headers, keepalive: true,
      body: JSON.stringify({ session_id: this.session, events: batch }),
    }).then((r) => { if (r.status >= 500) this.queue.unshift(...batch); })
      .catch(() => { this.queue.unshift(...batch); });
  },
};
$("video").addEventListener("timeupdate", () => beacons.tick($("video").currentTime));
$("video").addEventListener("ended", () => { beacons.push("end"); beacons.flush(); });
$("video").addEventListener("pause", () => { beacons.push("progress"); beacons.flush(); });
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "hidden") { beacons.push("end"); beacons.flush(); }
});

$("quality").addEventListener("change", (ev) => {
  const level = parseInt(ev.target.value, 10);
  if (state.hls) state.hls.currentLevel = level;
  if (state.dash) {
    state.dash.updateSettings({ streaming: { abr: { autoSwitchBitrate: { video: level < 0 } } } });
    if (level >= 0) state.dash.setQualityFor("video", level);
  }
});

const video = $("video");
video.addEventListener("timeupdate", () => {
  if (video.duration) $("scrub").value = Math.round((video.currentTime / video.duration) * 1000);
});
$("scrub").addEventListener("input", (ev) => {
  if (video.duration) video.currentTime = (ev.target.value / 1000) * video.duration;
});
$("scrub").addEventListener("mousemove", (ev) => {
  const r = ev.target.getBoundingClientRect();
  const frac = Math.min(1, Math.max(0, (ev.clientX - r.left) / r.width));
  const t = frac * (video.duration || 0);
  const cue = state.storyboard.find((c) => t >= c.start && t < c.end);
  const preview = $("preview");
  if (!cue) { preview.hidden = true; return; }
  const img = $("preview-img");
  img.style.width = cue.w + "px";
  img.style.height = cue.h + "px";
  img.style.backgroundImage = "url(" + cue.url + ")";
  img.style.backgroundPosition = -cue.x + "px " + -cue.y + "px";
  $("preview-time").textContent = fmtDuration(t) || "0:00";
  preview.style.left = frac * r.width + "px";
  preview.hidden = false;
});
$("scrub").addEventListener("mouseleave", () => { $("preview").hidden = true; });

// ---- uploads -------------------------------------------------------------

function fileKey(file) {
  return "vodfarm.upload." + [file.name, file.size, file.lastModified].join(":");
}

$("upload-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const file = $("file").files[0];
  if (!file) return;
  const status = $("upload-status");
  const bar = $("upload-progress");
  bar.hidden = false;
  // The same file picked again (after a reload) resumes its upload.
  let grant = JSON.parse(localStorage.getItem(fileKey(file)) || "null");
  if (grant && new Date(grant.upload_expires_at) < new Date()) grant = null;
  try {
    if (!grant) {
      grant = await api("/v1/videos", { method: "POST", body: JSON.stringify({
        channel_id: state.channel, title: $("title").value, description: "", tags: [],
        privacy: $("privacy").value, packaging: $("packaging").value,
        mp4_renditions: $("mp4").checked ? ["720p"] : [],
        filename: file.name, size_bytes: file.size }) });
      localStorage.setItem(fileKey(file), JSON.stringify(grant));
    } else {
      status.textContent = "resuming…";
    }
  } catch (e) {
    status.textContent = "could not start: " + e.message;
    return;
  }
  const upload = new tus.Upload(file, {
    uploadUrl: grant.upload_url,
    headers: { Authorization: "Bearer " + grant.upload_token },
    chunkSize: 8 * 1024 * 1024,
    retryDelays: [0, 1000, 3000, 5000],
    storeFingerprintForResuming: false,
    onProgress: (sent, total) => {
      const pct = Math.floor((sent / total) * 100);
      bar.value = pct;
      status.textContent = pct + "% uploaded";
    },
    onError: (e) => { status.textContent = "upload failed: " + e.message; },
    onSuccess: () => {
      localStorage.removeItem(fileKey(file));
      status.textContent = "uploaded: processing " + grant.video_id;
      status.dataset.videoId = grant.video_id;
      refreshVideos();
    },
  });
  upload.start();
});

// ---- search --------------------------------------------------------------

// The api sends titles and snippets HTML-escaped with matches in <mark>.
// Only that markup is let through: anything else is shown as text.
function setMarked(el, html) {
  const tags = (html || "").match(/<[^>]*>/g) || [];
  if (tags.every((t) => t === "<mark>" || t === "</mark>")) el.innerHTML = html || "";
  else el.textContent = html || "";
}

const search = { cursor: null, params: null, suggestTimer: null };

function fmtViews(n) {
  return n === 1 ? "1 view" : (n || 0).toLocaleString() + " views";
}

function renderHit(h) {
  const li = document.createElement("li");
  li.dataset.videoId = h.video_id;
  let thumb;
  if (h.thumbnail_url) {
    thumb = document.createElement("img");
    thumb.src = h.thumbnail_url;
    thumb.alt = "";
    thumb.loading = "lazy";
  } else {
    thumb = document.createElement("div");
    thumb.className = "no-thumb";
  }
  const title = document.createElement("div");
  title.className = "hit-title";
  setMarked(title, h.title_html);
  const meta = document.createElement("div");
  meta.className = "hit-meta";
  meta.textContent = [h.channel.name, fmtDuration(h.duration_seconds), fmtViews(h.view_count)]
    .filter(Boolean).join(" · ");
  const snippet = document.createElement("div");
  snippet.className = "hit-snippet";
  setMarked(snippet, h.description_html);
  const b = document.createElement("button");
  b.textContent = "Play";
  b.onclick = () => play(h.video_id);
  li.append(thumb, title, b, meta, snippet);
  return li;
}

async function runSearch(more) {
  const list = $("search-results");
  if (!more) {
    const q = $("search-q").value;
    if (!q.trim()) return;
    search.params = { q, sort: $("search-sort").value, limit: "10" };
    search.cursor = null;
    list.textContent = "";
  }
  const params = new URLSearchParams(search.params);
  if (more && search.cursor) params.set("cursor", search.cursor);
  let page;
  try {
    page = await api("/v1/search?" + params);
  } catch (e) {
    $("search-summary").textContent = e.message;
    $("search-more").hidden = true;
    return;
  }
  for (const h of page.hits) list.appendChild(renderHit(h));
  search.cursor = page.next_cursor;
  $("search-more").hidden = !page.next_cursor;
  if (!more) {
    const total = page.total ? page.total.value + (page.total.relation === "gte" ? "+" : "") : "0";
    const facets = page.facets ? page.facets.category.map((c) => c.value + " " + c.count)
      .concat(page.facets.duration.filter((d) => d.count).map((d) => d.value + " " + d.count)) : [];
    $("search-summary").textContent = (page.typo ? "no exact match; similar titles · " : "") +
      total + " result" + (total === "1" ? "" : "s") + (facets.length ? " · " + facets.join(", ") : "");
  }
}

$("search-form").addEventListener("submit", (ev) => { ev.preventDefault(); runSearch(false); });
$("search-more").addEventListener("click", () => runSearch(true));
$("search-q").addEventListener("input", () => {
  clearTimeout(search.suggestTimer);
  search.suggestTimer = setTimeout(async () => {
    const q = $("search-q").value;
    const list = $("search-suggest");
    if (q.trim().length < 3) { list.textContent = ""; return; }
    try {
      const s = await api("/v1/search/suggest?" + new URLSearchParams({ q }));
      list.textContent = "";
      for (const x of s.suggestions) {
        const o = document.createElement("option");
        o.value = x.title;
        list.appendChild(o);
      }
    } catch (_) { /* suggestions are optional */ }
  }, 150);
});

// ---- queue ---------------------------------------------------------------

async function refreshQueue() {
  let stats;
  try {
    stats = await api("/v1/dev/queue");
  } catch (_) {
    $("queue-section").hidden = true;
    return;
  }
  const rows = {};
  for (const c of stats.counts || []) {
    rows[c.job_type] = rows[c.job_type] || {};
    rows[c.job_type][c.status] = c.count;
  }
  const tbody = $("queue").querySelector("tbody");
  tbody.textContent = "";
  for (const t of ["transcode", "thumbnail", "manifest", "mp4"]) {
    const r = rows[t] || {};
    const tr = document.createElement("tr");
    tr.innerHTML = "<td>" + t + "</td><td>" + (r.pending || 0) + "</td><td>" + (r.processing || 0) +
      "</td><td>" + (r.completed || 0) + "</td><td>" + (r.failed || 0) + "</td>";
    tbody.appendChild(tr);
  }
  const age = stats.oldest_pending_age_seconds;
  $("queue-summary").textContent = "workers: " + stats.workers_seen +
    (age != null ? " · oldest due job waiting " + Math.round(age) + " s" : " · nothing waiting") +
    (stats.completed_last_minute != null ? " · " + stats.completed_last_minute + " jobs/min" : "");
}

// ---- webhooks ------------------------------------------------------------

const hooks = { selected: null };

function cell(tr, text) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  tr.appendChild(td);
  return td;
}

async function refreshWebhooks() {
  let list;
  try {
    list = await api("/v1/webhooks");
  } catch (_) { return; }
  const tbody = $("webhooks").querySelector("tbody");
  tbody.textContent = "";
  for (const w of list.webhooks) {
    const tr = document.createElement("tr");
    cell(tr, w.url);
    cell(tr, w.events.join(", "));
    cell(tr, w.enabled ? "enabled" : "disabled" + (w.disabled_reason ? ": " + w.disabled_reason : ""));
    const td = cell(tr, "");
    const show = document.createElement("button");
    show.textContent = "Deliveries";
    show.addEventListener("click", () => { hooks.selected = w.webhook_id; refreshDeliveries(); });
    const toggle = document.createElement("button");
    toggle.textContent = w.enabled ? "Disable" : "Enable";
    toggle.addEventListener("click", async () => {
      await api("/v1/webhooks/" + encodeURIComponent(w.webhook_id),
        { method: "PATCH", body: JSON.stringify({ enabled: !w.enabled }) }).catch(() => {});
      refreshWebhooks();
    });
    const del = document.createElement("button");
    del.textContent = "Delete";
    del.addEventListener("click", async () => {
      await api("/v1/webhooks/" + encodeURIComponent(w.webhook_id), { method: "DELETE" }).catch(() => {});
      if (hooks.selected === w.webhook_id) hooks.selected = null;
      refreshWebhooks();
      refreshDeliveries();
    });
    td.append(show, toggle, del);
    tbody.appendChild(tr);
  }
}

async function refreshDeliveries() {
  const table = $("deliveries");
  if (!hooks.selected) {
    table.hidden = true;
    $("deliveries-title").hidden = true;
    return;
  }
  let page;
  try {
    page = await api("/v1/webhooks/" + encodeURIComponent(hooks.selected) + "/deliveries?limit=20");
  } catch (_) { return; }
  table.hidden = false;
  $("deliveries-title").hidden = false;
  const tbody = table.querySelector("tbody");
  tbody.textContent = "";
  for (const d of page.deliveries) {
    const tr = document.createElement("tr");
    cell(tr, d.event_type + " " + d.event_id);
    cell(tr, d.status);
    cell(tr, d.attempts);
    cell(tr, d.last_status_code != null ? "HTTP " + d.last_status_code : (d.last_error || ""));
    cell(tr, d.next_attempt_at ? new Date(d.next_attempt_at).toLocaleTimeString() : "");
    const td = cell(tr, "");
    const replay = document.createElement("button");
    replay.textContent = "Replay";
    replay.addEventListener("click", async () => {
      await api("/v1/webhooks/" + encodeURIComponent(hooks.selected) + "/deliveries/" +
        encodeURIComponent(d.delivery_id) + "/replay", { method: "POST" }).catch(() => {});
      refreshDeliveries();
    });
    td.appendChild(replay);
    tbody.appendChild(tr);
  }
}

$("webhook-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("webhook-error").textContent = "";
  const events = Array.from(document.querySelectorAll("#webhook-form input[name=event]:checked"))
    .map((i) => i.value);
  try {
    const created = await api("/v1/webhooks", { method: "POST",
      body: JSON.stringify({ url: $("webhook-url").value, events }) });
    // The signing secret is shown this once.
    const p = $("webhook-secret");
    p.textContent = "Signing secret (shown once, keep it): " + created.secret;
    p.hidden = false;
    $("webhook-url").value = "";
    refreshWebhooks();
  } catch (e) {
    $("webhook-error").textContent = e.message;
  }
});

setInterval(() => { if (!$("app").hidden) { refreshWebhooks(); refreshDeliveries(); } }, 5000);

startSession();
