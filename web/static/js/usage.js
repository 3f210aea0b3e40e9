// usage.js — metered usage and carbon per project and VM over a range of
// days (GET /usage): vCPU-hours, GiB-hours of memory and disk, network
// bytes, kWh and grams of CO2, with a bar chart of CO2 per project.

import { $, h, replaceRows } from "./dom.js";
import { barChart } from "./charts.js";
import { formatBytes } from "./format.js";

function day(d) { return d.toISOString().slice(0, 10); }

export class UsageView {
  // app provides admin(), refresh().
  constructor(app) {
    this.app = app;
    const now = new Date();
    $("usage-from").value = day(new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1)));
    $("usage-to").value = day(new Date(now.getTime() + 86400000));
    $("usage-form").addEventListener("submit", (e) => { e.preventDefault(); app.refresh(); });
  }

  async load(api, project) {
    const q = { from: $("usage-from").value, to: $("usage-to").value, vms: "true" };
    if (this.app.admin()) q["all-projects"] = "true";
    else q.project = project;
    const rep = await api.usage(q);
    $("usage-scope").textContent = this.app.admin() ? "every project" : `project ${project}`;
    const rows = [];
    for (const p of rep.projects || []) {
      rows.push(line("project", p.project, p.project, p.total, true));
      for (const v of p.vms || []) rows.push(line("vm", `${p.project}/${v.vm}`, `\u2003${v.vm}${v.deleted ? " (deleted)" : ""}`, v, false));
    }
    if ((rep.projects || []).length) rows.push(line("total", "total", "Total", rep.total, true));
    replaceRows($("usage-table").tBodies[0], rows);
    $("usage-empty").hidden = (rep.projects || []).length > 0;
    const bars = (rep.projects || []).map((p) => ({ label: p.project, value: (p.total || {}).co2Grams || 0 }));
    $("usage-chart").replaceChildren(barChart(bars, { title: "grams of CO₂e in the range", id: "usage-co2", format: (v) => `${v.toFixed(1)} g` }));
  }
}

function line(kind, key, label, f, strong) {
  f = f || {};
  const cell = (v) => h("td", { class: "num" }, v);
  return h("tr", { dataset: { usage: key, kind }, class: strong ? "strong" : "" },
    h("th", { scope: "row" }, label),
    cell((f.vcpuHours || 0).toFixed(2)),
    cell((f.memGiBHours || 0).toFixed(2)),
    cell((f.diskGiBHours || 0).toFixed(2)),
    cell(formatBytes(f.netBytes || 0)),
    cell((f.energyKWh || 0).toFixed(3)),
    cell((f.co2Grams || 0).toFixed(1)));
}
