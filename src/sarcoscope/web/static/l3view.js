// The L3 selection view: the Slice or Range (inferior/superior) lines, the localizer's result, window
// presets, the engine and model choice and "Segment selected". The images are NiiVue's (mpr.js) or, without
// WebGL2, server PNGs (l3png.js); both call the hooks below and draw the lines this module owns.
import {$, api, download, getJSON, message, sendJSON, toast, unsay} from "./api.js";
import {replacingLabels, showLabeling} from "./labeling.js";
import {MPRView, SOFTWARE_MAX_VOXELS, webgl2Renderer} from "./mpr.js";
import {PNGView} from "./l3png.js";
import {pointerText} from "./readout.js";
import {showSeries} from "./series.js";
import {denied} from "./session.js";
import {imageText, ownsKeys, showPressed, slicePosition, slicesText, state, stillOpen, stillShown} from "./state.js";
import {setExportDeidentification} from "./versions.js";

let view = null; // the open study's: views.mpr or views.png
let mpr = false; // true: NiiVue
const views = {mpr: null, png: null}; // each made once, when a study is first shown on it
let webglFailed = false; // NiiVue could not start: the server's images from then on
let serverImagesWhy = ""; // why the open study is shown as server images, when WebGL2 is there
let locating = null; // the study whose L3 the localizer is looking for: its lines are about to move
let byHand = false; // the user placed the lines in this study: the localizer's proposal does not replace them
const kept = {slice: null, range: null}; // the lines each mode had when the user left it, for the way back
let shownPreset = null; // the Window preset NiiVue was last set to (the label editor's list changes it too)
let shownWindow = null; // [level, width] NiiVue shows (a right-drag makes it no preset's)
let dragged = null; // the line drag under way: {id: its study, moved: its lines as last dragged}
let segmenting = null; // the study "Segment selected" runs for: pressed again, it would be refused as a conflict

export function applySelection(sel) {
  state.mode = sel.mode;
  state.lines = [sel.first, sel.last];
  state.axialZ = sel.mode === "slice" ? sel.first : Math.round((sel.first + sel.last) / 2);
}

/** Fit the images again and forget the lines placed by hand (opening another study); its Series list and
 * the HU under the pointer are not shown for this one while its own come. */
export function resetL3View() {
  byHand = false;
  kept.slice = kept.range = null;
  for (const each of Object.values(views)) if (each) each.reset(false);
  if (views.mpr) views.mpr.leave();
  shownWindow = null; // this study's comes with its volume
  $("series-bar").hidden = true;
  $("l3-cursor").textContent = "";
  $("mpr").dataset.cursor = "";
}

const hooks = {
  crosshair(x, y, z) {
    const s = state.study;
    state.crossX = Math.max(0, Math.min(s.cols - 1, x));
    state.crossY = Math.max(0, Math.min(s.rows - 1, y));
    state.axialZ = clampZ(z);
    if (mpr) renderText(); // NiiVue already shows it
    else drawAll();
  },
  lines,
  marks,
  vertebrae: () => (state.study.localization || {}).vertebrae || {},
  lineAt(i) {
    state.activeLine = i;
    dragged = {id: state.study.id, moved: null};
  },
  dragLine(i, z) {
    // another study opened during the drag (a link, Back): its lines are not the ones being dragged
    if (dragged && !stillOpen(dragged.id)) return;
    state.activeLine = i;
    moveLine(z);
    if (dragged) dragged.moved = shownSelection();
  },
  dropLine() {
    const drag = dragged;
    dragged = null;
    // let go in another study: the lines dragged are saved for their own study, the open one's left alone
    if (drag && !stillOpen(drag.id)) {
      if (drag.moved) saveSelection(drag.moved);
    } else saveSelection();
  },
  window(level, width) {
    $("l3-window").textContent = `W ${width} · L ${level}`;
    shownWindow = [level, width];
    showWindowChoice();
  },
  key: lineKeys,
  cursor(x, y, z, hu) {
    $("l3-cursor").textContent = x === null ? "" : pointerText(x, y, z, hu);
  },
};

