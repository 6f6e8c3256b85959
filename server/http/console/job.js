// One job: parameters, progress and ETA, per-epoch loss and accuracy of both phases
// (uPlot, drawn again on each epoch event as it arrives over server-sent events), the
// confusion matrix with class names, the test report of the version made (report.js), the
// log, a cancel button and the model version made with its labels.

import { ApiError, get, postWithToken } from "./api.js";
import {
  append, badge, clear, errorBox, fmtPercent, fmtSeconds, fmtTime, h, link, progressBar, route,
} from "./dom.js";
import { JobProgress, TERMINAL, follow } from "./progress.js";
import { confusionTable, evaluationReport } from "./report.js";

const SERIES = [
  // [metric key, phase, label, colour]
  ["loss", 1, "train, phase 1", "#1f77b4"],
  ["val_loss", 1, "validation, phase 1", "#ff7f0e"],
  ["loss", 2, "train, phase 2", "#2ca02c"],
  ["val_loss", 2, "validation, phase 2", "#d62728"],
];

function chartData(progress, metric) {
  const xs = [];
  const rows = new Map();
  for (const e of progress.epochs) {
    const x = progress.offset(e.phase) + e.epoch;
    if (!rows.has(x)) {
      rows.set(x, e);
      xs.push(x);
    } else rows.set(x, { ...rows.get(x), ...e });
  }
  xs.sort((a, b) => a - b);
  const series = SERIES.map(([key, phase]) => {
    const name = key.replace("loss", metric);
    return xs.map((x) => {
      const e = rows.get(x);
      return e.phase === phase && typeof e[name] === "number" ? e[name] : null;
    });
  });
  return [xs, ...series];
}

// The x axis spans every planned epoch from the start, so that the curve grows into it.
function makeChart(target, title, metric, planned) {
  const width = () => Math.max(260, Math.min(600, target.clientWidth || 600));
  const options = {
    title,
    width: width(),
    height: 240,
    scales: { x: { time: false, range: (u, min, max) => [1, Math.max(2, max || 1, planned())] } },
    axes: [{ label: "epoch", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500] }, { label: metric }],
    series: [
      { label: "epoch" },
      ...SERIES.map(([, , label, stroke]) => ({
        label, stroke, width: 2, points: { show: true, size: 6 }, spanGaps: false,
      })),
    ],
  };
  const empty = [[], [], [], [], []];
  const plot = new uPlot(options, empty, target);
  const resize = () => plot.setSize({ width: width(), height: 240 });
  window.addEventListener("resize", resize);
  return { plot, close: () => { window.removeEventListener("resize", resize); plot.destroy(); } };
}

function flatParams(job) {
  const rows = [];
  const visit = (prefix, value) => {
    if (value && typeof value === "object" && !Array.isArray(value)) {
      for (const [k, v] of Object.entries(value)) visit(prefix ? `${prefix}.${k}` : k, v);
    } else rows.push([prefix, value === null ? "default" : JSON.stringify(value)]);
  };
  visit("", job.params);
  return rows;
}

