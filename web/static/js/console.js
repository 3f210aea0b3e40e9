// console.js — a VM's serial console in the browser: xterm.js (vendored,
// web/static/vendor/xterm) over the API's console websocket. The page is
// console.html#PROJECT/VM, framed by the dashboard; the bearer token comes
// from the tab's sessionStorage and travels as a websocket subprotocol
// ("vpool.bearer." + base64url): a browser's WebSocket cannot send an
// Authorization header, and a token in the URL would be logged.

import { Terminal } from "../vendor/xterm/xterm.mjs";

const status = document.getElementById("console-status");
const [project, vm] = window.location.hash.slice(1).split("/").map(decodeURIComponent);
const token = sessionStorage.getItem("vpool.token") || "";

function setStatus(text, tone) {
  status.textContent = text;
  status.className = tone ? `status ${tone}` : "status";
}

function base64url(s) {
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

const term = new Terminal({ cursorBlink: true, rows: 20, cols: 100, scrollback: 2000 });
term.open(document.getElementById("term"));

const proto = window.location.protocol === "https:" ? "wss:" : "ws:";
const url = `${proto}//${window.location.host}/api/v1/vms/${encodeURIComponent(vm || "")}/console?project=${encodeURIComponent(project || "")}`;
const encoder = new TextEncoder();
let ws = null;

if (!vm || !token) {
  setStatus("no VM or no token: open the console from the dashboard", "down");
} else {
  ws = new WebSocket(url, ["vpool.console", "vpool.bearer." + base64url(token)]);
  ws.binaryType = "arraybuffer";
  ws.addEventListener("open", () => {
    setStatus(`connected to ${project}/${vm}`, "live");
    term.focus();
  });
  ws.addEventListener("message", (e) => {
    term.write(typeof e.data === "string" ? e.data : new Uint8Array(e.data));
  });
  ws.addEventListener("close", (e) => {
    setStatus(e.reason ? `closed: ${e.reason}` : "closed (the VM must run on a host; see the dashboard)", "down");
  });
  term.onData((d) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(d));
  });
}

// For tests and for people with the developer tools open: the terminal's
// visible text.
window.vpoolConsole = {
  term,
  state: () => (ws ? ws.readyState : -1),
  text: () => {
    const b = term.buffer.active;
    const lines = [];
    for (let i = 0; i < b.length; i++) lines.push(b.getLine(i).translateToString(true));
    return lines.join("\n");
  },
};
