// detail.js — one VM in full: spec and status, the last error, and the
// scheduler's placement explanation (filters with how many hosts each
// rejected, candidates with their score parts).

import { $, badge, h, replaceRows } from "./dom.js";
import { formatAge, formatBytes, formatTime, score } from "./format.js";
import { labels } from "./hosts.js";
import { phaseTone } from "./tones.js";

export function renderDetail(vm) {
  const st = vm.status || {};
  const spec = vm.spec || {};
  $("detail-title").textContent = `VM ${vm.name}`;
  const disks = (spec.disks || []).map((d) => `${d.name || "disk"} ${formatBytes(d.size)}`).join(", ");
  const facts = [
    ["Project", vm.project],
    ["Phase", badge(st.phase || "unknown", phaseTone(st.phase))],
    ["Desired power", spec.power || "—"],
    ["Host", st.host || "—"],
    ["vCPUs", String(spec.vcpus || 0)],
    ["Memory", formatBytes(spec.memory || 0)],
    ["Disks", disks || "none"],
    ["Labels", labels(spec.labels)],
    ["Addresses", (st.addresses || []).join(", ") || "—"],
    ["Created", vm.createdAt ? `${formatTime(vm.createdAt)} (${formatAge(vm.createdAt)} ago)` : "—"],
    ["Message", st.message || "—"],
  ];
  $("detail-facts").replaceChildren(...facts.flatMap(([k, v]) => [h("dt", null, k), h("dd", null, v)]));

  $("detail-error").hidden = !st.lastError;
  $("detail-error-text").textContent = st.lastError || "";

  const ex = st.explanation;
  if (!ex) {
    $("detail-summary").textContent = st.host ? "Placed without an explanation." : "Not placed yet.";
    replaceRows($("detail-filters").tBodies[0], [emptyRow(3, "—")]);
    replaceRows($("detail-candidates").tBodies[0], [emptyRow(3, "—")]);
    return;
  }
  const summary = ex.summary || (ex.chosen ? `placed on ${ex.chosen}` : `no host among ${ex.hosts}`);
  $("detail-summary").textContent = `${summary} — decided at ${formatTime(ex.time)}`;
  const filters = (ex.filters || []).map((f) =>
    h("tr", { dataset: { filter: f.filter } },
      h("th", { scope: "row" }, f.filter),
      h("td", { class: "num" }, String(f.rejected)),
      h("td", null, f.reason || "")));
  replaceRows($("detail-filters").tBodies[0], filters.length ? filters : [emptyRow(3, "no host was rejected")]);
  const cands = (ex.candidates || []).map((c) =>
    h("tr", { dataset: { candidate: c.host }, class: c.host === ex.chosen ? "selected" : "" },
      h("th", { scope: "row" }, c.host, c.host === ex.chosen ? [" ", badge("chosen", "ok")] : null),
      h("td", { class: "num" }, score(c.score)),
      h("td", { class: "parts" }, parts(c.parts))));
  replaceRows($("detail-candidates").tBodies[0], cands.length ? cands : [emptyRow(3, "no candidate")]);
}

function parts(m) {
  const keys = Object.keys(m || {}).sort();
  if (keys.length === 0) return "—";
  return keys.map((k) => `${k} ${score(m[k])}`).join(" · ");
}

function emptyRow(cols, text) {
  return h("tr", null, h("td", { colspan: cols, class: "muted" }, text));
}
