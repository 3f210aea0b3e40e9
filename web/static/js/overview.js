// overview.js — the cluster at a glance: cluster facts, hosts by state and
// the project's VMs by phase.

import { $, h } from "./dom.js";
import { hostTone, phaseTone } from "./tones.js";

const HOST_STATES = ["ready", "maintenance", "standby", "down", "fenced"];
const PHASES = ["pending", "scheduling", "creating", "running", "stopping", "stopped", "paused", "failed", "deleting"];

export function renderOverview(cluster, hosts, vms, project) {
  const facts = [
    ["Version", cluster.version || "—"],
    ["Server", cluster.server || "—"],
    ["Leader", cluster.leader || "none"],
    ["Store", cluster.store || "—"],
    ["Projects", cluster.projects],
    ["Hosts", cluster.hosts],
    ["VMs (all projects)", cluster.vms],
  ];
  $("cluster-info").replaceChildren(...facts.flatMap(([k, v]) => [h("dt", null, k), h("dd", null, String(v))]));

  const byState = countBy(hosts, (x) => x.state || "unknown");
  $("hosts-by-state").replaceChildren(...counts(byState, HOST_STATES, hostTone, "host-state"));

  const byPhase = countBy(vms, (x) => (x.status && x.status.phase) || "unknown");
  $("vmphases-project").textContent = `in ${project}`;
  $("vms-by-phase").replaceChildren(...counts(byPhase, PHASES, phaseTone, "vm-phase"));
}

function countBy(items, key) {
  const m = new Map();
  for (const it of items) m.set(key(it), (m.get(key(it)) || 0) + 1);
  return m;
}

// counts lists the known keys that occur (in their natural order), then any
// others; with nothing at all it says so.
function counts(m, order, tone, kind) {
  const keys = order.filter((k) => m.has(k)).concat([...m.keys()].filter((k) => !order.includes(k)).sort());
  if (keys.length === 0) return [h("li", { class: "muted" }, "none")];
  return keys.map((k) =>
    h("li", { dataset: { [kind === "host-state" ? "hostState" : "vmPhase"]: k } },
      h("span", { class: "n" }, String(m.get(k))),
      h("span", { class: `badge ${tone(k)}` }, k)));
}
