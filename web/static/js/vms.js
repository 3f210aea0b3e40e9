// vms.js — the project's VMs: the table with its actions (start, stop,
// restart, a two-step delete) and the create form, which shows API errors
// beside the field they name.

import { ApiError } from "./api.js";
import { $, badge, h, replaceRows } from "./dom.js";
import { formatAge, formatBytes, parseBytes } from "./format.js";
import { phaseTone } from "./tones.js";

const CONFIRM_MS = 5000;

// FIELDS maps the API's field names to the form's inputs.
const FIELDS = [
  [/^name$/, "vm-name"],
  [/^spec\.vcpus$/, "vm-vcpus"],
  [/^spec\.memory$/, "vm-memory"],
  [/^spec\.disks\[0\]/, "vm-disk"],
];

export class VMsView {
  // app provides api(), project(), refresh(), select(name), announce(text)
  // and failed(err).
  constructor(app) {
    this.app = app;
    this.confirming = "";
    this.confirmTimer = 0;
    this.selected = "";
    $("create-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.create();
    });
  }

  render(vms) {
    const sorted = [...vms].sort((a, b) => a.name.localeCompare(b.name));
    const rows = sorted.map((vm) => this.row(vm));
    replaceRows($("vms-table").tBodies[0], rows);
    $("vms-empty").hidden = rows.length > 0;
    $("vms-project").textContent = `in ${this.app.project()}`;
  }

  row(vm) {
    const st = vm.status || {};
    const spec = vm.spec || {};
    const deleting = Boolean(vm.deletedAt) || st.phase === "deleting";
    const name = vm.name;
    const act = (action, label, enabled, cls) =>
      h("button", {
        type: "button", class: cls || "secondary small", disabled: !enabled,
        dataset: { action, focus: `${action}:${name}` }, "aria-label": `${label} ${name}`,
        onclick: () => this.action(name, action),
      }, label);
    const confirming = this.confirming === name;
    const del = h("button", {
      type: "button", class: confirming ? "danger small confirm" : "danger small", disabled: deleting,
      dataset: { action: "delete", focus: `delete:${name}` },
      "aria-label": confirming ? `Confirm: delete ${name}` : `Delete ${name}`,
      onclick: () => this.remove(name),
    }, confirming ? "Confirm delete" : "Delete");
    return h("tr", { dataset: { vm: name }, class: this.selected === name ? "selected" : "" },
      h("th", { scope: "row" }, h("button", {
        type: "button", class: "link", dataset: { action: "open", focus: `open:${name}` },
        "aria-label": `Show details of ${name}`, onclick: () => this.app.select(name),
      }, name)),
      h("td", { class: "phase" }, badge(st.phase || "unknown", phaseTone(st.phase)),
        st.lastError ? [" ", h("span", { class: "badge bad", title: st.lastError }, "error")] : null),
      h("td", null, st.host || h("span", { class: "muted" }, "—")),
      h("td", { class: "num" }, String(spec.vcpus || 0)),
      h("td", { class: "num" }, formatBytes(spec.memory || 0)),
      h("td", { class: "num" }, h("time", { datetime: vm.createdAt }, formatAge(vm.createdAt))),
      h("td", { class: "actions" },
        act("start", "Start", !deleting && spec.power === "stopped"),
        act("stop", "Stop", !deleting && spec.power !== "stopped"),
        act("restart", "Restart", !deleting),
        del));
  }

  async action(name, action) {
    try {
      await this.app.api().vmAction(this.app.project(), name, action);
      this.app.announce(`${action} asked for ${name}`);
    } catch (err) {
      this.app.failed(err);
    }
    this.app.refresh();
  }

  // remove deletes on the second click within CONFIRM_MS.
  async remove(name) {
    clearTimeout(this.confirmTimer);
    if (this.confirming !== name) {
      this.confirming = name;
      this.confirmTimer = setTimeout(() => { this.confirming = ""; this.app.refresh(); }, CONFIRM_MS);
      this.app.refresh();
      return;
    }
    this.confirming = "";
    try {
      await this.app.api().deleteVM(this.app.project(), name);
      this.app.announce(`deleting ${name}`);
    } catch (err) {
      this.app.failed(err);
    }
    this.app.refresh();
  }

  clearErrors() {
    for (const [, id] of FIELDS) {
      $(id).removeAttribute("aria-invalid");
      $(`${id}-error`).textContent = "";
    }
    $("create-error").textContent = "";
  }

  fieldError(id, message) {
    $(id).setAttribute("aria-invalid", "true");
    $(`${id}-error`).textContent = message;
  }

  // request reads the form; sizes are parsed here (the API takes bytes),
  // everything else is left to the API to judge.
  request() {
    const name = $("vm-name").value.trim();
    const vcpus = Number($("vm-vcpus").value);
    let bad = "";
    let memory = 0;
    try {
      memory = parseBytes($("vm-memory").value);
    } catch (err) {
      this.fieldError("vm-memory", err.message);
      bad = bad || "vm-memory";
    }
    const disks = [];
    const diskText = $("vm-disk").value.trim();
    if (diskText !== "") {
      try {
        disks.push({ size: parseBytes(diskText) });
      } catch (err) {
        this.fieldError("vm-disk", err.message);
        bad = bad || "vm-disk";
      }
    }
    if (!Number.isInteger(vcpus)) {
      this.fieldError("vm-vcpus", "must be a whole number");
      bad = bad || "vm-vcpus";
    }
    if (bad) {
      $("create-error").textContent = "Fix the marked fields.";
      $(bad).focus();
      return null;
    }
    const spec = { vcpus, memory };
    if (disks.length) spec.disks = disks;
    return { name, spec };
  }

  async create() {
    this.clearErrors();
    const req = this.request();
    if (!req) return;
    const button = $("vm-create");
    button.disabled = true;
    try {
      await this.app.api().createVM(this.app.project(), req);
      this.app.announce(`VM ${req.name} created`);
      $("vm-name").value = "";
      this.app.refresh();
    } catch (err) {
      this.showError(err);
    } finally {
      button.disabled = false;
    }
  }

  showError(err) {
    if (!(err instanceof ApiError)) {
      $("create-error").textContent = String(err.message || err);
      return;
    }
    if (err.status === 401) {
      this.app.failed(err);
      return;
    }
    const match = FIELDS.find(([re]) => err.field && re.test(err.field));
    if (match) {
      this.fieldError(match[1], err.message);
      $("create-error").textContent = `Not created: the server refused ${err.field} (see the field).`;
      $(match[1]).focus();
      return;
    }
    $("create-error").textContent = err.field ? `Not created: ${err.field} — ${err.message}` : `Not created: ${err.message}`;
  }
}
