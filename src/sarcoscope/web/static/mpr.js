// The L3 view's images on NiiVue (vendor/niivue, WebGL2): axial, coronal and sagittal tiles of the study's
// HU volume (GET /api/studies/{id}/volume.nii.gz) in one canvas. NiiVue draws the slices and does
// window/level (right-drag, on the int16 HU data), pan (middle or shift+drag) and the slice step (wheel).
// Own code here: the wheel moves as many slices as it turned (NiiVue: one per event), ctrl+wheel zooms around
// the cursor (NiiVue zooms around the crosshair), the keyboard (NiiVue's keys would change the layout), a
// short series' stretched reconstructions, and the crosshair and the
// Range/Slice lines with their labels, drawn on a second canvas over NiiVue's at the screen's pixel density
// so that text stays sharp (NiiVue's own text is a bitmap font in the WebGL scene, scaled with the view).
// Indices are the API's: x column, y row, z slice (the file's voxel order).
import {api} from "./api.js";
import {
  WheelSlices, imageText, obliqueNote, reconStretch, slicePosition, stretchNote, tag, wheelZoom,
} from "./state.js";
import {DRAG_MODE, Niivue, SLICE_TYPE} from "./vendor/niivue/niivue.js";

/** This browser's WebGL2 renderer ({software: true for a software rasteriser}), or null without WebGL2 (NiiVue cannot run: the L3
 * view falls back to server PNGs). Probed once. */
export function webgl2Renderer() {
  if (webgl2Renderer.found === undefined) webgl2Renderer.found = probeRenderer();
  return webgl2Renderer.found;
}

// software rasterisers: Chromium's SwiftShader (no GPU, or a blocked one), Mesa's llvmpipe and softpipe,
// Windows' Basic Render Driver (remote desktops without a GPU)
const SOFTWARE = /swiftshader|llvmpipe|softpipe|software|basic render/i;

function probeRenderer() {
  try {
    const gl = document.createElement("canvas").getContext("webgl2");
    if (!gl) return null;
    const info = gl.getExtension("WEBGL_debug_renderer_info"); // (browsers without it name it in RENDERER)
    const name = String(gl.getParameter(info ? info.UNMASKED_RENDERER_WEBGL : gl.RENDERER));
    const lose = gl.getExtension("WEBGL_lose_context");
    if (lose) lose.loseContext();
    return {software: SOFTWARE.test(name)};
  } catch (_) {
    return null;
  }
}

/** The most voxels NiiVue is given on a software renderer. It builds its textures of the whole volume
 * (and again at every window change) with the page frozen: on SwiftShader here 512x512x20 (5.2 M voxels)
 * took 2 s, x40 took 8 s per window change, x311 (82 M) froze the page for 225 s. */
export const SOFTWARE_MAX_VOXELS = 6e6;

// a gap of 1 % between the tiles: each image's orientation letters are its own (adjacent, the axial's L stood
// against the coronal's R)
const LAYOUT = [
  {sliceType: SLICE_TYPE.AXIAL, position: [0, 0, 0.41, 1]},
  {sliceType: SLICE_TYPE.CORONAL, position: [0.42, 0, 0.28, 1]},
  {sliceType: SLICE_TYPE.SAGITTAL, position: [0.71, 0, 0.29, 1]},
];
const AXIAL_ONLY = [{sliceType: SLICE_TYPE.AXIAL, position: [0, 0, 1, 1]}];
const PLANES = ["Axial", "Coronal", "Sagittal"]; // by SLICE_TYPE
// The letters at each tile's left, right, top and bottom edge, by SLICE_TYPE: NiiVue draws the voxels' grid
// turned to the nearest body axes, radiological (the patient's right on the left), sagittal anterior on the left.
const LETTERS = [["R", "L", "A", "P"], ["R", "L", "S", "I"], ["A", "P", "S", "I"]];
const LINE_GRAB_PX = 7; // a press this close to a line (CSS px) drags the line instead of the crosshair
const MAX_ZOOM = 10;

/** The z stretch of a coronal or sagittal tile, from NiiVue's field of view [x, y, z] (any unit). */
const stretchOf = (type, [x, y, z]) => reconStretch(type === SLICE_TYPE.CORONAL ? x : y, z);

