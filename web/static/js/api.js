// api.js — the vpool REST API (/api/v1) from the browser: fetch with the
// bearer token, errors as ApiError carrying the API's code and field, and
// the NDJSON event stream read through a ReadableStream.

const PREFIX = "/api/v1";

// ApiError is a non-2xx answer (status > 0) or an unreachable server
// (status 0). code and field come from the API's error body.
export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.code = (body && body.code) || "";
    this.field = (body && body.field) || "";
  }
}

function isAbort(err) {
  return err && err.name === "AbortError";
}

export class Api {
  constructor(token) {
    this.token = token;
  }

  headers(extra) {
    return Object.assign({ Authorization: `Bearer ${this.token}` }, extra || {});
  }

  // call does one request and returns the decoded JSON body (null for 204).
  async call(method, path, { query, body, signal } = {}) {
    const url = new URL(PREFIX + path, window.location.origin);
    for (const [k, v] of Object.entries(query || {})) {
      if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, String(v));
    }
    const init = { method, headers: this.headers({ Accept: "application/json" }), cache: "no-store", signal };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(url, init);
    } catch (err) {
      if (isAbort(err)) throw err;
      throw new ApiError(0, { code: "unreachable", message: `cannot reach the server (${err.message})` });
    }
    const text = await resp.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!resp.ok) {
      const errBody = data && typeof data === "object" ? data : { message: text.trim() || resp.statusText };
      throw new ApiError(resp.status, errBody);
    }
    return data;
  }

  // pages follows a paged list (limit, continue) and returns the whole
  // list in the first page's shape, items of every page concatenated.
  async pages(path, query) {
    const q = Object.assign({ limit: 500 }, query || {});
    const first = await this.call("GET", path, { query: q });
    let page = first;
    while (page && page.continue) {
      page = await this.call("GET", path, { query: Object.assign({}, q, { continue: page.continue }) });
      first.items = first.items.concat(page.items || []);
    }
    if (first) delete first.continue;
    return first;
  }

  cluster() { return this.call("GET", "/cluster"); }
  hosts() { return this.pages("/hosts"); }
  projects() { return this.call("GET", "/projects"); }
  vms(project) { return this.pages("/vms", { project }); }
  vm(project, name) { return this.call("GET", `/vms/${encodeURIComponent(name)}`, { query: { project } }); }
  createVM(project, req) { return this.call("POST", "/vms", { query: { project }, body: req }); }
  deleteVM(project, name) { return this.call("DELETE", `/vms/${encodeURIComponent(name)}`, { query: { project } }); }
  vmAction(project, name, action) {
    return this.call("POST", `/vms/${encodeURIComponent(name)}/${action}`, { query: { project } });
  }
  events(limit) { return this.call("GET", "/events", { query: { limit } }); }

  // hosts and their actions
  history(points) { return this.call("GET", "/cluster/history", { query: { points } }); }
  patchHost(name, body) { return this.call("PATCH", `/hosts/${encodeURIComponent(name)}`, { body }); }
  drain(name) { return this.call("POST", `/hosts/${encodeURIComponent(name)}/drain`); }
  undrain(name) { return this.call("POST", `/hosts/${encodeURIComponent(name)}/undrain`); }

  // VM operations
  migrations(project, all) {
    return this.call("GET", "/migrations", { query: all ? { "all-projects": "true" } : { project } });
  }
  migrate(project, vm, to) { return this.call("POST", "/migrations", { query: { project }, body: to ? { vm, to } : { vm } }); }
  cancelMigration(id) { return this.call("POST", `/migrations/${encodeURIComponent(id)}/cancel`); }
  snapshots(project, vm) { return this.call("GET", `/vms/${encodeURIComponent(vm)}/snapshots`, { query: { project } }); }
  snapshot(project, vm, name) {
    return this.call("POST", `/vms/${encodeURIComponent(vm)}/snapshots`, { query: { project }, body: { name } });
  }
  resize(project, vm, body) { return this.call("PATCH", `/vms/${encodeURIComponent(vm)}`, { query: { project }, body }); }

  // the balancer, usage and the audit trail
  plan() { return this.call("GET", "/balance/plan"); }
  usage(query) { return this.call("GET", "/usage", { query }); }
  audit(query) { return this.call("GET", "/audit", { query }); }

  // followEvents streams events with an ID above since until signal
  // aborts: onEvent(event) for each, onState("live" | "reconnecting")
  // as the connection comes and goes. A broken stream reconnects with
  // backoff from the last ID seen, so nothing is repeated or lost. It
  // rejects with an ApiError when the server refuses (e.g. 401).
  async followEvents(since, { onEvent, onState, signal }) {
    const cursor = { last: since };
    let backoff = 500;
    while (!signal.aborted) {
      try {
        const url = new URL(PREFIX + "/events", window.location.origin);
        url.searchParams.set("follow", "true");
        url.searchParams.set("since", String(cursor.last));
        const resp = await fetch(url, {
          headers: this.headers({ Accept: "application/x-ndjson" }), cache: "no-store", signal,
        });
        if (!resp.ok) {
          let body = null;
          try { body = await resp.json(); } catch { body = null; }
          const err = new ApiError(resp.status, body);
          if (resp.status >= 400 && resp.status < 500) throw err;
          throw Object.assign(err, { retry: true });
        }
        onState("live");
        backoff = 500;
        await readLines(resp.body, cursor, onEvent);
      } catch (err) {
        if (isAbort(err) || signal.aborted) return;
        if (err instanceof ApiError && !err.retry) throw err;
      }
      if (signal.aborted) return;
      onState("reconnecting");
      await sleep(backoff, signal);
      backoff = Math.min(backoff * 2, 8000);
    }
  }
}

// readLines reads NDJSON from a ReadableStream until it ends, calling
// onEvent for each event newer than cursor.last and moving cursor.last on
// (so a reconnect after a break resumes where this one stopped).
async function readLines(stream, cursor, onEvent) {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        let ev;
        try {
          ev = JSON.parse(line);
        } catch {
          continue; // a torn line cannot happen on a healthy stream; skip it
        }
        if (ev.id && ev.id <= cursor.last) continue;
        if (ev.id) cursor.last = ev.id;
        onEvent(ev);
      }
    }
  } finally {
    reader.releaseLock();
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });
}