/** The Window list names the preset shown, or "custom" for a window right-dragged to: it never names a
 * window that is not the one shown, and choosing that preset again (no change event for the option already
 * chosen) sets it. */
function showWindowChoice() {
  const [level, width] = state.config.windows[state.preset];
  const custom = mpr && shownWindow && (shownWindow[0] !== level || shownWindow[1] !== width);
  $("l3-preset").value = custom ? "custom" : state.preset;
}

/** The lines to draw: one "L3" line (Slice) or the inferior and superior lines (Range), each labelled with
 * its slice and image number ("L3 · 77 · image 56"; `short`: without it, where that has no room). */
function lines() {
  const [a, b] = state.lines;
  const image = (z) => imageText(state.study, [z]);
  if (state.mode === "slice") {
    return [{z: a, label: `L3 · ${a}${image(a)}`, short: `L3 · ${a}`, color: "#ffd23f", active: true}];
  }
  return state.lines.map((z, i) => {
    const name = z < state.lines[1 - i] || (z === state.lines[1 - i] && i === 0) ? "inferior" : "superior";
    return {
      z, // the lower slice index is the inferior line (slice indices grow from feet to head)
      label: `${name} · ${z}${image(z)}`,
      short: `${name} · ${z}`,
      color: i === 0 ? "#ffd23f" : "#3fe0ff",
      active: i === state.activeLine,
    };
  });
}

/** The other L3 the localizer found likely when its count is uncertain: a dashed mark, never dragged. */
function marks() {
  const candidates = (state.study.localization || {}).candidates || [];
  if (candidates.length < 2) return [];
  const other = candidates[1];
  const z = other.l3_mid;
  const label = `other L3? p=${other.probability.toFixed(2)} · ${z}`;
  return [{z, label: label + imageText(state.study, [z]), short: label, color: "#ff8c1a"}];
}

/** Why study `s` is not shown on NiiVue when this browser has WebGL2: a software renderer (no GPU) and more
 * voxels than it builds NiiVue's textures of in a few seconds; "" when it is. */
function softwareTooLarge(s) {
  const renderer = webgl2Renderer();
  if (!renderer || !renderer.software || s.cols * s.rows * s.n_slices <= SOFTWARE_MAX_VOXELS) return "";
  return `server images: no GPU (software WebGL) for ${s.n_slices} slices of ${s.cols}×${s.rows}`;
}

// localStorage: "1" when the user chose the server's images (the "server images" box), for a computer
// NiiVue is slow on
const SERVER_IMAGES = "sarcoscope.serverImages";

function serverImagesChosen() {
  try {
    return localStorage.getItem(SERVER_IMAGES) === "1";
  } catch (_) { // storage blocked: the choice lasts for this page only
    return Boolean(serverImagesChosen.here);
  }
}

function chooseServerImages(chosen) {
  serverImagesChosen.here = chosen;
  try {
    if (chosen) localStorage.setItem(SERVER_IMAGES, "1");
    else localStorage.removeItem(SERVER_IMAGES);
  } catch (_) { /* kept for this page (serverImagesChosen) */ }
}

/** Show study `s` on NiiVue or, without WebGL2, with `?png` in the address, when the user chose them or
 * when softwareTooLarge, on the server's images. */