export class MPRView {
  /** box: the element holding `canvas` (NiiVue's) and `overlay` (lines and labels, no pointer events).
   * hooks: crosshair(x, y, z) after NiiVue moved it; lines() -> [{z, label, color, active}];
   * marks() -> [{z, label, color}] (drawn dashed, not draggable); vertebrae() -> {name: {first, last, center}};
   * lineAt(index) / dragLine(index, z) / dropLine(index);
   * window(level, width) after window/level changed; cursor(x, y, z, hu) as the pointer moves;
   * key(event) for a key pressed on the canvas. */
  constructor(box, canvas, overlay, hooks) {
    this.box = box;
    this.canvas = canvas;
    this.overlay = overlay;
    this.hooks = hooks;
    this.nv = null;
    this.volume = null;
    this.oblique = ""; // "oblique N°: letters approximate" for a volume whose grid is turned from the body's axes
    this.shown = null; // the study whose volume is shown: its slices' image numbers (imageText)
    this.studyId = null; // the study whose volume is shown or coming
    this.loading = null; // its load (a promise)
    this.download = null; // the AbortController of its download
    this.drag = null;
    this.pointer = null; // the pointer over the box (CSS px on the canvas), whose voxel the readout shows
  }

  async start() {
    this.nv = new Niivue({
      isRadiologicalConvention: true, // patient left on screen right, as CT is read
      backColor: [43 / 255, 48 / 255, 57 / 255, 1], // style.css's --image-bg: where an image ends shows
      sagittalNoseLeft: true, // anterior on the left, as radiologists read a sagittal image
      crosshairWidth: 0, // drawOverlay's: NiiVue's is a voxel thick, a band on a stretched tile
      show3Dcrosshair: false,
      // the orientation letters are drawOverlay's: NiiVue's are mid-grey without an outline, unseen on soft
      // tissue (a short series' coronal and sagittal tiles had no S and no I)
      isOrientationTextVisible: false,
      dragAndDropEnabled: false,
      multiplanarPadPixels: 4,
      loadingText: "",
      invertScrollDirection: true, // wheel up: a more superior slice, as in the label editor (bind's wheel)
      logLevel: "warn",
    });
    await this.nv.attachToCanvas(this.canvas);
    // A short series' coronal and sagittal tiles are stretched along z (NiiVue maps a tile's mm to its
    // pixels axis by axis, so the crosshair, the pointer's voxel and the lines stay right).
    const fit = this.nv.calculateWidthHeight.bind(this.nv);
    this.nv.calculateWidthHeight = (type, scale, w, h) => fit(type, type === SLICE_TYPE.AXIAL ? scale
      : [scale[0], scale[1], scale[2] * stretchOf(type, scale)], w, h);
    this.nv.setMouseEventConfig({
      leftButton: {primary: DRAG_MODE.crosshair, withShift: DRAG_MODE.pan},
      rightButton: DRAG_MODE.windowing,
      centerButton: DRAG_MODE.pan,
    });
    this.nv.setCustomLayout(LAYOUT);
    this.nv.onLocationChange = () => this.emitCrosshair();
    const draw = this.nv.drawScene.bind(this.nv);
    this.nv.drawScene = () => { // every redraw of NiiVue's (pan, zoom, W/L, crosshair) redraws the lines
      const result = draw();
      this.drawOverlay();
      // the image under a pointer that did not move changed (a line dragged or moved by a key, the wheel):
      // the readout is of the voxel under it now, not of the slice shown before
      if (this.pointer && this.volume) this.showCursor(...this.pointer);
      if (this.volume && this.shownWindow !== `${this.volume.cal_min},${this.volume.cal_max}`) this.emitWindow();
      return result;
    };
    this.bind();
  }

  /** Load the study's volume (once per study) and put the crosshair at voxel (x, y, z); progress(loaded,
   * total) as its bytes come (total: null if the server did not say). Opened again while its volume comes
   * (the list, then the study again), it waits for that volume, whose progress is said as before. */
  async open(study, [x, y, z], window, progress = () => {}) {
    if (this.studyId !== study.id) {
      this.studyId = study.id;
      this.volume = null;
      this.loading = this.load(study, window, progress);
    }
    await this.loading;
    if (this.studyId === study.id) this.setCrosshair(x, y, z); // (not if another study was opened meanwhile)
  }

