// The label editor: one selected slice at a time with brush, eraser and fill, undo/redo, and Save as a new
// label version (refused, with the reason, when someone saved in between).
import {$, api, message, toast, unsay} from "./api.js";
import {fillRegion, huAllows, paintDisc, sliceData} from "./brush.js";
import {drawOutline} from "./outline.js";
import {PointerReadout} from "./readout.js";
import {denied} from "./session.js";
import {
  WheelSlices, canvasPoint, image, imageText, ownsKeys, showOrientation, showPressed, slicesText, state, stillOpen,
} from "./state.js";
import {Viewport} from "./viewport.js";
import {clearSide, patientUnapplied, refreshSide, restoreViewed, savePatient} from "./versions.js";


let editView = null; // Viewport of the label editor
let pointed = null; // PointerReadout of the label editor: the pixel, HU and label under the pointer
const editWheel = new WheelSlices(); // its wheel's slices
let readOnly = ""; // the message that the version shown is read-only, cleared when another one is shown
let nothingFilled = ""; // the message that a fill found nothing to fill, cleared by one that fills
let made = ""; // the message that a version was made (saved, restored, imported)
let loading = 0; // label loads on their way: the labels on screen are about to be replaced
let loads = 0; // loadLabels calls so far: only the last one's labels are shown (two "view" clicked at once)
const STILL_LOADING = "Nothing painted: the labels are still loading. Paint once they are shown.";
// Undo and Redo are of the labels on screen, which a load replaces (with a history of its own: none)
const UNDO_LOADING = "Nothing undone: the labels are still loading. Undo and Redo are for the labels shown.";
const SAVE_LOADING = "Nothing saved: the labels are still loading.";
// Segment and Import make a new version and show it: the labels on screen are about to be replaced
const replacing = new Set(); // the studies they run for (another study opened meanwhile is editable)
const REPLACING = "a new version of the labels is being made (Segment or Import)";
const replaced = () => Boolean(state.study) && replacing.has(state.study.id);

/** Say that a version was made: said until an older version is viewed (it does not name the labels shown). */
export function sayMade(text) {
  made = text;
  message(text);
}

/** Run `work`, which makes a new label version of study `id` and shows it. Meanwhile strokes, Undo and Save
 * are refused, saying why, as while labels load: a stroke would be dropped without a word when the version
 * comes, and Save would store the edit the user agreed to discard. If `work` fails, the labels (an unsaved
 * edit too) are editable again as they were. */
export async function replacingLabels(id, work) {
  replacing.add(id);
  updateButtons();
  try { return await work(); } finally {
    replacing.delete(id);
    updateButtons();
  }
}

/** Fit the editor's image again and blank it (opening another study): nothing of the study left (its image
 * and labels, a read-only version of it, its slice, its undo steps and an edit discarded on leaving it) is
 * shown while this one's labels load. */
export function resetEditorView() {
  editView.reset(false);
  state.undo = [];
  state.redo = [];
  updateButtons(); // Save, Undo and the note of an unsaved edit: none in this study
  draws += 1; // an image of the study left still on its way is not drawn
  drawn = null;
  for (const id of ["edit-base", "edit-overlay"]) $(id).getContext("2d").clearRect(0, 0, $(id).width, $(id).height);
  $("slice-text").textContent = "";
  $("readonly-banner").hidden = true;
  pointed.clear();
}

export async function showLabeling() {
  const s = state.study;
  showBrushSize(); // at this study's pixels
  showOrientation($("editor-box"), "axial");
  $("label-preset").value = state.preset;
  if (!s.latest_version) {
    message("No labels yet: choose the L3 slice(s) and press “Segment selected”.", true);
    $("editor-stack").hidden = true;
    await refreshSide();
    return;
  }
  $("editor-stack").hidden = false;
  if (!state.labels || state.viewing !== null) {
    try { await loadLabels(null); } catch (_) { // said: the panel is not "Loading…" for ever
      if (stillOpen(s.id)) clearSide("The labels could not be loaded.");
      return;
    }
  }
  await drawEditor(); // the image first: strokes wait for it (the analysis beside it can wait)
  await refreshSide();
}

/** Load the latest labels, or version `version` read-only. Strokes are refused until they are shown: one
 * painted meanwhile on the labels shown before would be dropped without a word when these come. */