async function ensureView(s) {
  const chosen = serverImagesChosen();
  serverImagesWhy = chosen ? "server images, as chosen" : softwareTooLarge(s);
  mpr = Boolean(webgl2Renderer()) && !webglFailed && !serverImagesWhy &&
    !new URLSearchParams(location.search).has("png");
  if (mpr && !views.mpr) {
    try {
      const started = new MPRView($("mpr"), $("mpr-canvas"), $("mpr-overlay"), hooks);
      await started.start();
      views.mpr = started;
    } catch (err) {
      message(`The WebGL viewer could not start (${err.message}): showing server images.`, true);
      webglFailed = true;
      mpr = false;
    }
  }
  if (!mpr && !views.png) views.png = new PNGView(hooks);
  view = mpr ? views.mpr : views.png;
  $("mpr").hidden = !mpr;
  $("l3-grid").hidden = mpr;
  $("l3-window").hidden = !mpr;
  // the box says what is shown; greyed when that is not the user's choice to make (no WebGL2, ?png, a
  // software renderer and a long series: the hint says why)
  const box = $("server-images");
  box.checked = !mpr;
  box.disabled = !mpr && !chosen;
  box.parentElement.title = box.disabled ? "The WebGL viewer cannot show this study here: see the hint."
    : SERVER_IMAGES_TITLE;
}

const SERVER_IMAGES_TITLE = "Show the server's images instead of the WebGL viewer (NiiVue), for a computer " +
  "it is slow on; untick for the WebGL viewer again. Remembered in this browser.";

/** The "server images" box ticked or unticked: the open study on the view chosen, at once. */
async function switchView(e) {
  chooseServerImages(e.target.checked);
  const s = state.study;
  await ensureView(s);
  if (!stillOpen(s.id)) return;
  renderHint();
  drawAll();
  if (mpr) await showVolume(s);
  else if (saysLoading()) message(""); // NiiVue's volume, left: not said to be coming
}

/** What the mouse and keys do (one slice has no lines to move). */
function renderHint() {
  const mouse = mpr
    ? "right-drag: window/level · wheel: slices · ctrl+wheel: zoom · middle/shift+drag: pan · " +
      "click: crosshair"
    : `${serverImagesWhy ? `${serverImagesWhy} · ` : ""}wheel: slices · ctrl+wheel: zoom · middle or space+drag: pan`;
  const lines = state.study.n_slices > 1 ? " · drag the lines, ↑/↓ (PgUp/PgDn: 5; Tab: other)"
    : ` · ${NO_RANGE[0].toLowerCase()}${NO_RANGE.slice(1)}`; // "Slice" names the control
  $("l3-hint").textContent = mouse + lines;
  $("l3-hint").title = mouse + lines; // cut short when the line is full (style.css)
}

const NO_RANGE = "A single slice has no range: Slice measures it";

/** A single slice has no range: Range is unavailable, and says why (here and in the hint). */
function renderModes() {
  const one = state.study.n_slices === 1;
  const range = $("mode-range");
  range.disabled = one;
  range.title = one ? NO_RANGE : "Average the measurements over a range of slices";
}

export async function showL3() {
  const s = state.study;
  updateWaiting(); // this study's: another one's segmentation neither holds nor frees its buttons
  const shown = ensureView(s);
  const located = locate(s, shown); // at once, alongside the images (a long series' take seconds)
  await shown;
  if (!stillOpen(s.id)) return;
  showWindowChoice();
  renderHint();
  renderModes();
  drawAll();
  renderLocalization(); // this study's, none until it is located: not the study left's while images load
  loadModels();
  showSeries();
  if (mpr) await showVolume(s);
  await located;
}

/** Study `s`'s volume on NiiVue, once it came; its download said as it goes. */
async function showVolume(s) {
  const shown = view;
  message(LOADING);
  const preset = state.preset; // the window the volume is shown with when it comes
  const progress = (loaded, total) => { // over the loading message only, not one said meanwhile
    if (stillOpen(s.id) && saysLoading()) message(loadingText(loaded, total));
  };
  try {
    await shown.open(s, [state.crossX, state.crossY, state.axialZ], state.config.windows[preset], progress);
    if (!stillOpen(s.id) || view !== shown) return; // (the server's images chosen meanwhile)
    // a preset chosen meanwhile: in the label editor, or here while the volume loaded (none to set it on)
    if (shownPreset !== state.preset || preset !== state.preset) {
      view.setWindow(...state.config.windows[state.preset]);
    }
    shownPreset = state.preset;
    // not a message said meanwhile ("Saved as version 2.", "Nothing to save")
    if (saysLoading()) message(locating === s.id ? LOCATING : "");
    drawAll(); // the lines and crosshair as they are now: the localizer may have moved them meanwhile
  } catch (err) {
    if (!stillOpen(s.id) || view !== shown) return;
    message(`The volume could not be shown (${err.message}): open the study again to retry.`, true);
  }
}

