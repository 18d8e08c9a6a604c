// The Sidegate console, part 2 of 2: the views and the shell (lib.js: the API client, DOM helpers
// and the inline-SVG charts). Plain DOM, no build step, no third-party code.
// Every value from the server is put in the page with textContent or an attribute (never as HTML),
// and the page's Content-Security-Policy forbids inline script, so a hostile tenant or model name
// cannot run code here. The admin token lives in sessionStorage (this tab only).
"use strict";

// ---- views ----

const AUTO_BUCKET = { "1h": "minute", "6h": "minute", "24h": "hour", "7d": "hour", "30d": "day" };

async function showUsage() {
  const gen = ++state.usageGen; // a later refresh wins: an older answer arriving last is dropped
  const range = $("usage-range").value, metric = $("usage-metric").value, group = $("usage-group").value;
  const bucket = $("usage-bucket").value === "auto" ? AUTO_BUCKET[range] : $("usage-bucket").value;
  const tenant = $("usage-tenant").value;
  const [series, topAns] = await Promise.all([
    api("GET", "/usage/series" + query({ from: range, bucket, group_by: group, tenant })),
    api("GET", "/usage/top" + query({ from: range, bucket, group_by: group === "tenant" ? "model" : group, tenant, limit: 10 })),
  ]);
  if (gen !== state.usageGen) return;
  const lines = series.series.map((s, i) => ({
    group: s.group, color: s.group === "(other)" ? "#9aa0a6" : COLORS[i % COLORS.length],
    values: metric === "tokens" ? s.input_tokens.map((v, j) => v + s.output_tokens[j]) : s[metric],
  }));
  const format = metricFmt(metric);
  stackedBars($("usage-chart"), series.buckets, series.bucket_s, lines, format);
  $("usage-legend").replaceChildren(...lines.map((l) => el("span", { class: "key", "data-group": l.group },
    svgSwatch(l.color), document.createTextNode(`${l.group} (${format(l.values.reduce((a, b) => a + b, 0))})`))));
  const notes = [];
  if (series.truncated) notes.push(`Busy range: only the newest ${fmt.int(series.records_read)} requests were read; complete from ${fmt.time(series.complete_from)} UTC.`);
  if (series.range_capped) notes.push(`Range shortened to ${series.buckets.length} buckets: choose a coarser bucket for more.`);
  if (series.groups_merged) notes.push(`${series.groups_merged} smaller groups are summed in (other).`);
  $("usage-note").textContent = notes.join(" ");
  $("top-title").textContent = topAns.group_by + "s";
  hBars($("top-chart"), topAns.rows.map((r) => ({ label: r.group, value: metric === "tokens" ? r.input_tokens + r.output_tokens : r[metric] ?? r.cost_usd })), format);
  rows($("top-table").tBodies[0], topAns.rows, (r) => [r.group, fmt.int(r.requests), fmt.int(r.errors), fmt.pct(r.error_rate),
    fmt.int(r.input_tokens), fmt.int(r.output_tokens), fmt.usd(r.cost_usd), fmt.int(r.latency_p50_ms), fmt.int(r.latency_p95_ms)]);
  const c = topAns.status_classes;
  $("top-classes").textContent = `${fmt.int(topAns.requests)} requests, error rate ${fmt.pct(topAns.error_rate)} ` +
    `(2xx ${c["2xx"]}, 4xx ${c["4xx"]}, 5xx ${c["5xx"]}, aborted ${c.aborted}).`;
}

function svgSwatch(color) {
  const s = svg("svg", { width: 12, height: 12, class: "swatch" });
  s.append(svg("rect", { width: 12, height: 12, fill: color }));
  return s;
}

function schema(name) {
  const s = state.spec && state.spec.components.schemas[name];
  return (s && s.properties) || {};
}

async function showKeys() {
  const tenant = $("keys-tenant").value;
  const data = await api("GET", "/keys" + query({ tenant }));
  const list = data.keys.filter((k) => !$("keys-active").checked || k.status === "active").reverse();
  rows($("keys-table").tBodies[0], list, (k) => [
    el("code", { text: k.id }), k.tenant, [k.team, k.user].filter(Boolean).join(" / ") || "—", k.models.join(", "),
    el("span", { class: "status " + k.status, text: k.status }), fmt.time(k.created_at), fmt.time(k.expires_at),
    k.status === "revoked" ? "" : keyActions(k),
  ]);
}