export async function loadLabels(version) {
  const id = state.study.id;
  const q = version ? `?version=${version}` : "";
  const call = ++loads;
  loading += 1;
  updateButtons(); // Undo, Redo and Save are off until the labels are shown
  let response, buffer;
  try {
    response = await api(`/api/studies/${id}/labels${q}`);
    buffer = await response.arrayBuffer();
  } catch (err) { // said with the server's reason (the labels shown stay); the caller stops
    if (stillOpen(id) && call === loads) message(`The labels could not be loaded: ${err.message}`, true);
    throw err;
  } finally {
    loading -= 1;
    updateButtons();
  }
  if (!stillOpen(id) || call !== loads) return;
  state.shape = response.headers.get("X-Label-Shape").split(",").map(Number);
  state.indices = response.headers.get("X-Label-Indices").split(",").map(Number);
  state.labels = new Uint8Array(buffer);
  state.saved = state.labels.slice();
  // the overlay still shows the labels drawn before (an edit just discarded, another version): blank until
  // drawEditor draws these over their slice's image
  const overlay = $("edit-overlay");
  overlay.getContext("2d").clearRect(0, 0, overlay.width, overlay.height);
  const v = Number(response.headers.get("X-Label-Version"));
  if (version) state.viewing = v;
  else { // the latest: Import and Segment send it as the version they build on
    state.viewing = null;
    state.version = v;
    state.study.latest_version = v;
  }
  state.undo = [];
  state.redo = [];
  state.dirty = false;
  state.current = Math.min(state.current, state.indices.length - 1);
  if (state.current < 0) state.current = 0;
  $("readonly-banner").hidden = state.viewing === null;
  $("readonly-version").textContent = state.viewing ?? "";
  unsay(readOnly);
  if (version) unsay(made);
  unsay(STILL_LOADING);
  unsay(UNDO_LOADING);
  unsay(SAVE_LOADING);
  if (version) $("readonly-banner").scrollIntoView({block: "nearest"}); // "view" is far down the side panel
  updateButtons();
}

function sliceArea() { return state.shape[1] * state.shape[2]; }
function sliceView() {
  const n = sliceArea();
  return state.labels.subarray(state.current * n, (state.current + 1) * n);
}

let draws = 0; // drawEditor calls so far: an image that arrives after a newer call is not drawn
let drawn = null; // "study/z" of the slice whose image is on screen (null: none yet)
/** The key `drawn` has while the current slice's image is the one on screen. */
const currentSlice = () => `${state.study.id}/${state.indices[state.current]}`;
let imageLoading = ""; // the message that a stroke waits for its slice's image, cleared once it is drawn
let missing = ""; // the message that a slice's image could not be loaded, cleared once one is

/** The current slice's image with its labels. The labels are never shown over another slice's image: an
 * image that arrives late (a newer slice was chosen meanwhile) is dropped, one that fails leaves the image
 * blank and says so. */
export async function drawEditor() {
  if (!state.labels) return;
  const call = ++draws;
  const slice = currentSlice();
  const [, ny, nx] = state.shape;
  const z = state.indices[state.current];
  const position = `${state.current + 1} of ${state.indices.length}`;
  $("slice-text").textContent = `slice ${z}${imageText(state.study, [z])} (${position})`;
  const s = state.study;
  for (const id of ["edit-base", "edit-overlay", "edit-cursor"]) {
    const c = $(id);
    if (c.width !== nx || c.height !== ny) { c.width = nx; c.height = ny; }
  }
  editView.layout(nx * s.spacing[2], ny * s.spacing[1]);
  showPixels();
  const base = $("edit-base").getContext("2d");
  const img = image("axial", z, state.preset);
  let loaded = true;
  try { await img.ready; } catch (_) { loaded = false; }
  if (call !== draws) return;
  drawn = slice;
  unsay(imageLoading);
  base.clearRect(0, 0, nx, ny);
  if (loaded) base.drawImage(img, 0, 0);
  // at an end its button does nothing, so it says so; after a failed image both stay on, to load it again
  $("slice-prev").disabled = loaded && state.current === 0;
  $("slice-next").disabled = loaded && state.current === state.indices.length - 1;
  drawOverlay();
  if (!loaded) {
    missing = `The image of slice ${z} could not be loaded from the server: go to the slice again (◀ ▶) to retry.`;
    message(missing, true);
  } else unsay(missing);
}

