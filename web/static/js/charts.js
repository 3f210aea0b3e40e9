// charts.js — small SVG charts drawn from numbers, with no library: a
// line chart of time series and a bar chart. Every label is text.

const NS = "http://www.w3.org/2000/svg";
const W = 600;
const H = 170;
const PAD = { l: 48, r: 12, t: 12, b: 22 };
const COLOURS = ["#2457c5", "#1d7a46", "#9a6700", "#b3261e", "#6b3fa0", "#0f7c8c", "#5d6779"];

function el(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

// lineChart draws series ([{name, points: [[Date, value], ...]}]) against
// time. opts: title, unit, max (fixed top, e.g. 100 for %), format(v).
export function lineChart(series, opts) {
  const fmt = opts.format || ((v) => `${Math.round(v)}${opts.unit || ""}`);
  const all = series.flatMap((s) => s.points);
  const wrap = document.createElement("figure");
  wrap.className = "chart";
  wrap.dataset.chart = opts.id || opts.title;
  const cap = document.createElement("figcaption");
  cap.textContent = opts.title;
  wrap.append(cap);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.title });
  wrap.append(svg);
  if (all.length === 0) {
    svg.append(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "chart-empty" }, "no samples yet"));
    return wrap;
  }
  const t0 = Math.min(...all.map((p) => p[0].getTime()));
  const t1 = Math.max(...all.map((p) => p[0].getTime()), t0 + 1);
  const top = opts.max || Math.max(1, ...all.map((p) => p[1])) * 1.1;
  const x = (t) => PAD.l + ((t.getTime() - t0) / (t1 - t0)) * (W - PAD.l - PAD.r);
  const y = (v) => H - PAD.b - (Math.min(v, top) / top) * (H - PAD.t - PAD.b);
  for (const f of [0, 0.5, 1]) {
    const v = top * f;
    svg.append(el("line", { x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(el("text", { x: PAD.l - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" }, fmt(v)));
  }
  svg.append(el("text", { x: PAD.l, y: H - 4, class: "axis" }, new Date(t0).toLocaleTimeString([], { hour12: false })));
  svg.append(el("text", { x: W - PAD.r, y: H - 4, "text-anchor": "end", class: "axis" }, new Date(t1).toLocaleTimeString([], { hour12: false })));
  const legend = document.createElement("ul");
  legend.className = "legend";
  series.forEach((s, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const d = s.points.map((p, j) => `${j ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
    svg.append(el("path", { d, fill: "none", stroke: colour, "stroke-width": 2, "data-series": s.name }));
    const last = s.points.length ? s.points[s.points.length - 1][1] : 0;
    const li = document.createElement("li");
    const sw = document.createElement("span");
    sw.className = `swatch c${i % COLOURS.length}`;
    li.append(sw, `${s.name}: ${fmt(last)}`);
    legend.append(li);
  });
  wrap.append(legend);
  return wrap;
}

// barChart draws labelled values ([{label, value}]) as horizontal bars.
export function barChart(bars, opts) {
  const fmt = opts.format || ((v) => String(v));
  const wrap = document.createElement("figure");
  wrap.className = "chart";
  wrap.dataset.chart = opts.id || opts.title;
  const cap = document.createElement("figcaption");
  cap.textContent = opts.title;
  wrap.append(cap);
  const rowH = 24;
  const h = Math.max(rowH, bars.length * rowH) + 4;
  const svg = el("svg", { viewBox: `0 0 ${W} ${h}`, role: "img", "aria-label": opts.title });
  const top = Math.max(1e-9, ...bars.map((b) => b.value));
  bars.forEach((b, i) => {
    const yy = i * rowH + 2;
    const w = (b.value / top) * (W - 260);
    svg.append(el("text", { x: 0, y: yy + 16, class: "axis" }, b.label));
    svg.append(el("rect", { x: 150, y: yy + 4, width: Math.max(1, w).toFixed(1), height: rowH - 8, rx: 3, class: "bar-fill", "data-bar": b.label }));
    svg.append(el("text", { x: 156 + w, y: yy + 16, class: "axis" }, fmt(b.value)));
  });
  if (bars.length === 0) svg.append(el("text", { x: W / 2, y: 16, "text-anchor": "middle", class: "chart-empty" }, "nothing yet"));
  wrap.append(svg);
  return wrap;
}