  async load(study, [level, width], progress) {
    if (this.download) this.download.abort(); // the study left's volume: not downloaded alongside
    const download = new AbortController();
    this.download = download;
    // one slice has no height: its coronal and sagittal tiles would be strips a pixel high
    const layout = study.n_slices > 1 ? LAYOUT : AXIAL_ONLY;
    this.nv.setCustomLayout(layout);
    this.box.dataset.planes = layout.map((tile) => PLANES[tile.sliceType].toLowerCase()).join(",");
    let buffer;
    try {
      buffer = await fetchVolume(`/api/studies/${study.id}/volume.nii.gz`, download.signal, progress);
      if (this.studyId === study.id) {
        // the window given with the volume: NiiVue builds its textures once, with it (set after the load, it
        // built them twice, the page frozen each time)
        await this.nv.loadVolumes([{url: buffer, name: "volume.nii.gz", colormap: "gray",
          cal_min: level - width / 2, cal_max: level + width / 2}]);
      }
    } catch (err) {
      if (this.studyId === study.id) this.studyId = null; // opened again, it is loaded again
      throw err;
    } finally {
      if (this.download === download) this.download = null;
    }
    if (this.studyId !== study.id) { // another study was opened while this one loaded: not shown over it
      const volume = this.nv.getMediaByUrl(buffer);
      if (volume) this.nv.removeVolume(volume);
      return;
    }
    this.volume = this.nv.volumes[0];
    // NiiVue draws an oblique series in its voxels' grid turned to the nearest body axes, lettered by them
    this.oblique = obliqueNote(study);
    this.shown = study;
    this.box.dataset.oblique = this.oblique ? Math.round(study.orientation.tilt_degrees) : "";
    this.emitWindow();
    this.reset(false);
  }

  /** NiiVue's texture fraction of voxel [x, y, z] (the file's, the API's indices). NiiVue draws the voxels'
   * grid turned to the nearest body axes (permRAS: the file axis along R, A and S, negative when reversed),
   * not resliced: through the scanner's millimetres an oblique series' voxels were off its tiles. */
  fracOf(voxel) {
    const {permRAS, dimsRAS, hdr} = this.volume;
    return permRAS.map((p, i) => {
      const axis = Math.abs(p) - 1;
      const v = p > 0 ? voxel[axis] : hdr.dims[axis + 1] - 1 - voxel[axis];
      return (v + 0.5) / dimsRAS[i + 1];
    });
  }

  /** The voxel [x, y, z] at NiiVue's texture fraction `frac` (fracOf's inverse). */
  voxelOf(frac) {
    const {permRAS, dimsRAS, hdr} = this.volume;
    const voxel = [0, 0, 0];
    permRAS.forEach((p, i) => {
      const axis = Math.abs(p) - 1;
      const v = Math.round(frac[i] * dimsRAS[i + 1] - 0.5);
      voxel[axis] = p > 0 ? v : hdr.dims[axis + 1] - 1 - v;
    });
    return voxel;
  }

  setCrosshair(x, y, z) {
    if (!this.volume) return;
    this.nv.scene.crosshairPos = this.fracOf([x, y, z]);
    this.nv.drawScene();
  }

  /** Window/level in HU on the full data (NiiVue's calibrated range of the volume). NiiVue builds its
   * textures of the whole volume again for it: not for the window shown already. */
  setWindow(level, width) {
    if (!this.volume) return;
    const [lo, hi] = [level - width / 2, level + width / 2];
    if (this.volume.cal_min !== lo || this.volume.cal_max !== hi) {
      this.volume.cal_min = lo;
      this.volume.cal_max = hi;
      this.nv.updateGLVolume();
    }
    this.emitWindow();
  }

  emitWindow() {
    const {cal_min: lo, cal_max: hi} = this.volume;
    this.shownWindow = `${lo},${hi}`;
    this.box.dataset.window = `${Math.round((lo + hi) / 2)},${Math.round(hi - lo)}`;
    this.hooks.window(Math.round((lo + hi) / 2), Math.round(hi - lo));
  }

