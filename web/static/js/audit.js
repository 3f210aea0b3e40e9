// audit.js — the audit trail, newest first (GET /audit): API calls with
// who made them and how they ended, and the control plane's own
// decisions with their reasons. A project's members see its records only.

import { $, badge, h, replaceRows } from "./dom.js";
import { formatTime } from "./format.js";

export class AuditView {
  // app provides admin(), refresh().
  constructor(app) {
    this.app = app;
    $("audit-form").addEventListener("submit", (e) => { e.preventDefault(); app.refresh(); });
  }

  async load(api, project) {
    const q = { limit: 100, kind: $("audit-kind").value, object: $("audit-object").value.trim() };
    if (!this.app.admin()) q.project = project;
    const list = await api.audit(q);
    $("audit-scope").textContent = this.app.admin() ? `every project; head #${list.head}` : `project ${project}`;
    const rows = (list.items || []).map((r) =>
      h("tr", { dataset: { seq: r.seq, kind: r.kind, action: r.action || "", object: r.object || "" } },
        h("td", { class: "num" }, String(r.seq)),
        h("td", null, h("time", { datetime: r.time }, formatTime(r.time))),
        h("td", null, badge(r.kind, r.kind === "decision" ? "busy" : r.kind === "gap" ? "bad" : "")),
        h("td", { class: "mono" }, r.action || "—"),
        h("td", { class: "mono" }, r.object || "—"),
        h("td", null, outcome(r)),
        h("td", null, who(r)),
        h("td", { class: "why" }, detail(r))));
    replaceRows($("audit-table").tBodies[0], rows);
    $("audit-empty").hidden = rows.length > 0;
  }
}

function outcome(r) {
  if (!r.outcome) return "—";
  const tone = r.outcome === "ok" ? "ok" : r.outcome === "refused" ? "warn" : "bad";
  return badge(r.status ? `${r.outcome} ${r.status}` : r.outcome, tone);
}

function who(r) {
  if (!r.actor) return r.server || "—";
  const a = r.actor;
  if (!a.tokenId) return `anonymous (${a.source || "?"})`;
  return `${a.tokenId} (${a.role}${(a.scopes || []).length ? " " + a.scopes.join(",") : ""}) ${a.source || ""}`;
}

function detail(r) {
  const parts = [];
  if (r.from) parts.push(`${r.from} → ${r.host}`);
  else if (r.host && r.kind === "decision") parts.push(`on ${r.host}`);
  if (r.code) parts.push(r.code);
  if (r.reason) parts.push(r.reason);
  if (r.checkpoint) parts.push(`signs record ${r.checkpoint.seq} (key ${r.checkpoint.keyId})`);
  return parts.join(": ");
}
