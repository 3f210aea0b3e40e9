// hosts.js — the hosts table (state, capacity, what placed VMs take of
// it, VM count, labels) with the host actions an operator takes every day
// (cordon, uncordon, drain, undrain), and a host's detail with its CPU,
// memory and power over time.

import { $, badge, h, replaceRows } from "./dom.js";
import { lineChart } from "./charts.js";
import { formatBytes, percent } from "./format.js";
import { hostTone } from "./tones.js";

export class HostsView {
  // app provides api(), refresh(), announce(text), failed(err), admin().
  constructor(app) {
    this.app = app;
    this.selected = "";
    $("host-detail-close").addEventListener("click", () => this.open(""));
  }

  async load(api) {
    const hosts = await api.hosts();
    let history = null;
    if (this.app.admin()) history = await api.history(180).catch(() => null);
    this.render(hosts.items || [], history);
  }

  render(hosts, history) {
    const sorted = [...hosts].sort((a, b) => a.name.localeCompare(b.name));
    replaceRows($("hosts-table").tBodies[0], sorted.map((x) => this.row(x)));
    $("hosts-empty").hidden = sorted.length > 0;
    const host = sorted.find((x) => x.name === this.selected);
    $("host-detail").hidden = !host;
    if (host) this.detail(host, history);
  }

  row(x) {
    const cap = x.capacity || {};
    const alloc = x.allocated || {};
    const admin = this.app.admin();
    const draining = Boolean(x.drain && !x.drain.done) || x.state === "maintenance";
    const act = (action, label, enabled, run) =>
      h("button", {
        type: "button", class: "secondary small", disabled: !enabled || !admin,
        dataset: { action, focus: `${action}:${x.name}` }, "aria-label": `${label} ${x.name}`,
        onclick: () => this.act(x.name, label, run),
      }, label);
    return h("tr", { dataset: { host: x.name }, class: this.selected === x.name ? "selected" : "" },
      h("th", { scope: "row" }, h("button", {
        type: "button", class: "link", dataset: { action: "open", focus: `open:${x.name}` },
        "aria-label": `Show host ${x.name}`, onclick: () => this.open(x.name),
      }, x.name)),
      h("td", null, badge(x.state || "unknown", hostTone(x.state)), x.cordoned ? [" ", badge("cordoned", "warn")] : null,
        x.drain && !x.drain.done ? [" ", badge("draining", "busy")] : null),
      h("td", { class: "num" }, String(cap.cpus || 0)),
      h("td", { class: "num" }, formatBytes(cap.memory || 0)),
      h("td", null, h("div", { class: "alloc" },
        meter("CPU", alloc.cpus || 0, cap.cpus || 0),
        meter("Mem", alloc.memory || 0, cap.memory || 0))),
      h("td", { class: "num" }, String(x.vms || 0)),
      h("td", null, labels(x.labels)),
      h("td", { class: "actions" },
        x.cordoned
          ? act("uncordon", "Uncordon", true, (api) => api.patchHost(x.name, { cordoned: false }))
          : act("cordon", "Cordon", true, (api) => api.patchHost(x.name, { cordoned: true })),
        draining
          ? act("undrain", "Undrain", true, (api) => api.undrain(x.name))
          : act("drain", "Drain", x.state === "ready", (api) => api.drain(x.name))));
  }

  async act(name, label, run) {
    try {
      await run(this.app.api());
      this.app.announce(`${label}: ${name}`);
    } catch (err) {
      this.app.failed(err);
    }
    this.app.refresh();
  }

  open(name) {
    this.selected = name;
    $("host-detail").hidden = !name;
    if (name) {
      $("host-detail-title").textContent = `Host ${name}`;
      $("host-detail-title").focus();
    }
    this.app.refresh();
  }

  detail(x, history) {
    const cap = x.capacity || {};
    const facts = [
      ["State", badge(x.state || "unknown", hostTone(x.state))],
      ["Driver", x.driver || "—"],
      ["Capacity", `${cap.cpus || 0} CPUs, ${formatBytes(cap.memory || 0)}`],
      ["Measured CPU", x.usage ? `${Math.round(x.usage.cpuPercent || 0)}%` : "—"],
      ["Labels", labels(x.labels)],
      ["Drain", x.drain ? (x.drain.done ? "done" : `under way${(x.drain.blocked || []).length ? `, ${x.drain.blocked.length} blocked` : ""}`) : "—"],
    ];
    $("host-facts").replaceChildren(...facts.flatMap(([k, v]) => [h("dt", null, k), h("dd", null, v)]));
    const charts = $("host-charts");
    if (!history) {
      charts.replaceChildren(h("p", { class: "muted" }, "Load over time is shown to cluster admins."));
      return;
    }
    const pts = (f) => (history.samples || []).flatMap((s) => {
      const hs = (s.hosts || []).find((y) => y.host === x.name);
      return hs ? [[new Date(s.time), f(hs)]] : [];
    });
    charts.replaceChildren(
      lineChart([{ name: "CPU", points: pts((s) => s.cpuPercent || 0) }], { title: `${x.name}: CPU`, id: "host-cpu", unit: "%", max: 100 }),
      lineChart([{ name: "Memory", points: pts((s) => percent(s.memoryUsed || 0, s.memoryCapacity || 0)) }],
        { title: `${x.name}: memory used`, id: "host-memory", unit: "%", max: 100 }),
      lineChart([{ name: "Power", points: pts((s) => s.watts || 0) }], { title: `${x.name}: power`, id: "host-power", unit: " W" }));
  }
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