// A destructive button asks once more (a second click within 5 s) instead of a modal dialog.
function confirmButton(label, action) {
  const b = el("button", { type: "button", class: "danger", text: label });
  b.addEventListener("click", async () => {
    if (!b.classList.contains("armed")) {
      b.classList.add("armed");
      b.textContent = "Confirm " + label.toLowerCase();
      setTimeout(() => { b.classList.remove("armed"); b.textContent = label; }, 5000);
      return;
    }
    b.disabled = true;
    try { await action(); } catch (e) { flash(e.message, "error"); } finally { b.disabled = false; }
  });
  return b;
}

function keyActions(k) {
  const revoke = confirmButton("Revoke", async () => {
    await api("POST", `/keys/${encodeURIComponent(k.id)}/revoke`);
    flash(`Key ${k.id} revoked: refused on every replica within a second.`, "info");
    await showKeys();
  });
  revoke.dataset.key = k.id;
  revoke.classList.add("revoke");
  const rotate = confirmButton("Rotate", async () => {
    const ans = await api("POST", `/keys/${encodeURIComponent(k.id)}/rotate`, {});
    showSecret(ans.key, `Replaces ${k.id}, which stays valid until ${fmt.time(ans.previous.expires_at)} UTC.`);
    await showKeys();
  });
  rotate.dataset.key = k.id;
  rotate.classList.add("rotate");
  return el("span", { class: "actions" }, revoke, rotate);
}

function showSecret(secret, note) {
  $("new-secret").textContent = secret;
  $("secret-note").textContent = note || "";
  $("secret-box").hidden = false;
}

async function createKey(ev) {
  ev.preventDefault();
  const body = { tenant: $("key-tenant").value.trim() };
  const models = $("key-models").value.split(",").map((m) => m.trim()).filter(Boolean);
  if (models.length) body.models = models;
  const days = parseFloat($("key-days").value);
  if (days > 0) body.expires_at = Date.now() / 1000 + days * 86400;
  for (const input of $("key-extra").querySelectorAll("input")) if (input.value.trim()) body[input.name] = input.value.trim();
  const ans = await api("POST", "/keys", body);
  showSecret(ans.key, `Key ${ans.record.id} for tenant ${ans.record.tenant}.`);
  await loadTenants();
  await showKeys();
}

// Limits: every level the server documents (a PUT .../limits path in its OpenAPI document), so team
// and user limits appear here as soon as the server has them.
function limitLevels() {
  const levels = [];
  for (const [path, ops] of Object.entries(state.spec.paths)) {
    if (!ops.put || !path.endsWith("/limits")) continue;
    const rel = path.slice(API.length), parts = rel.split("/").filter(Boolean);
    const ref = (((ops.put.requestBody || {}).content || {})["application/json"] || {}).schema || {};
    const fields = ref.$ref ? schema(ref.$ref.split("/").pop()) : ref.properties || {};
    const list = "/" + parts.slice(0, -2).join("/");
    if (!(API + list in state.spec.paths)) continue;
    levels.push({ name: parts[parts.length - 3], path: rel, list, fields, depth: parts.length });
  }
  return levels.sort((a, b) => a.depth - b.depth);
}

async function showLimits() {
  const box = $("limits"), tenant = $("limits-tenant").value;
  box.replaceChildren();
  for (const level of limitLevels()) {
    const section = el("div", { class: "level" }, el("h3", { text: level.name }));
    box.append(section);
    const parents = level.list.includes("{") ? (tenant ? [tenant] : []) : [null];
    if (!parents.length) { section.append(el("p", { class: "note", text: "Choose a tenant to see its " + level.name + "." })); continue; }
    for (const parent of parents) {
      let ans;
      try { ans = await api("GET", level.list.replace(/\{[^}]+\}/, encodeURIComponent(parent || ""))); }
      catch (e) { section.append(el("p", { class: "note", text: `not available (${e.message})` })); continue; }
      const items = listOf(ans);
      for (const item of items) {
        if (!item.name || (level.depth === 3 && tenant && item.name !== tenant)) continue;
        section.append(limitForm(level, parent, item));
      }
      if (!items.length) section.append(el("p", { class: "note", text: "none yet" }));
    }
  }
}

// The items of a listing, whichever shape it has: {"teams": [{name, limits}...]} or {"teams": {name: {limits}}}.
function listOf(ans) {
  const values = Object.values(ans || {});
  const list = values.find(Array.isArray);
  if (list) return list;
  const map = values.find((v) => v && typeof v === "object");
  return map ? Object.entries(map).map(([name, v]) => ({ name, ...v })) : [];
}

