// sarcoscope browser UI: study list and upload, L3 selection, label editing, analysis and exports.
// Plain JavaScript ES modules (no build step); talks only to this server's /api. api.js: the API client and
// messages; viewport.js: zoom and pan; brush.js: the painting tools; analysis.js: the analysis panel.
import {$, api, download, escapeHtml, getJSON, message, sendJSON, setUnauthorizedHandler, toast} from "./api.js";
import {renderAnalysis} from "./analysis.js";
import {fillRegion, paintDisc} from "./brush.js";
import {Viewport} from "./viewport.js";

const state = {
  config: null,
  study: null,
  // L3 view
  preset: "soft-tissue",
  mode: "range",
  lines: [0, 0], // [first, last] slice indices (z)
  activeLine: 0,
  axialZ: 0,
  crossY: 0,
  crossX: 0,
  images: new Map(),
  // labeling
  version: null, // latest label version metadata being edited
  viewing: null, // version number when viewing an older version read-only
  labels: null, // Uint8Array (n*y*x)
  shape: null, // [n, y, x]
  indices: [],
  current: 0, // index into indices
  hu: new Map(), // slice index -> Int16Array
  tool: "brush",
  paintLabel: 1,
  brush: 6,
  opacity: 0.45,
  visible: {1: true, 2: true, 3: true, 4: true},
  undo: [],
  redo: [],
  dirty: false,
  lastHash: "#/",
};

// -------------------------------------------------------------------------------------------- setup --
let axialView = null; // Viewport of the L3 view's axial image
let editView = null; // Viewport of the label editor

async function init() {
  setUnauthorizedHandler(() => { if (state.config && state.config.auth_required) showLogin(); });
  state.config = await getJSON("/api/config");
  for (const id of ["l3-preset", "label-preset"]) {
    $(id).innerHTML = state.config.presets.map((p) => `<option value="${p}">${p}</option>`).join("");
  }
  $("engine").innerHTML = state.config.engines
    .map((e) => `<option value="${e}" ${e === state.config.default_engine ? "selected" : ""}>${e}</option>`).join("");
  $("cutoff-set").innerHTML = state.config.cutoff_sets.map((c) => `<option value="${c}">${c}</option>`).join("");
  $("label-choice").innerHTML = state.config.tissues.map((t) =>
    `<button type="button" data-label="${t.label}" title="${t.title} (${t.label})">` +
    `<input type="checkbox" data-visible="${t.label}" checked title="show/hide ${t.title}" aria-label="show ${t.name}">` +
    `<span class="swatch" data-color="${t.color.join(",")}"></span>${t.name.toUpperCase()}</button>`).join("");
  for (const el of document.querySelectorAll(".swatch")) el.style.background = `rgb(${el.dataset.color})`;
  bindUpload();
  bindL3();
  bindEditor();
  bindImport();
  window.addEventListener("hashchange", route);
  window.addEventListener("beforeunload", (e) => { if (state.dirty) { e.preventDefault(); e.returnValue = ""; } });
  renderUser();
  if (state.config.auth_required && !state.config.user) showLogin();
  else route();
}

function renderUser() {
  const box = $("user-box");
  const user = state.config.user;
  box.innerHTML = "";
  if (!user) return;
  const name = document.createElement("span");
  name.textContent = `Signed in as ${user}`;
  const change = document.createElement("button");
  change.textContent = state.config.auth_required ? "Sign out" : "Change name";
  change.addEventListener("click", async () => {
    if (state.config.auth_required) {
      await api("/api/session", {method: "DELETE"});
      state.config.user = null;
      showLogin();
      return;
    }
    const next = prompt("Your name (recorded with every change):", user);
    if (!next) return;
    try {
      await sendJSON("/api/session", "POST", {user: next});
      state.config.user = next;
      renderUser();
    } catch (err) { toast(err.message); }
  });
  box.append(name, change);
}

