// The series of the upload a study came from (an exam export holds arterial and portal-venous, thin and thick
// series): the Series list of the L3 view shows what tells them apart, and choosing one opens it as a study
// of its own (its own L3 selection and labels), read from the stored upload: nothing is uploaded again.
import {$, getJSON, message, sendJSON, toast} from "./api.js";
import {state, stillOpen, stillShown} from "./state.js";

/** One series as the list names it: description, slices, slice thickness, contrast phase. */
function describe(s) {
  const parts = [s.description || "(no description)", `${s.n_slices} slice${s.n_slices === 1 ? "" : "s"}`];
  parts.push(s.slice_thickness_mm ? `${+s.slice_thickness_mm.toFixed(2)} mm` : "thickness not stated");
  parts.push(s.phase || "phase not stated");
  if (s.default) parts.push("default");
  return parts.join(" · ") + (s.reason ? ` — ${s.reason}` : "");
}

/** Show the Series list when the study's upload held several series (hidden otherwise). */
export async function showSeries() {
  const study = state.study;
  let series = [];
  try {
    series = await getJSON(`/api/studies/${study.id}/series`);
  } catch (err) { message(err.message, true); }
  if (!stillOpen(study.id)) return;
  $("series-bar").hidden = series.length < 2;
  $("series").replaceChildren(...series.map((s) => {
    const option = new Option(describe(s), s.series_uid, false, s.current);
    option.disabled = Boolean(s.reason);
    return option;
  }));
  $("series").dataset.shown = $("series").value; // the study's own series, back to it when cancelled
  $("series-note").textContent = series.length < 2 ? "" :
    `${series.length} series in this upload; "default" is the one with the most slices. ` +
    "Another series opens as a study of its own, with its own L3 selection and labels.";
}

/** Open the chosen series (the study it was opened as, or a new one from the stored upload). */
async function openChosen() {
  const select = $("series");
  const from = state.study.id;
  const chosen = select.selectedOptions[0].textContent;
  // asked before the series is opened (a study of its own on the server), as leaving the study would ask
  if (state.dirty && !confirm("Discard your unsaved label edits?")) {
    select.value = select.dataset.shown;
    return;
  }
  select.disabled = true;
  message("Opening the series…");
  try {
    const study = await sendJSON(`/api/studies/${from}/series`, "POST", {series_uid: select.value});
    if (!stillShown(from)) { // the user went elsewhere meanwhile: not taken away from there
      toast(`The series ${chosen} is open as a study of its own: find it in the study list.`, "info");
      return;
    }
    message("");
    if (study.id !== from) { // discarded, as agreed: opening this study again loads its saved labels
      state.dirty = false;
      state.labels = null;
    }
    location.hash = `#/study/${study.id}`;
  } catch (err) {
    if (!stillShown(from)) toast(`The series ${chosen} could not be opened: ${err.message}`);
    else {
      message(err.message, true);
      showSeries(); // back to the series shown
    }
  } finally { select.disabled = false; }
}

export function bindSeries() {
  $("series").addEventListener("change", openChosen);
}