  emitCrosshair() {
    if (!this.volume) return;
    const [x, y, z] = this.voxelOf(this.nv.scene.crosshairPos);
    this.hooks.crosshair(x, y, z);
  }

  /** Another study is opened: the voxel under the pointer is not read again (from the volume of the study
   * left, still shown until the new one comes) until the pointer moves. */
  leave() {
    this.pointer = null;
  }

  /** Fit the images again: no zoom, no pan. */
  reset(redraw = true) {
    this.nv.scene.pan2Dxyzmm = [0, 0, 0, 1];
    if (redraw) this.nv.drawScene();
  }

  get dpr() { return this.nv.uiData.dpr || window.devicePixelRatio || 1; }

  /** The tile (index into NiiVue's screenSlices) under CSS point (cx, cy) of the canvas, or -1. */
  tileAt(cx, cy) {
    return this.nv.tileIndex(cx * this.dpr, cy * this.dpr);
  }

  /** Canvas y (CSS px) of slice z in tile `tile` (a coronal or sagittal one). */
  yOfSlice(tile, z) {
    const s = this.nv.screenSlices[tile];
    const frac = this.fracOf([0, 0, z]);
    const centre = this.nv.scene.crosshairPos;
    const hit = this.nv.frac2canvasPosWithTile([centre[0], centre[1], frac[2]], s.axCorSag);
    return hit ? hit.pos[1] / this.dpr : null;
  }

  zoomAt(factor, cx, cy) {
    const tile = this.tileAt(cx, cy);
    if (tile < 0) return;
    const pan = this.nv.scene.pan2Dxyzmm;
    const mm = this.nv.frac2mm(this.nv.screenXY2TextureFrac(cx * this.dpr, cy * this.dpr, tile, false));
    const next = Math.max(1, Math.min(MAX_ZOOM, pan[3] * factor));
    // NiiVue draws a point at zoom * mm + pan: keeping `mm` in place needs pan += (old - new zoom) * mm
    const change = pan[3] - next;
    this.nv.scene.pan2Dxyzmm = [pan[0] + change * mm[0], pan[1] + change * mm[1], pan[2] + change * mm[2], next];
    this.nv.drawScene();
  }

  /** The voxel and its HU under CSS point (cx, cy): shown to the user (and read by the browser tests). */
  showCursor(cx, cy) {
    const tile = this.tileAt(cx, cy);
    const frac = tile < 0 ? null : this.nv.screenXY2TextureFrac(cx * this.dpr, cy * this.dpr, tile, false);
    if (!frac || frac.some((f) => f < 0 || f > 1)) { // not over the image
      this.box.dataset.cursor = "";
      this.hooks.cursor(null);
      return;
    }
    const [x, y, z] = this.voxelOf(frac);
    const [, nx, ny, nz] = this.volume.hdr.dims;
    if (x < 0 || y < 0 || z < 0 || x >= nx || y >= ny || z >= nz) return;
    const hdr = this.volume.hdr;
    const hu = this.volume.img[x + nx * (y + ny * z)] * (hdr.scl_slope || 1) + (hdr.scl_inter || 0);
    this.box.dataset.cursor = `${x},${y},${z},${hu}`;
    this.hooks.cursor(x, y, z, hu);
  }

  /** The line (index into hooks.lines()) within grabbing distance of CSS point (cx, cy), or -1. */
  lineNear(cx, cy) {
    const tile = this.tileAt(cx, cy);
    if (tile < 0 || this.nv.screenSlices[tile].axCorSag === SLICE_TYPE.AXIAL) return -1;
    let best = -1;
    let bestDistance = LINE_GRAB_PX;
    this.hooks.lines().forEach((line, i) => {
      const y = this.yOfSlice(tile, line.z);
      if (y !== null && Math.abs(y - cy) <= bestDistance) { best = i; bestDistance = Math.abs(y - cy); }
    });
    return best;
  }

  /** The slice at CSS height cy on tile `tile` (a coronal or sagittal one); beyond the tile, the slice at
   * its nearer edge (NiiVue has no voxel there: a line dragged past the top would drop to slice 0). */
  sliceAt(cy, tile) {
    const [l, t, w, h] = this.nv.screenSlices[tile].leftTopWidthHeight;
    const y = Math.min(Math.max(cy * this.dpr, t), t + h);
    return this.voxelOf(this.nv.screenXY2TextureFrac(l + w / 2, y, tile, false))[2];
  }

