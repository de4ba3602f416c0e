// The study list (search, each study's segmentation quality and those to review first, delete), the deleted
// studies the server keeps (restore, erase now; an admin's) and the upload of a DICOM folder, a .zip or a
// NIfTI file.
import {$, api, getJSON, sendJSON, toast, unauthorized} from "./api.js";
import {denied} from "./session.js";
import {formatDate, localTime, state} from "./state.js";

let lists = 0; // loadStudies calls so far: only the last one's answer is shown (an older search answered late)

export async function loadStudies() {
  const call = ++lists;
  const q = $("study-search").value.trim();
  // the search text (a patient's name or ID) in the body: a URL's query string lands in proxies' logs
  const studies = q ? await sendJSON("/api/studies/search", "POST", {q}) : await getJSON("/api/studies");
  if (call !== lists) return;
  showDeletedBox();
  const rows = $("study-rows");
  rows.innerHTML = "";
  for (const s of $("review-first").checked ? reviewFirst(studies) : studies) {
    const tr = document.createElement("tr");
    const cells = [s.patient_id || "—", formatDate(s.study_date), s.series_description || "—", s.n_slices,
      null, null, localTime(s.created_at)];
    cells.forEach((c, i) => {
      let td = document.createElement("td");
      if (i === 4) td.innerHTML = `<span class="status ${s.status}">${s.status}</span>`;
      else if (i === 5) td = qualityCell(s.quality);
      else td.textContent = c;
      tr.append(td);
    });
    const actions = document.createElement("td");
    const remove = document.createElement("button");
    remove.textContent = "Delete";
    remove.title = "Delete this study's images and labels (kept for a while in case it was a mistake; the " +
      "audit log keeps the deletion)";
    remove.dataset.needs = "delete"; // an admin's (session.js turns it off for other roles, saying so)
    showDeleting(remove, deleting.has(s.id));
    remove.addEventListener("click", async (e) => {
      e.stopPropagation();
      if (deleting.has(s.id)) return;
      if (!confirm(`Delete study ${s.patient_id || s.id} with its images and all label versions?\n\n` +
                   deletedFate(state.config.keep_deleted_days))) return;
      deleting.add(s.id);
      showDeleting(remove, true);
      try {
        // the labels this list showed: a correction saved since (another user, another tab) is not
        // deleted unseen (409, naming who saved it; the list read again shows it)
        await api(`/api/studies/${s.id}?latest_version=${s.latest_version || 0}`, {method: "DELETE"});
      } catch (err) { // not deleted (or already, elsewhere: the list read again says so)
        toast(err.message);
        deleting.delete(s.id);
        showDeleting(remove, false);
      }
      await loadStudies().catch((err) => toast(err.message));
      if ($("deleted-studies").open) await loadDeleted().catch((err) => toast(err.message));
    });
    actions.append(remove);
    tr.append(actions);
    // a study being deleted is not opened (its images and labels are going)
    tr.addEventListener("click", () => { if (!deleting.has(s.id)) location.hash = `#/study/${s.id}`; });
    rows.append(tr);
  }
  $("no-studies").hidden = studies.length > 0;
}


/** The segmentation quality of a study's latest label version (GET /api/studies `quality`): its score as
 * the panel prints it, and a "review" badge (a word, not a colour only) when flagged; a muted "—" when there
 * is none (hand-edited, imported, not scored yet), its tooltip saying why. */
function qualityCell(q) {
  const td = Object.assign(document.createElement("td"), {className: "quality"});
  if (q.status !== "computed") {
    td.append(Object.assign(document.createElement("span"), {className: "muted", textContent: "—"}));
    td.title = `No segmentation quality score: ${q.reason}`;
    return td;
  }
  td.append(q.score_text);
  const said = `Segmentation quality of label version ${q.version}: ${q.score_text} of 1 (review below ` +
    `${q.threshold})`;
  if (!q.flagged) {
    td.title = `${said}: not flagged for review.`;
    return td;
  }
  td.append(" ", Object.assign(document.createElement("span"), {className: "badge review", textContent: "review"}));
  td.title = `${said}: the engines disagree or the network is unsure; open the study and check the labels ` +
    "slice by slice before using its numbers.";
  return td;
}

