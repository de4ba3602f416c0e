// The side panel of the labeling view: versions (view, restore), patient facts, exports, label import and
// the analysis of the version shown.
import {$, api, escapeHtml, getJSON, message, oneAtATime, sendJSON} from "./api.js";
import {renderAnalysis} from "./analysis.js";
import {discardEdits, drawEditor, loadLabels, replacingLabels, sayMade, showLabeling} from "./labeling.js";
import {imageText, localTime, slicesText, state, stillOpen} from "./state.js";

export async function restoreViewed() {
  const id = state.study.id;
  await oneAtATime($("restore-version"), async () => {
    try {
      const restored = await sendJSON(`/api/studies/${id}/versions/${state.viewing}/restore`, "POST",
        {base_version: state.version});
      if (!stillOpen(id)) return;
      // made on the server: said so even if its labels then fail to load (else restored again: a duplicate)
      state.version = restored.version;
      state.study.latest_version = restored.version;
      try { await loadLabels(null); } catch (err) {
        if (!stillOpen(id)) return;
        await refreshSide();
        message(`Restored as version ${restored.version}, but its labels could not be loaded: ${err.message} ` +
          "Press “Back to latest” to load them.", true);
        return;
      }
      await refreshSide();
      drawEditor();
      sayMade(`Restored as version ${state.version}.`);
    } catch (err) { message(err.message, true); }
  });
}

const num = (id) => ($(id).value === "" ? null : Number($(id).value));

/** Whether the Patient card holds facts typed but not applied (Apply saves them; leaving drops them). */
export function patientUnapplied() {
  if (!state.study) return false;
  const was = state.study.patient || {};
  return num("height") !== (was.height_cm ?? null) || num("weight") !== (was.weight_kg ?? null) ||
    ($("sex").value || null) !== (was.sex ?? null) ||
    $("cutoff-set").value !== (was.cutoff_set || state.config.default_cutoff_set);
}

/** Show a study's facts in the Patient card. */
export function showPatient(study) {
  const p = study.patient || {};
  $("height").value = p.height_cm ?? "";
  $("weight").value = p.weight_kg ?? "";
  $("sex").value = p.sex ?? "";
  $("cutoff-set").value = p.cutoff_set || state.config.default_cutoff_set;
}

export async function savePatient(e) {
  e.preventDefault();
  // the facts this form was loaded with: the server refuses the save (409) if they changed meanwhile
  const was = state.study.patient || {};
  const previous = {height_cm: was.height_cm ?? null, weight_kg: was.weight_kg ?? null,
    sex: was.sex ?? null, cutoff_set: was.cutoff_set ?? null};
  const id = state.study.id;
  await oneAtATime(e.target.querySelector("button[type=submit]"), async () => { // (disabled: Enter too)
    try {
      const study = await sendJSON(`/api/studies/${id}/patient`, "PUT", {
        height_cm: num("height"), weight_kg: num("weight"), sex: $("sex").value || null,
        cutoff_set: $("cutoff-set").value || null, previous,
      });
      if (!stillOpen(id)) return;
      state.study = study;
      await refreshSide();
      message("Patient facts saved.");
    } catch (err) { message(err.message, true); }
  });
}

// ------------------------------------------------------------------------------------ label import --
// A label file made elsewhere (Slice-O-Matic .tag, DICOM SEG, NIfTI, PNG) becomes a new version of the
// selected slice(s); the server refuses, with the reason, a file that does not fit the study.
export function bindImport() {
  const select = $("import-mapping");
  select.innerHTML = state.config.label_mappings.map((m) => `<option value="${m}">${m}</option>`).join("");
  select.value = "sarcoscope";
  $("import-files").addEventListener("change", () => {
    const tag = [...$("import-files").files].some((f) => f.name.toLowerCase().endsWith(".tag"));
    select.value = tag ? "slice-o-matic-alberta" : "sarcoscope";
  });
  $("import-form").addEventListener("submit", importLabels);
}

async function importLabels(e) {
  e.preventDefault();
  const files = $("import-files").files;
  if (!files.length) { message("Choose a label file first.", true); return; }
  if (state.dirty && !confirm("Discard your unsaved edit?")) return;
  const body = new FormData();
  for (const f of files) body.append("files", f);
  const q = new URLSearchParams({mapping: $("import-mapping").value});
  if (state.study.latest_version) q.set("base_version", state.study.latest_version);
  const sel = state.study.selection; // the slices this page shows: refused (409) if changed since elsewhere
  if (sel) { q.set("first", sel.first); q.set("last", sel.last); }
  message("Importing…");
  const id = state.study.id;
  // the edit agreed to be discarded stays on screen, held, until the imported version replaces it (kept if
  // the import is refused)
  await oneAtATime(e.target.querySelector("button[type=submit]"), () => replacingLabels(id, async () => {
    try {
      const saved = await (await api(`/api/studies/${id}/labels/import?${q}`, {method: "POST", body})).json();
      const study = await getJSON(`/api/studies/${id}`);
      if (!stillOpen(id)) return;
      state.study = study;
      state.labels = null;
      await showLabeling();
      sayMade(`Imported as version ${saved.version}: ${saved.note}.`);
    } catch (err) {
      message(err.message + (stillOpen(id) && state.dirty ? " Your unsaved edit is kept." : ""), true);
    }
  }));
}