  bind() {
    const point = (e) => {
      const r = this.canvas.getBoundingClientRect();
      return [e.clientX - r.left, e.clientY - r.top];
    };
    // NiiVue moves a slice per wheel event, whatever its size: a trackpad's dozens of small ones flew through
    // the volume, a fast wheel's notches sent as one moved one slice. Here it moves as far as the wheel went.
    const wheel = new WheelSlices();
    this.box.addEventListener("wheel", (e) => {
      if (!this.volume) return;
      e.preventDefault();
      e.stopPropagation();
      if (e.ctrlKey) {
        this.zoomAt(wheelZoom(e), ...point(e));
        return;
      }
      const slices = wheel.take(e);
      // NiiVue's own step (the tile under the pointer, along its axis), once per slice; +0.01: up (superior)
      for (let i = 0; i < Math.abs(slices); i++) this.nv.sliceScroll2D(Math.sign(slices) * 0.01, ...point(e));
    }, {passive: false, capture: true});
    this.box.addEventListener("mousedown", (e) => {
      if (e.button !== 0 || e.shiftKey || !this.volume) return;
      const [cx, cy] = point(e);
      const line = this.lineNear(cx, cy);
      if (line < 0) return; // NiiVue moves the crosshair
      e.stopPropagation();
      e.preventDefault(); // (which keeps the focus where it was: the viewer's keys, Tab too, need it here)
      this.canvas.focus({preventScroll: true});
      this.drag = {line, tile: this.tileAt(cx, cy)};
      this.hooks.lineAt(line);
      this.box.classList.add("dragging-line");
    }, {capture: true});
    const drop = () => {
      const {line} = this.drag;
      this.drag = null;
      this.box.classList.remove("dragging-line");
      this.hooks.dropLine(line);
    };
    window.addEventListener("mousemove", (e) => {
      this.pointer = this.drag || this.box.contains(e.target) ? point(e) : null;
      if (this.drag) {
        e.stopPropagation();
        // the button is up, its release lost (let go over another window): the line stays where it was
        // dragged to with the button down, not where the pointer goes now
        if (!(e.buttons & 1)) drop();
        else this.hooks.dragLine(this.drag.line, this.sliceAt(point(e)[1], this.drag.tile));
        return;
      }
      if (!this.volume || !this.box.contains(e.target)) return;
      const [cx, cy] = point(e);
      this.showCursor(cx, cy);
      if (!e.buttons) this.box.classList.toggle("over-line", this.lineNear(cx, cy) >= 0);
    }, {capture: true});
    window.addEventListener("mouseup", (e) => {
      if (!this.drag) return;
      e.stopPropagation();
      drop();
    }, {capture: true});
    // The keys are the L3 view's (hooks.key); NiiVue's own keys (e.g. V: another layout) are kept out.
    for (const type of ["keydown", "keyup"]) {
      this.box.addEventListener(type, (e) => {
        if (e.target !== this.canvas) return;
        e.stopPropagation();
        if (type === "keydown") this.hooks.key(e);
      }, {capture: true});
    }
    new ResizeObserver(() => this.drawOverlay()).observe(this.box);
  }

