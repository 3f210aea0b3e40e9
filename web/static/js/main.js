// main.js — the dashboard's shell: sign-in (the bearer token and project
// live in sessionStorage, so they end with the tab), the views behind
// #overview, #hosts, #vms, #migrations, #balancer, #usage and #audit, the
// auto-refresh loop and the events panel.

import { Api, ApiError } from "./api.js";
import { AuditView } from "./audit.js";
import { renderDetail } from "./detail.js";
import { $, h } from "./dom.js";
import { EventsPanel } from "./events.js";
import { formatTime } from "./format.js";
import { HostsView } from "./hosts.js";
import { MigrationsView } from "./migrations.js";
import { renderOverview, renderUtilisation } from "./overview.js";
import { loadPlan } from "./plan.js";
import { UsageView } from "./usage.js";
import { VMActions } from "./vmactions.js";
import { VMsView } from "./vms.js";

const REFRESH_MS = 3000;
const LIVE_MS = 1000; // while a migration runs, its progress is shown this often
const EVENT_REFRESH_MS = 250;
const VIEWS = ["overview", "hosts", "vms", "migrations", "balancer", "usage", "audit"];
const TOKEN_KEY = "vpool.token";
const PROJECT_KEY = "vpool.project";

const state = {
  api: null,
  project: "default",
  view: "overview",
  selected: "",
  timer: 0,
  nextAt: 0,
  loading: false,
  again: false,
  bannerUntil: 0, // an action's error stays up at least until then
  admin: false, // a cluster admin's token (it may list tokens)
};

const ACTION_ERROR_MS = 10000;

const app = {
  api: () => state.api,
  project: () => state.project,
  refresh: () => refreshSoon(0),
  select: (name) => select(name),
  announce: (text) => { $("announce").textContent = text; },
  failed: (err) => {
    state.bannerUntil = Date.now() + ACTION_ERROR_MS;
    failed(err);
  },
  admin: () => state.admin,
};

const vmsView = new VMsView(app);
const hostsView = new HostsView(app);
const vmActions = new VMActions(app);
const migrationsView = new MigrationsView(app);
const usageView = new UsageView(app);
const auditView = new AuditView(app);
const events = new EventsPanel({
  onEvent: () => refreshSoon(EVENT_REFRESH_MS),
  onRefused: (err) => failed(err),
});

// --- sign-in ---

async function signIn(token, project) {
  const api = new Api(token);
  const list = await api.projects();
  const names = (list.items || []).map((p) => p.name).sort();
  if (!names.includes(project)) {
    const seen = names.length ? `this token sees: ${names.join(", ")}` : "this token sees no project";
    throw new ApiError(404, { code: "not_found", field: "project", message: `project "${project}" not found (${seen})` });
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  sessionStorage.setItem(PROJECT_KEY, project);
  state.admin = await api.call("GET", "/tokens").then(() => true, () => false);
  state.api = api;
  state.project = project;
  const sel = $("project-select");
  sel.replaceChildren(...names.map((n) => h("option", { value: n }, n)));
  sel.value = project;
  $("login").hidden = true;
  $("app").hidden = false;
  $("nav").hidden = false;
  $("session").hidden = false;
  showView();
  events.start(api);
}

function signOut(message) {
  events.stop();
  stopRefresh();
  state.api = null;
  select("");
  sessionStorage.removeItem(TOKEN_KEY);
  $("app").hidden = true;
  $("nav").hidden = true;
  $("session").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("login-token").value = "";
  $("login-project").value = state.project;
  $("login-token").focus();
}

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const token = $("login-token").value.trim();
  const project = $("login-project").value.trim() || "default";
  $("login-error").textContent = "";
  if (!token) {
    $("login-token").setAttribute("aria-invalid", "true");
    $("login-error").textContent = "Paste a token first.";
    return;
  }
  $("login-token").removeAttribute("aria-invalid");
  $("login-submit").disabled = true;
  try {
    await signIn(token, project);
  } catch (err) {
    $("login-error").textContent = err.status === 401 ? `The token was refused: ${err.message}` : err.message;
  } finally {
    $("login-submit").disabled = false;
  }
});

$("logout").addEventListener("click", () => signOut("Signed out."));

$("project-select").addEventListener("change", (e) => {
  state.project = e.target.value;
  sessionStorage.setItem(PROJECT_KEY, state.project);
  select("");
  refreshSoon(0);
});