// ---------------------------------------------------------------------------------- analysis panel --
export function setExportDeidentification() {
  for (const button of $("exports").querySelectorAll("button")) {
    const url = new URL(button.dataset.href, location.href);
    url.searchParams.set("deidentify", $("deidentify-exports").checked);
    button.dataset.href = url.pathname + url.search;
  }
}

/** The exports this study supports: DICOM SEG, SR and capture reference the CT's DICOM images, so not for NIfTI. */
function exportFormats(study) {
  const all = [["dicom-seg", "DICOM SEG"], ["dicom-sr", "DICOM SR"], ["dicom-qc", "QC capture (DICOM)"],
    ["nifti", "NIfTI"], ["csv", "Metrics CSV"], ["json", "Report JSON"],
    ["overlay", "Overlay PNG"], ["html", "Printable report"], ["pdf", "Report PDF"]];
  return study.source_kind === "dicom" ? all : all.filter(([f]) => !f.startsWith("dicom-"));
}

let sides = 0; // refreshSide calls so far: a slow answer to an earlier one is not shown over a later one's

/** Say so when the L3 lines were moved off the slices the labels shown (and so the numbers) are of: moved
 * after segmenting, the lines change nothing until those slices are segmented. The lines are those shown
 * (what "Segment selected" measures), not the server's selection: a move is saved 0.4 s after its key. */
function noteMovedLines() {
  const [first, last] = [Math.min(...state.lines), Math.max(...state.lines)];
  const lines = state.mode === "range" ? Array.from({length: last - first + 1}, (_, k) => first + k) : [first];
  const labelled = state.indices || [];
  const moved = lines.length > 0 && labelled.length > 0 &&
    (lines.length !== labelled.length || lines.some((z, k) => z !== labelled[k]));
  $("lines-moved").hidden = !moved;
  const named = (zs) => slicesText(zs) + imageText(state.study, zs);
  $("lines-moved").textContent = moved ? `These labels and numbers are of ${named(labelled)}; the L3 ` +
    `lines are on ${named(lines)} now: “Segment selected” on the L3 tab measures those.` : "";
}

/** Blank the side panel, `note` in the analysis' place: nothing of the study open before (its numbers,
 * version, note on the lines, exports and versions) is shown for another. */
export function clearSide(note) {
  $("analysis-version").textContent = "";
  $("lines-moved").hidden = true;
  $("analysis").innerHTML = `<p class="muted">${note}</p>`;
  $("exports").innerHTML = "";
  $("versions").innerHTML = "";
}

/** The side panel of the version shown: exports, versions and its analysis (with the patient facts as the
 * server has them when it answers). */
export async function refreshSide() {
  const call = ++sides;
  const s = state.study;
  const current = () => call === sides && stillOpen(s.id);
  const shown = state.viewing ?? state.version;
  const exports = $("exports");
  const versions = $("versions");
  if (!shown) {
    clearSide("No labels yet.");
    return;
  }
  noteMovedLines();
  exports.innerHTML = exportFormats(s).map(([f, title]) =>
    `<button type="button" id="export-${f}" data-href="/api/studies/${s.id}/export/${f}?version=${shown}">` +
    `${title}</button>`).join("");
  setExportDeidentification();
  // a failure is said here, not thrown: the work before (a save, a restore) is done and said done
  const listed = await getJSON(`/api/studies/${s.id}/versions`).catch((err) => err);
  if (!current()) return;
  const list = listed instanceof Error ? [] : listed;
  versions.innerHTML = listed instanceof Error
    ? `<li class="error">The versions could not be loaded: ${escapeHtml(listed.message)}</li>` : "";
  for (const v of list) {
    const li = document.createElement("li");
    li.value = v.version;
    li.classList.toggle("current", v.version === shown);
    const when = localTime(v.created_at);
    li.textContent = `v${v.version} · ${slicesText(v.indices)}${imageText(s, v.indices)} · ${v.source}${v.engine && v.source === "segment" ? ` (${v.model_id || v.engine})` : ""} · ` +
      `${v.author} · ${when} `;
    li.title = v.note || "";
    if (v.version !== shown) {
      const view = document.createElement("button");
      view.textContent = "view";
      view.addEventListener("click", async () => {
        if (state.dirty && !confirm("Discard your unsaved edit?")) return;
        discardEdits(); // now: Save (Ctrl+S) while the version loads would save what was discarded
        try { await loadLabels(v.version === list[0].version ? null : v.version); } catch (_) { return; } // said
        await refreshSide();
        drawEditor();
      });
      li.append(view);
    }
    versions.append(li);
  }
  const analysis = await getJSON(`/api/studies/${s.id}/analysis?version=${shown}`).catch((err) => err);
  if (!current()) return;
  if (analysis instanceof Error) { // headed with the version it failed for, not the one shown before
    $("analysis-version").textContent = `· version ${shown}`;
    $("analysis").innerHTML = `<p class="error">${escapeHtml(analysis.message)}</p>`;
  } else renderAnalysis(analysis, state.config.tissues, s.id);
}