export function render(main, jobId) {
  const header = h("div", { class: "job-head" }, h("p", { class: "muted" }, "loading…"));
  const progressBox = h("div", { id: "job-progress" });
  const charts = h("div", { class: "charts" });
  const lossTarget = h("div", { class: "chart", id: "chart-loss" });
  const accTarget = h("div", { class: "chart", id: "chart-accuracy" });
  const epochsNote = h("p", { class: "muted", id: "job-epochs" }, "no epochs yet");
  const resultBox = h("div", { id: "job-result" });
  const paramsBox = h("div", { id: "job-params" });
  const log = h("ol", { class: "log", id: "job-log" });
  const cancelNote = h("span", { class: "muted", id: "cancel-note" });
  const cancel = h("button", { type: "button", id: "cancel-job", disabled: true }, "Cancel job");
  let progress = null;
  let job = null;
  let closeStream = () => {};
  let stopped = false;
  charts.append(lossTarget, accTarget);
  const curves = h("section", { id: "job-curves" }, h("h2", {}, "Loss and accuracy per epoch"), epochsNote, charts);
  main.append(
    h("h1", { class: "wrap" }, "Job ", h("code", {}, jobId)),
    header,
    h("div", { class: "actions" }, cancel, cancelNote),
    progressBox,
    curves,
    resultBox,
    h("div", { class: "two" },
      h("section", {}, h("h2", {}, "Parameters"), paramsBox),
      h("section", {}, h("h2", {}, "Log"), log)));
  const planned = () => (progress ? progress.total : 1);
  const lossChart = makeChart(lossTarget, "loss", "loss", planned);
  const accChart = makeChart(accTarget, "accuracy", "accuracy", planned);

  function drawHeader() {
    const facts = [
      ["state", badge(progress.state)],
      ["kind", job.kind],
      ["created", fmtTime(job.created_at)],
      ["started", fmtTime(job.started_at)],
      ["finished", fmtTime(job.finished_at)],
      ["attempts", String(job.attempts)],
    ];
    clear(header).append(h("dl", { class: "facts" }, facts.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", { "data-key": k }, v)))));
    if (job.error) header.append(h("p", { class: "error" }, job.error));
    cancel.disabled = TERMINAL.has(progress.state) || progress.state === "CANCELLING";
  }

  function drawProgress() {
    const fraction = progress.fraction();
    const eta = progress.eta();
    const label = `${(100 * (fraction || 0)).toFixed(0)} % · ${progress.done.toFixed(1)} of ${progress.total} epochs`;
    append(clear(progressBox), [
      fraction === null ? null : progressBar(fraction, label),
      h("p", { class: "muted" }, eta === null ? "" : `about ${fmtSeconds(eta)} left`),
    ]);
  }

  function drawCurves() {
    lossChart.plot.setData(chartData(progress, "loss"));
    accChart.plot.setData(chartData(progress, "accuracy"));
    const last = progress.epochs[progress.epochs.length - 1];
    epochsNote.textContent = last
      ? `${progress.epochs.length} epochs so far; last: phase ${last.phase} epoch ${last.epoch}, ` +
        `loss ${Number(last.loss).toFixed(4)}, accuracy ${fmtPercent(last.accuracy)}` +
        (typeof last.val_accuracy === "number" ? `, validation accuracy ${fmtPercent(last.val_accuracy)}` : "")
      : "no epochs yet";
    epochsNote.dataset.epochs = String(progress.epochs.length);
  }

  function drawResult() {
    clear(resultBox);
    const result = job.result;
    if (!result) return;
    if (result.model) {
      resultBox.append(h("p", { id: "job-model" }, "Made ",
        link(route("models", result.model), `${result.model} v${result.version}`),
        typeof result.val_accuracy === "number" ? ` · validation accuracy ${fmtPercent(result.val_accuracy)}` : "",
        result.labels && result.labels.length ? " · labels: " : "",
        (result.labels || []).map((label) => h("span", { class: `tag label-${label}` }, label))));
      if (result.promotion) resultBox.append(h("p", { class: "muted", id: "job-promotion" }, result.promotion));
    }
    if (result.evaluation) {
      resultBox.append(evaluationReport(result.evaluation,
        `Test report of ${result.model} v${result.version} (test split, by the exported ONNX model)`));
    }
    if (result.confusion_matrix) {
      resultBox.append(
        h("h2", {}, "Confusion matrix (validation images)"),
        h("div", { class: "scroll" }, confusionTable(result.confusion_matrix, result.class_names, "confusion")),
        h("p", { class: "muted" }, "rows: the true class; columns: the class predicted"));
    }
  }

  function addLog(text, time) {
    log.append(h("li", {}, h("time", {}, fmtTime(time).split(" ").pop()), " ", text));
    log.scrollTop = log.scrollHeight;
  }

  async function reload() {
    job = await get(`/v1/jobs/${encodeURIComponent(jobId)}`);
    if (stopped) return;
    progress.state = job.state;
    drawHeader();
    drawProgress();
    drawResult();
  }

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    cancelNote.textContent = "cancelling…";
    try {
      job = await postWithToken(`/v1/jobs/${encodeURIComponent(jobId)}/cancel`);
      progress.state = job.state;
      cancelNote.textContent = `asked; the job is ${job.state}`;
      drawHeader();
    } catch (error) {
      cancelNote.textContent = error instanceof ApiError ? error.message : String(error);
      cancel.disabled = TERMINAL.has(progress.state);
    }
  });

  get(`/v1/jobs/${encodeURIComponent(jobId)}`)
    .then((first) => {
      if (stopped) return;
      job = first;
      progress = new JobProgress(job);
      main.dataset.firstState = job.state; // what the page saw before any event (tests)
      curves.hidden = job.kind !== "finetune"; // an export has no epochs
      clear(paramsBox).append(h("div", { class: "scroll" }, h("table", { class: "data params" },
        h("tbody", {}, flatParams(job).map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v)))))));
      drawHeader();
      drawProgress();
      drawResult();
      closeStream = follow(jobId, (type, payload, event) => {
        if (stopped) return;
        progress.update(type, payload, event.time);
        if (type === "epoch") drawCurves();
        if (type === "log") addLog(payload.message, event.time);
        if (type === "state") {
          addLog(`state: ${payload.state}${payload.error ? ` (${payload.error})` : ""}`, event.time);
          reload().catch((error) => header.append(errorBox(error)));
        }
        drawProgress();
      });
    })
    .catch((error) => clear(header).append(errorBox(error)));

  return () => {
    stopped = true;
    closeStream();
    lossChart.close();
    accChart.close();
  };
}
