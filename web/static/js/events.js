// events.js — the live events panel: the latest events, then the stream
// (GET /events?follow=true, NDJSON) as it comes, newest on top.

import { $, h } from "./dom.js";
import { formatTime } from "./format.js";

const KEEP = 200;
const RETRY_MS = 3000;

export class EventsPanel {
  // onEvent is called for every streamed event (the app refreshes soon
  // after one); onRefused when the server refuses the stream (401).
  constructor({ onEvent, onRefused }) {
    this.onEvent = onEvent;
    this.onRefused = onRefused;
    this.abort = null;
    this.items = [];
  }

  async start(api) {
    this.stop();
    this.items = [];
    $("events-list").replaceChildren();
    const abort = new AbortController();
    this.abort = abort;
    this.status("connecting", "");
    let since = 0;
    try {
      const list = await api.events(50);
      for (const ev of list.items || []) {
        this.add(ev);
        since = Math.max(since, ev.id || 0);
      }
    } catch (err) {
      if (abort.signal.aborted) return;
      if (err.status === 401 || err.status === 403) {
        this.status("stopped", "down");
        this.onRefused(err);
        return;
      }
      this.status("reconnecting", "down");
      setTimeout(() => { if (!abort.signal.aborted) this.start(api); }, RETRY_MS);
      return;
    }
    try {
      await api.followEvents(since, {
        signal: abort.signal,
        onEvent: (ev) => {
          this.add(ev);
          this.onEvent(ev);
        },
        onState: (s) => this.status(s, s === "live" ? "live" : "down"),
      });
    } catch (err) {
      this.status("stopped", "down");
      this.onRefused(err);
    }
  }

  stop() {
    if (this.abort) this.abort.abort();
    this.abort = null;
    this.status("off", "");
  }

  status(text, tone) {
    const el = $("events-status");
    el.textContent = text;
    el.className = tone ? `conn ${tone}` : "conn";
  }

  add(ev) {
    this.items.unshift(ev);
    const list = $("events-list");
    list.prepend(item(ev));
    while (list.children.length > KEEP) list.lastElementChild.remove();
    this.items.length = Math.min(this.items.length, KEEP);
  }
}

function item(ev) {
  return h("li", { dataset: { kind: ev.kind, object: ev.object } },
    h("div", { class: "ev-head" },
      h("time", { datetime: ev.time }, formatTime(ev.time)),
      h("span", { class: "kind" }, ev.kind)),
    h("div", { class: "obj" }, ev.object),
    h("div", null, ev.message || ""));
}
