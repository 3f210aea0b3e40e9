// vmactions.js — what an operator does to one VM from its detail pane:
// migrate it (to a host, or where the scheduler says), snapshot it,
// resize it, and open its serial console (console.html in a frame).

import { $, h } from "./dom.js";
import { formatAge, formatBytes, parseBytes } from "./format.js";

export class VMActions {
  // app provides api(), project(), refresh(), announce(text), failed(err).
  constructor(app) {
    this.app = app;
    this.vm = null;
    this.shown = "";
    $("migrate-form").addEventListener("submit", (e) => { e.preventDefault(); this.migrate(); });
    $("snapshot-form").addEventListener("submit", (e) => { e.preventDefault(); this.snapshot(); });
    $("resize-form").addEventListener("submit", (e) => { e.preventDefault(); this.resize(); });
    $("console-open").addEventListener("click", () => this.openConsole());
    $("console-close").addEventListener("click", () => this.closeConsole());
  }

  // show fills the actions for vm (its hosts to migrate to, its sizes)
  // and lists its snapshots; a new VM resets the forms.
  async show(vm, hosts) {
    const fresh = this.shown !== vm.name;
    this.vm = vm;
    if (fresh) {
      this.shown = vm.name;
      this.closeConsole();
      $("action-result").textContent = "";
      $("action-error").textContent = "";
      $("resize-vcpus").value = String((vm.spec || {}).vcpus || 1);
      $("resize-memory").value = formatBytes((vm.spec || {}).memory || 0);
      $("snapshot-name").value = "";
    }
    const here = (vm.status || {}).host || "";
    const sel = $("migrate-target");
    const keep = sel.value;
    const opts = [h("option", { value: "" }, "where the scheduler chooses")].concat(
      hosts.filter((x) => x.name !== here && x.state === "ready").map((x) => h("option", { value: x.name }, x.name)));
    sel.replaceChildren(...opts);
    if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
    const snaps = await this.app.api().snapshots(this.app.project(), vm.name).catch(() => null);
    const items = (snaps && snaps.items) || [];
    $("detail-snapshots").replaceChildren(...(items.length
      ? items.map((s) => h("li", { dataset: { snapshot: s.name } }, `${s.name} — ${s.phase}${s.createdAt ? `, ${formatAge(s.createdAt)} ago` : ""}`))
      : [h("li", { class: "muted" }, "none")]));
  }

  async run(what, fn) {
    $("action-error").textContent = "";
    try {
      const out = await fn(this.app.api(), this.app.project(), this.vm.name);
      $("action-result").textContent = what(out);
      this.app.announce($("action-result").textContent);
    } catch (err) {
      $("action-error").textContent = err.field ? `${err.field}: ${err.message}` : err.message;
    }
    this.app.refresh();
  }

  migrate() {
    const to = $("migrate-target").value;
    this.run((m) => `migration ${m.name} of ${this.vm.name} to ${m.target} started`, (api, p, vm) => api.migrate(p, vm, to));
  }

  snapshot() {
    const name = $("snapshot-name").value.trim() || `snap-${Date.now().toString(36)}`;
    this.run(() => `snapshot ${name} of ${this.vm.name} asked for`, (api, p, vm) => api.snapshot(p, vm, name));
  }

  resize() {
    let memory;
    try {
      memory = parseBytes($("resize-memory").value);
    } catch (err) {
      $("action-error").textContent = `memory: ${err.message}`;
      return;
    }
    const vcpus = Number($("resize-vcpus").value);
    this.run((vm) => `${vm.name} resized to ${vm.spec.vcpus} vCPUs and ${formatBytes(vm.spec.memory)}`,
      (api, p, vm) => api.resize(p, vm, { vcpus, memory }));
  }

  openConsole() {
    if (!this.vm) return;
    $("console-frame").src = `console.html#${encodeURIComponent(this.app.project())}/${encodeURIComponent(this.vm.name)}`;
    $("console-pane").hidden = false;
    $("console-pane").scrollIntoView({ block: "nearest" }); // xterm.js draws only what is on screen
  }

  closeConsole() {
    $("console-pane").hidden = true;
    $("console-frame").removeAttribute("src");
  }
}
