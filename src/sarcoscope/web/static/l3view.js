// The L3 selection view: axial, coronal and sagittal images, the Slice or Range (inferior/superior) lines,
// the localizer's result, the engine and model choice and "Segment selected".
import {$, download, getJSON, message, sendJSON} from "./api.js";
import {canvasPoint, image, state} from "./state.js";
import {Viewport} from "./viewport.js";
import {setExportDeidentification} from "./versions.js";

export function applySelection(sel) {
  state.mode = sel.mode;
  state.lines = [sel.first, sel.last];
  state.axialZ = sel.mode === "slice" ? sel.first : Math.round((sel.first + sel.last) / 2);
}


let axialView = null; // Viewport of the axial image

/** Fit the axial image again (opening another study). */
export function resetL3View() { axialView.reset(false); }

export async function showL3() {
  const s = state.study;
  $("l3-preset").value = state.preset;
  drawAll();
  loadModels();
  if (!s.localization) {
    message("Locating L3…");
    try {
      state.study = await sendJSON(`/api/studies/${s.id}/localize`, "POST", {});
      if (state.study.selection) applySelection(state.study.selection);
      message("");
    } catch (err) { message(err.message, true); }
  }
  renderLocalization();
  drawAll();
}

function renderLocalization() {
  const loc = state.study.localization || {};
  const conf = $("l3-confidence");
  const flags = $("l3-flags");
  if (loc.error) {
    conf.textContent = "Automatic localization failed: place the lines by hand.";
    conf.className = "confidence low";
    flags.textContent = loc.error;
    return;
  }
  if (typeof loc.confidence === "number") {
    conf.textContent = `auto L3 confidence ${(loc.confidence * 100).toFixed(0)} %`;
    conf.className = loc.confidence < 0.5 ? "confidence low" : "confidence";
  } else conf.textContent = "";
  flags.textContent = (loc.flags || []).map((f) => `${f.flag}: ${f.reason}`).join(" · ");
}

function selectionText() {
  const [a, b] = state.lines;
  const lo = Math.min(a, b);
  const hi = Math.max(a, b);
  return state.mode === "slice" ? `Slice ${state.lines[0]}` : `Range ${lo}–${hi} (${hi - lo + 1} slices)`;
}

/** The vertebra the automatic localizer puts slice z in (null: not localized or between vertebrae). */
function levelOf(z) {
  const vertebrae = (state.study.localization || {}).vertebrae || {};
  const hit = Object.entries(vertebrae).find(([, v]) => v.first <= z && z <= v.last);
  return hit ? hit[0] : null;
}

