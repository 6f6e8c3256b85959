// Classify: drop an image (or choose one), pick a served model, see the top five.

import { get, post } from "./api.js";
import { clear, errorBox, fmtPercent, h } from "./dom.js";

export function render(main) {
  const select = h("select", { id: "classify-model", "aria-label": "model" });
  const input = h("input", { type: "file", id: "classify-file", accept: "image/*" });
  const preview = h("img", { class: "preview", alt: "the image to classify", hidden: true });
  const hint = h("span", {}, "Drop an image here, or ", h("label", { for: "classify-file", class: "button" }, "choose a file"));
  const drop = h("div", { class: "drop", id: "classify-drop", tabindex: 0 }, hint, input, preview);
  const result = h("div", { id: "classify-result" });
  let file = null;
  let url = null;

  async function classify() {
    if (!file || !select.value) return;
    clear(result).append(h("p", { class: "muted" }, "classifying…"));
    try {
      const answer = await post(`/v1/models/${encodeURIComponent(select.value)}/classify?top_k=5`, file);
      const rows = answer.results[0] || [];
      clear(result).append(
        h("p", {}, `${answer.model} v${answer.version}`),
        h("table", { class: "data top5" },
          h("thead", {}, h("tr", {}, h("th", { class: "num" }, "#"), h("th", {}, "Label"), h("th", {}, "Score"))),
          h("tbody", {}, rows.map((p, i) =>
            h("tr", { "data-index": p.index },
              h("td", { class: "num" }, i + 1),
              h("td", { class: "label" }, p.label),
              h("td", { class: "score" },
                h("div", { class: "bar", style: { width: `${(100 * p.score).toFixed(1)}%` } }),
                h("span", {}, fmtPercent(p.score, 2))))))));
    } catch (error) {
      clear(result).append(errorBox(error));
    }
  }

  function take(chosen) {
    if (!chosen) return;
    file = chosen;
    if (url) URL.revokeObjectURL(url);
    url = URL.createObjectURL(file);
    preview.src = url;
    preview.hidden = false;
    classify();
  }

  input.addEventListener("change", () => take(input.files[0]));
  select.addEventListener("change", classify);
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    take(e.dataTransfer.files[0]);
  });

  main.append(
    h("h1", {}, "Classify"),
    h("div", { class: "filters" }, h("label", {}, "Model ", select)),
    h("div", { class: "classify" }, drop, result));

  get("/v1/models")
    .then((answer) => {
      const models = answer.models;
      if (!models.length) select.append(h("option", { value: "" }, "no served models"));
      for (const m of models) {
        select.append(h("option", { value: m.name }, `${m.name} (${m.num_classes ?? "?"} classes)`));
      }
      const loaded = models.find((m) => m.loaded_versions.length);
      if (loaded) select.value = loaded.name;
    })
    .catch((error) => main.append(errorBox(error)));

  return () => {
    if (url) URL.revokeObjectURL(url);
  };
}
