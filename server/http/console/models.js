// Models served: per model its versions with their load state, the inputs and outputs,
// the execution provider, and request counts and mean latencies from the statistics.
// Refreshed every few seconds; metadata is asked only of loaded versions, so that looking
// at the page never loads a model.

import { get, post } from "./api.js";
import { append, clear, errorBox, fmtInt, fmtMs, fmtTime, h, link, route } from "./dom.js";

const REFRESH_MS = 5000;

function tensors(list) {
  return h("ul", { class: "tensors" },
    (list || []).map((t) => h("li", {}, h("code", {}, t.name), ` ${t.datatype} [${t.shape.join(", ")}]`)));
}

function card(model, index, stats, metadata) {
  const entries = index.filter((e) => e.name === model.name);
  const rows = model.versions.map((version) => {
    const entry = entries.find((e) => e.version === String(version));
    const s = stats.find((x) => x.name === model.name && x.version === String(version));
    const success = s ? s.inference_stats.success : { count: 0, ns: 0 };
    const fail = s ? s.inference_stats.fail : { count: 0, ns: 0 };
    const queue = s ? s.inference_stats.queue : { count: 0, ns: 0 };
    const compute = s ? s.inference_stats.compute_infer : { count: 0, ns: 0 };
    return h("tr", { "data-version": version },
      h("td", {}, `v${version}`),
      h("td", {}, entry ? entry.state : "—", entry && entry.reason ? h("div", { class: "muted" }, entry.reason) : null),
      h("td", { class: "num", "data-key": "requests" }, fmtInt(s ? s.inference_count : 0)),
      h("td", { class: "num" }, fmtInt(s ? s.execution_count : 0)),
      h("td", { class: "num" }, fmtInt(fail.count)),
      h("td", { class: "num", "data-key": "latency" }, fmtMs(success.ns, success.count)),
      h("td", { class: "num" }, fmtMs(queue.ns, queue.count)),
      h("td", { class: "num" }, fmtMs(compute.ns, compute.count)),
      h("td", {}, s && s.last_inference ? fmtTime(new Date(s.last_inference).toISOString()) : "—"));
  });
  const facts = [
    ["catalog model", model.catalog_model || "—"],
    ["provider", model.execution_provider || "not loaded"],
    ["classes", fmtInt(model.num_classes)],
    ["preprocessing", model.preprocessing || "—"],
  ];
  return h("section", { class: "card", "data-model": model.name },
    h("h2", {}, link(route("models", model.name), model.name)),
    h("dl", { class: "facts" }, facts.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v)))),
    metadata
      ? h("div", { class: "io" },
          h("div", {}, h("h3", {}, "Inputs"), tensors(metadata.inputs)),
          h("div", {}, h("h3", {}, "Outputs"), tensors(metadata.outputs)))
      : h("p", { class: "muted" }, `input ${model.input_shape.join("×")}; loads on its first request`),
    h("div", { class: "scroll" },
      h("table", { class: "data" },
        h("thead", {}, h("tr", {},
          ["Version", "State", "Requests", "Batches", "Failures", "Mean latency", "Mean queue",
           "Mean compute", "Last request"].map((t, i) => h("th", { class: i >= 2 && i < 8 ? "num" : null }, t)))),
        h("tbody", {}, rows))));
}

export function render(main, only) {
  const heading = h("h1", {}, only ? `Model ${only}` : "Models served");
  const list = h("div", { class: "cards" }, h("p", { class: "muted" }, "loading…"));
  append(main, [heading, only ? h("p", {}, link(route("models"), "← all models")) : null, list]);
  const metadata = new Map();
  let timer = null;
  let stopped = false;

  async function refresh() {
    try {
      const [served, index, stats] = await Promise.all([
        get("/v1/models"),
        post("/v2/repository/index", {}),
        get("/v2/models/stats"),
      ]);
      const models = served.models.filter((m) => !only || m.name === only);
      for (const m of models) {
        const ready = index.some((e) => e.name === m.name && e.state === "READY");
        if (ready && !metadata.has(m.name)) {
          metadata.set(m.name, await get(`/v2/models/${encodeURIComponent(m.name)}`));
        }
      }
      if (stopped) return;
      clear(list);
      if (!models.length) {
        list.append(h("p", { class: "muted" }, only ? `no served model named ${only}` : "no models in the repository"));
      }
      for (const m of models) list.append(card(m, index, stats.model_stats, metadata.get(m.name)));
    } catch (error) {
      if (!stopped) clear(list).append(errorBox(error));
    }
    if (!stopped) timer = setTimeout(refresh, REFRESH_MS);
  }

  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