/** The CT as its pixels, as the labels are drawn, once one is 2 screen pixels wide or more: magnified (3 mm
 * pixels at fit, or zoomed in) the browser's smoothing hid which pixel an edge is. Shrunk or barely magnified
 * (512 pixels in a smaller box) it stays smooth: nearest-neighbour scaling there drops or doubles rows. */
function showPixels() {
  const screenPerPixel = (editView.width * editView.zoom * (window.devicePixelRatio || 1)) / state.shape[2];
  $("edit-base").classList.toggle("pixels", screenPerPixel >= 2);
}

/** The current slice's labels over its image; nothing while another slice's image is still shown (the
 * current one's comes: drawEditor draws its labels then). */
function drawOverlay() {
  if (drawn !== currentSlice()) return;
  const [, ny, nx] = state.shape;
  const ctx = $("edit-overlay").getContext("2d");
  const out = ctx.createImageData(nx, ny);
  const px = out.data;
  const labels = sliceView();
  const alpha = Math.round(state.opacity * 255);
  const colors = {};
  for (const t of state.config.tissues) colors[t.label] = t.color;
  for (let i = 0; i < labels.length; i++) {
    const l = labels[i];
    if (l && state.visible[l]) {
      const c = colors[l];
      px[4 * i] = c[0]; px[4 * i + 1] = c[1]; px[4 * i + 2] = c[2]; px[4 * i + 3] = alpha;
    }
  }
  ctx.putImageData(out, 0, 0);
  pointed.refresh(state.indices[state.current]); // the label (or the slice) under the pointer changed
}

/** The label at pixel (x, y) of the slice shown, when its labels are drawn (else null: none is shown). */
function labelAt(x, y) {
  return drawn === currentSlice() ? sliceView()[y * state.shape[2] + x] : null;
}

/** True while the labels being edited are those of slice `slice` of study `id` (what a slow answer was
 * asked for): strokes and fills are not applied to another slice or study chosen meanwhile, nor to other
 * labels loaded meanwhile (`labels`: those edited when the edit began; a version viewed, an edit discarded). */
const stillEditing = (id, slice, labels = state.labels) =>
  stillOpen(id) && state.current === slice && state.labels === labels;

// Edits begun that wait for their slice's data (a fill; a brush stroke with "HU range only"): Undo and Redo
// pressed meanwhile wait for them to land, then undo that edit, the last one made. Applied at once, Undo took
// back the step before, and the fill then landed over it (its undo step brought back what was undone).
let waiting = 0;
const afterLanding = []; // Undo and Redo presses waiting for the edits to land

/** Run `edit` (async) as an edit that waits; Undo and Redo pressed meanwhile are done once it has landed. */
async function landing(edit) {
  waiting += 1;
  updateButtons(); // Undo is on for the edit to come
  try { return await edit(); } finally {
    waiting -= 1;
    if (!waiting) for (const press of afterLanding.splice(0)) press();
    updateButtons();
  }
}

/** `press` (undo or redo) now, or once the edits begun have landed. An Undo pressed for edits that then
 * changed nothing (a fill outside the body, "Nothing filled") does nothing: it was meant for them, not for the
 * step before. */
function landed(press) {
  if (!waiting) press();
  else {
    const since = steps;
    afterLanding.push(() => { if (press !== undo || steps !== since) press(); });
  }
}


/** Remember the current slice's labels (`data`: as they were before an edit already made) for Undo. */
let steps = 0; // undo steps ever taken (the stack is capped, so its length does not count them)

function pushUndo(data = sliceView().slice()) {
  steps += 1;
  state.undo.push({slice: state.current, data});
  if (state.undo.length > 100) state.undo.shift();
  state.redo = [];
}

/** The brush paints over any label (the colour painted shows); the eraser takes the labels shown only: one
 * hidden (its box unticked) is not changed unseen. */
function paintAt(cx, cy, hu) {
  const [, ny, nx] = state.shape;
  const value = state.tool === "eraser" ? 0 : state.paintLabel;
  const labels = sliceView();
  const allows = value ? (i) => huAllows(hu, i, value) : (i) => state.visible[labels[i]];
  paintDisc(labels, nx, ny, cx, cy, state.brush, value, allows);
}

