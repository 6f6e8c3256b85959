// Calls to the server's JSON endpoints (/v1, /v2). Errors come back as {"error": "..."};
// they become ApiError with that message and the HTTP status.

const TOKEN_KEY = "zoo-token";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function answer(response) {
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = body && body.error ? body.error : `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, message);
  }
  return body;
}

export async function get(path) {
  return answer(await fetch(path, { headers: { Accept: "application/json" } }));
}

export async function post(path, body, headers = {}) {
  const init = { method: "POST", headers: { Accept: "application/json", ...headers } };
  if (body instanceof Blob) {
    init.body = body;
    init.headers["Content-Type"] = body.type || "application/octet-stream";
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  return answer(await fetch(path, init));
}

let about = null;

// What the console needs to know about the server (its version, whether it has a token).
export function server() {
  about = about || get("/v1/console");
  return about;
}

// The token, asked for once per tab: kept in sessionStorage, sent as the server expects
// (`Authorization: Bearer <token>`, the same header the gRPC guard reads as metadata).
function askToken(note) {
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  const noteEl = document.getElementById("token-note");
  noteEl.textContent = note || "";
  noteEl.hidden = !note;
  input.value = "";
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => resolve(dialog.returnValue === "ok" && input.value ? input.value : null),
      { once: true },
    );
    dialog.showModal();
    input.focus();
  });
}

// A mutating POST: with the token when the server has one (asked for if this tab has none
// yet, and asked again once if the server refuses the one kept).
export async function postWithToken(path, body) {
  const { token_required: required } = await server();
  if (!required) return post(path, body);
  let note = "";
  for (let attempt = 0; attempt < 2; attempt++) {
    let token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) {
      token = await askToken(note);
      if (!token) throw new ApiError(401, "no token given; nothing was sent");
      sessionStorage.setItem(TOKEN_KEY, token);
    }
    try {
      return await post(path, body, { Authorization: `Bearer ${token}` });
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 401) throw error;
      sessionStorage.removeItem(TOKEN_KEY);
      note = "The server refused that token; try again.";
    }
  }
  throw new ApiError(401, "the server refused the token");
}
