// Models served: per model its versions with their load state and labels (stable,
// candidate, any other), the inputs and outputs, the execution provider, and request counts
// and mean latencies from the statistics; buttons to promote a version to a label and to roll
// a label back (with the token, as cancelling a job). One model's page (#/models/NAME, or
// #/models/NAME/V for a version) adds the test report of the version a request without a
// version gets, or of version V. Refreshed every few seconds; metadata is asked only of loaded
// versions, so that looking at the page never loads a model.

import { ApiError, get, post, postWithToken } from "./api.js";
import { append, clear, errorBox, fmtInt, fmtMs, fmtTime, h, link, route } from "./dom.js";
import { evaluationReport } from "./report.js";

const REFRESH_MS = 5000;

function tensors(list) {
  return h("ul", { class: "tensors" },
    (list || []).map((t) => h("li", {}, h("code", {}, t.name), ` ${t.datatype} [${t.shape.join(", ")}]`)));
}

function labelTags(labels, version) {
  return Object.entries(labels || {})
    .filter(([, v]) => v === version)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([label]) => h("span", { class: `tag label-${label}`, "data-label": label }, label));
}

// The promote/rollback controls of one model: kept across refreshes (the label typed, the
// last answer), moved into each new card.
function labelControls(model, changed) {
  const input = h("input", { class: "label-input", value: "stable", size: 10, "aria-label": "label",
                             maxlength: 32, spellcheck: "false" });
  const note = h("span", { class: "muted label-note", role: "status" });
  const rollback = h("button", { type: "button", class: "rollback" }, "Roll back");
  const box = h("div", { class: "actions label-actions" },
    h("label", {}, "Label ", input), rollback, note);
  const label = () => input.value.trim() || "stable";
  async function act(what, path, body, button) {
    button.disabled = true;
    note.textContent = `${what}…`;
    try {
      const state = await postWithToken(path, body);
      const now = state.labels[body.label];
      note.textContent = `${body.label} is version ${now}; a request without a version gets ` +
        `version ${state.default_version}`;
      changed();
    } catch (error) {
      note.textContent = error instanceof ApiError ? error.message : String(error);
    } finally {
      button.disabled = false;
    }
  }
  const base = `/v1/models/${encodeURIComponent(model)}`;
  rollback.addEventListener("click", () =>
    act("rolling back", `${base}/rollback`, { label: label() }, rollback));
  const promote = (version, button) =>
    act("promoting", `${base}/promote`, { version, label: label() }, button);
  return { box, promote, label };
}

function card(model, index, stats, metadata, controls) {
  const entries = index.filter((e) => e.name === model.name);
  const rows = model.versions.map((version) => {
    const entry = entries.find((e) => e.version === String(version));
    const s = stats.find((x) => x.name === model.name && x.version === String(version));
    const success = s ? s.inference_stats.success : { count: 0, ns: 0 };
    const fail = s ? s.inference_stats.fail : { count: 0, ns: 0 };
    const queue = s ? s.inference_stats.queue : { count: 0, ns: 0 };
    const compute = s ? s.inference_stats.compute_infer : { count: 0, ns: 0 };
    const labelled = (model.labels || {})[controls.label()] === version;
    const promote = h("button", { type: "button", class: "promote", disabled: labelled,
                                  title: `point the label at v${version}` }, "Promote");
    promote.addEventListener("click", () => controls.promote(version, promote));
    return h("tr", { "data-version": version },
      h("td", {}, link(route("models", model.name, version), `v${version}`)),
      h("td", { class: "labels", "data-key": "labels" }, labelTags(model.labels, version)),
      h("td", {}, entry ? entry.state : "—", entry && entry.reason ? h("div", { class: "muted" }, entry.reason) : null),
      h("td", { class: "num", "data-key": "requests" }, fmtInt(s ? s.inference_count : 0)),
      h("td", { class: "num" }, fmtInt(s ? s.execution_count : 0)),
      h("td", { class: "num" }, fmtInt(fail.count)),
      h("td", { class: "num", "data-key": "latency" }, fmtMs(success.ns, success.count)),
      h("td", { class: "num" }, fmtMs(queue.ns, queue.count)),
      h("td", { class: "num" }, fmtMs(compute.ns, compute.count)),
      h("td", {}, s && s.last_inference ? fmtTime(new Date(s.last_inference).toISOString()) : "—"),
      h("td", {}, promote));
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
          ["Version", "Labels", "State", "Requests", "Batches", "Failures", "Mean latency",
           "Mean queue", "Mean compute", "Last request", ""]
            .map((t, i) => h("th", { class: i >= 3 && i < 9 ? "num" : null }, t)))),
        h("tbody", {}, rows))),
    controls.box);
}

export function render(main, only, version) {
  const heading = h("h1", { class: "wrap" }, only ? `Model ${only}${version ? ` v${version}` : ""}` : "Models served");
  const list = h("div", { class: "cards" }, h("p", { class: "muted" }, "loading…"));
  const reportBox = h("div", { id: "model-report" });
  append(main, [heading, only ? h("p", {}, link(route("models"), "← all models")) : null, list,
                only ? reportBox : null]);
  const metadata = new Map();
  const controls = new Map();
  let timer = null;
  let stopped = false;
  let shownReport = null; // the version whose report is drawn, so a refresh redraws only a change

  async function drawReport() {
    const query = version ? `?version=${encodeURIComponent(version)}` : "";
    const answer = await get(`/v1/models/${encodeURIComponent(only)}${query}`);
    if (stopped || !answer.versions.length) return;
    const key = `${answer.evaluated_version}:${answer.evaluation ? answer.evaluation.split : ""}`;
    if (key === shownReport) return;
    shownReport = key;
    if (answer.error) { // no default version to report on (a label at a deleted version)
      clear(reportBox).append(h("p", { class: "error", id: "report" }, answer.error));
      return;
    }
    const which = `v${answer.evaluated_version}${version ? "" : " (served by default)"}`;
    clear(reportBox).append(answer.evaluation
      ? evaluationReport(answer.evaluation, `Test report of ${which}`)
      : h("p", { class: "muted", id: "report" }, `${which} has no test report (it was not made by a fine-tune job)`));
    reportBox.dataset.version = String(answer.evaluated_version);
  }

  let refreshing = false;
  let again = false; // a change came while a refresh was in flight: refresh once more at once

  function changed() {
    refresh();
  }

  async function refresh() {
    if (refreshing) {
      again = true;
      return;
    }
    refreshing = true;
    clearTimeout(timer);
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
      for (const m of models) {
        if (!controls.has(m.name)) controls.set(m.name, labelControls(m.name, changed));
        list.append(card(m, index, stats.model_stats, metadata.get(m.name), controls.get(m.name)));
      }
      if (only) await drawReport();
    } catch (error) {
      if (!stopped) clear(list).append(errorBox(error));
    }
    refreshing = false;
    if (!stopped) timer = setTimeout(refresh, again ? 0 : REFRESH_MS);
    again = false;
  }

  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
