// overview.js — the cluster at a glance: cluster facts, hosts by state and
// the project's VMs by phase.

import { lineChart } from "./charts.js";
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

// renderUtilisation draws the cluster's CPU, memory and power over time
// from the server's samples of every host (admins only: tenants are not
// shown hosts' measured load).
export function renderUtilisation(history) {
  const charts = $("cluster-charts");
  $("util-note").hidden = Boolean(history);
  if (!history) {
    $("util-note").textContent = "Utilisation over time is shown to cluster admins.";
    charts.replaceChildren();
    return;
  }
  const samples = history.samples || [];
  const sum = (s, f) => (s.hosts || []).reduce((a, x) => a + f(x), 0);
  const cpu = samples.map((s) => {
    const cpus = sum(s, (x) => x.cpus || 0);
    return [new Date(s.time), cpus ? sum(s, (x) => ((x.cpuPercent || 0) / 100) * (x.cpus || 0)) / cpus * 100 : 0];
  });
  const mem = samples.map((s) => {
    const cap = sum(s, (x) => x.memoryCapacity || 0);
    return [new Date(s.time), cap ? (sum(s, (x) => x.memoryUsed || 0) / cap) * 100 : 0];
  });
  const power = samples.map((s) => [new Date(s.time), sum(s, (x) => x.watts || 0)]);
  const span = samples.length ? Math.round((samples.length * (history.intervalSeconds || 10)) / 60) : 0;
  $("util-span").textContent = samples.length ? `last ${span} min, ${samples.length} samples` : "";
  charts.replaceChildren(
    lineChart([{ name: "CPU", points: cpu }], { title: "CPU (all hosts)", id: "cluster-cpu", unit: "%", max: 100 }),
    lineChart([{ name: "Memory", points: mem }], { title: "Memory used (all hosts)", id: "cluster-memory", unit: "%", max: 100 }),
    lineChart([{ name: "Power", points: power }], { title: "Power draw (all hosts)", id: "cluster-power", unit: " W" }));
}