/** The studies flagged for review first, the lowest score first; the others after them, newest first. */
function reviewFirst(studies) {
  const flagged = studies.filter((s) => s.quality.flagged).sort((a, b) => a.quality.score - b.quality.score);
  return [...flagged, ...studies.filter((s) => !s.quality.flagged)];
}

/** What becomes of a deleted study on this server (serve --keep-deleted-days), said before it is deleted. */
function deletedFate(days) {
  if (!days) return "It is erased at once and cannot be restored.";
  return `It is kept for ${days} day${days === 1 ? "" : "s"}, during which an admin can restore it ` +
    "(Deleted studies, below the list), then erased.";
}

/** The deleted studies the server keeps, listed when their box is opened: to a role that may delete (the
 * server refuses the others), on a server that keeps them (serve --keep-deleted-days). */
export function bindDeleted() {
  const box = $("deleted-studies");
  box.addEventListener("toggle", () => { if (box.open) loadDeleted().catch((err) => toast(err.message)); });
}

/** Decided with each list and each role change (the role is the signed-in user's, known after the sign-in):
 * hidden, the deleted studies it listed (their patients) are no longer on the page either. */
export function showDeletedBox() {
  const box = $("deleted-studies");
  box.hidden = Boolean(denied("delete")) || !state.config.keep_deleted_days;
  $("deleted-days").textContent = state.config.keep_deleted_days;
  if (!box.hidden) return;
  box.open = false;
  $("deleted-rows").replaceChildren();
  $("deleted-count").textContent = "";
  $("unreadable-deleted").hidden = true;
}

async function loadDeleted() {
  const response = await api("/api/deleted-studies");
  const kept = await response.json();
  // kept but not listed (their record cannot be read): named by id only, so that an admin learns they are there
  const unreadable = (response.headers.get("X-Unreadable-Deleted-Studies") || "").split(",").filter(Boolean);
  showUnreadable(unreadable);
  const all = kept.length + unreadable.length;
  $("deleted-count").textContent = all ? `(${all})` : "";
  $("no-deleted").hidden = all > 0;
  const rows = $("deleted-rows");
  rows.innerHTML = "";
  for (const d of kept) {
    const tr = document.createElement("tr");
    for (const c of [d.patient_id || "—", formatDate(d.study_date), d.series_description || "—", d.n_versions,
      localTime(d.deleted_at), d.deleted_by, localTime(d.erased_at)]) {
      const td = document.createElement("td");
      td.textContent = c;
      tr.append(td);
    }
    const actions = document.createElement("td");
    const restore = Object.assign(document.createElement("button"), {textContent: "Restore",
      title: "Put this study back in the list, with its images and every label version"});
    const erase = Object.assign(document.createElement("button"), {textContent: "Erase now",
      title: "Erase this study now, before its time is up (an erasure request): it cannot be restored then"});
    const act = async (work) => {
      restore.disabled = erase.disabled = true; // one press: a second would be refused as "not kept"
      try { await work(); } catch (err) { toast(err.message); }
      await Promise.all([loadStudies(), loadDeleted()]).catch((err) => toast(err.message));
    };
    restore.addEventListener("click", () => act(async () => {
      await api(`/api/deleted-studies/${d.id}/restore`, {method: "POST"});
      toast(`Study ${d.patient_id || d.id} restored.`, "info");
    }));
    erase.addEventListener("click", () => {
      if (!confirm(`Erase study ${d.patient_id || d.id} now? It cannot be restored afterwards.`)) return;
      // the deletion this list showed: restored and deleted again since (a colleague's work in it), it is not
      // erased (409; the list read again shows it)
      const seen = new URLSearchParams({deleted_at: d.deleted_at});
      act(() => api(`/api/deleted-studies/${d.id}?${seen}`, {method: "DELETE"}));
    });
    actions.append(restore, " ", erase);
    tr.append(actions);
    rows.append(tr);
  }
}