const LOCATING = "Locating L3…";

/** Ask the localizer where L3 is in study `s`, and draw its answer (and the lines it places, unless placed
 * by hand) once the view is `shown`, whether its images are there yet or not. Not asked when `s` is located,
 * when it is being asked already (the tab shown before, left and shown again meanwhile: that answer is
 * drawn), or when this role may not change the selection, which the localizer places. */
async function locate(s, shown) {
  if (s.localization || denied("change")) return;
  message(LOCATING);
  if (locating === s.id) return;
  locating = s.id;
  updateWaiting();
  try {
    const study = await sendJSON(`/api/studies/${s.id}/localize`, "POST", {});
    await shown;
    if (!stillOpen(s.id)) return;
    state.study = study;
    if (study.selection && !byHand) applySelection(study.selection);
    unsay(LOCATING);
    renderLocalization();
    drawAll();
  } catch (err) {
    if (stillOpen(s.id)) message(err.message, true);
  } finally {
    if (locating === s.id) locating = null;
    updateWaiting();
  }
}

const LOADING = "Loading the images…";
const saysLoading = () => $("study-message").textContent.startsWith(LOADING);

/** How far the volume's download is: a large volume (hundreds of slices) takes a while, said as it goes. */
function loadingText(loaded, total) {
  const mb = (n) => (n / 1024 ** 2).toFixed(1);
  if (!loaded) return LOADING;
  // no size said, or the compressed one (a proxy's Content-Encoding): what came so far only
  if (!total || loaded > total) return `${LOADING} ${mb(loaded)} MB`;
  return `${LOADING} ${Math.floor((100 * loaded) / total)} % (${mb(loaded)} of ${mb(total)} MB)`;
}

/** The localizer's notes: `summary` on a line always in sight, `reasons` (often long) scrolling under it. */
function showFlags(summary, reasons) {
  $("l3-flag-summary").textContent = summary;
  $("l3-flag-reasons").textContent = reasons;
}

/** The notes' first line: both candidate L3s with their probabilities when the count is uncertain (the
 * lines are on the first), and every flag's name, which a long reason before it would scroll out of sight. */
function flagSummary(loc) {
  const where = (c) => `slice ${c.l3_mid} (p=${c.probability.toFixed(2)}${imageText(state.study, [c.l3_mid], ", ")})`;
  const [first, other] = loc.candidates || [];
  const names = (loc.flags || []).map((f) => f.flag);
  return [
    other ? `L3 at ${where(first)} or at ${where(other)}` : "",
    names.length ? `flags: ${names.join(", ")}` : "",
  ].filter(Boolean).join(" — ");
}

function renderLocalization() {
  const loc = state.study.localization || {};
  const conf = $("l3-confidence");
  $("l3-flags").classList.toggle("note", Boolean(loc.too_short));
  if (loc.too_short) { // not a failure: the user chose these slices, too few to count vertebrae on
    const one = state.study.n_slices === 1;
    conf.textContent = one ? "single slice: analysed as given"
      : "too few slices to locate L3 automatically: place the lines on L3 by hand";
    conf.className = "confidence";
    showFlags("", one
      ? "Its level is not checked (make sure it is L3: the cutoffs are for L3); one slice has no coronal or " +
        "sagittal views."
      : loc.error);
    return;
  }
  if (loc.error) {
    conf.textContent = "Automatic localization failed: place the lines by hand.";
    conf.className = "confidence low";
    showFlags("", loc.error);
    return;
  }
  if (typeof loc.confidence === "number") {
    conf.textContent = `auto L3 confidence ${(loc.confidence * 100).toFixed(0)} %`;
    conf.className = loc.confidence < 0.5 ? "confidence low" : "confidence";
  } else conf.textContent = "";
  showFlags(flagSummary(loc), (loc.flags || []).map((f) => `${f.flag}: ${f.reason}`).join(" · "));
}

