// A job's progress from its event stream (/v1/jobs/ID/events, server-sent events that
// resume after Last-Event-ID). A fine-tune job sends `epoch` events (metrics) and, during
// an epoch, `progress` events (batch of batches, at most one a second); the fraction done
// counts the epochs of both phases, and the ETA scales the time spent so far.

export const EVENT_TYPES = ["state", "epoch", "progress", "log", "result"];
export const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);

export class JobProgress {
  constructor(job) {
    const params = (job.params && job.params.params) || {};
    this.kind = job.kind;
    this.phase1 = params.epochs ?? 5; // FineTuneParams' defaults
    this.phase2 = params.fine_tune_epochs ?? 3;
    this.started = job.started_at ? Date.parse(job.started_at) : null;
    this.state = job.state;
    this.done = 0; // epochs, fractional
    this.lastTime = null;
    this.epochs = []; // epoch event payloads, in order
  }

  get total() {
    return this.phase1 + this.phase2;
  }

  // Epochs before this phase's first (phase 2 follows all of phase 1's).
  offset(phase) {
    return phase === 2 ? this.phase1 : 0;
  }

  update(type, payload, time) {
    this.lastTime = Date.parse(time);
    if (type === "state") {
      this.state = payload.state;
      if (payload.state === "RUNNING" && this.started === null) this.started = this.lastTime;
    } else if (type === "epoch") {
      this.epochs.push(payload);
      this.done = Math.max(this.done, this.offset(payload.phase) + payload.epoch);
    } else if (type === "progress") {
      if (payload.phase === 2 && payload.epochs) this.phase2 = payload.epochs;
      const within = payload.batches ? payload.batch / payload.batches : 0;
      this.done = Math.max(this.done, this.offset(payload.phase) + payload.epoch - 1 + within);
    } else if (type === "log" && /^phase 2/.test(payload.message || "")) {
      this.done = Math.max(this.done, this.phase1); // phase 1 stopped early (patience)
    }
  }

  // Fraction done, 0..1; null for a job without epochs (an export).
  fraction() {
    if (this.state === "SUCCEEDED") return 1;
    if (this.kind !== "finetune" || !this.total) return null;
    return Math.min(1, this.done / this.total);
  }

  // Seconds left, or null when there is nothing to go on yet.
  eta() {
    const f = this.fraction();
    if (TERMINAL.has(this.state) || !f || f >= 1 || this.started === null || this.lastTime === null) {
      return null;
    }
    const spent = (this.lastTime - this.started) / 1000;
    return spent > 0 ? (spent * (1 - f)) / f : null;
  }
}

// Follow a job's events: `onEvent(type, payload, event)` for each; closed by the returned
// function, and by itself once the job has ended (else EventSource would reconnect).
export function follow(jobId, onEvent) {
  const source = new EventSource(`/v1/jobs/${encodeURIComponent(jobId)}/events`);
  for (const type of EVENT_TYPES) {
    source.addEventListener(type, (message) => {
      const event = JSON.parse(message.data);
      onEvent(type, event.payload || {}, event);
      if (type === "state" && TERMINAL.has(event.payload.state)) source.close();
    });
  }
  return () => source.close();
}