/** Says where the localizer puts the chosen slice(s); a warning when that is not L3 (cutoffs are L3's). */
function renderLevel() {
  const el = $("l3-level");
  if (!Object.keys((state.study.localization || {}).vertebrae || {}).length) {
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

function drawAll() {
  $("mode-range").classList.toggle("active", state.mode === "range");
  $("mode-slice").classList.toggle("active", state.mode === "slice");
  $("l3-selection-text").textContent = selectionText();
  renderLevel();
  drawAxial();
  drawRecon("coronal");
  drawRecon("sagittal");
}

async function drawAxial() {
  const s = state.study;
  const canvas = $("axial-canvas");
  const z = state.axialZ;
  $("axial-index").textContent = `slice ${z} / ${s.n_slices - 1}`;
  const img = image("axial", z);
  try { await img.ready; } catch (_) { return; }
  if (z !== state.axialZ) return;
  canvas.width = s.cols;
  canvas.height = s.rows;
  axialView.layout(s.cols * s.spacing[2], s.rows * s.spacing[1]);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0);
  ctx.strokeStyle = "rgba(255,255,255,0.35)";
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(0, state.crossY + 0.5); ctx.lineTo(s.cols, state.crossY + 0.5);
  ctx.moveTo(state.crossX + 0.5, 0); ctx.lineTo(state.crossX + 0.5, s.rows);
  ctx.stroke();
  for (const dz of [1, -1, 2, -2]) {
    const n = z + dz;
    if (n >= 0 && n < s.n_slices) image("axial", n); // prefetch neighbours
  }
}

function reconGeometry(plane) {
  const s = state.study;
  const width = plane === "coronal" ? s.cols : s.rows;
  const inPlane = plane === "coronal" ? s.spacing[2] : s.spacing[1];
  const height = Math.max(1, Math.round((s.n_slices * s.spacing[0]) / inPlane));
  return {width, height, rowPerSlice: height / s.n_slices};
}

const zToY = (g, z) => (state.study.n_slices - 1 - z + 0.5) * g.rowPerSlice;
const yToZ = (g, y) => Math.max(0, Math.min(state.study.n_slices - 1,
  state.study.n_slices - 1 - Math.floor(y / g.rowPerSlice)));

async function drawRecon(plane) {
  const canvas = $(`${plane}-canvas`);
  const index = plane === "coronal" ? state.crossY : state.crossX;
  const img = image(plane, index);
  try { await img.ready; } catch (_) { return; }
  const g = reconGeometry(plane);
  canvas.width = g.width;
  canvas.height = g.height;
  const box = canvas.parentElement;
  const fit = Math.min(box.clientWidth / g.width, box.clientHeight / g.height);
  canvas.style.width = `${g.width * fit}px`;
  canvas.style.height = `${g.height * fit}px`;
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(img, 0, 0, g.width, g.height);
  // current axial slice
  ctx.strokeStyle = "rgba(255,255,255,0.4)";
  ctx.setLineDash([4, 4]);
  ctx.lineWidth = Math.max(1, g.width / 400);
  ctx.beginPath();
  ctx.moveTo(0, zToY(g, state.axialZ)); ctx.lineTo(g.width, zToY(g, state.axialZ));
  ctx.stroke();
  ctx.setLineDash([]);
  if (plane === "sagittal") drawVertebrae(ctx, g);
  const lines = state.mode === "slice" ? [state.lines[0]] : state.lines;
  lines.forEach((z, i) => {
    const y = zToY(g, z);
    const color = i === 0 ? "#ffd23f" : "#3fe0ff";
    ctx.strokeStyle = color;
    ctx.lineWidth = Math.max(1.5, g.width / 200) * (i === state.activeLine ? 1.6 : 1);
    ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(g.width, y); ctx.stroke();
    ctx.fillStyle = color;
    ctx.font = `${Math.max(10, Math.round(g.width / 28))}px system-ui`;
    ctx.fillText(state.mode === "slice" ? `L3 · ${z}` : `${i === 0 ? "first" : "last"} · ${z}`, 4, y - 4);
  });
  canvas.dataset.lines = lines.join(",");
}

function drawVertebrae(ctx, g) {
  // The localizer's vertebra bodies as ticks with names on the right edge of the sagittal view.
  const vertebrae = (state.study.localization || {}).vertebrae || {};
  ctx.font = `${Math.max(9, Math.round(g.width / 34))}px system-ui`;
  ctx.textAlign = "right";
  for (const [name, v] of Object.entries(vertebrae)) {
    const top = zToY(g, v.last) - g.rowPerSlice / 2;
    const bottom = zToY(g, v.first) + g.rowPerSlice / 2;
    ctx.fillStyle = name === "L3" ? "rgba(255,210,63,0.9)" : "rgba(255,255,255,0.6)";
    ctx.fillRect(g.width - 3, top + 1, 3, Math.max(1, bottom - top - 2));
    ctx.fillText(name, g.width - 6, zToY(g, v.center) + 4);
  }
  ctx.textAlign = "left";
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
  $("l3-preset").addEventListener("change", (e) => { state.preset = e.target.value; drawAll(); });
  axialView = new Viewport($("axial-box"), $("axial-canvas"), () => drawAxial());
  $("axial-reset").addEventListener("click", () => axialView.reset());
  $("axial-box").addEventListener("wheel", (e) => {
    e.preventDefault();
    state.axialZ = clampZ(state.axialZ + (e.deltaY < 0 ? 1 : -1));
    drawAll();
  }, {passive: false});
  $("axial-canvas").addEventListener("click", (e) => {
    [state.crossX, state.crossY] = canvasPoint(e.currentTarget, e).map(Math.floor);
    drawAll();
  });
  for (const plane of ["coronal", "sagittal"]) {
    const canvas = $(`${plane}-canvas`);
    let dragging = false;
    const zAt = (e) => yToZ(reconGeometry(plane), (e.offsetY * canvas.height) / canvas.clientHeight);
    canvas.addEventListener("pointerdown", (e) => {
      canvas.focus();
      const z = zAt(e);
      if (state.mode === "range") {
        const d0 = Math.abs(state.lines[0] - z);
        const d1 = Math.abs(state.lines[1] - z);
        state.activeLine = d1 < d0 ? 1 : 0;
      } else state.activeLine = 0;
      dragging = true;
      canvas.setPointerCapture(e.pointerId);
      moveLine(z);
    });
    canvas.addEventListener("pointermove", (e) => { if (dragging) moveLine(zAt(e)); });
    canvas.addEventListener("pointerup", () => { if (dragging) { dragging = false; saveSelection(); } });
    canvas.addEventListener("keydown", (e) => {
      const steps = {ArrowUp: 1, ArrowDown: -1, PageUp: 5, PageDown: -5};
      if (e.key in steps) {
        e.preventDefault();
        moveLine(state.lines[state.activeLine] + steps[e.key]);
        clearTimeout(bindL3.timer);
        bindL3.timer = setTimeout(saveSelection, 400);
      } else if (e.key === "Tab" && state.mode === "range") {
        e.preventDefault();
        state.activeLine = 1 - state.activeLine;
        drawAll();
      }
    });
    canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      const s = state.study;
      if (plane === "coronal") state.crossY = Math.max(0, Math.min(s.rows - 1, state.crossY + Math.sign(e.deltaY)));
      else state.crossX = Math.max(0, Math.min(s.cols - 1, state.crossX + Math.sign(e.deltaY)));
      drawAll();
    }, {passive: false});
  }
  $("download-dicom").addEventListener("click", () =>
    download(`/api/studies/${state.study.id}/dicom?deidentify=${$("deidentify").checked}`));
  $("segment").addEventListener("click", segmentSelected);
  $("deidentify-exports").addEventListener("change", setExportDeidentification);
  $("exports").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-href]");
    if (button) download(button.dataset.href);
  });
}