function selectionText() {
  const [a, b] = state.lines;
  const lo = Math.min(a, b);
  const hi = Math.max(a, b);
  if (state.mode === "slice") return `Slice ${a}${imageText(state.study, [a])}`;
  const images = imageText(state.study, [lo, hi]);
  if (lo === hi) return `Range: slice ${lo} only (1 slice${images})`;
  return `Range ${lo}–${hi} (${hi - lo + 1} slices${images})`;
}

/** The vertebra the automatic localizer puts slice z in (null: not localized or between vertebrae). */
function levelOf(z) {
  const vertebrae = hooks.vertebrae();
  const hit = Object.entries(vertebrae).find(([, v]) => v.first <= z && z <= v.last);
  return hit ? hit[0] : null;
}

/** Says where the localizer puts the chosen slice(s); a warning when that is not L3 (cutoffs are L3's). */
function renderLevel() {
  const el = $("l3-level");
  if (!Object.keys(hooks.vertebrae()).length) {
    el.textContent = "";
    el.className = "level";
    return;
  }
  const [lo, hi] = [Math.min(...state.lines), Math.max(...state.lines)];
  const zs = state.mode === "slice" ? [state.lines[0]] : Array.from({length: hi - lo + 1}, (_, i) => lo + i);
  const levels = [...new Set(zs.map((z) => levelOf(z) || "between vertebrae"))];
  const atL3 = levels.length === 1 && levels[0] === "L3";
  el.textContent = `localizer: ${levels.join(", ")}` + (atL3 ? "" : " — not L3: the cutoffs are for L3");
  el.className = atL3 ? "level" : "level warn";
}

function renderText() {
  showPressed($("mode-range"), state.mode === "range");
  showPressed($("mode-slice"), state.mode === "slice");
  $("l3-selection-text").textContent = selectionText();
  $("axial-index").textContent = slicePosition(state.axialZ, state.study.n_slices) +
    imageText(state.study, [state.axialZ]);
  $("l3-viewer").dataset.axial = state.axialZ;
  $("l3-viewer").dataset.lines = lines().map((line) => line.z).join(",");
  $("l3-viewer").dataset.marks = marks().map((mark) => mark.z).join(",");
  renderLevel();
}

function drawAll() {
  renderText();
  if (mpr) view.setCrosshair(state.crossX, state.crossY, state.axialZ);
  else view.draw();
}

// ------------------------------------------------------------------------------- model choice --
// The installed U-Net models (GET /api/models) for engines that take one; the site default is preselected.
async function loadModels() {
  try {
    const {models} = await getJSON("/api/models");
    $("model").replaceChildren(...models.map((m) => {
      const option = new Option(`${m.id}${m.default ? " (default)" : ""}`, m.id, m.default, m.default);
      option.title = m.validation;
      return option;
    }));
  } catch (err) { message(err.message, true); }
  showModelChoice();
}

function showModelChoice() {
  $("model-choice").hidden = !state.config.model_engines.includes($("engine").value);
}

function chosenModel() {
  return $("model-choice").hidden ? null : $("model").value || null;
}

