// l4lb status page: polls GET /v1/state and GET /v1/monitor/recent every second, keeps a
// minute of rates per VIP and draws them on canvases, and lists the last drops.
// Read-only: it calls no endpoint that changes anything.
"use strict";

const HISTORY = 60; // samples (seconds) per chart
const series = new Map(); // vip key -> {pps: [], fps: []}
let last = null; // {t, vips: Map key -> {packets, new_flows}, backends: Map "vip|addr" -> packets}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function fmtRate(x) {
  if (x === null || x === undefined || !isFinite(x)) return "–";
  if (x >= 1e6) return (x / 1e6).toFixed(2) + " M";
  if (x >= 1e4) return (x / 1e3).toFixed(1) + " k";
  if (x >= 100) return x.toFixed(0);
  return x.toFixed(1);
}

function rate(now, before, dt) {
  if (before === undefined || dt <= 0 || now < before) return null; // first sample or counter reset
  return (now - before) / dt;
}

function push(arr, v) {
  arr.push(v);
  while (arr.length > HISTORY) arr.shift();
}

// drawChart draws a series (null: no sample) as a filled line scaled to its maximum.
function drawChart(canvas, values, color) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr)) { canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr); }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(1, ...values.filter((v) => v !== null));
  const step = w / (HISTORY - 1);
  const x0 = w - (values.length - 1) * step;
  const y = (v) => h - 4 - (v / max) * (h - 16);
  ctx.strokeStyle = "#d0d7de";
  ctx.beginPath(); ctx.moveTo(0, y(0) + .5); ctx.lineTo(w, y(0) + .5); ctx.stroke();
  ctx.fillStyle = "#656d76";
  ctx.font = "10px system-ui, sans-serif";
  ctx.fillText("max " + fmtRate(max) + "/s", 4, 10);
  ctx.strokeStyle = color;
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  let started = false;
  values.forEach((v, i) => {
    if (v === null) { started = false; return; }
    const px = x0 + i * step;
    if (!started) { ctx.moveTo(px, y(v)); started = true; } else ctx.lineTo(px, y(v));
  });
  ctx.stroke();
}

function backendState(b) {
  if (!b.healthy) return "down";
  if (b.drained) return "drained";
  return "up";
}

function renderNode(st, version) {
  const node = document.getElementById("node");
  const ifaces = Object.entries(st.interfaces || {}).map(([k, v]) => k + " (" + v + ")").join(", ") || "none";
  const facts = [
    ["mode", st.mode + (st.mode_reason ? " – " + st.mode_reason : "")],
    ["interfaces", ifaces],
    ["ready", st.ready ? "yes" : "no"],
    ["next hop", Object.keys(st.next_hops || {}).length
      ? Object.entries(st.next_hops).sort().map(([k, v]) => k + " " + v).join(", ")
      : st.next_hop],
    ["last apply", (st.last_apply && st.last_apply.at ? new Date(st.last_apply.at).toLocaleTimeString() : "never") +
      (st.last_apply && st.last_apply.error ? " FAILED: " + st.last_apply.error : "")],
  ];
  if (st.last_reload) facts.push(["last reload", new Date(st.last_reload.at).toLocaleTimeString() + (st.last_reload.ok ? " ok" : " rejected: " + st.last_reload.error)]);
  node.replaceChildren(...facts.map(([k, v]) => el("span", {}, el("span", { class: "muted" }, k + ": "), v)));
  if (version) document.getElementById("version").textContent = version;
}

function renderVIPs(st, dt) {
  const box = document.getElementById("vips");
  const vips = st.vips || [];
  const now = { vips: new Map(), backends: new Map() };
  const seen = new Set();
  const cards = vips.map((v) => {
    seen.add(v.key);
    let s = series.get(v.key);
    if (!s) { s = { pps: [], fps: [] }; series.set(v.key, s); }
    const before = last && last.vips.get(v.key);
    const pps = rate(v.packets, before && before.packets, dt);
    const fps = rate(v.new_flows, before && before.new_flows, dt);
    now.vips.set(v.key, { packets: v.packets, new_flows: v.new_flows });
    if (last) { push(s.pps, pps); push(s.fps, fps); }

    const ppsCanvas = el("canvas", { "data-chart": "packets" });
    const fpsCanvas = el("canvas", { "data-chart": "new_flows" });
    const rows = (v.backends || []).map((b) => {
      const id = v.key + "|" + b.address;
      // Per VIP where the data plane counts so; else the address's node-wide figure, marked.
      const bp = b.per_vip ? b.packets : b.node_packets;
      const bpps = rate(bp, last && last.backends.get(id), dt);
      now.backends.set(id, bp);
      const state = backendState(b);
      const label = { up: "healthy", down: "down", drained: "drained" }[state];
      return el("tr", { class: state, "data-backend": b.address, "data-state": state },
        el("td", {}, el("span", { class: "dot " + state }), " ", b.address),
        el("td", {}, label),
        el("td", { class: "num" }, b.weight + (b.weight !== b.config_weight ? " (config " + b.config_weight + ")" : "")),
        el("td", { class: "num" }, fmtRate(bpps)),
        el("td", { class: "num", title: b.per_vip ? "" : "all VIPs of this address: this data plane counts per address" }, b.per_vip ? b.packets : b.node_packets + "*"));
    });
    const card = el("div", { class: "vip", "data-vip": v.name, "data-key": v.key },
      el("h3", {}, v.name + " ", el("span", { class: "muted" }, v.key), " ",
        el("span", { class: "badge " + (v.up ? "up" : "down") }, v.up ? "up" : "no backend")),
      el("div", { class: "charts" },
        el("div", { class: "chart" }, el("div", { class: "label" }, "packets/s ", el("span", { class: "value" }, fmtRate(pps))), ppsCanvas),
        el("div", { class: "chart" }, el("div", { class: "label" }, "new flows/s ", el("span", { class: "value" }, fmtRate(fps))), fpsCanvas)),
      el("table", {},
        el("thead", {}, el("tr", {}, el("th", {}, "backend"), el("th", {}, "health"), el("th", { class: "num" }, "weight"),
          el("th", { class: "num" }, "packets/s"), el("th", { class: "num" }, "packets"))),
        el("tbody", {}, ...rows)));
    return { card, draw: () => { drawChart(ppsCanvas, s.pps, "#0969da"); drawChart(fpsCanvas, s.fps, "#8250df"); } };
  });
  for (const k of series.keys()) if (!seen.has(k)) series.delete(k);
  box.replaceChildren(...(cards.length ? cards.map((c) => c.card) : [el("p", { class: "muted" }, "No VIPs configured.")]));
  cards.forEach((c) => c.draw());
  return now;
}

