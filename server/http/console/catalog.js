// The catalog: every model (catalog and repository), sortable by any column and filtered
// by text, family and state (weights cached, exported, served).

import { get } from "./api.js";
import { clear, errorBox, fmtFixed, fmtInt, fmtPercent, h, link, route } from "./dom.js";

const COLUMNS = [
  { key: "name", title: "Model" },
  { key: "family", title: "Family" },
  { key: "size_mb", title: "Size (MB)", num: true, show: (m) => fmtFixed(m.size_mb, 0) },
  { key: "parameters", title: "Parameters", num: true, show: (m) => fmtInt(m.parameters) },
  { key: "depth", title: "Depth", num: true, show: (m) => fmtInt(m.depth) },
  { key: "top1_accuracy", title: "Top-1", num: true, show: (m) => fmtPercent(m.top1_accuracy) },
  { key: "top5_accuracy", title: "Top-5", num: true, show: (m) => fmtPercent(m.top5_accuracy) },
  { key: "input", title: "Input", num: true, value: (m) => m.input_shape[0] || 0,
    show: (m) => m.input_shape.map((d) => (d < 0 ? "?" : d)).join("×") },
  { key: "preprocessing", title: "Preprocessing" },
  { key: "weights", title: "Weights cached", value: (m) => (m.weights ? 1 : 0),
    show: (m) => (m.weights === null ? "—" : m.weights ? "yes" : "no") },
  { key: "exported", title: "Exported", value: (m) => m.versions.length,
    show: (m) => (m.versions.length ? `v${m.versions.join(", v")}` : "no") },
  { key: "served", title: "Served", value: (m) => m.loaded_versions.length,
    show: (m) => (m.loaded_versions.length ? `v${m.loaded_versions.join(", v")}` : "no") },
];

function value(column, model) {
  return column.value ? column.value(model) : model[column.key];
}

function blank(x) {
  return x === null || x === undefined;
}

// Blanks (a fine-tune has no catalog figures) last, whichever way round.
function compare(a, b, descending) {
  if (blank(a) || blank(b)) return blank(a) - blank(b);
  const order = typeof a === "number" && typeof b === "number"
    ? a - b : String(a).localeCompare(String(b), "en", { numeric: true });
  return descending ? -order : order;
}

export function render(main) {
  const state = { sort: "name", descending: false, text: "", family: "", only: "" };
  const status = h("p", { class: "muted" }, "loading the catalog…");
  const body = h("tbody");
  const familySelect = h("select", { "aria-label": "family", id: "catalog-family" },
    h("option", { value: "" }, "all families"));
  const headRow = h("tr");
  const table = h("table", { class: "data", id: "catalog-table" }, h("thead", {}, headRow), body);
  let models = [];

  function draw() {
    const text = state.text.toLowerCase();
    const shown = models
      .filter((m) => !text || m.name.toLowerCase().includes(text) || (m.family || "").includes(text))
      .filter((m) => !state.family || m.family === state.family)
      .filter((m) => !state.only || value(COLUMNS.find((c) => c.key === state.only), m))
      .sort((a, b) => {
        const column = COLUMNS.find((c) => c.key === state.sort);
        return compare(value(column, a), value(column, b), state.descending);
      });
    clear(headRow);
    for (const column of COLUMNS) {
      const sorted = state.sort === column.key;
      const arrow = sorted ? (state.descending ? " ▼" : " ▲") : "";
      headRow.append(
        h("th", { class: column.num ? "num" : null, "data-key": column.key,
                  "aria-sort": sorted ? (state.descending ? "descending" : "ascending") : "none" },
          h("button", { type: "button", class: "sort", onclick: () => {
            state.descending = state.sort === column.key ? !state.descending : !!column.num;
            state.sort = column.key;
            draw();
          } }, column.title + arrow)),
      );
    }
    clear(body);
    for (const m of shown) {
      body.append(
        h("tr", { "data-name": m.name },
          COLUMNS.map((column) => {
            const text = column.show ? column.show(m) : m[column.key] ?? "—";
            const cell = h("td", { class: column.num ? "num" : null, "data-key": column.key });
            if (column.key === "name" && m.versions.length) cell.append(link(route("models", m.name), text));
            else cell.append(text);
            return cell;
          })),
      );
    }
    status.textContent = `${shown.length} of ${models.length} models`;
  }

  const filters = h("div", { class: "filters" },
    h("input", { type: "search", placeholder: "filter by name", "aria-label": "filter by name",
                 id: "catalog-filter", oninput: (e) => { state.text = e.target.value; draw(); } }),
    familySelect,
    h("select", { "aria-label": "show only", id: "catalog-only",
                  onchange: (e) => { state.only = e.target.value; draw(); } },
      h("option", { value: "" }, "all models"),
      h("option", { value: "weights" }, "weights cached"),
      h("option", { value: "exported" }, "exported"),
      h("option", { value: "served" }, "served")),
    status);
  familySelect.addEventListener("change", (e) => { state.family = e.target.value; draw(); });
  main.append(h("h1", {}, "Catalog"), filters, h("div", { class: "scroll" }, table));

  Promise.all([get("/v1/catalog"), get("/v1/weights")])
    .then(([catalog, weights]) => {
      models = catalog.models.map((m) => {
        const cached = weights.models[m.catalog_model || m.name];
        return { ...m, weights: cached ? cached.top || cached.notop : null };
      });
      const families = [...new Set(models.map((m) => m.family).filter(Boolean))].sort();
      familySelect.append(...families.map((f) => h("option", { value: f }, f)));
      draw();
    })
    .catch((error) => main.append(errorBox(error)));
}