export function bindL3() {
  $("engine").addEventListener("change", showModelChoice);
  $("mode-range").addEventListener("click", () => setMode("range"));
  $("mode-slice").addEventListener("click", () => setMode("slice"));
  $("l3-preset").addEventListener("change", (e) => {
    state.preset = e.target.value;
    shownPreset = state.preset;
    if (mpr) view.setWindow(...state.config.windows[state.preset]);
    else drawAll();
  });
  $("server-images").addEventListener("change", switchView);
  $("axial-reset").addEventListener("click", () => view.reset());
  $("l3-reset").addEventListener("click", () => {
    view.reset();
    if (mpr) view.setWindow(...state.config.windows[state.preset]);
  });
  document.addEventListener("keydown", (e) => { // ↑/↓ as the hint says, whatever control was clicked last
    if ($("pane-l3").hidden || $("view-study").hidden || ownsKeys(e.target)) return;
    if (e.key !== "Tab" || $("l3-viewer").contains(e.target)) lineKeys(e); // elsewhere Tab moves the focus
  });
  $("download-dicom").addEventListener("click", async () => {
    // the slices the lines show: the server's selection may lag them (↑/↓ save 0.4 s later) or be none yet
    const {id, selection: {first, last}} = shownSelection();
    const url = `/api/studies/${id}/dicom?first=${first}&last=${last}&deidentify=${$("deidentify").checked}`;
    await download(url, $("download-dicom"));
    updateWaiting(); // off again while the localizer runs (the download turned it on)
  });
  $("segment").addEventListener("click", segmentSelected);
  window.addEventListener("pagehide", sendWaitingKeys);
  $("deidentify-exports").addEventListener("change", setExportDeidentification);
  $("exports").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-href]");
    if (!button) return;
    // an export is of a saved version: one made beside an unsaved edit would lack it without a word
    if (state.dirty && !confirm(`Your unsaved edit is not in this export: it is made from version ` +
      `${state.version}, as saved. Export version ${state.version} anyway? (Cancel, then Save, to export ` +
      "your edit.)")) return;
    download(button.dataset.href, button);
  });
}

/** ↑/↓ and PgUp/PgDn move the active line; Tab (in the viewer) switches it. */
function lineKeys(e) {
  const steps = {ArrowUp: 1, ArrowDown: -1, PageUp: 5, PageDown: -5};
  if (e.key in steps) {
    e.preventDefault();
    moveLine(state.lines[state.activeLine] + steps[e.key]);
    const shown = shownSelection(); // saved 0.4 s later as this study's, whichever is open by then
    // another study's move still waiting (its keys, then this one opened within 0.4 s) is saved now, not
    // dropped with its timer
    if (lineKeys.waiting && lineKeys.waiting.id !== shown.id) saveSelection(lineKeys.waiting);
    clearTimeout(lineKeys.timer);
    lineKeys.waiting = shown;
    lineKeys.timer = setTimeout(() => saveSelection(shown), 400);
  } else if (e.key === "Tab" && state.mode === "range") {
    e.preventDefault();
    state.activeLine = 1 - state.activeLine;
    drawAll();
  }
}

/** The page reloaded or closed within 0.4 s of ↑/↓: their move, whose timer goes with the page, is sent now,
 * in a request that outlives the page (else it was lost without a word). */
function sendWaitingKeys() {
  const waiting = lineKeys.waiting;
  if (!waiting) return;
  clearTimeout(lineKeys.timer);
  lineKeys.waiting = null;
  api(`/api/studies/${waiting.id}/selection`, {method: "PUT", keepalive: true,
    headers: {"Content-Type": "application/json"}, body: JSON.stringify(change(waiting))}).catch(() => {});
}

/** This page sitting's id, sent with each selection change: the server does not refuse a change as a
 * conflict with one this page made itself (successive saves, the one sent as the page closes), only with a
 * colleague's or another tab's. (crypto.randomUUID is missing on a plain-http address other than localhost.) */
const EDITOR = Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0"))
  .join("");

/** The body of PUT /selection: the lines, and the selection they were moved from (`base`). */
const change = ({selection, base}) => ({...selection, base_version: base, editor: EDITOR});

/** True when selections a and b (mode, first, last) are the same slices. */
const sameSelection = (a, b) => Boolean(a && b) && a.mode === b.mode && a.first === b.first && a.last === b.last;

/** True when slice z and both ends of range r are numbers, z between them. */
const within = (z, r) =>
  Boolean(r) && [z, ...r].every(Number.isFinite) && z >= Math.min(...r) && z <= Math.max(...r);

