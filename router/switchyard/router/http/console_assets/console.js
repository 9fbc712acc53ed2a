// Switchyard's console: reads /console/api/* with the key the user gives, and draws.
// No framework and nothing fetched from elsewhere: the page must work with no internet.
"use strict";

const KEY = "switchyard.console.key";
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
  "#e377c2", "#17becf", "#7f7f7f"];
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

// -- formatting ----------------------------------------------------------------------

/** A decimal string of dollars to the cent, rounded half up, with thousands separated:
 * exact, as floating point would not be. */
function dollars(text) {
  let s = String(text);
  const negative = s.startsWith("-");
  if (negative) s = s.slice(1);
  const [whole, fraction = ""] = s.split(".");
  const f = (fraction + "000").slice(0, 3);
  let cents = BigInt(whole || "0") * 100n + BigInt(f.slice(0, 2));
  if (Number(f[2]) >= 5) cents += 1n;
  const units = (cents / 100n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const rest = (cents % 100n).toString().padStart(2, "0");
  return (negative ? "-$" : "$") + units + "." + rest;
}

const count = (n) => Number(n).toLocaleString("en-US");
const percent = (x) => (x * 100).toFixed(x > 0 && x < 0.1 ? 2 : 1) + "%";
const ms = (x) => (x === null || x === undefined ? "–" : x < 1000 ? x.toFixed(0) + " ms" : (x / 1000).toFixed(2) + " s");

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "style") for (const [p, val] of Object.entries(v)) node.style.setProperty(p, val);
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// -- the key and the API -------------------------------------------------------------

class Refused extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path) {
  const key = sessionStorage.getItem(KEY);
  if (!key) throw new Refused(401, "");
  const r = await fetch(path, { headers: { Authorization: "Bearer " + key }, cache: "no-store" });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const message = (body.error && body.error.message) || r.statusText;
    throw new Refused(r.status, message);
  }
  return body;
}

function showLogin(message) {
  sessionStorage.removeItem(KEY);
  for (const id of ["nav", "who", "logout", "error"]) $(id).hidden = true;
  for (const v of document.querySelectorAll(".view")) v.hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("key").focus();
}

function failed(err) {
  if (err instanceof Refused && err.status === 401) return showLogin(err.message);
  if (err instanceof Refused && err.status === 403) {
    return showLogin("This key cannot read usage: it lacks the scope 'usage:read'.");
  }
  $("error").hidden = false;
  $("error").textContent = "The router answered: " + err.message;
}

// -- plots ---------------------------------------------------------------------------

