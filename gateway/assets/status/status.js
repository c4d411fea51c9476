// Tributary's status page: polls /api/status every 2 s and draws it. No external requests:
// the map is a canvas with a local projection fitted to the vehicles' positions.
"use strict";

const errors = [];
function pageError(text) {
  errors.push(text);
  const box = document.getElementById("page-errors");
  box.hidden = false;
  box.textContent = errors.join("\n");
  document.body.dataset.errors = String(errors.length);
}
window.addEventListener("error", (e) => pageError("error: " + e.message));
window.addEventListener("unhandledrejection", (e) => pageError("rejection: " + e.reason));

const $ = (id) => document.getElementById(id);
const text = (id, value) => { $(id).textContent = value; };

function bytes(n) {
  if (n == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}

function duration(s) {
  if (s == null) return "–";
  if (s < 60) return s.toFixed(0) + " s";
  if (s < 3600) return (s / 60).toFixed(1) + " min";
  if (s < 86400) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " d";
}

function cell(row, value, numeric) {
  const td = document.createElement("td");
  td.textContent = value;
  if (numeric) td.className = "num";
  row.appendChild(td);
  return td;
}

function fillTable(id, rows) {
  const body = $(id).querySelector("tbody");
  body.replaceChildren(...rows);
}

function header(s) {
  text("version", s.version);
  text("uptime", duration(s.uptime_s));
  const ready = $("ready");
  ready.textContent = s.ready ? "ready" : "NOT READY";
  ready.className = s.ready ? "ok" : "bad";
  const clock = $("clock");
  clock.textContent = new Date(s.now_ms).toISOString().replace("T", " ").slice(0, 19) + " UTC"
    + (s.clock.plausible ? "" : " (not set?)");
  clock.className = s.clock.plausible ? "" : "bad";
  if (s.spool) {
    text("disk", bytes(s.spool.disk_free_bytes));
    text("spool", s.spool.rows + " rows, " + bytes(s.spool.bytes) + " of " + bytes(s.spool.max_bytes));
    text("backlog", s.spool.rows ? duration(s.spool.oldest_age_s) : "none");
  }
  const check = s.checks.find((c) => c.name === s.sink);
  const forward = $("forward");
  forward.textContent = s.sink + ": " + (check ? check.detail : "–");
  forward.className = s.forward.failing_since_ms || !s.forward.running ? "bad" : "";
}

// The seconds of rates the gateway keeps (activity::RATE_SECONDS).
const RATE_SECONDS = 300;

// The mean of a rate series' last `n` seconds, as the chart's right end shows it.
function recent(values, n) {
  const tail = values.slice(-n);
  return tail.length ? tail.reduce((a, v) => a + v, 0) / tail.length : 0;
}

function rates(r) {
  // What the chart's right end shows, as numbers (for tests and for anyone reading the DOM).
  document.body.dataset.receivedPerS = recent(r.received, 10).toFixed(2);
  document.body.dataset.ackedPerS = recent(r.acked, 10).toFixed(2);
  const canvas = $("rates");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 24;
  ctx.clearRect(0, 0, w, h);
  // Wider lines first, so equal series (everything received is acknowledged and forwarded)
  // stay visible under each other.
  const series = [["received", "#3b82f6", 6], ["acked", "#10b981", 4], ["forwarded", "#8b5cf6", 2], ["refused", "#ef4444", 2]];
  const max = Math.max(1, ...series.flatMap(([k]) => r[k]));
  ctx.strokeStyle = "#e2e5ea";
  ctx.fillStyle = "#6b7480";
  ctx.font = "11px system-ui";
  ctx.beginPath(); ctx.moveTo(pad, h - pad); ctx.lineTo(w, h - pad); ctx.stroke();
  ctx.fillText(max.toFixed(0) + "/s", 2, 12);
  ctx.fillText("-5 min", pad, h - 6);
  ctx.fillText("now", w - 24, h - 6);
  for (const [key, colour, width] of series) {
    const values = r[key];
    if (!values.length) continue;
    ctx.strokeStyle = colour;
    ctx.lineWidth = width;
    ctx.beginPath();
    // One second per value, the newest at "now": the axis is always the last five minutes,
    // however few seconds the gateway has counted so far.
    values.forEach((v, i) => {
      const x = pad + (w - pad) * (1 - (values.length - 1 - i) / (RATE_SECONDS - 1));
      const y = h - pad - (h - 2 * pad) * (v / max);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

// Vehicles: an equirectangular projection around the centre of the positions shown, scaled to
// fit them, so a fleet in one town fills the canvas. Colour by staleness; trail as a line.
function map(devices, now) {
  const canvas = $("map");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 20;
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = "#f0f3f7";
  ctx.fillRect(0, 0, w, h);
  const vehicles = devices.filter((d) => d.position);
  document.body.dataset.vehicles = String(vehicles.length);
  text("map-note", vehicles.length + " with a fix");
  if (!vehicles.length) {
    ctx.fillStyle = "#6b7480";
    ctx.fillText("no positions yet", w / 2 - 40, h / 2);
    return;
  }
  const points = vehicles.flatMap((d) => [[d.position.lat, d.position.lon], ...d.trail]);
  const lat0 = points.reduce((a, p) => a + p[0], 0) / points.length;
  const k = Math.cos(lat0 * Math.PI / 180);
  const xs = points.map((p) => p[1] * k), ys = points.map((p) => p[0]);
  const minX = Math.min(...xs), maxX = Math.max(...xs), minY = Math.min(...ys), maxY = Math.max(...ys);
  const span = Math.max(maxX - minX, maxY - minY, 0.002);
  const scale = (Math.min(w, h) - 2 * pad) / span;
  const cx = (minX + maxX) / 2, cy = (minY + maxY) / 2;
  const project = (lat, lon) => [w / 2 + (lon * k - cx) * scale, h / 2 - (lat - cy) * scale];
  // A scale bar: the distance of 1/4 of the canvas.
  const metres = (w / 4) / scale * 111320;
  ctx.strokeStyle = "#6b7480"; ctx.fillStyle = "#6b7480";
  ctx.beginPath(); ctx.moveTo(pad, h - 12); ctx.lineTo(pad + w / 4, h - 12); ctx.stroke();
  ctx.fillText(metres >= 1000 ? (metres / 1000).toFixed(1) + " km" : metres.toFixed(0) + " m", pad, h - 16);
  for (const d of vehicles) {
    // Freshness is when the gateway received the fix, not the device's stamp on it (a device
    // with a wrong clock, or a simulator replaying the past, would be grey while it reports).
    const age = (now - d.position.received_ms) / 1000;
    const colour = age < 60 ? "#10b981" : age < 600 ? "#f59e0b" : "#9ca3af";
    ctx.strokeStyle = colour;
    ctx.globalAlpha = 0.5;
    ctx.beginPath();
    d.trail.forEach((p, i) => {
      const [x, y] = project(p[0], p[1]);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
    ctx.globalAlpha = 1;
    const [x, y] = project(d.position.lat, d.position.lon);
    ctx.fillStyle = colour;
    ctx.beginPath(); ctx.arc(x, y, 4, 0, 2 * Math.PI); ctx.fill();
    ctx.fillStyle = "#1d232b";
    ctx.fillText(d.id, x + 6, y - 4);
  }
}

function topics(s) {
  fillTable("topics", Object.entries(s.topics).map(([name, c]) => {
    const tr = document.createElement("tr");
    cell(tr, name);
    cell(tr, c.spooled, true);
    cell(tr, c.duplicates, true);
    cell(tr, c.forwarded, true);
    cell(tr, c.dropped + c.expired + c.quarantined, true);
    return tr;
  }));
  $("checks").replaceChildren(...s.checks.map((c) => {
    const li = document.createElement("li");
    li.textContent = (c.ok ? "✓ " : "✗ ") + c.name + ": " + c.detail;
    li.className = c.ok ? "" : "bad";
    return li;
  }));
}

function devices(s) {
  text("device-count", s.devices.length + " seen, " + s.devices.filter((d) => d.connected).length + " connected");
  fillTable("devices", s.devices.map((d) => {
    const tr = document.createElement("tr");
    tr.dataset.device = d.id;
    tr.dataset.perMin = String(d.per_min);
    tr.dataset.lastSeenMs = String(d.last_seen_ms);
    cell(tr, d.id);
    cell(tr, d.transport);
    cell(tr, d.connected ? "yes" : "no");
    cell(tr, duration((s.now_ms - d.last_seen_ms) / 1000) + " ago");
    cell(tr, d.per_min, true);
    cell(tr, d.skew_ms == null ? "–" : duration(Math.abs(d.skew_ms) / 1000) + (d.skew_ms < 0 ? " ahead" : " behind"));
    const c = (s.commands || {})[d.id];
    cell(tr, c ? c.queued + (c.delivered ? " (" + c.delivered + " delivered)" : "") : "", true);
    const refusal = cell(tr, d.last_refusal || "");
    if (d.last_refusal) refusal.className = "bad";
    return tr;
  }));
}

function refusals(s) {
  fillTable("refusals", s.recent_refusals.slice().reverse().map((r) => {
    const tr = document.createElement("tr");
    cell(tr, new Date(r.time_ms).toISOString().slice(11, 19));
    cell(tr, r.transport);
    cell(tr, r.reason);
    cell(tr, r.device || "");
    cell(tr, r.peer || "");
    return tr;
  }));
}

let polls = 0;
async function poll() {
  try {
    const response = await fetch("/api/status", { cache: "no-store" });
    if (!response.ok) throw new Error("/api/status answered " + response.status);
    const s = await response.json();
    header(s);
    rates(s.rates);
    map(s.devices, s.now_ms);
    topics(s);
    devices(s);
    refusals(s);
    polls++;
    document.body.dataset.polls = String(polls);
    text("updated", "updated " + new Date().toISOString().slice(11, 19) + " UTC");
  } catch (e) {
    text("updated", "cannot reach the gateway: " + e.message);
  }
}

poll();
setInterval(poll, 2000);
