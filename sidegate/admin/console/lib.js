// The Sidegate console, part 1 of 2: the API client, DOM helpers and the inline-SVG charts that
// app.js (the views and the shell) uses; both are classic scripts sharing one global scope, loaded in
// order (index.html). No build step, no third-party code.
// Every value from the server is put in the page with textContent or an attribute (never as HTML),
// and the page's Content-Security-Policy forbids inline script, so a hostile tenant or model name
// cannot run code here. The admin token lives in sessionStorage (this tab only).
"use strict";

const API = "/admin/v1";
const TOKEN = "sidegate.console.token";
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#2f6fdf", "#e8793a", "#2aa876", "#c94e9a", "#8a63d2", "#d4b02c", "#1fa2b8", "#b8513a",
  "#5c8a2f", "#7a7f8a"];
const $ = (id) => document.getElementById(id);
const state = { spec: null, tenants: [], view: null, usageGen: 0, live: { cursor: null, timer: null, paused: false, gen: 0 } };

// ---- the API ----

class ApiError extends Error {
  constructor(status, code, message) { super(message || code || `HTTP ${status}`); this.status = status; this.code = code; }
}

async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + sessionStorage.getItem(TOKEN) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(API + path, {
    method, headers, cache: "no-store", credentials: "omit",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await resp.json(); } catch (_) { data = null; }
  if (resp.status === 401) {
    signOut("The server refused the token (wrong, expired or revoked): sign in again.");
    throw new ApiError(401, "unauthorized", "signed out");
  }
  if (!resp.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(resp.status, err.code, err.message);
  }
  return data;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) q.set(k, v);
  const s = q.toString();
  return s ? "?" + s : "";
}

// ---- small DOM helpers ----

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function flash(message, kind) {
  const f = $("flash");
  f.textContent = message;
  f.className = "flash " + (kind || "info");
  f.hidden = !message;
}

const fmt = {
  usd: (v) => "$" + (v >= 100 ? v.toFixed(2) : v >= 1 ? v.toFixed(3) : v.toPrecision(3).replace(/\.?0+$/, "")),
  int: (v) => Math.round(v).toLocaleString("en-US"),
  pct: (v) => (100 * v).toFixed(1) + "%",
  time(ts) {
    if (typeof ts === "string" && !/^\d+(\.\d+)?$/.test(ts)) return ts; // already a date text
    const n = Number(ts);
    return n ? new Date(n * 1000).toISOString().replace("T", " ").slice(0, 19) : "—";
  },
  tick(ts, bucketS) {
    const iso = new Date(ts * 1000).toISOString();
    return bucketS >= 86400 ? iso.slice(5, 10) : bucketS >= 3600 ? iso.slice(5, 10) + " " + iso.slice(11, 16) : iso.slice(11, 16);
  },
};
const metricFmt = (m) => (m === "cost_usd" ? fmt.usd : fmt.int);

function rows(tbody, list, cells) {
  tbody.replaceChildren(...list.map((item) => {
    const tr = el("tr");
    for (const c of cells(item)) tr.append(c instanceof Node ? el("td", {}, c) : el("td", { text: String(c) }));
    return tr;
  }));
}

// ---- charts (inline SVG) ----

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// Stacked bars: one column per bucket, one <rect class="mark"> per (bucket, group) with its data in
// data-* attributes, so what is drawn can be checked against the numbers.
function stackedBars(box, buckets, bucketS, series, format) {
  const W = 960, H = 280, L = 64, R = 8, T = 10, B = 28;
  const totals = buckets.map((_, i) => series.reduce((s, line) => s + line.values[i], 0));
  const top = niceMax(Math.max(0, ...totals));
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "bars", role: "img" });
  const y = (v) => T + (H - T - B) * (1 - v / top);
  for (let g = 0; g <= 4; g++) {
    const v = (top * g) / 4;
    root.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    root.append(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" }, format(v)));
  }
  const step = (W - L - R) / Math.max(buckets.length, 1);
  const every = Math.max(1, Math.ceil(buckets.length / 8));
  buckets.forEach((ts, i) => {
    const x = L + i * step;
    if (i % every === 0) root.append(svg("text", { x: x + step / 2, y: H - 8, "text-anchor": "middle", class: "axis" }, fmt.tick(ts, bucketS)));
    let base = 0;
    series.forEach((line) => {
      const v = line.values[i];
      if (!v) return;
      const rect = svg("rect", {
        x: x + step * 0.1, width: Math.max(step * 0.8, 1), y: y(base + v), height: Math.max(y(base) - y(base + v), 0.5),
        fill: line.color, class: "mark", "data-group": line.group, "data-bucket": ts, "data-value": v,
      });
      rect.append(svg("title", {}, `${line.group} · ${fmt.time(ts)} UTC · ${format(v)}`));
      root.append(rect);
      base += v;
    });
  });
  if (!totals.some((t) => t > 0)) root.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, "no usage in this range"));
  box.replaceChildren(root);
}

function hBars(box, items, format) {
  const W = 960, row = 24, L = 220, H = Math.max(items.length, 1) * row + 8;
  const top = niceMax(Math.max(0, ...items.map((i) => i.value)));
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "hbars", role: "img" });
  items.forEach((item, i) => {
    const y = 4 + i * row;
    root.append(svg("text", { x: L - 8, y: y + 15, "text-anchor": "end", class: "axis" }, item.label));
    const rect = svg("rect", { x: L, y: y + 3, height: row - 8, width: Math.max(((W - L - 90) * item.value) / top, 1),
      fill: COLORS[i % COLORS.length], class: "mark", "data-group": item.label, "data-value": item.value });
    rect.append(svg("title", {}, `${item.label}: ${format(item.value)}`));
    root.append(rect);
    root.append(svg("text", { x: L + ((W - L - 90) * item.value) / top + 6, y: y + 15, class: "axis" }, format(item.value)));
  });
  if (!items.length) root.append(svg("text", { x: W / 2, y: 18, "text-anchor": "middle", class: "empty" }, "nothing yet"));
  box.replaceChildren(root);
}