/** Fill from (cx, cy) with the painted label, inside the body and the label's HU range (always: a fill
 * that ignored them would flood air or organs); says so when nothing could be filled. The fill lands when
 * the slice's data come, in one step with its undo step: taken then, so that a stroke painted meanwhile is
 * in it (Undo waits for the fill, see `landed`). */
async function floodFill(cx, cy) {
  const [, ny, nx] = state.shape;
  const value = state.paintLabel;
  const [id, slice, labels] = [state.study.id, state.current, state.labels];
  const z = state.indices[slice];
  let hu, body;
  try { [hu, body] = await Promise.all([sliceData("hu", z), sliceData("body", z)]); } catch (err) {
    // said, as for a stroke: else the click did nothing without a word (an error in the console only)
    const why = `the HU or body of slice ${z} could not be loaded (${err.message})`;
    if (stillOpen(id)) message(`Nothing filled: ${why}.`, true);
    return false;
  }
  if (!stillEditing(id, slice, labels)) return false;
  const before = sliceView().slice();
  const filled = fillRegion(sliceView(), nx, ny, cx, cy, value, (i) => body[i] && huAllows(hu, i, value));
  if (filled) {
    pushUndo(before);
    markDirty();
    drawOverlay();
  }
  if (!filled) {
    const name = state.config.tissues.find((t) => t.label === value).name.toUpperCase();
    nothingFilled = `Nothing filled: the point is outside the body, outside ${name}'s HU range, or already ${name}.`;
    message(nothingFilled);
  } else unsay(nothingFilled); // this one did
  return filled;
}

function editorPoint(e) {
  return canvasPoint($("edit-cursor"), e);
}