function showLogin() {
  for (const v of document.querySelectorAll(".view")) v.hidden = true;
  $("view-login").hidden = false;
  const tokenMode = state.config.auth_mode === "token";  // one user, named by the server
  $("login-user-field").hidden = tokenMode;
  $("login-user").required = !tokenMode;
  $("login-secret-name").textContent = tokenMode ? "Access token" : "Password";
  $("login-form").onsubmit = async (e) => {
    e.preventDefault();
    const secret = $("login-token").value;
    try {
      await sendJSON("/api/session", "POST",
        tokenMode ? {token: secret} : {user: $("login-user").value.trim(), password: secret});
      $("login-token").value = "";
      $("login-error").textContent = "";
      state.config = await getJSON("/api/config");
      renderUser();
      route();
    } catch (err) { $("login-error").textContent = err.message; }
  };
}

// ---------------------------------------------------------------------------------------------- routing --
async function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  const leavingEdits = state.dirty && state.study && (parts[0] !== "study" || parts[1] !== state.study.id);
  if (leavingEdits) {
    if (!confirm("Discard your unsaved label edits?")) {
      history.replaceState(null, "", state.lastHash);
      return;
    }
    state.dirty = false;
  }
  state.lastHash = location.hash || "#/";
  for (const v of document.querySelectorAll(".view")) v.hidden = true;
  if (parts[0] === "study" && parts[1]) {
    $("view-study").hidden = false;
    await openStudy(parts[1], parts[2] === "label" ? "label" : "l3");
  } else {
    $("study-title").textContent = "";
    $("view-studies").hidden = false;
    await loadStudies();
  }
}

// ------------------------------------------------------------------------------------ studies + upload --
async function loadStudies() {
  const q = $("study-search").value.trim();
  const studies = await getJSON("/api/studies" + (q ? `?q=${encodeURIComponent(q)}` : ""));
  const rows = $("study-rows");
  rows.innerHTML = "";
  for (const s of studies) {
    const tr = document.createElement("tr");
    const cells = [s.patient_id || "—", formatDate(s.study_date), s.series_description || "—", s.n_slices,
      null, localTime(s.created_at)];
    cells.forEach((c, i) => {
      const td = document.createElement("td");
      if (i === 4) td.innerHTML = `<span class="status ${s.status}">${s.status}</span>`;
      else td.textContent = c;
      tr.append(td);
    });
    const actions = document.createElement("td");
    const remove = document.createElement("button");
    remove.textContent = "Delete";
    remove.title = "Delete this study's images and labels (the audit log keeps the deletion)";
    remove.addEventListener("click", async (e) => {
      e.stopPropagation();
      if (!confirm(`Delete study ${s.patient_id || s.id} with its images and all label versions?`)) return;
      try {
        await api(`/api/studies/${s.id}`, {method: "DELETE"});
        await loadStudies();
      } catch (err) { toast(err.message); }
    });
    actions.append(remove);
    tr.append(actions);
    tr.addEventListener("click", () => { location.hash = `#/study/${s.id}`; });
    rows.append(tr);
  }
  $("no-studies").hidden = studies.length > 0;
}

function localTime(iso) {
  return iso ? new Date(iso).toLocaleString([], {dateStyle: "short", timeStyle: "short"}) : "—";
}

function formatDate(d) {
  return d && d.length === 8 ? `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6)}` : d || "—";
}

function bindUpload() {
  let timer = null;
  $("study-search").addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(loadStudies, 250); });
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
  xhr.onload = () => {
    $("upload-status").hidden = true;
    $("upload-progress").value = 0;
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
    if (xhr.status === 201) {
      if ((body.warnings || []).length) toast(body.warnings.join(" "), "info"); // e.g. generated UIDs
      location.hash = `#/study/${body.id}`;
    } else {
      $("upload-error").textContent = body.detail || `Upload failed (${xhr.status}).`;
    }
    $("pick-folder").value = "";
    $("pick-files").value = "";
  };
  xhr.onerror = () => {
    $("upload-status").hidden = true;
    $("upload-error").textContent = "The upload was interrupted (network error or the server refused it).";
  };
  xhr.open("POST", "/api/studies");
  xhr.send(form);
}

const mb = (n) => `${(n / 1024 / 1024).toFixed(1)} MB`;