function showUnreadable(ids) {
  const line = $("unreadable-deleted");
  line.hidden = ids.length === 0;
  const n = ids.length === 1 ? "1 deleted study" : `${ids.length} deleted studies`;
  line.textContent = `${n} could not be read (id ${ids.join(", ")}): ${ids.length === 1 ? "it is" : "they are"} ` +
    "kept, not listed; see the server's log.";
}

/** The studies whose deletion is on its way: their Delete is off, so that a second press (a slow server)
 * neither asks again nor sends a second deletion, refused as "not found". */
const deleting = new Set();

function showDeleting(button, on) {
  button.disabled = on;
  button.textContent = on ? "Deleting…" : "Delete";
}

export function bindUpload() {
  let timer = null;
  $("study-search").addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(loadStudies, 250); });
  $("review-first").addEventListener("change", () => loadStudies().catch((err) => toast(err.message)));
  $("pick-folder").addEventListener("change", (e) => uploadFiles([...e.target.files]));
  $("pick-files").addEventListener("change", (e) => uploadFiles([...e.target.files]));
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const entries = [...e.dataTransfer.items].map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
    const files = entries.length ? (await Promise.all(entries.map(readEntry))).flat() : [...e.dataTransfer.files];
    uploadFiles(files);
  });
}

function readEntry(entry) {
  if (entry.isFile) return new Promise((resolve, reject) => entry.file((f) => resolve([f]), reject));
  const reader = entry.createReader();
  return new Promise((resolve, reject) => {
    const all = [];
    const next = () => reader.readEntries(async (batch) => {
      if (!batch.length) { resolve((await Promise.all(all.map(readEntry))).flat()); return; }
      all.push(...batch);
      next();
    }, reject);
    next();
  });
}

function uploadFiles(files) {
  files = files.filter((f) => !f.name.startsWith("."));
  if (!files.length) return;
  if (denied("change")) { // dropped on the drop zone: the choosers are off
    $("upload-error").textContent = denied("change");
    return;
  }
  const total = files.reduce((n, f) => n + f.size, 0);
  $("upload-error").textContent = "";
  if (total > state.config.max_upload_bytes) {
    $("upload-error").textContent =
      `The upload (${mb(total)}) is larger than this server accepts (${mb(state.config.max_upload_bytes)}).`;
    return;
  }
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  const xhr = new XMLHttpRequest();
  $("upload-status").hidden = false;
  $("upload-text").textContent = `Uploading ${files.length} file(s), ${mb(total)}…`;
  xhr.upload.onprogress = (e) => {
    if (!e.lengthComputable) return;
    const pct = Math.round((100 * e.loaded) / e.total);
    $("upload-progress").value = pct;
    $("upload-text").textContent = pct < 100 ? `Uploading… ${pct} %` : "Reading the series on the server…";
  };
  // the choosers are emptied whatever the outcome: choosing the same files again must be a change
  const done = () => {
    $("upload-status").hidden = true;
    $("upload-progress").value = 0;
    $("pick-folder").value = "";
    $("pick-files").value = "";
  };
  xhr.onload = () => {
    done();
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
    if (xhr.status === 201) {
      const warnings = (body.warnings || []).join(" "); // e.g. generated UIDs
      if ($("view-studies").hidden) { // the user went on (a study being labelled): left there, told
        const name = body.patient_id || "the series";
        toast(`The upload of ${name} is done: open it from the study list. ${warnings}`.trim(), "info");
        return;
      }
      if (warnings) toast(warnings, "info");
      location.hash = `#/study/${body.id}`;
    } else {
      $("upload-error").textContent = body.detail || `Upload failed (${xhr.status}).`;
      if (xhr.status === 401) unauthorized(); // the session expired: signed in again, the upload can be retried
    }
  };
  xhr.onerror = () => {
    done();
    $("upload-error").textContent = "The upload was interrupted (network error or the server refused it).";
  };
  xhr.open("POST", "/api/studies");
  xhr.send(form);
}

const mb = (n) => `${(n / 1024 / 1024).toFixed(1)} MB`;