function renderBGP(st) {
  const box = document.getElementById("bgp");
  const b = st.bgp;
  if (!b) { box.replaceChildren(el("p", { class: "muted" }, "BGP is off on this node.")); return; }
  const parts = [];
  if (b.error) parts.push(el("p", { class: "banner" }, b.error));
  parts.push(el("table", {},
    el("thead", {}, el("tr", {}, el("th", {}, "peer"), el("th", {}, "ASN"), el("th", {}, "state"), el("th", {}, "since"), el("th", { class: "num" }, "advertised"))),
    el("tbody", {}, ...(b.peers || []).map((p) => {
      const state = p.established ? "up" : "down";
      return el("tr", { class: state, "data-peer": p.address, "data-state": state },
        el("td", {}, el("span", { class: "dot " + state }), " ", p.address), el("td", {}, p.asn), el("td", {}, p.state),
        el("td", {}, p.since ? new Date(p.since).toLocaleString() : ""), el("td", { class: "num" }, p.advertised));
    }))));
  parts.push(el("p", {}, el("span", { class: "muted" }, "announced: "), (b.announced || []).join(", ") || "nothing"));
  box.replaceChildren(...parts);
}

function renderCounters(st) {
  const c = st.counters || {};
  const names = Object.keys(c).filter((k) => c[k] > 0).sort();
  document.getElementById("counters").replaceChildren(names.length
    ? el("table", {}, el("tbody", {}, ...names.map((k) => el("tr", {}, el("td", {}, k), el("td", { class: "num" }, c[k])))))
    : el("p", { class: "muted" }, "All zero."));
}

// fmtTime is an event's time of day to the millisecond, in the browser's zone.
function fmtTime(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return "–";
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

// renderDrops lists GET /v1/monitor/recent: the last drops (oldest first there, newest
// first here) and what never reached a watcher.
function renderDrops(rv) {
  const box = document.getElementById("drops");
  if (!rv.available) { box.replaceChildren(el("p", { class: "muted" }, rv.note || "This node has no monitor.")); return; }
  const l = rv.lost || {};
  const parts = [el("p", { class: "muted", "data-lost": "" },
    "events lost: " + (l.rate_limited || 0) + " over the rate limit, " + (l.ring_full || 0) + " to a full ring buffer, " +
    (l.slow_client || 0) + " to slow watchers; " + (rv.watchers || 0) + " watching now")];
  const drops = (rv.drops || []).slice().reverse();
  if (!drops.length) {
    parts.push(el("p", { class: "muted" }, "No drops since the node started."));
  } else {
    parts.push(el("table", { class: "drops" },
      el("thead", {}, el("tr", {}, el("th", {}, "time"), el("th", {}, "reason"), el("th", {}, "proto"), el("th", {}, "from"),
        el("th", {}, "to"), el("th", {}, "VIP"), el("th", { class: "num" }, "length"))),
      el("tbody", {}, ...drops.map((e) => el("tr", { "data-reason": e.reason || "" },
        el("td", {}, fmtTime(e.time)), el("td", {}, el("code", {}, e.reason || "–")), el("td", {}, e.proto || "–"),
        el("td", {}, e.src || "–"), el("td", {}, e.dst || "–"), el("td", {}, e.vip || "–"), el("td", { class: "num" }, e.len))))));
  }
  box.replaceChildren(...parts);
}

// tickDrops reads the recent drops; a failure shows in their section only.
async function tickDrops() {
  try {
    const r = await fetch("v1/monitor/recent", { cache: "no-store" });
    if (!r.ok) throw new Error("GET /v1/monitor/recent: HTTP " + r.status);
    renderDrops(await r.json());
  } catch (e) {
    document.getElementById("drops").replaceChildren(el("p", { class: "banner" }, "Cannot read the recent drops (" + e.message + ")."));
  }
}

let version = "";

async function tick() {
  const banner = document.getElementById("error");
  try {
    if (!version) {
      const r = await fetch("v1/version", { cache: "no-store" });
      if (r.ok) { const v = await r.json(); version = v.version; }
    }
    const r = await fetch("v1/state", { cache: "no-store" });
    if (!r.ok) throw new Error("GET /v1/state: HTTP " + r.status);
    const st = await r.json();
    const t = performance.now();
    const dt = last ? (t - last.t) / 1000 : 0;
    renderNode(st, version);
    const now = renderVIPs(st, dt);
    renderBGP(st);
    renderCounters(st);
    last = { t, vips: now.vips, backends: now.backends };
    banner.hidden = true;
    document.body.dataset.updated = String(Date.now());
  } catch (e) {
    banner.textContent = "Cannot read the node's state (" + e.message + "); retrying every second.";
    banner.hidden = false;
  }
  await tickDrops();
}

async function loop() {
  await tick();
  setTimeout(loop, 1000);
}

loop();
