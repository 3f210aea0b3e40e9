// plan.js — the balancer's last plan: when, in which mode and policy,
// each host's CPU now and after the plan, and every move with its reason.

import { $, badge, h, replaceRows } from "./dom.js";
import { formatAge, formatTime } from "./format.js";
import { hostTone } from "./tones.js";

export async function loadPlan(api) {
  let plan;
  try {
    plan = await api.plan();
  } catch (err) {
    if (err.status !== 404 && err.status !== 403) throw err;
    $("plan-empty").hidden = false;
    $("plan-empty").textContent = err.status === 403
      ? "The balancer's plan is shown to cluster admins."
      : "The balancer has not run yet (vpool balance set --mode recommend).";
    $("plan-facts").replaceChildren();
    replaceRows($("plan-moves").tBodies[0], []);
    replaceRows($("plan-hosts").tBodies[0], []);
    return;
  }
  $("plan-empty").hidden = true;
  const facts = [
    ["Planned", plan.time ? `${formatTime(plan.time)} (${formatAge(plan.time)} ago)` : "—"],
    ["Mode", plan.mode || "—"],
    ["Policy", plan.policy || "—"],
    ["Note", plan.note || "—"],
    ["Moves", `${(plan.moves || []).length}${plan.applied ? `, ${plan.applied} started` : ""}${plan.refused ? `, ${plan.refused} refused by the gate` : ""}`],
  ];
  if (plan.error) facts.push(["Error", plan.error]);
  $("plan-facts").replaceChildren(...facts.flatMap(([k, v]) => [h("dt", null, k), h("dd", null, v)]));
  const moves = (plan.moves || []).map((m) =>
    h("tr", { dataset: { move: m.vm } },
      h("th", { scope: "row" }, m.vm),
      h("td", null, `${m.from} → ${m.to}`),
      h("td", null, badge(m.reason || "—", m.reason === "overload" ? "warn" : "busy")),
      h("td", { class: "why" }, m.detail || "")));
  replaceRows($("plan-moves").tBodies[0], moves.length ? moves : [h("tr", null, h("td", { colspan: 4, class: "muted" }, "no move: the cluster is balanced"))]);
  const hosts = (plan.hosts || []).map((x) =>
    h("tr", { dataset: { host: x.name } },
      h("th", { scope: "row" }, x.name),
      h("td", null, badge(x.state || "—", hostTone(x.state))),
      h("td", null, `${Math.round(x.cpuPercent || 0)}% → ${Math.round(x.planPercent || 0)}%`),
      h("td", { class: "num" }, String(x.vms || 0)),
      h("td", { class: "num" }, `${Math.round(x.watts || 0)} W`)));
  replaceRows($("plan-hosts").tBodies[0], hosts);
}
