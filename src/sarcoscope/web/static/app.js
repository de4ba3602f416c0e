// sarcoscope browser UI: study list and upload, L3 selection, label editing, analysis and exports.
// Plain JavaScript ES modules (no build step); talks only to this server's /api. This module starts the UI
// and routes between the views; api.js: the API client and messages; state.js: shared state; session.js:
// sign-in; studies.js: list and upload; series.js: the series of an upload; l3view.js: L3 selection;
// labeling.js: the label editor; brush.js: its painting tools; versions.js and analysis.js: the side panel;
// viewport.js: zoom and pan; readout.js: the pixel, HU and label under the pointer.
import {$, getJSON, message, setUnauthorizedHandler, toast} from "./api.js";
import {applySelection, bindL3, resetL3View, showL3} from "./l3view.js";
import {bindEditor, resetEditorView, showLabeling} from "./labeling.js";
import {bindSeries} from "./series.js";
import {renderUser, showLogin, showRole} from "./session.js";
import {formatDate, state, stillOpen} from "./state.js";
import {bindDeleted, bindUpload, loadStudies, showDeletedBox} from "./studies.js";
import {bindImport, clearSide, patientUnapplied, showPatient} from "./versions.js";

async function init() {
  setUnauthorizedHandler(() => { if (state.config && state.config.auth_required) showLogin(signedIn); });
  state.config = await getJSON("/api/config");
  for (const id of ["l3-preset", "label-preset"]) {
    $(id).innerHTML = state.config.presets.map((p) => `<option value="${p}">${p.replace("_", " ")}</option>`).join("");
  }
  // the L3 view's window right-dragged to (shown, never offered)
  $("l3-preset").append(Object.assign(new Option("custom", "custom"), {hidden: true, disabled: true}));
  $("engine").innerHTML = state.config.engines
    .map((e) => `<option value="${e}" ${e === state.config.default_engine ? "selected" : ""}>${e}</option>`).join("");
  $("cutoff-set").innerHTML = state.config.cutoff_sets.map((c) => `<option value="${c}">${c}</option>`).join("");
  const ranges = state.config.patient_ranges;  // the server's bounds, so the form cannot offer what it refuses
  for (const [id, [lo, hi]] of [["height", ranges.height_cm], ["weight", ranges.weight_kg]]) Object.assign($(id), {min: lo, max: hi});
  // each label: its show/hide box, then its button (never a control inside a button: Tab reaches both)
  $("label-choice").innerHTML = state.config.tissues.map((t) =>
    `<span class="label-item"><input type="checkbox" data-visible="${t.label}" checked ` +
    `title="show/hide ${t.title}" aria-label="show ${t.name}">` +
    `<button type="button" data-label="${t.label}" title="${t.title} (${t.label})">` +
    `<span class="swatch" data-color="${t.color.join(",")}"></span>${t.name.toUpperCase()}</button></span>`).join("");
  for (const el of document.querySelectorAll(".swatch")) el.style.background = `rgb(${el.dataset.color})`;
  bindUpload();
  bindDeleted();
  bindSeries();
  bindL3();
  bindEditor();
  bindImport();
  window.addEventListener("hashchange", route);
  // an unsaved label edit, or patient facts typed and not applied (a reload or closing drops them unsaid)
  window.addEventListener("beforeunload", (e) => {
    if (state.dirty || patientUnapplied()) { e.preventDefault(); e.returnValue = ""; }
  });
  renderUser();
  if (state.config.auth_required && !state.config.user) showLogin(signedIn);
  else signedIn();
}

function signedIn() {
  watchSession();
  route();
}

// A page left open shows the sign-in form when its session ends (it expired), by itself: not only at the
// next request, which on an unattended workstation may come hours later, the patients' data on screen.
let sessionTimer = 0;
function watchSession(seconds = state.config.session_seconds_left) {
  clearTimeout(sessionTimer);
  if (!state.config.auth_required || seconds == null) return;
  sessionTimer = setTimeout(checkSession, Math.min(seconds * 1000 + 500, 2 ** 31 - 1));
}

// The server ends a session after some minutes without a request of its user (an unattended workstation);
// work that sends none (painting labels, reading the screen) says it is in use, at most once a minute (a
// quarter of the idle time when that is shorter).
let lastActive = 0;
function inUse() {
  if (!state.config || !state.config.auth_required || !state.config.user || !$("view-login").hidden) return;
  if (Date.now() - lastActive < Math.min(60000, (state.config.idle_seconds || 240) * 250)) return;
  lastActive = Date.now();
  getJSON("/api/session").then((now) => {
    showRole(now);
    showDeletedBox(); // a role that may no longer see them: the deleted studies listed go
    watchSession(now.session_seconds_left);
  }).catch(() => {}); // 401: sign-in
}
for (const type of ["pointerdown", "keydown", "wheel"]) {
  window.addEventListener(type, inUse, {capture: true, passive: true});
}

