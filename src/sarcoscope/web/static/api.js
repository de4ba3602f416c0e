// The server's /api as the UI uses it, and the two places the UI reports to: the status line and the toast.
// A refused request (4xx/5xx) becomes an Error carrying the server's JSON reason, so the UI can show it.

export const $ = (id) => document.getElementById(id);

let onUnauthorized = () => {};
/** Called on 401 (e.g. a session that expired): the app shows its sign-in form. */
export function setUnauthorizedHandler(handler) { onUnauthorized = handler; }
/** A 401 to a request not made with `api` (the upload's, for its progress): the sign-in form, as for any. */
export function unauthorized() { onUnauthorized(); }

/** Why a request got no answer at all (fetch rejects only then; the browser's own text is "Failed to fetch"). */
export const NO_ANSWER = "The server did not answer (it may be stopped, or the network is down).";

export async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, {credentials: "same-origin", ...options});
  } catch (_) {
    const error = new Error(NO_ANSWER);
    error.status = 0;
    throw error;
  }
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`;
    let body = null;
    try {
      body = await response.json();
      if (body && body.detail) detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch (_) { /* not JSON */ }
    const error = new Error(detail);
    error.status = response.status;
    error.body = body;
    if (response.status === 401) onUnauthorized();
    throw error;
  }
  return response;
}

export const getJSON = async (path) => (await api(path)).json();
export const sendJSON = async (path, method, body) =>
  (await api(path, {method, headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)})).json();

export function toast(text, kind = "error") {
  const el = $("toast");
  el.textContent = text;
  el.className = `toast ${kind}`;
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, kind === "error" ? 8000 : 3000);
}

export function message(text, isError = false) {
  const el = $("study-message");
  el.textContent = text;
  el.className = isError ? "message error" : "message";
}

/** Clear the status line if it still says `text` (a message that no longer holds), not a newer one. */
export function unsay(text) {
  if (text && $("study-message").textContent === text) message("");
}

const PREPARING = "Preparing the download…";

/** Fetch a file and save it under the server's name. A plain link would turn a refusal (e.g. 409: no DICOM
 * SEG for a NIfTI study) into a silently cancelled download; here the reason is shown instead. While the
 * server makes the file (a report, a SEG: seconds) the status line says so and `button` is off: else it
 * looked dead, and a second press made and saved the file twice. */
export async function download(url, button) {
  message(PREPARING);
  try {
    await oneAtATime(button, () => fetchDownload(url));
  } finally { unsay(PREPARING); }
}

async function fetchDownload(url) {
  try {
    const response = await api(url);
    unsay(PREPARING);
    const warning = response.headers.get("X-Sarcoscope-Warning");
    if (warning) message(warning);
    const disposition = response.headers.get("Content-Disposition") || "";
    const name = (/filename="([^"]+)"/.exec(disposition) || [])[1] || "download";
    const href = URL.createObjectURL(await response.blob());
    const a = document.createElement("a");
    a.href = href;
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(href), 60000);
  } catch (err) {
    const text = `${err.status ? "Download refused" : "Download failed"}: ${err.message}`;
    message(text, true);
    toast(text);
  }
}

/** Run `work` with `button` disabled: one request at a time (a double click, Enter twice). A second one,
 * made on the same version or facts as the first, would be refused as a conflict with the first. */
export async function oneAtATime(button, work) {
  button.disabled = true;
  try { return await work(); } finally { button.disabled = false; }
}

export const escapeHtml = (t) => String(t).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
