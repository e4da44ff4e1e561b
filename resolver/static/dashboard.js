// idsim dashboard: polls /dashboard/data and draws the network (no libraries, no CDN).
// Nodes are tiles with data-node="<name>" and data-state="ready|notready|down", grouped by
// city; a schematic map of China places the cities (the Pearl River Delta in an inset).
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
// Schematic outline of mainland China, Hainan and Taiwan: [lon, lat], approximate.
const MAINLAND = [[121.5,53.3],[125.5,53.0],[127.5,49.8],[130.5,48.9],[133.5,48.2],[134.7,48.3],
  [133.0,45.0],[131.0,44.9],[131.3,43.0],[130.5,42.5],[128.0,42.0],[126.0,40.9],[124.3,39.9],
  [121.6,38.9],[122.2,40.5],[121.0,40.9],[119.5,39.9],[118.0,39.2],[117.6,38.6],[118.9,37.4],
  [120.7,37.8],[122.5,37.4],[120.3,36.0],[119.2,35.0],[120.8,32.5],[121.9,31.0],[121.9,30.0],
  [121.5,28.5],[120.6,27.2],[119.6,26.0],[118.1,24.5],[116.7,23.3],[114.2,22.3],[113.5,22.2],
  [112.0,21.7],[110.4,21.2],[109.7,21.5],[108.0,21.5],[106.7,22.8],[105.3,23.3],[103.9,22.6],
  [102.2,22.4],[101.6,21.2],[100.1,21.6],[99.2,22.1],[98.7,23.9],[97.6,24.0],[98.7,25.8],
  [98.7,27.5],[97.5,28.3],[96.0,29.0],[94.0,27.7],[92.0,27.8],[89.0,28.0],[86.0,27.9],
  [84.0,28.6],[81.0,30.2],[79.0,31.0],[78.4,32.5],[79.3,34.3],[78.0,35.5],[75.0,36.9],
  [73.6,39.4],[74.0,40.5],[76.5,40.4],[78.0,41.2],[80.2,42.2],[80.5,44.9],[82.5,45.5],
  [83.0,47.2],[85.5,47.1],[87.3,49.1],[89.0,48.0],[90.8,46.0],[91.0,45.2],[93.5,44.9],
  [96.4,42.7],[100.0,42.6],[105.0,41.6],[107.0,42.4],[110.4,42.7],[111.9,43.7],[111.5,44.4],
  [113.6,44.8],[116.7,46.4],[117.6,46.6],[119.7,46.9],[118.0,48.0],[117.4,49.6],[119.3,50.3],
  [120.2,51.9]];
const HAINAN = [[108.6,19.2],[109.5,18.2],[110.6,18.5],[111.0,19.6],[110.5,20.1],[109.2,20.0]];
const TAIWAN = [[120.1,23.0],[120.7,22.0],[121.5,23.5],[121.9,25.1],[121.0,25.1],[120.2,23.8]];
const CITIES = {  // [lon, lat]
  Guangzhou: [113.26,23.13], Shenzhen: [114.06,22.54], Foshan: [113.12,23.02],
  Dongguan: [113.75,23.02], Zhuhai: [113.58,22.27], Huizhou: [114.42,23.11],
  Zhongshan: [113.39,22.52], Jiangmen: [113.08,22.58], Zhaoqing: [112.47,23.05],
  Shantou: [116.68,23.35], Changsha: [112.94,28.23], Xiamen: [118.09,24.48],
  Nanning: [108.37,22.82], Haikou: [110.35,20.02], Beijing: [116.40,39.90],
  Shanghai: [121.47,31.23], Wuhan: [114.31,30.59], Chengdu: [104.07,30.67],
  Chongqing: [106.55,29.56], Hangzhou: [120.16,30.27], Nanjing: [118.80,32.06],
  Tianjin: [117.20,39.13], "Xi'an": [108.94,34.34], Shenyang: [123.43,41.80],
  Qingdao: [120.38,36.07], Fuzhou: [119.30,26.08], Kunming: [102.83,24.88],
  Guiyang: [106.63,26.65], Nanchang: [115.86,28.68], Zhengzhou: [113.63,34.75],
  Jinan: [117.00,36.67], Harbin: [126.63,45.75], Urumqi: [87.62,43.82], Lhasa: [91.11,29.65],
  Hefei: [117.23,31.82], Lanzhou: [103.83,36.06],
};
// The Pearl River Delta, spread out schematically in the inset: [x, y] in inset pixels.
const PRD = { Zhaoqing: [25,40], Guangzhou: [100,32], Foshan: [62,74], Dongguan: [160,64],
  Huizhou: [250,38], Shenzhen: [215,102], Zhongshan: [125,102], Jiangmen: [52,118],
  Zhuhai: [170,134] };