async function checkSession() {
  let now;
  try {
    now = await getJSON("/api/config");
  } catch (_) {
    watchSession(60); // no answer: asked again in a minute
    return;
  }
  if (now.user) watchSession(now.session_seconds_left);
  else showLogin(signedIn); // the same user signing in carries on, as after any ended session
}


// ---------------------------------------------------------------------------------------------- routing --
let routes = 0; // route() calls so far: a study read from a slow server after the user went on is not shown

async function route() {
  const call = ++routes;
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  const leavingEdits = state.dirty && state.study && (parts[0] !== "study" || parts[1] !== state.study.id);
  if (leavingEdits) {
    if (!confirm("Discard your unsaved label edits?")) {
      // back on the study as a new entry: the one left (the list, after Back) stays one Back away
      history.pushState(null, "", state.lastHash);
      return;
    }
    state.dirty = false;
    state.labels = null; // discarded: opening the study again loads its saved labels, not these
  }
  if (state.study && (parts[0] !== "study" || parts[1] !== state.study.id) && patientUnapplied()) {
    // dropped when the card shows the next study's facts: said, not lost without a word
    const name = state.study.patient_id || "the study left";
    toast(`The patient facts typed for ${name} were not applied (press Apply to keep them).`, "info");
    showPatient(state.study); // said once
  }
  const was = state.lastHash.replace(/^#\/?/, "").split("/");
  state.lastHash = location.hash || "#/";
  for (const v of document.querySelectorAll(".view")) v.hidden = true;
  if (parts[0] === "study" && parts[1]) {
    // the page's copy of a study serves while it stays open (its two tabs, a sign-in again); opened anew
    // (from the list, Back, a link) it is read from the server, which may have deleted or changed it
    const reopened = was[0] !== "study" || was[1] !== parts[1];
    await openStudy(parts[1], parts[2] === "label" ? "label" : "l3", reopened, () => call === routes);
  } else {
    $("study-title").textContent = "";
    $("view-studies").hidden = false;
    await loadStudies();
  }
}


// ------------------------------------------------------------------------------------------- one study --
/** `current()` is false once the user went elsewhere while the study was read. */
async function openStudy(id, pane, reopened, current) {
  if (reopened || !stillOpen(id)) {
    const study = await getJSON(`/api/studies/${id}`).catch((err) => err);
    if (!current()) return;
    if (study instanceof Error) {
      if (study.status === 401) { // the sign-in form is shown; signed in, the study is read then
        state.lastHash = "#/";
        return;
      }
      toast(study.message); // deleted (here, in another tab, by another user) or a wrong link
      location.replace("#/");
      return;
    }
    state.study = study;
    state.images.clear();
    state.hu.clear();
    state.body.clear();
    state.labels = null;
    state.version = null;
    state.viewing = null;
    state.current = 0; // the editor starts at the study's first labelled slice, not where the last one was
    const s = state.study;
    state.axialZ = Math.floor(s.n_slices / 2);
    state.crossY = Math.floor(s.rows / 2);
    state.crossX = Math.floor(s.cols / 2);
    resetL3View();
    resetEditorView();
    clearSide("Loading…");
    if (s.selection) applySelection(s.selection);
    else {
      state.mode = "slice"; // the default, as the CLI: one slice (here the middle one until L3 is found)
      state.lines = [state.axialZ, state.axialZ];
    }
    showPatient(s);
    $("import-files").value = ""; // a label file chosen for the study left is not imported into this one
  }
  $("view-study").hidden = false;
  const s = state.study;
  const dicom = s.source_kind === "dicom"; // NIfTI: no original DICOM files to download
  $("download-dicom").hidden = !dicom;
  $("deidentify").parentElement.hidden = !dicom;
  $("study-title").textContent = `${s.patient_id || "(no patient id)"} · ${formatDate(s.study_date)} · ` +
    `${s.series_description || ""} · ${s.n_slices} slice${s.n_slices === 1 ? "" : "s"}`;
  $("tab-l3").href = `#/study/${id}`;
  $("tab-label").href = `#/study/${id}/label`;
  for (const [tab, name] of [["tab-l3", "l3"], ["tab-label", "label"]]) {
    $(tab).classList.toggle("active", pane === name);
    $(tab).setAttribute("aria-selected", String(pane === name));
  }
  $("pane-l3").hidden = pane !== "l3";
  $("pane-label").hidden = pane !== "label";
  message("");
  if (pane === "l3") await showL3();
  else await showLabeling();
}

init().catch((err) => toast(err.message));