const clampZ = (z) => Math.max(0, Math.min(state.study.n_slices - 1, z));

/** Slice goes to the slice the user had, else the localizer's mid-L3, when it is in the range (else to its
 * middle); Range goes back to the range the user had, else the localizer's L3 body, when it holds the slice
 * (else to +-15 mm around it). */
function setMode(mode) {
  if (mode === state.mode || (mode === "range" && state.study.n_slices === 1)) return;
  const loc = state.study.localization || {};
  const [lo, hi] = [Math.min(...state.lines), Math.max(...state.lines)];
  kept[state.mode] = [lo, hi];
  if (mode === "slice") {
    const mine = kept.slice && kept.slice[0];
    const z = [mine, loc.l3_mid].find((c) => within(c, [lo, hi])) ?? Math.round((lo + hi) / 2);
    state.lines = [z, z];
  } else {
    const z = state.lines[0];
    const range = [kept.range, [loc.l3_lower_endplate, loc.l3_upper_endplate]].find((r) => within(z, r));
    const half = Math.max(1, Math.round(15 / state.study.spacing[0]));
    state.lines = range ? [Math.min(...range), Math.max(...range)] : [clampZ(z - half), clampZ(z + half)];
  }
  state.mode = mode;
  state.activeLine = 0;
  byHand = true;
  updateWaiting();
  drawAll();
  saveSelection();
}

/** "Segment selected" and "Download selected DICOM" wait for the localizer, which is about to move the lines
 * the user sees, unless the user placed them; "Segment selected" waits for its own run too. */
function updateWaiting() {
  const wait = locating === state.study.id && !byHand;
  for (const id of ["segment", "download-dicom"]) {
    $(id).disabled = wait;
    $(id).title = wait ? `${LOCATING}: wait for the lines, or place them by hand` : "";
  }
  if (segmenting === state.study.id) {
    $("segment").disabled = true;
    $("segment").title = "Segmenting: this study's segmentation is running";
  }
}

function moveLine(z) {
  if (denied("change")) { // the lines show the study's selection, which this role may not change
    message(denied("change"), true);
    return;
  }
  byHand = true;
  updateWaiting();
  z = clampZ(z);
  state.lines[state.activeLine] = z;
  if (state.mode === "slice") state.lines[1] = z;
  state.axialZ = z;
  drawAll();
}

let saves = Promise.resolve(); // the selection saves, one after another
let lastSave = 0; // saveSelection calls so far: only the last one's answer is the page's study

/** The study open, the selection its lines show and the stored one they were moved from (`base`). */
function shownSelection() {
  const [a, b] = state.lines;
  const selection = {mode: state.mode, first: Math.min(a, b), last: Math.max(a, b)};
  return {id: state.study.id, text: selectionText(), selection, base: state.study.selection_version};
}

/** Save the lines (as they are now, unless given). The saves go one after another, so that the server keeps
 * the last lines (two sent at once, a drag and ↑ right after it, could be stored in either order). */
function saveSelection(shown = shownSelection()) {
  if (denied("change")) return saves; // the lines did not move (moveLine)
  const {id, text} = shown;
  // a key's save still waiting has lines this one moved on from (Range pressed, a line dragged): sent
  // after it, it would put them back on the server
  if (lineKeys.waiting && lineKeys.waiting.id === id) {
    clearTimeout(lineKeys.timer);
    lineKeys.waiting = null;
  }
  const call = ++lastSave;
  saves = saves.then(async () => {
    try {
      let study;
      try {
        study = await sendJSON(`/api/studies/${id}/selection`, "PUT", change(shown));
      } catch (err) {
        if (err.status !== 409 || !(err.body && err.body.study) || !stillOpen(id)) throw err;
        study = await resolveConflict(shown, err);
        if (!study) return;
      }
      if (!stillOpen(id) || call !== lastSave) return; // a later save's answer follows
      state.study = study;
      message(`Saved selection: ${text}`);
    } catch (err) {
      if (stillOpen(id)) message(err.message, true);
      else toast(`The L3 selection of the study left was not saved: ${err.message}`);
    }
  });
  return saves;
}

