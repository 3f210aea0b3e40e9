// migrations.js — migrations with their live progress (the page refreshes
// every second while one runs): bytes sent of the total, passes, the
// phase, why it was started, and Cancel for those not yet switching over.

import { $, badge, h, replaceRows } from "./dom.js";
import { formatAge, formatBytes } from "./format.js";

const FINAL = ["completed", "failed", "cancelled"];

function tone(phase) {
  if (phase === "completed") return "ok";
  if (phase === "failed") return "bad";
  if (phase === "cancelled") return "";
  return "busy";
}

export class MigrationsView {
  // app provides api(), project(), admin(), refresh(), announce(), failed().
  constructor(app) {
    this.app = app;
    this.running = false;
  }

  async load(api, project) {
    const list = await api.migrations(project, this.app.admin());
    const items = [...(list.items || [])].sort((a, b) => Date.parse(b.createdAt) - Date.parse(a.createdAt));
    this.running = items.some((m) => !FINAL.includes(m.phase));
    replaceRows($("migrations-table").tBodies[0], items.map((m) => this.row(m)));
    $("migrations-empty").hidden = items.length > 0;
  }

  row(m) {
    const pr = m.progress || {};
    const total = pr.bytesTotal || 0;
    const sent = pr.bytesSent || 0;
    const pct = m.phase === "completed" ? 100 : total ? Math.min(100, Math.round((100 * sent) / total)) : 0;
    const fill = h("span");
    fill.style.width = `${pct}%`;
    const why = (m.explanation && m.explanation.summary) || (m.drain ? `drain of ${m.drain}` : "asked for");
    const cancellable = ["pending", "preparing-target", "transferring"].includes(m.phase) && !m.cancelRequested;
    return h("tr", { dataset: { migration: m.name, vm: `${m.project}/${m.vm}` } },
      h("th", { scope: "row" }, `${m.project}/${m.vm}`),
      h("td", null, `${m.source} → ${m.target}`),
      h("td", null, m.mode || "—"),
      h("td", { class: "phase" }, badge(m.phase || "unknown", tone(m.phase))),
      h("td", null, h("div", { class: "progress" },
        h("div", { class: "bar", role: "progressbar", "aria-valuenow": pct, "aria-valuemin": 0, "aria-valuemax": 100,
          "aria-label": `progress of ${m.vm}` }, fill),
        h("span", { class: "num" }, total ? `${pct}% of ${formatBytes(total)}` : `${pct}%`))),
      h("td", { class: "why" }, why),
      h("td", { class: "num" }, formatAge(m.createdAt)),
      h("td", { class: "actions" }, h("button", {
        type: "button", class: "danger small", disabled: !cancellable, dataset: { action: "cancel", focus: `cancel:${m.name}` },
        "aria-label": `Cancel the migration of ${m.vm}`, onclick: () => this.cancel(m),
      }, "Cancel")));
  }

  async cancel(m) {
    try {
      await this.app.api().cancelMigration(m.name);
      this.app.announce(`cancelling the migration of ${m.vm}`);
    } catch (err) {
      this.app.failed(err);
    }
    this.app.refresh();
  }
}