// --- views ---

function showView() {
  const want = window.location.hash.replace(/^#/, "");
  state.view = VIEWS.includes(want) ? want : "overview";
  for (const v of VIEWS) $(`view-${v}`).hidden = v !== state.view;
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.view === state.view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  refreshSoon(0);
}

window.addEventListener("hashchange", showView);

function select(name) {
  const opened = name && name !== state.selected;
  state.selected = name;
  vmsView.selected = name;
  $("vm-detail").hidden = !name;
  if (!name) return;
  if (opened) {
    $("detail-title").textContent = `VM ${name}`;
    $("detail-title").focus();
  }
  refreshSoon(0);
}

$("detail-close").addEventListener("click", () => {
  const name = state.selected;
  select("");
  refreshSoon(0);
  const back = document.querySelector(`[data-focus="open:${CSS.escape(name)}"]`);
  if (back) back.focus();
});

// --- refresh loop ---

// refreshSoon schedules a refresh in ms unless one is due sooner, so a
// burst of events cannot keep pushing the next refresh away.
function refreshSoon(ms) {
  const at = Date.now() + ms;
  if (state.timer && at >= state.nextAt) return;
  clearTimeout(state.timer);
  state.nextAt = at;
  state.timer = setTimeout(() => {
    state.timer = 0;
    refresh();
  }, ms);
}

function stopRefresh() {
  clearTimeout(state.timer);
  state.timer = 0;
}

async function refresh() {
  if (!state.api) return;
  if (state.loading) {
    state.again = true;
    return;
  }
  if (document.hidden) {
    refreshSoon(REFRESH_MS);
    return;
  }
  state.loading = true;
  try {
    await load(state.api, state.project);
    if (Date.now() > state.bannerUntil) $("banner").hidden = true;
    setConn(`updated ${formatTime(new Date())}`, "live");
  } catch (err) {
    failed(err);
  } finally {
    state.loading = false;
  }
  if (!state.api) return;
  const live = state.view === "migrations" && migrationsView.running;
  refreshSoon(state.again ? 0 : live ? LIVE_MS : REFRESH_MS);
  state.again = false;
}

async function load(api, project) {
  switch (state.view) {
    case "overview": {
      const [cluster, hosts, vms, history] = await Promise.all([api.cluster(), api.hosts(), api.vms(project),
        state.admin ? api.history(360).catch(() => null) : Promise.resolve(null)]);
      renderOverview(cluster, hosts.items || [], vms.items || [], project);
      renderUtilisation(history);
      break;
    }
    case "hosts":
      await hostsView.load(api);
      break;
    case "vms":
      await loadVMs(api, project);
      break;
    case "migrations":
      await migrationsView.load(api, project);
      break;
    case "balancer":
      await loadPlan(api);
      break;
    case "usage":
      await usageView.load(api, project);
      break;
    case "audit":
      await auditView.load(api, project);
      break;
  }
}

async function loadVMs(api, project) {
  const vms = await api.vms(project);
  const items = vms.items || [];
  vmsView.render(items);
  if (!state.selected) return;
  const vm = items.find((v) => v.name === state.selected);
  if (!vm) {
    app.announce(`VM ${state.selected} is gone`);
    select("");
    return;
  }
  // the list carries each VM's record as stored; the placement's
  // explanation is kept apart and comes with GET vm alone
  let full = vm;
  try {
    full = await api.vm(vm.project || project, vm.name);
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) throw err;
  }
  renderDetail(full);
  const hosts = await api.hosts();
  await vmActions.show(vm, hosts.items || []);
}

function setConn(text, tone) {
  const el = $("conn");
  el.textContent = text;
  el.className = tone ? `conn ${tone}` : "conn";
}

function failed(err) {
  if (err instanceof ApiError && err.status === 401) {
    signOut(`The server refused the token: ${err.message}`);
    return;
  }
  const b = $("banner");
  b.textContent = err instanceof ApiError && err.code ? `${err.message} (${err.code})` : String(err.message || err);
  b.hidden = false;
  setConn("error", "down");
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden) refreshSoon(0);
});

// --- start ---

const saved = sessionStorage.getItem(TOKEN_KEY);
state.project = sessionStorage.getItem(PROJECT_KEY) || "default";
$("login-project").value = state.project;
if (saved) {
  signIn(saved, state.project).catch((err) => signOut(err.message));
} else {
  signOut("");
}
