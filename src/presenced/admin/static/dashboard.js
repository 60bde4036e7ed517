// presenced dashboard: one page, no build step. Data comes from the admin API with the bearer
// token (kept in sessionStorage, never in a URL) and live over SSE with a one-time ticket.
// Every value from the server is written with textContent: names are peer-controlled.
"use strict";

const COUNTERS = ["requests", "responses", "notifies_sent", "notify_failed", "retransmitted",
                  "coalesced", "storage_errors"];
const GAUGES = ["subscriptions", "bindings", "publications", "resources", "transactions"];
const HISTORY = 60;
const series = {};
let token = sessionStorage.getItem("presenced-token") || "";
let source = null;
let retry = null;
let searched = "";
let lastSearch = 0;
let last = null;

function $(id) { return document.getElementById(id); }

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function buildCards() {
  const box = $("counters");
  for (const name of COUNTERS.concat(GAUGES)) {
    const card = el("div", null, "card");
    card.id = "card-" + name;
    card.appendChild(el("div", name.replace(/_/g, " "), "name"));
    const v = el("div", "-", "value"); v.id = "v-" + name; card.appendChild(v);
    const r = el("div", COUNTERS.includes(name) ? "- /s" : "", "rate"); r.id = "r-" + name;
    card.appendChild(r);
    const c = el("canvas"); c.id = "g-" + name; c.width = 180; c.height = 36; card.appendChild(c);
    box.appendChild(card);
    series[name] = [];
  }
}

function spark(name) {
  const c = $("g-" + name), h = series[name], ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  if (h.length < 2) return;
  const max = Math.max(1, ...h);
  ctx.strokeStyle = "#1565c0"; ctx.lineWidth = 1.5; ctx.beginPath();
  h.forEach((v, i) => {
    const x = (i / (HISTORY - 1)) * c.width, y = c.height - 2 - (v / max) * (c.height - 4);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
}

function push(name, value) {
  const h = series[name]; h.push(value); if (h.length > HISTORY) h.shift(); spark(name);
}

function rows(tbody, items, cells, bad) {
  tbody.replaceChildren();
  for (const item of items) {
    const tr = el("tr");
    cells(item).forEach((v, i) => tr.appendChild(el("td", v, bad && bad(item, i) ? "bad" : "")));
    tbody.appendChild(tr);
  }
}

function onSnapshot(snap) {
  for (const name of COUNTERS) {
    const v = snap.counters[name];
    $("v-" + name).textContent = v;
    if (last) {
      const dt = Math.max(0.001, snap.time - last.time);
      const rate = Math.max(0, (v - last.counters[name]) / dt);
      $("r-" + name).textContent = rate.toFixed(1) + " /s";
      push(name, rate);
    }
  }
  for (const name of GAUGES) { $("v-" + name).textContent = snap.gauges[name]; push(name, snap.gauges[name]); }
  last = snap;
  rows($("top").tBodies[0], snap.top, (t) => [t.aor, t.watchers]);
  rows($("failures").tBodies[0], snap.failures,
       (f) => [new Date(f.at * 1000).toLocaleTimeString(), f.status, f.event, f.watcher, f.presentity],
       (f, i) => i === 1);
  if (searched && Date.now() - lastSearch > 2000) lookup();
}

async function api(method, path) {
  const r = await fetch(path, { method, headers: { "Authorization": "Bearer " + token } });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(r.status + ": " + (body.error || r.statusText));
  return body;
}

async function connect() {
  clearTimeout(retry);
  if (source) { source.close(); source = null; }
  if (!token) { setFeed(false, "enter the admin token"); return; }
  try {
    const status = await api("GET", "/api/v1/status");
    $("server").textContent = "presenced " + status.version + " on " + status.node;
    const t = await api("POST", "/api/v1/events/ticket");
    source = new EventSource("/api/v1/events?ticket=" + encodeURIComponent(t.ticket));
    source.addEventListener("snapshot", (e) => { setFeed(true, "live"); onSnapshot(JSON.parse(e.data)); });
    source.onerror = () => { setFeed(false, "reconnecting"); source.close(); source = null;
                             retry = setTimeout(connect, 3000); };
  } catch (err) {
    setFeed(false, String(err.message || err));
    if (!/^40[13]/.test(String(err.message))) retry = setTimeout(connect, 3000);
  }
}

function setFeed(on, text) { const f = $("feed"); f.className = on ? "on" : "off"; f.textContent = text; }

async function lookup() {
  lastSearch = Date.now();
  const msg = $("search-msg");
  try {
    const data = await api("GET", "/api/v1/presentities/" + encodeURIComponent(searched) + "/watchers");
    rows($("watchers").tBodies[0], data.watchers,
         (s) => [s.watcher, s.event, s.state, s.expires_in + " s", s.flow, s.last_notify_status ?? "-"],
         (s, i) => i === 5 && s.last_notify_status >= 300);
    msg.textContent = data.watchers.length + " watcher(s) of " + data.aor;
  } catch (err) { msg.textContent = String(err.message || err); }
}

document.addEventListener("DOMContentLoaded", () => {
  buildCards();
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    token = decodeURIComponent(m[1]);
    sessionStorage.setItem("presenced-token", token);
    window.history.replaceState(null, "", location.pathname);  // the token leaves the address bar
  }
  $("token").value = token ? "********" : "";
  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    const v = $("token").value;
    if (v && v !== "********") { token = v; sessionStorage.setItem("presenced-token", v); }
    connect();
  });
  $("lookup").addEventListener("submit", (e) => {
    e.preventDefault(); searched = $("search").value.trim(); if (searched) lookup();
  });
  connect();
});
