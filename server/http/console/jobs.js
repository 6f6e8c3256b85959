// Jobs: the list with state, progress and ETA. The list is read every few seconds; the
// running jobs' progress comes from their event streams (a few at most: a browser keeps
// six connections to one server).

import { get } from "./api.js";
import { badge, clear, errorBox, fmtSeconds, fmtTime, h, link, progressBar, route } from "./dom.js";
import { JobProgress, TERMINAL, follow } from "./progress.js";

const REFRESH_MS = 3000;
const MAX_STREAMS = 3;

function subject(job) {
  const p = job.params || {};
  return job.kind === "finetune"
    ? `${p.base_model} → ${p.output_model}`
    : `${p.model} → ${p.model_name || String(p.model || "").toLowerCase()}`;
}

export function render(main) {
  const body = h("tbody");
  const status = h("p", { class: "muted" }, "loading…");
  const streams = new Map(); // job id -> {progress, close}
  let jobs = [];
  let timer = null;
  let stopped = false;

  function draw() {
    clear(body);
    for (const job of jobs) {
      const followed = streams.get(job.id); // a running job: its events say more than the list
      const progress = followed ? followed.progress : new JobProgress(job);
      const fraction = progress.fraction();
      body.append(
        h("tr", { "data-job": job.id },
          h("td", {}, link(route("jobs", job.id), job.id)),
          h("td", {}, job.kind),
          h("td", {}, subject(job)),
          h("td", { "data-key": "state" }, badge(progress.state)),
          h("td", { "data-key": "progress" },
            fraction === null ? "—" : progressBar(fraction)),
          h("td", { class: "num", "data-key": "eta" }, fmtSeconds(progress.eta())),
          h("td", {}, fmtTime(job.created_at))));
    }
    status.textContent = jobs.length === 1 ? "1 job" : `${jobs.length} jobs`;
  }

  function watch(job) {
    if (streams.has(job.id) || streams.size >= MAX_STREAMS) return;
    const progress = new JobProgress(job);
    const close = follow(job.id, (type, payload, event) => {
      progress.update(type, payload, event.time);
      if (!stopped) draw();
    });
    streams.set(job.id, { progress, close });
  }

  async function refresh() {
    try {
      jobs = (await get("/v1/jobs?limit=50")).jobs;
      for (const [id, stream] of streams) {
        const job = jobs.find((j) => j.id === id);
        if (!job || TERMINAL.has(job.state)) {
          stream.close();
          streams.delete(id);
        }
      }
      for (const job of jobs) if (job.state === "RUNNING" || job.state === "CANCELLING") watch(job);
      if (!stopped) draw();
    } catch (error) {
      if (!stopped) clear(status).append(errorBox(error));
    }
    if (!stopped) timer = setTimeout(refresh, REFRESH_MS);
  }

  main.append(
    h("h1", {}, "Jobs"),
    status,
    h("div", { class: "scroll" },
      h("table", { class: "data", id: "jobs-table" },
        h("thead", {}, h("tr", {},
          ["Job", "Kind", "What", "State", "Progress", "ETA", "Created"].map((t) => h("th", {}, t)))),
        body)));
  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
    for (const stream of streams.values()) stream.close();
  };
}