const clampZ = (z) => Math.max(0, Math.min(state.study.n_slices - 1, z));

function setMode(mode) {
  if (mode === state.mode) return;
  if (mode === "slice") {
    const auto = (state.study.localization || {}).l3_mid;
    const [lo, hi] = [Math.min(...state.lines), Math.max(...state.lines)];
    const mid = typeof auto === "number" && auto >= lo && auto <= hi ? auto : Math.round((lo + hi) / 2);
    state.lines = [mid, mid];
  } else {
    const loc = state.study.localization || {};
    const [lo, hi] = [loc.l3_lower_endplate, loc.l3_upper_endplate];
    const z = state.lines[0];
    if (typeof lo === "number" && typeof hi === "number" && z >= Math.min(lo, hi) && z <= Math.max(lo, hi)) {
      state.lines = [Math.min(lo, hi), Math.max(lo, hi)]; // back to the localizer's L3 body
    } else {
      const half = Math.max(1, Math.round(15 / state.study.spacing[0])); // +-15 mm around the slice
      state.lines = [clampZ(z - half), clampZ(z + half)];
    }
  }
  state.mode = mode;
  state.activeLine = 0;
  drawAll();
  saveSelection();
}

function moveLine(z) {
  z = clampZ(z);
  state.lines[state.activeLine] = z;
  if (state.mode === "slice") state.lines[1] = z;
  state.axialZ = z;
  drawAll();
}

async function saveSelection() {
  const [a, b] = state.lines;
  try {
    state.study = await sendJSON(`/api/studies/${state.study.id}/selection`, "PUT",
      {mode: state.mode, first: Math.min(a, b), last: Math.max(a, b)});
    message(`Saved selection: ${selectionText()}`);
  } catch (err) { message(err.message, true); }
}

async function segmentSelected() {
  const button = $("segment");
  button.disabled = true;
  message("Segmenting…");
  try {
    await saveSelection();
    await sendJSON(`/api/studies/${state.study.id}/segment`, "POST",
      {engine: $("engine").value, base_version: state.study.latest_version, model: chosenModel()});
    state.study = await getJSON(`/api/studies/${state.study.id}`);
    state.labels = null;
    location.hash = `#/study/${state.study.id}/label`;
  } catch (err) {
    message(err.message, true);
    if (err.status === 409 && err.body && err.body.latest_version) {
      state.study = await getJSON(`/api/studies/${state.study.id}`);
    }
  } finally { button.disabled = false; }
}