  /** The lines (inferior/superior or L3), their labels and the localizer's vertebrae, sharp at any zoom. */
  drawOverlay() {
    const o = this.overlay;
    const dpr = window.devicePixelRatio || 1;
    const w = this.canvas.clientWidth;
    const h = this.canvas.clientHeight;
    if (o.width !== Math.round(w * dpr) || o.height !== Math.round(h * dpr)) {
      o.width = Math.round(w * dpr);
      o.height = Math.round(h * dpr);
      o.style.width = `${w}px`;
      o.style.height = `${h}px`;
    }
    const ctx = o.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    if (!this.volume || !this.nv.screenSlices) return;
    const lines = this.hooks.lines();
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    this.nv.screenSlices.forEach((s, tile) => {
      const [l, t, tw, th] = s.leftTopWidthHeight.map((v) => v / this.nv.uiData.dpr);
      let name = PLANES[s.axCorSag];
      const notes = []; // under the name, clear of the top letter (a narrow tile's name ran into it)
      if (s.axCorSag === SLICE_TYPE.AXIAL) {
        const z = this.voxelOf(this.nv.scene.crosshairPos)[2];
        name += ` · ${slicePosition(z, this.volume.hdr.dims[3])}`;
        notes.push(imageText(this.shown, [z], "")); // under the name: on one line it reached the top letter
      } else notes.push(stretchNote(stretchOf(s.axCorSag, this.nv.sliceScale().volScale), ""));
      notes.push(this.oblique);
      const texts = [name, ...notes.filter(Boolean)];
      // A short series' coronal and sagittal tiles are low bands (about 58 px at a window 1000 px wide): in
      // them the name and notes covered the left and bottom letters and the Slice line's label. They stand
      // above such a tile where the canvas has room, clipped to its width; else in it, under its top edge.
      const above = s.axCorSag !== SLICE_TYPE.AXIAL && t >= 14 * texts.length + 4;
      const write = (top) => {
        ctx.fillStyle = "rgba(255,255,255,0.75)";
        ctx.textAlign = "left";
        texts.forEach((text, i) => ctx.fillText(text, l + 6, top + 14 * i));
      };
      if (above) {
        ctx.save();
        ctx.beginPath();
        ctx.rect(l, 0, tw, t);
        ctx.clip();
        write(t - 14 * texts.length + 3);
        ctx.restore();
      }
      ctx.save();
      ctx.beginPath();
      ctx.rect(l, t, tw, th);
      ctx.clip();
      this.drawCrosshair(ctx, s, l, t, tw, th);
      if (!above) write(t + 10);
      const {sides: letters, ends} = drawLetters(ctx, LETTERS[s.axCorSag], l, t, tw, th); // labels keep clear
      if (s.axCorSag !== SLICE_TYPE.AXIAL) {
        if (s.axCorSag === SLICE_TYPE.SAGITTAL) this.drawVertebrae(ctx, tile, l, tw, letters);
        const [x0, x1] = this.imageSpan(tile, l, t, tw, th); // the lines cross the image, not the black beside it
        for (const line of [...this.hooks.marks(), ...lines]) {
          const y = this.yOfSlice(tile, line.z);
          if (y === null) continue;
          const yy = Math.round(y) + 0.5;
          ctx.strokeStyle = line.color;
          ctx.lineWidth = line.active ? 2 : 1;
          ctx.setLineDash(line.active === undefined ? [6, 4] : []); // marks are dashed
          ctx.beginPath();
          ctx.moveTo(x0, yy);
          ctx.lineTo(x1, yy);
          ctx.stroke();
          ctx.setLineDash([]);
          tag(ctx, [line.label, line.short ?? line.label], x0 + 4, yy - 9, line.color, "left", letters, ends);
        }
      }
      ctx.restore();
    });
  }

  /** The left and right (CSS px) of the image of tile `tile` (a coronal or sagittal one, at left, top, width,
   * height) within the tile, however zoomed and panned: NiiVue's tile is wider than a reconstruction fitted by
   * its height. Texture fractions are linear across a tile: two points give where they are 0 and 1. */
  imageSpan(tile, left, top, width, height) {
    const axis = this.nv.screenSlices[tile].axCorSag === SLICE_TYPE.CORONAL ? 0 : 1; // across the tile
    const y = (top + height / 2) * this.dpr;
    const xs = [left + width / 4, left + (3 * width) / 4]; // inside the tile (NiiVue says -1 outside it)
    const [a, b] = xs.map((x) => this.nv.screenXY2TextureFrac(x * this.dpr, y, tile, false));
    const slope = a && b ? (b[axis] - a[axis]) / (xs[1] - xs[0]) : 0;
    if (!Number.isFinite(slope) || slope === 0) return [left, left + width];
    const ends = [0, 1].map((f) => xs[0] + (f - a[axis]) / slope).sort((p, q) => p - q);
    return [Math.max(left, ends[0]), Math.min(left + width, ends[1])];
  }