export function bindEditor() {
  const cursor = $("edit-cursor");
  // The brush stroke while the button is down (null once it is up): {study, slice, last, hu, waiting}.
  // With "HU range only" the slice's HU may still be on their way from the server: the points drawn
  // meanwhile wait in `waiting` and are painted when they come (the stroke ends at release all the same).
  let stroke = null;
  const strokeTo = (s, [x, y]) => {
    const [lx, ly] = s.last || [x, y];
    const dist = Math.hypot(x - lx, y - ly);
    const steps = s.last ? Math.max(1, Math.ceil(dist / Math.max(0.5, state.brush / 4))) : 1;
    for (let k = 1; k <= steps; k++) paintAt(lx + ((x - lx) * k) / steps, ly + ((y - ly) * k) / steps, s.hu);
    s.last = [x, y];
  };
  cursor.addEventListener("pointerdown", async (e) => {
    if (!state.labels || e.button !== 0) return;
    if (denied("change")) { // nothing is painted: the role may not save it
      message(denied("change"), true);
      return;
    }
    if (state.viewing !== null) { // nothing is painted: say why, and where to go on
      readOnly = `Version ${state.viewing} is read-only: “Restore this version” or “Back to latest” to edit.`;
      message(readOnly, true);
      $("readonly-banner").scrollIntoView({block: "nearest"});
      return;
    }
    if (loading) { // the labels shown are about to be replaced
      message(STILL_LOADING, true);
      return;
    }
    if (replaced()) {
      message(`Nothing painted: ${REPLACING}. Paint once it is shown.`, true);
      return;
    }
    if (drawn !== currentSlice()) { // the image on screen is another slice's: not the anatomy painted on
      const z = state.indices[state.current];
      imageLoading = `Nothing painted: the image of slice ${z} is still loading. Paint once it is shown.`;
      message(imageLoading, true);
      return;
    }
    cursor.setPointerCapture(e.pointerId);
    const [x, y] = editorPoint(e);
    if (state.tool === "fill") {
      await landing(() => floodFill(Math.floor(x), Math.floor(y)));
      return;
    }
    const labels = state.labels;
    const s = {study: state.study.id, slice: state.current, labels, last: null, hu: null, waiting: [[x, y]]};
    stroke = s;
    await landing(async () => { // the stroke lands with its first points (and its undo step) once it can
      if ($("hu-constrain").checked) {
        const z = state.indices[s.slice];
        try { s.hu = await sliceData("hu", z); } catch (err) {
          if (stroke === s) stroke = null;
          message(`Nothing painted: the HU of slice ${z} could not be loaded (${err.message}).`, true);
          return;
        }
      }
      if (!stillEditing(s.study, s.slice, labels)) { // the stroke was on the labels shown when it began
        if (stroke === s) stroke = null;
        return;
      }
      pushUndo();
      s.step = state.undo.at(-1); // its undo step: undone (Ctrl+Z with the button down), the stroke ends
      for (const point of s.waiting) strokeTo(s, point);
      s.waiting = null;
      markDirty();
      drawOverlay();
    });
  });
  pointed = new PointerReadout($("edit-readout"), labelAt);
  cursor.addEventListener("pointermove", (e) => {
    drawOutline(e);
    if (state.labels) pointed.point(...editorPoint(e), state.indices[state.current]);
    if (!stroke) return;
    // the button is up, its release lost (let go over another window): the stroke ended there
    if (!(e.buttons & 1)) { stroke = null; return; }
    // the stroke ends where its slice does (wheel or PgUp/PgDn while painting): the rest went onto the next
    // slice, outside the stroke's undo step, so that Undo left it there
    if (!stillEditing(stroke.study, stroke.slice, stroke.labels)) { stroke = null; return; }
    if (stroke.waiting) { stroke.waiting.push(editorPoint(e)); return; }
    // undone while the button is still down: painting on would be an edit with no undo step of its own
    if (state.undo.at(-1) !== stroke.step) { stroke = null; return; }
    strokeTo(stroke, editorPoint(e));
    drawOverlay();
  });
  // a press in the black border around the image (a pan takes its own presses first): said, else the
  // stroke or fill did nothing without a word, as if the brush were broken
  $("editor-box").addEventListener("pointerdown", (e) => {
    if (e.target === cursor || e.button !== 0 || !state.labels) return;
    message(state.tool === "fill" ? "Nothing filled: the click is outside the image."
      : "Nothing painted: the stroke began outside the image. Begin it on the image.", true);
  });
  const stop = () => { stroke = null; };
  cursor.addEventListener("pointerup", stop);
  cursor.addEventListener("pointercancel", stop);
  cursor.addEventListener("lostpointercapture", stop);
  cursor.addEventListener("pointerleave", () => {
    drawOutline(null);
    pointed.clear();
  });
  editView = new Viewport($("editor-box"), $("editor-stack"), () => {
    if (state.shape) {
      editView.layout(state.shape[2] * state.study.spacing[2], state.shape[1] * state.study.spacing[1]);
      showPixels();
    }
    drawOutline(); // its size follows the zoom
  });
  $("edit-reset").addEventListener("click", () => editView.reset());
  $("editor-box").addEventListener("wheel", (e) => {
    e.preventDefault();
    const slices = editWheel.take(e); // (sideways, a trackpad's or Shift+wheel: none)
    if (!slices) return;
    stepSlice(slices);
    drawEditor();
  }, {passive: false});

  for (const tool of ["brush", "eraser", "fill"]) $(`tool-${tool}`).addEventListener("click", () => setTool(tool));
  $("brush-size").addEventListener("input", (e) => setBrush(Number(e.target.value)));
  $("opacity").addEventListener("input", (e) => { state.opacity = Number(e.target.value) / 100; drawOverlay(); });
  $("label-preset").addEventListener("change", (e) => { state.preset = e.target.value; drawEditor(); });
  $("label-choice").addEventListener("change", (e) => { // a show/hide box, by mouse or Space
    const box = e.target.closest("input[data-visible]");
    if (!box) return;
    state.visible[Number(box.dataset.visible)] = box.checked;
    drawOverlay();
  });
  $("label-choice").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-label]");
    if (button) setPaintLabel(Number(button.dataset.label));
  });
  $("undo").addEventListener("click", () => landed(undo));
  $("redo").addEventListener("click", () => landed(redo));
  $("save-labels").addEventListener("click", saveLabels);
  $("slice-prev").addEventListener("click", () => { stepSlice(-1); drawEditor(); });
  $("slice-next").addEventListener("click", () => { stepSlice(1); drawEditor(); });
  $("restore-version").addEventListener("click", restoreViewed);
  $("back-to-latest").addEventListener("click", async () => {
    try { await loadLabels(null); } catch (_) { return; } // said, the version viewed stays
    await refreshSide();
    drawEditor();
  });
  $("patient-form").addEventListener("submit", savePatient);
  document.addEventListener("keydown", editorKeys);
  // Ctrl+S saves from any control (Height too) and never opens the browser's "Save page": caught before
  // any view's own keys (NiiVue's canvas keeps its keys to itself)
  window.addEventListener("keydown", (e) => {
    if (!(e.ctrlKey || e.metaKey) || e.key.toLowerCase() !== "s") return;
    e.preventDefault();
    if ($("view-study").hidden) return;
    // facts typed in the Patient card and not applied are applied, as Apply (or Enter) does
    if (!$("pane-label").hidden && patientUnapplied()) $("patient-form").requestSubmit();
    // on the L3 tab an unsaved label edit is saved too; the L3 lines save themselves as they move
    if (!$("pane-label").hidden || state.dirty) saveLabels();
    else message("Nothing to save: the L3 selection is saved as the lines move.");
  }, {capture: true});
  setTool("brush");
  setPaintLabel(1);
}