// ------------------------------------------------------------------------------------------- one study --
async function openStudy(id, pane) {
  if (!state.study || state.study.id !== id) {
    state.study = await getJSON(`/api/studies/${id}`);
    state.images.clear();
    state.hu.clear();
    state.labels = null;
    state.version = null;
    state.viewing = null;
    const s = state.study;
    state.axialZ = Math.floor(s.n_slices / 2);
    state.crossY = Math.floor(s.rows / 2);
    state.crossX = Math.floor(s.cols / 2);
    axialView.reset(false);
    editView.reset(false);
    if (s.selection) applySelection(s.selection);
    else state.lines = [state.axialZ, state.axialZ];
    const p = s.patient || {};
    $("height").value = p.height_cm ?? "";
    $("weight").value = p.weight_kg ?? "";
    $("sex").value = p.sex ?? "";
    $("cutoff-set").value = p.cutoff_set || state.config.default_cutoff_set;
  }
  const s = state.study;
  const dicom = s.source_kind === "dicom"; // NIfTI: no original DICOM files to download
  $("download-dicom").hidden = !dicom;
  $("deidentify").parentElement.hidden = !dicom;
  $("study-title").textContent = `${s.patient_id || "(no patient id)"} · ${formatDate(s.study_date)} · ` +
    `${s.series_description || ""} · ${s.n_slices} slices`;
  $("tab-l3").href = `#/study/${id}`;
  $("tab-label").href = `#/study/${id}/label`;
  $("tab-l3").classList.toggle("active", pane === "l3");
  $("tab-label").classList.toggle("active", pane === "label");
  $("pane-l3").hidden = pane !== "l3";
  $("pane-label").hidden = pane !== "label";
  message("");
  if (pane === "l3") await showL3();
  else await showLabeling();
}

function applySelection(sel) {
  state.mode = sel.mode;
  state.lines = [sel.first, sel.last];
  state.axialZ = sel.mode === "slice" ? sel.first : Math.round((sel.first + sel.last) / 2);
}

// ------------------------------------------------------------------------------------- L3 selection --
function image(plane, index, preset = state.preset) {
  const key = `${plane}/${index}/${preset}`;
  if (!state.images.has(key)) {
    const img = new Image();
    img.decoding = "async";
    img.src = `/api/studies/${state.study.id}/image/${plane}/${index}?preset=${preset}`;
    img.ready = new Promise((resolve, reject) => { img.onload = resolve; img.onerror = reject; });
    state.images.set(key, img);
    if (state.images.size > 400) state.images.delete(state.images.keys().next().value);
  }
  return state.images.get(key);
}