const INSET = { x: 500, y: 566, w: 295, h: 190 };
const X = lon => (lon - 73) * 12.7 + 10, Y = lat => (54 - lat) * 15.5 + 10;

function el(tag, attrs, parent, ns) {
  const e = ns ? document.createElementNS(SVGNS, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}
const poly = pts => pts.map(([lo, la]) => `${X(lo).toFixed(1)},${Y(la).toFixed(1)}`).join(" ");
const fmtInt = v => v == null ? "–" : Math.round(v).toLocaleString("en");
const fmtRate = v => v == null ? "–" : (v >= 100 ? Math.round(v).toLocaleString("en") : v.toFixed(1));
const fmtMs = v => v == null ? "–" : (v * 1000 >= 100 ? (v * 1000).toFixed(0) : (v * 1000).toFixed(1)) + " ms";
const fmtPct = v => v == null ? "–" : (v * 100).toFixed(1) + "%";
const stateOf = n => n.ready ? "ready" : (n.up ? "notready" : "down");
const WORST = { ready: 0, notready: 1, down: 2 };

let shape = "";          // the node list the page was built for
const tiles = new Map(); // name -> tile element
const cityMarks = new Map();

function where(city) {
  if (PRD[city]) return [INSET.x + PRD[city][0], INSET.y + 22 + PRD[city][1]];
  const c = CITIES[city];
  return c ? [X(c[0]), Y(c[1])] : null;
}

function drawMap(cities) {
  const svg = document.getElementById("map");
  svg.replaceChildren();
  el("polygon", { class: "land", points: poly(MAINLAND) }, svg, true);
  el("polygon", { class: "land", points: poly(HAINAN) }, svg, true);
  el("polygon", { class: "land", points: poly(TAIWAN) }, svg, true);
  const box = [X(112.2), Y(23.6), X(114.7) - X(112.2), Y(22.0) - Y(23.6)];
  el("rect", { class: "inset", x: box[0], y: box[1], width: box[2], height: box[3] }, svg, true);
  el("rect", { class: "inset", x: INSET.x, y: INSET.y, width: INSET.w, height: INSET.h, rx: 6 }, svg, true);
  el("line", { class: "link", x1: box[0] + box[2] / 2, y1: box[1] + box[3], x2: INSET.x + INSET.w / 2, y2: INSET.y }, svg, true);
  const cap = el("text", { class: "caption", x: INSET.x + 8, y: INSET.y + 16 }, svg, true);
  cap.textContent = "Pearl River Delta";
  const hub = where("Guangzhou"), hubMain = [X(113.26), Y(23.13)];
  for (const [city] of cities) {
    const p = where(city);
    if (!p || city === "Guangzhou") continue;
    const from = PRD[city] ? hub : hubMain;
    el("line", { class: "link", x1: from[0], y1: from[1], x2: p[0], y2: p[1] }, svg, true);
  }
  cityMarks.clear();
  for (const [city, nodes] of cities) {
    const p = where(city);
    if (!p) continue;
    const g = el("g", { class: "city", "data-city": city }, svg, true);
    const r = 5 + 2.2 * Math.sqrt(nodes.length);
    const c = el("circle", { cx: p[0], cy: p[1], r }, g, true);
    const t = el("text", { x: p[0], y: p[1] + r + 11, "text-anchor": "middle" }, g, true);
    t.textContent = `${city} ${nodes.length}`;
    const title = el("title", {}, g, true);
    cityMarks.set(city, { circle: c, title, nodes });
  }
}

function tile(n, parent) {
  const t = el("div", { class: "tile", "data-node": n.name }, parent);
  el("div", { class: "name" }, t).textContent = n.name;
  el("div", { class: "ind" }, t).textContent =
    n.role === "secondary" ? (n.industry || n.title) : (n.role === "top" ? "national top-level node" :
      (n.role === "mirror" ? (n.title || "mirror") + ", read-only" : "recursive node: clients' entry point"));
  const figs = el("div", { class: "figs" }, t);
  const figures = [["rate", "", " req/s"], ["p99", "p99 ", ""], ["hit", "hit ", ""], ["ids", "", " ids"]];
  if (n.role === "secondary") figures.push(["res", "", " res/s"]);
  for (const [f, label, after] of figures) {
    const s = el("span", {}, figs);
    s.append(label);
    el("b", { "data-f": f }, s).textContent = "–";
    s.append(after);
  }
  el("div", { class: "why" }, t);
  return t;
}

function build(nodes) {
  const groups = document.getElementById("groups");
  groups.replaceChildren();
  tiles.clear();
  const core = nodes.filter(n => n.role !== "secondary" && n.role !== "mirror");
  const mirrors = nodes.filter(n => n.role === "mirror");  // issue 11: a group of their own
  const byCity = new Map();
  for (const n of nodes.filter(n => n.role === "secondary")) {
    const c = n.city || "elsewhere";
    if (!byCity.has(c)) byCity.set(c, []);
    byCity.get(c).push(n);
  }
  const cities = [...byCity.entries()].sort((a, b) => b[1].length - a[1].length || a[0].localeCompare(b[0]));
  const mirrorGroup = mirrors.length ? [["mirrors and standby top-level nodes (read-only)", mirrors]] : [];
  for (const [label, members] of [["core: recursive and top-level nodes", core], ...mirrorGroup, ...cities.map(([c, m]) => [`${c} · ${m.length} node${m.length > 1 ? "s" : ""}`, m])]) {
    const g = el("div", { class: members.length > 2 ? "group wide" : "group" }, groups);
    el("h2", {}, g).textContent = label;
    const box = el("div", { class: "tiles" }, g);
    for (const n of members) tiles.set(n.name, tile(n, box));
  }
  drawMap(cities);
}

function render(d) {
  const nodes = d.nodes || [];
  const sig = nodes.map(n => n.name + "@" + n.city).join(",");
  if (sig !== shape) { build(nodes); shape = sig; }
  const t = d.totals || {};
  document.getElementById("total-enterprises").textContent = fmtInt(t.enterprises);
  document.getElementById("total-identifiers").textContent = fmtInt(t.identifiers);
  document.getElementById("total-resolutions").textContent = fmtRate(t.resolutionsPerSecond);
  document.getElementById("total-registrations").textContent = fmtRate(t.registrationsPerSecond);
  document.getElementById("total-ready").textContent = `${nodes.filter(n => n.ready).length}/${nodes.length}`;
  for (const n of nodes) {
    const tl = tiles.get(n.name);
    if (!tl) continue;
    const st = stateOf(n);
    tl.className = "tile " + st;
    tl.dataset.state = st;
    tl.title = `${n.title || n.name} (${n.url})\n` + (n.ready ? "ready" : (n.reason || "down")) +
      (n.metrics ? "" : "\n/metrics not answered: rates unknown") +
    (n.role === "secondary" ? "\nreq/s: HTTP requests; res/s: every resolution it answered, RPC included" : "");
    const f = name => tl.querySelector(`[data-f="${name}"]`);
    f("rate").textContent = fmtRate(n.rate);
    f("p99").textContent = fmtMs(n.p99);
    f("hit").textContent = fmtPct(n.hitRatio);
    f("ids").textContent = fmtInt(n.identifiers != null ? n.identifiers : n.records);
    if (f("res")) f("res").textContent = fmtRate(n.resolutionRate);
    tl.querySelector(".why").textContent = ((n.faults || []).length ? `fault: ${n.faults.join(", ")} ` : "") +  // idsim fault
      (n.ready ? "" : (n.reason || "no answer"));
  }
  for (const [city, m] of cityMarks) {
    const states = m.nodes.map(n => stateOf(nodes.find(x => x.name === n.name) || n));
    const worst = states.reduce((a, b) => WORST[b] > WORST[a] ? b : a, "ready");
    m.circle.setAttribute("fill", getComputedStyle(document.documentElement).getPropertyValue(
      { ready: "--ok", notready: "--warn", down: "--down" }[worst]));
    m.title.textContent = `${city}: ${m.nodes.map(n => n.name).join(", ")}`;
  }
  const over = d.interval ? ` · rates over ${d.interval.toFixed(1)} s` : " · rates from the next update";
  document.getElementById("updated").textContent = "updated " + new Date(d.at * 1000).toLocaleTimeString("en-GB") + over;
  const err = document.getElementById("error");
  err.style.display = d.statsAnswered === false ? "block" : "none";
  err.textContent = d.statsAnswered === false ? "the top-level node's /api/stats did not answer: totals and node list may be stale" : "";
}

async function poll() {
  let wait = 2;
  try {
    const resp = await fetch("/dashboard/data", { cache: "no-store" });
    const d = await resp.json();
    if (!resp.ok) throw new Error(d.message || "HTTP " + resp.status);
    wait = d.refresh || wait;
    render(d);
  } catch (e) {
    const err = document.getElementById("error");
    err.style.display = "block";
    err.textContent = "dashboard data unavailable: " + e.message;
  }
  setTimeout(poll, wait * 1000);
}
poll();