function limitForm(level, parent, item) {
  const form = el("form", { class: "limits-form controls", "data-level": level.name, "data-name": item.name });
  form.append(el("strong", { text: item.name }));
  for (const [field, spec] of Object.entries(level.fields)) {
    const integer = [].concat(spec.type).includes("integer");
    const value = item.limits && item.limits[field] !== null && item.limits[field] !== undefined ? item.limits[field] : "";
    form.append(el("label", {}, document.createTextNode(field + " "),
      el("input", { name: field, type: "number", min: "0", step: integer ? "1" : "any", value: String(value), placeholder: "unlimited" })));
  }
  form.append(el("button", { type: "submit", text: "Save" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {};
    for (const input of form.querySelectorAll("input")) {
      body[input.name] = input.value === "" ? null : Number(input.value);
    }
    const path = level.path.replace(/\{[^}]+\}/, encodeURIComponent(parent || item.name)).replace(/\{[^}]+\}/, encodeURIComponent(item.name));
    try { await api("PUT", path, body); flash(`Saved the limits of ${level.name} ${item.name}.`, "info"); }
    catch (e) { flash(e.message, "error"); }
  });
  return form;
}

async function showAudit() {
  const status = $("audit-status"), tbody = $("audit-table").tBodies[0];
  let ans;
  try {
    // The server's own OpenAPI document says whether it has an audit log (older ones do not).
    if (!(API + "/audit" in state.spec.paths)) throw new ApiError(404, "not_found", "no audit endpoint");
    ans = await api("GET", "/audit" + query({ limit: 200 }));
  } catch (e) {
    tbody.replaceChildren();
    $("audit-table").hidden = true;
    status.textContent = e.status === 404 || e.status === 405 ? "The audit log is not available on this server."
      : e.status === 403 ? "Your role may not read the audit log." : `The audit log could not be read: ${e.message}`;
    return;
  }
  const entries = Object.values(ans).find(Array.isArray) || [];
  $("audit-table").hidden = false;
  status.textContent = `${entries.length} newest changes.`;
  rows(tbody, entries, (a) => [fmt.time(a.ts), a.actor || "", a.role || "", a.source || "", a.action || "",
    a.target || "", el("code", { text: JSON.stringify({ before: a.before, after: a.after }) })]);
}

async function pollLive() {
  const live = state.live;
  clearTimeout(live.timer);
  const gen = ++live.gen; // one loop at a time: a poll started later takes over
  if (state.view !== "live") return;
  if (!live.paused) {
    try {
      const ans = await api("GET", "/requests/recent" + query({ after: live.cursor, limit: 100, tenant: $("live-tenant").value }));
      if (gen !== live.gen) return;
      live.cursor = ans.cursor || live.cursor;
      const tbody = $("live-table").tBodies[0];
      for (const r of ans.requests) {
        const tr = el("tr", { class: r.status >= 400 || r.aborted ? "bad" : "" });
        for (const c of [fmt.time(r.ts), r.tenant, r.team || "—", r.user || "—", r.model, r.provider, r.aborted ? "aborted" : r.status,
          `${fmt.int(r.input_tokens)} / ${fmt.int(r.output_tokens)}`, fmt.int(r.latency_ms), fmt.usd(r.cost_usd)]) tr.append(el("td", { text: String(c) }));
        tbody.prepend(tr);
      }
      while (tbody.rows.length > 200) tbody.deleteRow(-1);
      $("live-status").textContent = (ans.skipped ? "(some requests skipped: too many to show) " : "") + "updated " + fmt.time(Date.now() / 1000) + " UTC";
    } catch (e) {
      if (gen !== live.gen) return;
      $("live-status").textContent = e.message;
    }
  }
  live.timer = setTimeout(pollLive, 2000);
}

// ---- shell: sign-in, navigation ----

async function loadTenants() {
  let names = [];
  try {
    names = (await api("GET", "/tenants")).tenants.map((t) => t.name);
  } catch (e) {
    if (e.status !== 403) throw e; // a role that may not list tenants still sees its usage
  }
  state.tenants = names;
  state.tenantsLoaded = true;
  $("tenant-names").replaceChildren(...state.tenants.map((n) => el("option", { value: n })));
  for (const select of document.querySelectorAll(".tenant-select")) {
    const keep = select.value;
    select.replaceChildren(el("option", { value: "", text: "all" }), ...state.tenants.map((n) => el("option", { value: n, text: n })));
    select.value = state.tenants.includes(keep) ? keep : "";
  }
}