  /** The crosshair on tile `s` (its image at left, top, width, height): one CSS pixel, whatever the zoom. */
  drawCrosshair(ctx, s, left, top, width, height) {
    const hit = this.nv.frac2canvasPosWithTile(this.nv.scene.crosshairPos, s.axCorSag);
    if (!hit) return;
    const [x, y] = hit.pos.map((v) => Math.round(v / this.nv.uiData.dpr) + 0.5);
    ctx.strokeStyle = "rgba(89,230,115,0.7)";
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(left, y);
    ctx.lineTo(left + width, y);
    ctx.moveTo(x, top);
    ctx.lineTo(x, top + height);
    ctx.stroke();
  }

  drawVertebrae(ctx, tile, left, width, letters) {
    for (const [name, v] of Object.entries(this.hooks.vertebrae())) {
      const top = this.yOfSlice(tile, v.last);
      const bottom = this.yOfSlice(tile, v.first);
      const centre = this.yOfSlice(tile, v.center);
      if (top === null || bottom === null || centre === null) continue;
      const color = name === "L3" ? "rgba(255,210,63,0.95)" : "rgba(255,255,255,0.7)";
      ctx.fillStyle = color;
      ctx.fillRect(left + width - 3, Math.min(top, bottom) + 1, 3, Math.max(1, Math.abs(bottom - top) - 2));
      tag(ctx, name, left + width - 6, centre, color, "right", letters);
    }
  }
}

/** Orientation letters [left, right, top, bottom] at the middle of each edge of a tile (left, top, width,
 * height; CSS px), as NiiVue places its own, in white on a dark outline: readable on air, tissue and bone alike.
 * Returns the boxes (tag's) of the left and right letters (`sides`), beside which the lines' and vertebrae's
 * labels stand, and of the top and bottom ones (`ends`), which a line's label leaves clear in its short form
 * (a short series' band is narrow: "L3 · 6 · image 7" reached its top letter). */
function drawLetters(ctx, [left, right, top, bottom], l, t, w, h) {
  ctx.save();
  ctx.font = "12px system-ui, sans-serif";
  ctx.lineWidth = 3;
  ctx.lineJoin = "round";
  ctx.strokeStyle = "rgba(0,0,0,0.8)";
  ctx.fillStyle = "rgba(255,255,255,0.9)";
  const put = (text, x, y, align, baseline) => {
    ctx.textAlign = align;
    ctx.textBaseline = baseline;
    ctx.strokeText(text, x, y);
    ctx.fillText(text, x, y);
  };
  put(left, l + 4, t + h / 2, "left", "middle");
  put(right, l + w - 4, t + h / 2, "right", "middle");
  put(top, l + w / 2, t + 3, "center", "top");
  put(bottom, l + w / 2, t + h - 3, "center", "bottom");
  const [lw, rw, tw, bw] = [left, right, top, bottom].map((text) => ctx.measureText(text).width);
  ctx.restore();
  const [mid, centre] = [t + h / 2, l + w / 2];
  return {
    sides: [
      {left: l + 2, top: mid - 8, right: l + 6 + lw, bottom: mid + 8},
      {left: l + w - 6 - rw, top: mid - 8, right: l + w - 2, bottom: mid + 8},
    ],
    ends: [
      {left: centre - tw / 2 - 2, top: t + 1, right: centre + tw / 2 + 2, bottom: t + 17},
      {left: centre - bw / 2 - 2, top: t + h - 17, right: centre + bw / 2 + 2, bottom: t + h - 1},
    ],
  };
}

/** The bytes of the volume at `url`, read here rather than by NiiVue so that its progress can be shown (a
 * large volume takes a while): progress(loaded, total) after each piece. */
async function fetchVolume(url, signal, progress) {
  const response = await api(url, {signal});
  const total = Number(response.headers.get("Content-Length")) || null;
  const reader = response.body.getReader();
  const pieces = [];
  let loaded = 0;
  progress(0, total);
  for (;;) {
    const {done, value} = await reader.read();
    if (done) break;
    pieces.push(value);
    loaded += value.length;
    progress(loaded, total);
  }
  const bytes = new Uint8Array(loaded);
  let at = 0;
  for (const piece of pieces) {
    bytes.set(piece, at);
    at += piece.length;
  }
  return bytes.buffer;
}
