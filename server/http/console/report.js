// A version's test report (zoo.manifest.Evaluation, as /v1/jobs/ID and /v1/models/NAME give
// it): accuracy and top-5, per-class precision/recall/F1/support with the macro and weighted
// averages, the confusion matrix, the most confused pairs, and the test images the model got
// wrong with the highest confidence. Figures are shown to three decimals, as the CLI does.

import { fmtFixed, fmtInt, fmtPercent, h } from "./dom.js";

// A confusion matrix, rows the true class; shaded by count so that the diagonal stands out.
export function confusionTable(matrix, names, id) {
  names = names || matrix.map((_, i) => String(i));
  const most = Math.max(1, ...matrix.flat());
  return h("table", { class: "confusion", id },
    h("thead", {}, h("tr", {}, h("th", {}, ""), names.map((n) => h("th", { scope: "col" }, n)))),
    h("tbody", {}, matrix.map((row, i) =>
      h("tr", {}, h("th", { scope: "row" }, names[i]),
        row.map((count, j) => h("td", {
          class: i === j ? "diagonal" : null,
          style: { backgroundColor: `rgba(31, 119, 180, ${(0.85 * count) / most})`,
                   color: count / most > 0.5 ? "#fff" : "" },
        }, count))))));
}

function metricCells(m) {
  return [
    h("td", { class: "num", "data-key": "precision" }, fmtFixed(m.precision, 3)),
    h("td", { class: "num", "data-key": "recall" }, fmtFixed(m.recall, 3)),
    h("td", { class: "num", "data-key": "f1" }, fmtFixed(m.f1, 3)),
    h("td", { class: "num", "data-key": "support" }, fmtInt(m.support)),
  ];
}

function classTable(evaluation) {
  const head = ["Class", "Precision", "Recall", "F1", "Support"];
  return h("table", { class: "data report-classes", id: "report-classes" },
    h("thead", {}, h("tr", {}, head.map((t, i) => h("th", { class: i ? "num" : null }, t)))),
    h("tbody", {}, evaluation.classes.map((c) =>
      h("tr", { "data-class": c.name }, h("th", { scope: "row" }, c.name), metricCells(c)))),
    h("tfoot", {},
      h("tr", { "data-class": "macro avg" }, h("th", { scope: "row" }, "macro average"), metricCells(evaluation.macro)),
      h("tr", { "data-class": "weighted avg" }, h("th", { scope: "row" }, "weighted average"), metricCells(evaluation.weighted))));
}

function pairsTable(pairs) {
  if (!pairs.length) return h("p", { class: "muted", id: "report-pairs" }, "no test image was confused");
  return h("table", { class: "data", id: "report-pairs" },
    h("thead", {}, h("tr", {}, h("th", {}, "True class"), h("th", {}, "Predicted as"), h("th", { class: "num" }, "Images"))),
    h("tbody", {}, pairs.map((p) => h("tr", {},
      h("td", {}, p.true_label), h("td", {}, p.predicted_label), h("td", { class: "num" }, fmtInt(p.count))))));
}

function mistakesTable(mistakes) {
  if (!mistakes.length) return h("p", { class: "muted", id: "report-mistakes" }, "no test image was misclassified");
  return h("table", { class: "data", id: "report-mistakes" },
    h("thead", {}, h("tr", {}, h("th", {}, "Image"), h("th", {}, "True class"), h("th", {}, "Predicted"),
      h("th", { class: "num" }, "Confidence"))),
    h("tbody", {}, mistakes.map((m) => h("tr", {},
      h("td", { class: "path" }, h("code", {}, m.path)), h("td", {}, m.true_label),
      h("td", {}, m.predicted_label), h("td", { class: "num" }, fmtPercent(m.confidence, 1))))));
}

// The whole report as one <section id="report">; `title` says which version it is about.
export function evaluationReport(evaluation, title) {
  const names = evaluation.classes.map((c) => c.name);
  const facts = [
    ["test images", fmtInt(evaluation.images)],
    ["accuracy", fmtPercent(evaluation.accuracy, 1)],
    ["top-5 accuracy", evaluation.top5_accuracy === null ? "— (5 classes or fewer)" : fmtPercent(evaluation.top5_accuracy, 1)],
    ["split", evaluation.split],
  ];
  return h("section", { id: "report", class: "report" },
    h("h2", {}, title),
    h("dl", { class: "facts" }, facts.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", { "data-key": k }, v)))),
    h("div", { class: "report-grid" },
      h("div", {}, h("h3", {}, "Per class"), h("div", { class: "scroll" }, classTable(evaluation))),
      h("div", {}, h("h3", {}, "Confusion matrix (test images)"),
        h("div", { class: "scroll" }, confusionTable(evaluation.confusion_matrix, names, "report-confusion")),
        h("p", { class: "muted" }, "rows: the true class; columns: the class predicted"))),
    h("div", { class: "report-grid" },
      h("div", {}, h("h3", {}, "Most confused pairs"), h("div", { class: "scroll" }, pairsTable(evaluation.most_confused))),
      h("div", {}, h("h3", {}, "Wrong with the highest confidence"),
        h("div", { class: "scroll" }, mistakesTable(evaluation.worst_mistakes)))));
}