// Who is signed in, for the header only (the server alone decides what the token may do): an OIDC
// token's email or subject, read from its payload; "admin token" otherwise (never any of its characters).
function whoLabel(token) {
  const parts = (token || "").split(".");
  if (parts.length === 3) {
    try {
      const claims = JSON.parse(atob(parts[1].replace(/-/g, "+").replace(/_/g, "/")));
      return String(claims.email || claims.preferred_username || claims.sub || "OIDC user");
    } catch (_) { /* not a JWT after all */ }
  }
  return "admin token";
}

const VIEWS = { usage: showUsage, keys: showKeys, limits: showLimits, audit: showAudit, live: pollLive };

async function route() {
  const signedIn = Boolean(sessionStorage.getItem(TOKEN));
  let view = location.hash.slice(1) || "usage";
  if (!signedIn) view = "signin";
  else if (!(view in VIEWS)) view = "usage";
  state.view = view;
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== "view-" + view;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("current", a.dataset.view === view);
  $("nav").hidden = $("signout").hidden = !signedIn;
  $("who").textContent = signedIn ? "signed in with " + whoLabel(sessionStorage.getItem(TOKEN)) : "";
  if (!signedIn) return;
  document.body.dataset.view = view;
  try {
    if (!state.spec) {
      state.spec = await (await fetch(API + "/openapi.json", { cache: "no-store" })).json();
      keyExtraFields();
    }
    if (!state.tenantsLoaded) await loadTenants();
    document.body.dataset.loading = view;
    await VIEWS[view]();
    document.body.dataset.ready = view;
  } catch (e) {
    if (e.status !== 401) flash(e.message, "error");
  } finally {
    delete document.body.dataset.loading;
  }
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN);
  state.tenants = [];
  state.tenantsLoaded = false;
  $("secret-box").hidden = true;
  $("new-secret").textContent = "";
  $("signin-error").textContent = message || "";
  location.hash = "";
  route();
}

async function signIn(ev) {
  ev.preventDefault();
  const token = $("signin-token").value.trim();
  // The cheapest call every role may make checks the token (a 403 would still mean a valid token).
  const resp = await fetch(API + "/requests/recent?limit=1", { headers: { Authorization: "Bearer " + token }, cache: "no-store", credentials: "omit" });
  if (!resp.ok && resp.status !== 403) {
    $("signin-error").textContent = resp.status === 401 ? "That token was refused." : `The server answered ${resp.status}.`;
    return;
  }
  sessionStorage.setItem(TOKEN, token);
  $("signin-token").value = "";
  $("signin-error").textContent = "";
  location.hash = "#usage";
  route();
}

function keyExtraFields() {
  // Fields of a key beyond tenant/models/expiry that this server accepts (team, user...).
  const extra = Object.keys(schema("KeyCreate")).filter((f) => !["tenant", "models", "expires_at"].includes(f));
  $("key-extra").replaceChildren(...extra.map((f) => el("label", {}, document.createTextNode(f + " "), el("input", { name: f, id: "key-" + f }))));
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", () => signOut(""));
  $("usage-form").addEventListener("submit", (ev) => { ev.preventDefault(); route(); });
  for (const id of ["usage-range", "usage-bucket", "usage-group", "usage-metric", "usage-tenant"]) $(id).addEventListener("change", route);
  $("key-form").addEventListener("submit", (ev) => createKey(ev).catch((e) => flash(e.message, "error")));
  $("keys-tenant").addEventListener("change", route);
  $("keys-active").addEventListener("change", route);
  $("limits-tenant").addEventListener("change", route);
  $("live-tenant").addEventListener("change", () => { state.live.cursor = null; $("live-table").tBodies[0].replaceChildren(); route(); });
  $("live-pause").addEventListener("click", () => {
    state.live.paused = !state.live.paused;
    $("live-pause").textContent = state.live.paused ? "Resume" : "Pause";
  });
  $("secret-copy").addEventListener("click", async () => {
    try { await navigator.clipboard.writeText($("new-secret").textContent); $("secret-copy").textContent = "Copied"; }
    catch (_) { getSelection().selectAllChildren($("new-secret")); }
  });
  $("secret-done").addEventListener("click", () => { $("secret-box").hidden = true; $("new-secret").textContent = ""; });
  window.addEventListener("hashchange", () => { flash(""); route(); });
  route();
});