function niceMax(x) {
  if (!(x > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(x)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

/** Stacked columns: one per period, one colour per group; ``whole``: the values are
 * counts, so the axis marks whole numbers. */
function stacked(target, periods, groups, values, format, whole = false) {
  const W = 960, H = 260, L = 64, R = 8, T = 10, B = 28;
  const totals = periods.map((_, p) => groups.reduce((s, _, g) => s + values[g][p], 0));
  let top = niceMax(Math.max(0, ...totals));
  if (whole) top = Math.max(4, Math.ceil(top / 4) * 4);
  const plot = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
  const y = (v) => T + (H - T - B) * (1 - v / top);
  for (let i = 0; i <= 4; i++) {
    const v = (top * i) / 4;
    plot.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e6eaef" }));
    plot.append(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, format(v)));
  }
  const step = (W - L - R) / Math.max(periods.length, 1);
  const bar = Math.max(1, step * 0.72);
  const every = Math.ceil(periods.length / 12);
  periods.forEach((period, p) => {
    const x = L + p * step + (step - bar) / 2;
    let base = 0;
    groups.forEach((group, g) => {
      const v = values[g][p];
      if (v <= 0) return;
      const rect = svg("rect", {
        x, width: bar, y: y(base + v), height: Math.max(0.5, y(base) - y(base + v)),
        fill: COLORS[g % COLORS.length],
      });
      rect.append(svg("title", {}, `${period} · ${group}: ${format(v)}`));
      plot.append(rect);
      base += v;
    });
    if (p % every === 0) {
      plot.append(svg("text", { x: L + p * step + step / 2, y: H - 8, "text-anchor": "middle" },
        period.length === 10 ? period.slice(5) : period));
    }
  });
  target.replaceChildren(plot);
}

/** Horizontal bars, one row per item: name, bar, figure; a bar ``full`` long fills its
 * track (by default the longest does). */
function bars(target, rows, empty, full) {
  if (!rows.length) return target.replaceChildren(el("div", { class: "empty" }, empty));
  const most = full || Math.max(...rows.map((r) => r.size), 0) || 1;
  target.replaceChildren(...rows.map((r) => {
    const row = el("div", { class: "row " + (r.class || ""), "data-key": r.key },
      el("span", { class: "name", title: r.key }, r.name || r.key),
      el("div", { class: "track" }, el("div", {
        class: "fill", style: { width: (100 * r.size / most).toFixed(2) + "%", "--swatch": r.color || "" },
      })),
      el("span", { class: "value" }, el("span", { class: "figure" }, r.figure), " ",
        el("span", { class: "sub" }, r.sub || "")));
    if (r.title) row.title = r.title;
    return row;
  }));
}

// -- the views -----------------------------------------------------------------------

const LABELS = { model: "model", provider: "provider", task: "task type", apiKey: "API key" };

function isoDay(d) { return d.toISOString().slice(0, 10); }

function rangeQuery() {
  const params = new URLSearchParams({ by: $("by").value });
  if ($("period").value) params.set("period", $("period").value);
  if ($("range").value === "custom") {
    if ($("start").value) params.set("startDate", $("start").value);
    if ($("end").value) params.set("endDate", $("end").value);
  } else {
    const days = Number($("range").value);
    const start = new Date(Date.now() - (days - 1) * 86400e3);
    params.set("startDate", isoDay(start));
  }
  return params;
}

async function spend() {
  const data = await api("/console/api/usage?" + rangeQuery());
  const t = data.totals;
  $("total-cost").textContent = dollars(t.cost);
  $("total-cost").title = "$" + t.cost;
  $("total-requests").textContent = count(t.requests);
  $("total-errors").textContent = t.requests ? `${count(t.errors)} (${percent(t.errors / t.requests)})` : "0";
  $("cache-hit-rate").textContent = t.requests ? percent(t.cacheHits / t.requests) : "–";
  $("saved-cost").textContent = dollars(t.savedCost);
  $("latency").textContent = `${ms(t.latencyMs.p50)} / ${ms(t.latencyMs.p95)}`;
  $("range-shown").textContent = `${data.startDate.slice(0, 10)} to ${data.endDate.slice(0, 16).replace("T", " ")} UTC, per ${data.period}`;

  const s = data.series;
  const cost = s.cost.map((row) => row.map(Number));
  stacked($("cost-chart"), s.periods, s.groups, cost, (v) => "$" + (v >= 100 ? v.toFixed(0) : v.toFixed(2)));
  stacked($("requests-chart"), s.periods, s.groups, s.requests, (v) => count(v), true);
  $("legend").replaceChildren(...s.groups.map((g, i) =>
    el("span", { style: { "--swatch": COLORS[i % COLORS.length] } }, g)));

  $("groups-caption").textContent = "Spend by " + LABELS[data.by];
  const color = Object.fromEntries(s.groups.map((g, i) => [g, COLORS[i % COLORS.length]]));
  const groups = [...data.groups].sort((a, b) => Number(b.cost) - Number(a.cost));
  bars($("groups"), groups.map((g) => ({
    key: g.key, size: Number(g.cost), figure: dollars(g.cost), color: color[g.key] || COLORS[8],
    sub: `${count(g.requests)} requests · ${g.requests ? percent(g.cacheHits / g.requests) : "–"} cached`,
    title: `$${g.cost} · ${count(g.totalTokens)} tokens · p50 ${ms(g.latencyMs.p50)}`,
  })), "No requests in this range.");
  return data;
}

/** A provider's replicas: each one's state, load and picks (docs/balancing.md). */
function endpointTable(endpoints) {
  const load = (e) => e.running === null ? "–" : `${count(e.running)} + ${count(e.waiting)} queued`;
  return el("table", { class: "endpoints" },
    el("thead", {}, el("tr", {}, ...["Endpoint", "State", "In flight", "Server", "Picks", "Affinity"]
      .map((h) => el("th", {}, h)))),
    el("tbody", {}, ...endpoints.map((e) => el("tr", { "data-endpoint": e.address, class: e.state },
      el("td", {}, e.address),
      el("td", { title: e.lastFailure || "" }, e.state === "out" ? `out (${e.lastFailure || "failing"})` : "in"),
      el("td", {}, count(e.inFlight)),
      el("td", { title: e.scrapeError || "" }, load(e)),
      el("td", {}, count(e.picks)),
      el("td", {}, e.picks ? percent(e.affinityHits / e.picks) : "–")))));
}

async function health() {
  const data = await api("/console/api/health");
  const cards = data.providers.map((p) => {
    const facts = el("dl", {},
      el("dt", {}, "Type"), el("dd", {}, p.providerType),
      el("dt", {}, "Breaker"), el("dd", {}, p.circuitBreaker.replace("_", " ") +
        (p.consecutiveFailures ? ` (${p.consecutiveFailures} failures in a row)` : "")),
      el("dt", {}, "Models"), el("dd", {}, p.models.join(", ") || "–"));
    const probe = p.lastHealthCheck;
    if (probe) facts.append(el("dt", {}, "Last probe"), el("dd", {}, `${probe.status}, ${ms(probe.latencyMs)}`));
    const why = p.apiKeyProblem || p.refused || (p.circuitBreaker !== "closed" ? p.lastFailure : null);
    if (why) facts.append(el("dt", {}, "Why"), el("dd", { class: "why" }, why));
    for (const m of p.modelsOut) {
      facts.append(el("dt", {}, "Model out"), el("dd", { class: "why" }, `${m}: ${p.modelsOutReasons[m] || "failing"}`));
    }
    if (!p.isEnabled) facts.append(el("dt", {}, "Enabled"), el("dd", {}, "no"));
    const card = el("div", { class: "card " + p.healthStatus, "data-provider": p.name },
      el("h3", {}, el("span", {}, p.name), el("span", { class: "chip status" }, p.healthStatus)), facts);
    if (p.endpoints && p.endpoints.length) card.append(endpointTable(p.endpoints));
    return card;
  });
  $("providers").replaceChildren(...(cards.length ? cards : [el("div", { class: "empty" }, "No providers.")]));
  bars($("budgets"), data.budgets.map((b) => ({
    key: `${b.apiKey || "organization"}/${b.period}`,
    name: `${b.apiKey ? "key " + b.apiKey : "organization"} · ${b.period === "day" ? "today" : "this month"}`,
    size: Math.min(b.usedRatio, 1), figure: `${dollars(b.spent)} of ${dollars(b.limit)}`,
    sub: percent(b.usedRatio), class: b.usedRatio >= 1 ? "over" : b.usedRatio >= 0.8 ? "near" : "",
  })), "No budgets are set for this organization.", 1);
  return data;
}

function traceCell(id, tracing) {
  return el("td", { class: "trace" }, id || (tracing ? "not sampled" : "tracing off"));
}

async function requests() {
  const data = await api("/console/api/requests");
  $("tracing-note").textContent = data.tracing
    ? "Trace ids name each request's trace in your trace store, when it was sampled."
    : "Tracing is off on this router (--otlp-endpoint): requests have no trace ids.";
  bars($("slowest"), data.slowest.map((r) => ({
    key: r.id, name: `${r.requestedAt.slice(11, 19)} ${r.model || "–"}`, size: r.latencyMs,
    figure: ms(r.latencyMs),
    sub: `${r.provider || "–"} · ${r.apiKey}${r.traceId ? " · trace " + r.traceId : ""}`,
    title: `request ${r.id}${r.ttftMs !== null ? ", first token " + ms(r.ttftMs) : ""}`,
  })), "No requests in the last hour.");
  // Failures per minute, by error, as columns.
  const minutes = [];
  const start = Date.parse(data.since);
  for (let m = 0; m < 60; m++) minutes.push(new Date(start + (m + 1) * 60e3).toISOString().slice(11, 16));
  const kinds = [...new Set(data.failed.map((r) => r.errorClass || "error"))];
  const counts = kinds.map(() => minutes.map(() => 0));
  for (const r of data.failed) {
    const m = Math.min(59, Math.max(0, Math.floor((Date.parse(r.requestedAt) - start) / 60e3)));
    counts[kinds.indexOf(r.errorClass || "error")][m] += 1;
  }
  stacked($("failed-chart"), minutes, kinds, counts, (v) => count(v), true);
  const body = $("failed").tBodies[0];
  body.replaceChildren(...data.failed.map((r) => el("tr", { "data-id": r.id },
    el("td", {}, r.requestedAt.slice(11, 19)), el("td", {}, r.apiKey), el("td", {}, r.model || "–"),
    el("td", {}, r.provider || "–"), el("td", {}, String(r.httpStatus)), el("td", {}, r.errorClass || "–"),
    traceCell(r.traceId, data.tracing))));
  if (!data.failed.length) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: "7", class: "empty" }, "No failed requests in the last hour.")));
  }
  return data;
}

const VIEWS = { spend, health, requests };

async function show() {
  if (!sessionStorage.getItem(KEY)) return showLogin();
  const name = VIEWS[location.hash.slice(1)] ? location.hash.slice(1) : "spend";
  $("login").hidden = true;
  $("error").hidden = true;
  for (const id of ["nav", "who", "logout"]) $(id).hidden = false;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === name);
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "view-" + name;
  document.body.dataset.loading = name;
  try {
    const data = await VIEWS[name]();
    $("who").textContent = "Organization " + data.organization;
  } catch (err) {
    failed(err);
  } finally {
    document.body.dataset.loaded = name;
    delete document.body.dataset.loading;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY, $("key").value.trim());
    $("key").value = "";
    show();
  });
  $("logout").addEventListener("click", () => showLogin());
  $("range").addEventListener("change", () => {
    $("custom-range").hidden = $("range").value !== "custom";
    if ($("range").value === "custom" && !$("end").value) {
      $("end").value = isoDay(new Date());
      $("start").value = isoDay(new Date(Date.now() - 29 * 86400e3));
    }
    show();
  });
  for (const id of ["by", "period", "start", "end"]) $(id).addEventListener("change", show);
  window.addEventListener("hashchange", show);
  show();
});