/** A colleague (or another tab) changed the selection since the lines were moved from it: saving them
 * would move the slices they chose, and their labels are for, without a word. The user says which stays:
 * theirs is shown (Cancel), or the lines are saved over it (OK); the study as answered, or null. */
async function resolveConflict(shown, err) {
  const theirs = err.body.study;
  const {first, last} = theirs.selection;
  if (confirm(`${err.message}\n\nOK: save yours (${shown.text}) over it. Cancel: show their selection ` +
      `(${slicesText(first === last ? [first] : [first, last])}).`)) {
    return sendJSON(`/api/studies/${shown.id}/selection`, "PUT",
      change({...shown, base: theirs.selection_version}));
  }
  if (!stillOpen(shown.id)) return null;
  state.study = theirs;
  applySelection(theirs.selection);
  drawAll();
  message(`Showing the selection ${theirs.selection_by} saved: ${selectionText()}`);
  return null;
}

async function segmentSelected() {
  if (state.dirty && !confirm("Segmenting makes a new version: discard your unsaved edit?")) return;
  const id = state.study.id; // the user may open another study while this one is segmented
  segmenting = id;
  updateWaiting();
  const name = state.study.patient_id || id;
  const working = `Segmenting ${selectionText().toLowerCase()}…`;
  // the edit agreed to be discarded stays on screen, held, until the new version replaces it (kept if it fails)
  await replacingLabels(id, async () => {
    try {
      // asked before anything is sent: the latest version's status as the server has it now (another tab)
      const latest = await getJSON(`/api/studies/${id}`);
      if (!stillOpen(id)) return;
      const v = latest.latest_version;
      if (latest.status === "edited" && !confirm(
        `The latest labels (version ${v}) were made or corrected by hand. Segmenting makes a new ` +
        `version from scratch, which the analysis then shows (version ${v} stays in Versions and can ` +
        "be restored). Segment anyway?")) return;
      const shown = shownSelection();
      await saveSelection(shown); // the lines as shown (a save that failed while they moved)
      if (!stillOpen(id)) return;
      // a colleague's selection shown instead ("show their selection"): the user looks at it, then presses
      // Segment on it; neither theirs, unseen, nor the lines just given up is segmented
      if (!sameSelection(shownSelection().selection, shown.selection)) return;
      message(working);
      // on the version asked about: one saved since is refused as a conflict, not segmented over unasked;
      // and on the lines shown: a selection changed since elsewhere is refused, not segmented unseen
      const {first, last} = shown.selection;
      await sendJSON(`/api/studies/${id}/segment`, "POST",
        {engine: $("engine").value, base_version: v, model: chosenModel(), first, last});
      const study = await getJSON(`/api/studies/${id}`);
      if (!stillShown(id)) {
        toast(`The segmentation of ${name} is done: open it from the study list.`, "info");
        return;
      }
      state.study = study;
      state.labels = null; // the edit on them discarded, as agreed: the new version is loaded
      state.dirty = false;
      const label = `#/study/${id}/label`;
      if (location.hash !== label) location.hash = label;
      else { // already on the label tab: no hashchange would show the new version
        unsay(working);
        await showLabeling();
      }
    } catch (err) {
      const kept = stillOpen(id) && state.dirty ? " Your unsaved edit is kept." : "";
      if (!stillShown(id)) toast(`The segmentation of ${name} failed: ${err.message}`);
      else {
        message(err.message + kept, true);
        if (err.status === 409 && err.body && err.body.latest_version) {
          state.study = await getJSON(`/api/studies/${id}`);
        }
      }
    } finally {
      if (segmenting === id) segmenting = null;
      updateWaiting(); // the study open now: it may be waiting for its localizer
    }
  });
}
