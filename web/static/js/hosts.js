// hosts.js — the hosts table: state, capacity, what placed VMs take of it,
// VM count and labels.

import { $, badge, h, replaceRows } from "./dom.js";
import { formatBytes, percent } from "./format.js";
import { hostTone } from "./tones.js";

export function renderHosts(hosts) {
  const sorted = [...hosts].sort((a, b) => a.name.localeCompare(b.name));
  const rows = sorted.map((x) => {
    const cap = x.capacity || {};
    const alloc = x.allocated || {};
    return h("tr", { dataset: { host: x.name } },
      h("th", { scope: "row" }, x.name),
      h("td", null, badge(x.state || "unknown", hostTone(x.state)), x.cordoned ? [" ", badge("cordoned", "warn")] : null),
      h("td", { class: "num" }, String(cap.cpus || 0)),
      h("td", { class: "num" }, formatBytes(cap.memory || 0)),
      h("td", null, h("div", { class: "alloc" },
        meter("CPU", alloc.cpus || 0, cap.cpus || 0),
        meter("Mem", alloc.memory || 0, cap.memory || 0))),
      h("td", { class: "num" }, String(x.vms || 0)),
      h("td", null, labels(x.labels)));
  });
  replaceRows($("hosts-table").tBodies[0], rows);
  $("hosts-empty").hidden = rows.length > 0;
}

// meter is one row of the allocation grid: label, bar, percentage.
function meter(label, used, total) {
  const p = percent(used, total);
  const fill = h("span");
  fill.style.width = `${Math.min(p, 100)}%`;
  const tone = p > 100 ? "bar over" : p >= 80 ? "bar high" : "bar";
  return [
    h("span", { class: "muted" }, label),
    h("div", { class: tone, "aria-hidden": "true" }, fill),
    h("span", { class: "num", "aria-label": `${label} ${p}% allocated` }, `${p}%`),
  ];
}

export function labels(m) {
  const keys = Object.keys(m || {}).sort();
  if (keys.length === 0) return h("span", { class: "muted" }, "—");
  return keys.map((k) => h("span", { class: "chip" }, `${k}=${m[k]}`));
}
