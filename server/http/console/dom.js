// DOM building without markup strings: every value from data goes in as a text node or an
// attribute set through the DOM, so a model name or a log line can never become HTML.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "style") {
      Object.assign(el.style, value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

export function link(href, text) {
  return h("a", { href }, text);
}

// A route inside the console: each part is encoded, so a name cannot change the route.
export function route(...parts) {
  return "#/" + parts.map((p) => encodeURIComponent(String(p))).join("/");
}

export function errorBox(error) {
  return h("p", { class: "error", role: "alert" }, String(error && error.message ? error.message : error));
}

const DASH = "—";

export function fmtInt(n) {
  return n === null || n === undefined ? DASH : Number(n).toLocaleString("en-US");
}

export function fmtFixed(n, digits = 1) {
  return n === null || n === undefined ? DASH : Number(n).toFixed(digits);
}

export function fmtPercent(x, digits = 1) {
  return x === null || x === undefined ? DASH : (100 * x).toFixed(digits) + " %";
}

export function fmtSeconds(s) {
  if (s === null || s === undefined || !isFinite(s)) return DASH;
  s = Math.max(0, Math.round(s));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export function fmtTime(iso) {
  if (!iso) return DASH;
  const t = new Date(iso);
  if (isNaN(t)) return DASH;
  const two = (n) => String(n).padStart(2, "0");
  return `${t.getFullYear()}-${two(t.getMonth() + 1)}-${two(t.getDate())} ` +
    `${two(t.getHours())}:${two(t.getMinutes())}:${two(t.getSeconds())}`;
}

export function fmtMs(ns, count) {
  return count ? (ns / count / 1e6).toFixed(2) + " ms" : DASH;
}

export function badge(state) {
  return h("span", { class: `badge state-${String(state).toLowerCase()}` }, state);
}

export function progressBar(fraction, label) {
  const pct = Math.max(0, Math.min(1, fraction || 0)) * 100;
  return h(
    "div",
    { class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
      "aria-valuenow": Math.round(pct), title: label || `${pct.toFixed(0)} %` },
    h("div", { class: "progress-fill", style: { width: `${pct}%` } }),
    h("span", { class: "progress-label" }, label || `${pct.toFixed(0)} %`),
  );
}