const TOOL_KEYS = {b: "brush", e: "eraser", f: "fill"};

function editorKeys(e) {
  if ($("pane-label").hidden || $("view-study").hidden || ownsKeys(e.target)) return;
  const ctrl = e.ctrlKey || e.metaKey;
  const key = e.key.toLowerCase(); // letters whatever Caps Lock and Shift say
  if (ctrl && key === "z") { e.preventDefault(); landed(e.shiftKey ? redo : undo); }
  else if (ctrl && key === "y") { e.preventDefault(); landed(redo); }
  else if (ctrl || e.altKey) return; // Alt+F, Alt+1…: the browser's menu and tabs, not the tool or label
  else if (TOOL_KEYS[key]) setTool(TOOL_KEYS[key]);
  else if (["1", "2", "3", "4"].includes(e.key)) setPaintLabel(Number(e.key));
  else if (e.key === "[") setBrush(state.brush - 1);
  else if (e.key === "]") setBrush(state.brush + 1);
  else if (e.key === "PageUp") { e.preventDefault(); stepSlice(1); drawEditor(); }
  else if (e.key === "PageDown") { e.preventDefault(); stepSlice(-1); drawEditor(); }
}

function stepSlice(d) {
  if (!state.indices.length) return;
  state.current = Math.max(0, Math.min(state.indices.length - 1, state.current + d));
}

function setTool(tool) {
  state.tool = tool;
  for (const t of ["brush", "eraser", "fill"]) showPressed($(`tool-${t}`), t === tool);
  drawOutline();
}

function setBrush(size) {
  state.brush = Math.max(1, Math.min(40, size));
  $("brush-size").value = state.brush;
  showBrushSize();
  drawOutline();
}

/** The brush's size in image pixels and in mm across at the study's pixels: 6 pixels are 4 mm on 0.7 mm
 * pixels but 18 mm on 3 mm ones, wider than the abdominal wall's muscle. */
function showBrushSize() {
  const spacing = state.study ? state.study.spacing[2] : null;
  const mm = spacing ? ` · ${Number((state.brush * spacing).toFixed(spacing * state.brush < 10 ? 1 : 0))} mm` : "";
  $("brush-size-text").textContent = `${state.brush} px${mm}`;
}

function setPaintLabel(label) {
  state.paintLabel = label;
  for (const b of document.querySelectorAll("#label-choice button")) {
    showPressed(b, Number(b.dataset.label) === label);
  }
}

/** False, saying why, while labels load: Undo and Redo wait for them (the load clears their history). */
function undoable() {
  if (replaced()) message(`Nothing undone: ${REPLACING}.`, true);
  else if (loading) message(UNDO_LOADING, true);
  else return Boolean(state.labels);
  return false;
}

function undo() {
  if (!undoable()) return;
  const step = state.undo.pop();
  if (!step) return;
  const n = sliceArea();
  const target = state.labels.subarray(step.slice * n, (step.slice + 1) * n);
  state.redo.push({slice: step.slice, data: target.slice()});
  target.set(step.data);
  state.current = step.slice;
  markDirty(true);
  drawEditor();
}

function redo() {
  if (!undoable()) return;
  const step = state.redo.pop();
  if (!step) return;
  const n = sliceArea();
  const target = state.labels.subarray(step.slice * n, (step.slice + 1) * n);
  state.undo.push({slice: step.slice, data: target.slice()});
  target.set(step.data);
  state.current = step.slice;
  markDirty(true);
  drawEditor();
}