async function showL3() {
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

function bindL3() {
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

/** The image pixel (x, y) under a pointer event, whatever the canvas' zoom and pan. */
function canvasPoint(canvas, e) {
  const r = canvas.getBoundingClientRect();
  return [((e.clientX - r.left) * canvas.width) / r.width, ((e.clientY - r.top) * canvas.height) / r.height];
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

// ----------------------------------------------------------------------------------------- labeling --
async function showLabeling() {
  const s = state.study;
  $("label-preset").value = state.preset;
  if (!s.latest_version) {
    message("No labels yet: choose the L3 slice(s) and press “Segment selected”.", true);
    $("editor-stack").hidden = true;
    await refreshSide();
    return;
  }
  $("editor-stack").hidden = false;
  if (!state.labels || state.viewing !== null) await loadLabels(null);
  await refreshSide();
  drawEditor();
}

async function loadLabels(version) {
  const q = version ? `?version=${version}` : "";
  const response = await api(`/api/studies/${state.study.id}/labels${q}`);
  const buffer = await response.arrayBuffer();
  state.shape = response.headers.get("X-Label-Shape").split(",").map(Number);
  state.indices = response.headers.get("X-Label-Indices").split(",").map(Number);
  state.labels = new Uint8Array(buffer);
  const v = Number(response.headers.get("X-Label-Version"));
  if (version) state.viewing = v;
  else { state.viewing = null; state.version = v; }
  state.undo = [];
  state.redo = [];
  state.dirty = false;
  state.current = Math.min(state.current, state.indices.length - 1);
  if (state.current < 0) state.current = 0;
  $("readonly-banner").hidden = state.viewing === null;
  $("readonly-version").textContent = state.viewing ?? "";
  updateButtons();
}

function sliceArea() { return state.shape[1] * state.shape[2]; }
function sliceView() {
  const n = sliceArea();
  return state.labels.subarray(state.current * n, (state.current + 1) * n);
}

async function drawEditor() {
  if (!state.labels) return;
  const [, ny, nx] = state.shape;
  const z = state.indices[state.current];
  $("slice-text").textContent = `slice ${z} (${state.current + 1} of ${state.indices.length})`;
  const img = image("axial", z, state.preset);
  try { await img.ready; } catch (_) { return; }
  const s = state.study;
  for (const id of ["edit-base", "edit-overlay", "edit-cursor"]) {
    const c = $(id);
    if (c.width !== nx || c.height !== ny) { c.width = nx; c.height = ny; }
  }
  editView.layout(nx * s.spacing[2], ny * s.spacing[1]);
  $("edit-base").getContext("2d").drawImage(img, 0, 0);
  drawOverlay();
}

function drawOverlay() {
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
}

async function huSlice(z) {
  if (!state.hu.has(z)) {
    const response = await api(`/api/studies/${state.study.id}/hu/${z}`);
    state.hu.set(z, new Int16Array(await response.arrayBuffer()));
  }
  return state.hu.get(z);
}

function huAllows(hu, i, label) {
  if (!hu || !label) return true;
  const name = state.config.tissues.find((t) => t.label === label).name;
  const [lo, hi] = state.config.hu_ranges[name];
  return hu[i] >= lo && hu[i] <= hi;
}

function pushUndo() {
  state.undo.push({slice: state.current, data: sliceView().slice()});
  if (state.undo.length > 100) state.undo.shift();
  state.redo = [];
}

function paintAt(cx, cy, hu) {
  const [, ny, nx] = state.shape;
  const value = state.tool === "eraser" ? 0 : state.paintLabel;
  paintDisc(sliceView(), nx, ny, cx, cy, state.brush, value, (i) => !value || huAllows(hu, i, value));
}

function floodFill(cx, cy, hu) {
  const [, ny, nx] = state.shape;
  const value = state.paintLabel;
  fillRegion(sliceView(), nx, ny, cx, cy, value, (i) => huAllows(hu, i, value));
}

function editorPoint(e) {
  return canvasPoint($("edit-cursor"), e);
}

function drawCursor(e) {
  const c = $("edit-cursor");
  const ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  if (!e) return;
  const [x, y] = editorPoint(e);
  ctx.strokeStyle = state.tool === "eraser" ? "#fff" : "#ffd23f";
  ctx.lineWidth = Math.max(0.5, c.width / 600);
  ctx.beginPath();
  if (state.tool === "fill") { ctx.moveTo(x - 4, y); ctx.lineTo(x + 4, y); ctx.moveTo(x, y - 4); ctx.lineTo(x, y + 4); }
  else ctx.arc(x, y, Math.max(0.5, state.brush / 2), 0, 2 * Math.PI);
  ctx.stroke();
}

function bindEditor() {
  const cursor = $("edit-cursor");
  let painting = false;
  let last = null;
  let hu = null;
  cursor.addEventListener("pointerdown", async (e) => {
    if (!state.labels || state.viewing !== null || e.button !== 0) return;
    cursor.setPointerCapture(e.pointerId);
    hu = $("hu-constrain").checked ? await huSlice(state.indices[state.current]) : null;
    pushUndo();
    const [x, y] = editorPoint(e);
    if (state.tool === "fill") {
      floodFill(Math.floor(x), Math.floor(y), hu);
      markDirty();
      drawOverlay();
      return;
    }
    painting = true;
    last = [x, y];
    paintAt(x, y, hu);
    markDirty();
    drawOverlay();
  });
  cursor.addEventListener("pointermove", (e) => {
    drawCursor(e);
    if (!painting) return;
    const [x, y] = editorPoint(e);
    const dist = Math.hypot(x - last[0], y - last[1]);
    const steps = Math.max(1, Math.ceil(dist / Math.max(0.5, state.brush / 4)));
    for (let k = 1; k <= steps; k++) {
      paintAt(last[0] + ((x - last[0]) * k) / steps, last[1] + ((y - last[1]) * k) / steps, hu);
    }
    last = [x, y];
    drawOverlay();
  });
  const stop = () => { painting = false; };
  cursor.addEventListener("pointerup", stop);
  cursor.addEventListener("pointercancel", stop);
  cursor.addEventListener("pointerleave", () => drawCursor(null));
  editView = new Viewport($("editor-box"), $("editor-stack"), () => {
    if (state.shape) editView.layout(state.shape[2] * state.study.spacing[2], state.shape[1] * state.study.spacing[1]);
  });
  $("edit-reset").addEventListener("click", () => editView.reset());
  $("editor-box").addEventListener("wheel", (e) => {
    e.preventDefault();
    stepSlice(e.deltaY < 0 ? 1 : -1);
    drawEditor();
  }, {passive: false});

  for (const tool of ["brush", "eraser", "fill"]) $(`tool-${tool}`).addEventListener("click", () => setTool(tool));
  $("brush-size").addEventListener("input", (e) => setBrush(Number(e.target.value)));
  $("opacity").addEventListener("input", (e) => { state.opacity = Number(e.target.value) / 100; drawOverlay(); });
  $("label-preset").addEventListener("change", (e) => { state.preset = e.target.value; drawEditor(); });
  $("label-choice").addEventListener("click", (e) => {
    const box = e.target.closest("input[data-visible]");
    if (box) {
      state.visible[Number(box.dataset.visible)] = box.checked;
      drawOverlay();
      return;
    }
    const button = e.target.closest("button[data-label]");
    if (button) setPaintLabel(Number(button.dataset.label));
  });
  $("undo").addEventListener("click", undo);
  $("redo").addEventListener("click", redo);
  $("save-labels").addEventListener("click", saveLabels);
  $("slice-prev").addEventListener("click", () => { stepSlice(-1); drawEditor(); });
  $("slice-next").addEventListener("click", () => { stepSlice(1); drawEditor(); });
  $("restore-version").addEventListener("click", restoreViewed);
  $("back-to-latest").addEventListener("click", async () => { await loadLabels(null); await refreshSide(); drawEditor(); });
  $("patient-form").addEventListener("submit", savePatient);
  document.addEventListener("keydown", editorKeys);
  setTool("brush");
  setPaintLabel(1);
}

function editorKeys(e) {
  if ($("pane-label").hidden || $("view-study").hidden) return;
  if (e.target.matches("input[type=number], input[type=text], input[type=search], select")) return;
  const ctrl = e.ctrlKey || e.metaKey;
  if (ctrl && e.key.toLowerCase() === "z") { e.preventDefault(); (e.shiftKey ? redo : undo)(); }
  else if (ctrl && e.key.toLowerCase() === "y") { e.preventDefault(); redo(); }
  else if (ctrl && e.key.toLowerCase() === "s") { e.preventDefault(); saveLabels(); }
  else if (ctrl) return;
  else if (e.key === "b") setTool("brush");
  else if (e.key === "e") setTool("eraser");
  else if (e.key === "f") setTool("fill");
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
  for (const t of ["brush", "eraser", "fill"]) $(`tool-${t}`).classList.toggle("active", t === tool);
}

function setBrush(size) {
  state.brush = Math.max(1, Math.min(40, size));
  $("brush-size").value = state.brush;
  $("brush-size-text").textContent = state.brush;
}

function setPaintLabel(label) {
  state.paintLabel = label;
  for (const b of document.querySelectorAll("#label-choice button")) {
    b.classList.toggle("active", Number(b.dataset.label) === label);
  }
}

function undo() {
  const step = state.undo.pop();
  if (!step) return;
  const n = sliceArea();
  const target = state.labels.subarray(step.slice * n, (step.slice + 1) * n);
  state.redo.push({slice: step.slice, data: target.slice()});
  target.set(step.data);
  state.current = step.slice;
  markDirty();
  drawEditor();
}

function redo() {
  const step = state.redo.pop();
  if (!step) return;
  const n = sliceArea();
  const target = state.labels.subarray(step.slice * n, (step.slice + 1) * n);
  state.undo.push({slice: step.slice, data: target.slice()});
  target.set(step.data);
  state.current = step.slice;
  markDirty();
  drawEditor();
}

function markDirty() {
  state.dirty = true;
  updateButtons();
}

function updateButtons() {
  $("save-labels").disabled = !state.dirty || state.viewing !== null;
  $("save-labels").textContent = state.dirty ? "Save *" : "Save";
  $("undo").disabled = !state.undo.length;
  $("redo").disabled = !state.redo.length;
}

async function saveLabels() {
  if (!state.dirty || state.viewing !== null) return;
  const button = $("save-labels");
  button.disabled = true;
  message("Saving…");
  try {
    const response = await api(
      `/api/studies/${state.study.id}/labels?base_version=${state.version}`,
      {method: "POST", headers: {"Content-Type": "application/octet-stream"}, body: state.labels});
    const saved = await response.json();
    state.version = saved.version;
    state.study.latest_version = saved.version;
    state.dirty = false;
    message(`Saved as version ${saved.version}.`);
    await refreshSide();
  } catch (err) {
    message(err.message, true);
    if (err.status === 409) {
      toast(`${err.message} Your unsaved edit is still on screen; reloading will discard it.`);
    }
  } finally { updateButtons(); }
}

async function restoreViewed() {
  try {
    await sendJSON(`/api/studies/${state.study.id}/versions/${state.viewing}/restore`, "POST",
      {base_version: state.version});
    await loadLabels(null);
    await refreshSide();
    drawEditor();
    message(`Restored as version ${state.version}.`);
  } catch (err) { message(err.message, true); }
}

async function savePatient(e) {
  e.preventDefault();
  const num = (id) => ($(id).value === "" ? null : Number($(id).value));
  try {
    state.study = await sendJSON(`/api/studies/${state.study.id}/patient`, "PUT", {
      height_cm: num("height"), weight_kg: num("weight"), sex: $("sex").value || null,
      cutoff_set: $("cutoff-set").value || null,
    });
    await refreshSide();
    message("Patient facts saved.");
  } catch (err) { message(err.message, true); }
}

// ------------------------------------------------------------------------------------ label import --
// A label file made elsewhere (Slice-O-Matic .tag, DICOM SEG, NIfTI, PNG) becomes a new version of the
// selected slice(s); the server refuses, with the reason, a file that does not fit the study.
function bindImport() {
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
  message("Importing…");
  try {
    const saved = await (await api(`/api/studies/${state.study.id}/labels/import?${q}`,
      {method: "POST", body})).json();
    state.study = await getJSON(`/api/studies/${state.study.id}`);
    state.labels = null;
    await showLabeling();
    message(`Imported as version ${saved.version}: ${saved.note}.`);
  } catch (err) { message(err.message, true); }
}

// ---------------------------------------------------------------------------------- analysis panel --
function setExportDeidentification() {
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
    ["overlay", "Overlay PNG"], ["html", "Printable report"]];
  return study.source_kind === "dicom" ? all : all.filter(([f]) => !f.startsWith("dicom-"));
}

async function refreshSide() {
  const s = state.study;
  const shown = state.viewing ?? state.version;
  const exports = $("exports");
  const versions = $("versions");
  if (!shown) {
    $("analysis").innerHTML = '<p class="muted">No labels yet.</p>';
    exports.innerHTML = "";
    versions.innerHTML = "";
    return;
  }
  exports.innerHTML = exportFormats(s).map(([f, title]) =>
    `<button type="button" id="export-${f}" data-href="/api/studies/${s.id}/export/${f}?version=${shown}">` +
    `${title}</button>`).join("");
  setExportDeidentification();
  const list = await getJSON(`/api/studies/${s.id}/versions`);
  versions.innerHTML = "";
  for (const v of list) {
    const li = document.createElement("li");
    li.value = v.version;
    li.classList.toggle("current", v.version === shown);
    const when = localTime(v.created_at);
    li.textContent = `v${v.version} · ${v.source}${v.engine && v.source === "segment" ? ` (${v.model_id || v.engine})` : ""} · ` +
      `${v.author} · ${when} `;
    li.title = v.note || "";
    if (v.version !== shown) {
      const view = document.createElement("button");
      view.textContent = "view";
      view.addEventListener("click", async () => {
        if (state.dirty && !confirm("Discard your unsaved edit?")) return;
        if (v.version === list[0].version) await loadLabels(null);
        else await loadLabels(v.version);
        await refreshSide();
        drawEditor();
      });
      li.append(view);
    }
    versions.append(li);
  }
  try {
    renderAnalysis(await getJSON(`/api/studies/${s.id}/analysis?version=${shown}`), state.config.tissues);
  } catch (err) { $("analysis").innerHTML = `<p class="error">${escapeHtml(err.message)}</p>`; }
}

init().catch((err) => toast(err.message));
