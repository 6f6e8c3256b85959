// The console's router: one page per hash route (#/catalog, #/models, #/models/NAME[/V],
// #/classify, #/jobs, #/jobs/ID). A page renders into <main> and returns a function that
// stops what it started (timers, event streams) when another page replaces it.

import { server } from "./api.js";
import { clear, errorBox } from "./dom.js";
import * as catalog from "./catalog.js";
import * as classify from "./classify.js";
import * as job from "./job.js";
import * as jobs from "./jobs.js";
import * as models from "./models.js";

const ROUTES = [
  [/^#\/catalog$/, "catalog", catalog],
  [/^#\/models$/, "models", models],
  [/^#\/models\/([^/]+)$/, "models", models],
  [/^#\/models\/([^/]+)\/([0-9]+)$/, "models", models],
  [/^#\/classify$/, "classify", classify],
  [/^#\/jobs$/, "jobs", jobs],
  [/^#\/jobs\/([^/]+)$/, "jobs", job],
];

const main = document.getElementById("main");
let stop = () => {};

function show() {
  const hash = location.hash || "#/catalog";
  const found = ROUTES.find(([pattern]) => pattern.test(hash));
  stop();
  stop = () => {};
  clear(main);
  if (!found) {
    main.append(errorBox(`no such page: ${hash}`));
    return;
  }
  const [pattern, section, page] = found;
  const args = hash.match(pattern).slice(1).map(decodeURIComponent);
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.page === section);
    if (a.dataset.page === section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.title = `${section} · keras-zoo`;
  try {
    stop = page.render(main, ...args) || (() => {});
  } catch (error) {
    main.append(errorBox(error));
  }
}

window.addEventListener("hashchange", show);
show();
server()
  .then((about) => {
    document.getElementById("server-version").textContent = `server ${about.version}`;
  })
  .catch(() => {});