/** The labels changed; `check`: they may be the saved ones again (undo, redo), then nothing is unsaved. */
function markDirty(check = false) {
  state.dirty = !check || !sameLabels(state.labels, state.saved);
  state.edits += 1;
  updateButtons();
}

function sameLabels(a, b) {
  if (!a || !b || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function updateButtons() {
  const held = Boolean(loading) || replaced(); // the labels shown are about to be replaced
  $("save-labels").disabled = !state.dirty || state.viewing !== null || saving || held;
  $("save-labels").textContent = state.dirty ? "Save *" : "Save";
  $("analysis-unsaved").hidden = !state.dirty;
  $("undo").disabled = !(state.undo.length || waiting) || held;
  $("redo").disabled = !state.redo.length || held;
}

let saving = false; // a save is on its way: another (Ctrl+S pressed again) would be refused as a conflict

/** Drop the unsaved edit, as the user agreed to (before another version is shown): the labels go back to
 * those saved at once, so that nothing saves it while that version loads. */
export function discardEdits() {
  if (!state.dirty) return;
  state.labels = state.saved.slice();
  state.undo = [];
  state.redo = [];
  state.dirty = false;
  state.edits += 1;
  updateButtons();
  drawOverlay();
}

async function saveLabels() {
  if (!state.dirty || state.viewing !== null || saving) return;
  if (loading) { // what is on screen is about to be replaced: it is not what the user would save
    message(SAVE_LOADING, true);
    return;
  }
  if (replaced()) {
    message(`Nothing saved: ${REPLACING}.`, true);
    return;
  }
  const button = $("save-labels");
  button.disabled = true;
  saving = true;
  message("Saving…");
  // what is sent is the labels as they are now; strokes painted while the save runs are not in it
  const sent = state.edits;
  const body = state.labels.slice();
  const id = state.study.id;
  // the slices edited: a base version of other slices (saved on top of a colleague's) is refused
  const edited = `first=${state.indices[0]}&last=${state.indices[state.indices.length - 1]}`;
  try {
    const response = await api(
      `/api/studies/${id}/labels?base_version=${state.version}&${edited}`,
      {method: "POST", headers: {"Content-Type": "application/octet-stream"}, body});
    const saved = await response.json();
    saving = false; // answered: a next save goes on the version this one made
    if (!stillOpen(id)) return; // saved; the user went on to another study (and discarded what followed)
    state.saved = body;
    state.version = saved.version;
    state.study.latest_version = saved.version;
    state.dirty = state.edits !== sent && !sameLabels(state.labels, body);
    sayMade(state.dirty ? `Saved as version ${saved.version}; your newer strokes are not saved yet.`
      : `Saved as version ${saved.version}.`);
    updateButtons(); // Save is pressable again as soon as the page says it saved
    await refreshSide();
  } catch (err) {
    if (!stillOpen(id)) toast(`The labels of the study left were not saved: ${err.message}`);
    else if (err.status === 409) {
      message(err.message, true); // the server's reason says "Not saved" and who saved what
      // Their version stays in the history whatever is saved on top of it: offer that, or the edit could
      // never be saved (every Save refused the same way) and a reload would discard it.
      const latest = err.body && err.body.latest_version;
      const theirs = (err.body && err.body.latest_indices) || [];
      if (latest && theirs.join() !== state.indices.join()) { // on top, the edit would be of their slices
        message(`${err.message} Version ${latest} is of ${slicesText(theirs)}, your edit of ` +
          `${slicesText(state.indices)}: it cannot be saved on top of it. Your unsaved edit is still on ` +
          "screen (reloading discards it).", true);
        return;
      }
      if (latest && latest !== state.version && confirm(`${err.message}\n\nSave your edit as the next `
          + `version, on top of version ${latest}? Version ${latest} stays in the history (Versions).`)) {
        state.version = latest;
        saving = false;
        await saveLabels();
        return;
      }
      toast(`${err.message} Your unsaved edit is still on screen; reloading will discard it.`);
    } else message(`Not saved: ${err.message} Your edit is still on screen: press Save again.`, true);
  } finally {
    saving = false;
    updateButtons();
  }
}
