// dom.js — building elements without innerHTML, so that names and
// messages from the API are always text, never markup.

// h creates an element. attrs: "class", "text", "on<event>" handlers,
// "dataset" (an object) and any other attribute; false, null and undefined
// attributes are left out. children: nodes or strings; null is skipped.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// $ finds one element by id.
export function $(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`dashboard: no element #${id}`);
  return el;
}

// replaceRows swaps the children of tbody for rows, keeping keyboard focus
// on the element with the same data-focus key, so that auto-refresh never
// steals the place of someone tabbing through the table.
export function replaceRows(tbody, rows) {
  const active = document.activeElement;
  const key = active && tbody.contains(active) ? active.dataset.focus : undefined;
  tbody.replaceChildren(...rows);
  if (key) {
    const again = tbody.querySelector(`[data-focus="${CSS.escape(key)}"]`);
    if (again) again.focus();
  }
}

// badge is a small coloured label; tone is ok, busy, warn, bad or "".
export function badge(text, tone) {
  return h("span", { class: tone ? `badge ${tone}` : "badge" }, text);
}
