// The L3 view's images without WebGL2: windowed 8-bit PNGs from the server (one per plane, slice and preset),
// drawn on three canvases, with the Range/Slice lines and the localizer's vertebrae drawn over them. Used only
// when NiiVue cannot run (mpr.js); window/level is then limited to the presets.
import {$, message, unsay} from "./api.js";
import {
  WheelSlices, canvasPoint, image, imageText, obliqueNote, reconStretch, showOrientation, shownPlane, slicePosition,
  state, stillOpen, stretchNote, tag,
} from "./state.js";
import {PointerReadout} from "./readout.js";
import {Viewport} from "./viewport.js";

const LINE_GRAB_PX = 7; // as on NiiVue (mpr.js): a press this close to a line (CSS px) drags it

/** The oblique note (style.css .oblique-note) where it covers no letter and none of `labels` (the boxes of
 * the labels drawn on the canvas, tag's, in its CSS px: at a window 1000 px wide the corner's note covered
 * "L3 · 6"): in the reconstruction's top left corner; else (a short series' image is a low band: there,
 * wrapped, it ran over the left letter) above the image, in the box; else in its bottom left corner; else its
 * short form ("oblique 20°") in the top, then the bottom left corner; else none. Measured: the text's size is
 * the browser's. */
function placeNote(box, canvas, labels) {
  const note = box.querySelector(".oblique-note");
  const full = obliqueNote(state.study);
  if (!full) return;
  const c = canvas.getBoundingClientRect();
  const kept = [
    ...[...box.querySelectorAll(".orient")].map((letter) => letter.getBoundingClientRect()),
    ...labels.map((l) => ({left: c.left + l.left, top: c.top + l.top, right: c.left + l.right,
      bottom: c.top + l.bottom})),
  ];
  const clear = () => {
    const n = note.getBoundingClientRect();
    return note.offsetTop >= 0 && kept.every((l) => n.right <= l.left || l.right <= n.left ||
      n.bottom <= l.top || l.bottom <= n.top);
  };
  note.hidden = false;
  const short = obliqueNote(state.study, true);
  const places = [[full, ""], [full, "above"], [full, "below"], [short, ""], [short, "below"]];
  for (const [text, where] of places) {
    note.textContent = text;
    note.classList.remove("above", "below");
    if (where) note.classList.add(where);
    if (clear()) return;
  }
  note.hidden = true;
}

export class PNGView {
  /** hooks as for MPRView (mpr.js): crosshair, lines, vertebrae, lineAt, dragLine, dropLine. */
  constructor(hooks) {
    this.hooks = hooks;
    this.said = new Map(); // canvas -> the message that its image could not be loaded, cleared once it is
    this.axialView = new Viewport($("axial-box"), $("axial-canvas"), () => this.drawAxial());
    this.pointed = new PointerReadout($("l3-cursor")); // the pixel and HU under the pointer, as on NiiVue
    this.bind();
  }

  reset(redraw = true) {
    this.axialView.reset(redraw);
    this.pointed.clear();
  }

  draw() {
    showOrientation($("axial-box"), "axial");
    for (const plane of ["coronal", "sagittal"]) showOrientation($(`${plane}-canvas`).parentElement, plane);
    this.drawAxial();
    const one = state.study.n_slices === 1; // no height: its reconstructions would be strips a pixel high
    $("l3-grid").classList.toggle("single", one);
    for (const plane of ["coronal", "sagittal"]) {
      $(`${plane}-canvas`).closest("figure").hidden = one;
      if (!one) this.drawRecon(plane);
    }
  }

  async drawAxial() {
    const s = state.study;
    const canvas = $("axial-canvas");
    const z = state.axialZ;
    $("axial-index").textContent = slicePosition(z, s.n_slices) + imageText(s, [z]);
    const img = image("axial", z);
    const loaded = await img.ready.then(() => true, () => false);
    if (z !== state.axialZ || !stillOpen(s.id)) return; // another slice or study is shown now
    if (!this.shows(loaded, canvas, `The ${shownPlane("axial")} image of slice ${z}`)) return;
    canvas.width = s.cols;
    canvas.height = s.rows;
    this.axialView.layout(s.cols * s.spacing[2], s.rows * s.spacing[1]);
    const ctx = canvas.getContext("2d");
    ctx.drawImage(img, 0, 0);
    ctx.strokeStyle = "rgba(255,255,255,0.35)";
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(0, state.crossY + 0.5); ctx.lineTo(s.cols, state.crossY + 0.5);
    ctx.moveTo(state.crossX + 0.5, 0); ctx.lineTo(state.crossX + 0.5, s.rows);
    ctx.stroke();
    this.pointed.refresh(z); // another slice under the pointer
    for (const dz of [1, -1, 2, -2]) {
      const n = z + dz;
      if (n >= 0 && n < s.n_slices) image("axial", n); // prefetch neighbours
    }
  }

  /** False when the image `what` could not be loaded: `canvas` is blanked (never another slice's image under
   * this one's caption and lines) and the status line says so; the server is asked again when it is shown
   * again. */
  shows(loaded, canvas, what) {
    if (loaded) {
      unsay(this.said.get(canvas));
      return true;
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const said = `${what} could not be loaded from the server: show it again (wheel, a line moved) to retry.`;
    this.said.set(canvas, said);
    message(said, true);
    return false;
  }

  /** Reconstructions are shown at true proportions unless stretched (reconStretch); the canvas is drawn at
   * the box's pixel size, so that lines and labels are sharp. */
  geometry(plane) {
    const s = state.study;
    const canvas = $(`${plane}-canvas`);
    const box = canvas.parentElement;
    const width = plane === "coronal" ? s.cols * s.spacing[2] : s.rows * s.spacing[1];
    const stretch = reconStretch(width, s.n_slices * s.spacing[0]);
    const height = s.n_slices * s.spacing[0] * stretch;
    const fit = Math.min(box.clientWidth / width, box.clientHeight / height);
    return {w: Math.max(1, Math.round(width * fit)), h: Math.max(1, Math.round(height * fit)), stretch};
  }

  zToY(g, z) { return ((state.study.n_slices - 1 - z + 0.5) * g.h) / state.study.n_slices; }

  yToZ(g, y) {
    const n = state.study.n_slices;
    return Math.max(0, Math.min(n - 1, n - 1 - Math.floor((y * n) / g.h)));
  }

  async drawRecon(plane) {
    const canvas = $(`${plane}-canvas`);
    const id = state.study.id;
    const shown = () => (plane === "coronal" ? state.crossY : state.crossX);
    const index = shown();
    const img = image(plane, index);
    const loaded = await img.ready.then(() => true, () => false);
    if (index !== shown() || !stillOpen(id)) return; // another plane or study is shown now
    if (!this.shows(loaded, canvas, `The ${shownPlane(plane)} image`)) return;
    const g = this.geometry(plane);
    $(`${plane}-note`).textContent = stretchNote(g.stretch);
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(g.w * dpr);
    canvas.height = Math.round(g.h * dpr);
    canvas.style.width = `${g.w}px`;
    canvas.style.height = `${g.h}px`;
    const box = canvas.parentElement; // the letters at the image's edges (style.css .orient), not the box's
    const insets = {
      left: canvas.offsetLeft, top: canvas.offsetTop,
      right: box.clientWidth - canvas.offsetLeft - g.w, bottom: box.clientHeight - canvas.offsetTop - g.h,
    };
    for (const [edge, px] of Object.entries(insets)) box.style.setProperty(`--inset-${edge}`, `${px}px`);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(img, 0, 0, g.w, g.h);
    ctx.strokeStyle = "rgba(255,255,255,0.4)"; // the axial slice shown
    ctx.setLineDash([4, 4]);
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(0, this.zToY(g, state.axialZ)); ctx.lineTo(g.w, this.zToY(g, state.axialZ));
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    const c = canvas.getBoundingClientRect(); // the left and right letters (placed by the insets), in canvas px
    const letters = [...box.querySelectorAll(".orient.left, .orient.right")].map((letter) => {
      const r = letter.getBoundingClientRect();
      return {left: r.left - c.left - 2, top: r.top - c.top - 2, right: r.right - c.left + 2,
        bottom: r.bottom - c.top + 2};
    });
    const labels = plane === "sagittal" ? this.drawVertebrae(ctx, g, letters) : [];
    for (const line of [...this.hooks.marks(), ...this.hooks.lines()]) {
      const y = Math.round(this.zToY(g, line.z)) + 0.5;
      ctx.strokeStyle = line.color;
      ctx.lineWidth = line.active ? 2 : 1;
      ctx.setLineDash(line.active === undefined ? [6, 4] : []); // marks are dashed
      ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(g.w, y); ctx.stroke();
      ctx.setLineDash([]);
      labels.push(tag(ctx, line.label, 4, y - 9, line.color, "left", letters));
    }
    placeNote(box, canvas, labels);
  }

  /** The line (index into hooks.lines()) within LINE_GRAB_PX of height y (CSS px) on `plane`'s image, or -1:
   * a press elsewhere shows that slice and leaves the lines (as on NiiVue). */
  lineNear(plane, y) {
    const g = this.geometry(plane);
    let best = -1;
    let bestDistance = LINE_GRAB_PX;
    this.hooks.lines().forEach((line, i) => {
      const d = Math.abs(this.zToY(g, line.z) - y);
      if (d <= bestDistance) { best = i; bestDistance = d; }
    });
    return best;
  }

  /** The localizer's vertebrae at the image's right edge, their names clear of the `letters`; returns their
   * labels' boxes (tag's). */
  drawVertebrae(ctx, g, letters) {
    return Object.entries(this.hooks.vertebrae()).map(([name, v]) => {
      const top = this.zToY(g, v.last) - g.h / state.study.n_slices / 2;
      const bottom = this.zToY(g, v.first) + g.h / state.study.n_slices / 2;
      const color = name === "L3" ? "rgba(255,210,63,0.95)" : "rgba(255,255,255,0.7)";
      ctx.fillStyle = color;
      ctx.fillRect(g.w - 3, top + 1, 3, Math.max(1, bottom - top - 2));
      return tag(ctx, name, g.w - 6, this.zToY(g, v.center), color, "right", letters);
    });
  }

  bind() {
    const axialWheel = new WheelSlices();
    $("axial-box").addEventListener("wheel", (e) => {
      e.preventDefault();
      const slices = axialWheel.take(e); // (sideways, a trackpad's or Shift+wheel: none)
      if (slices) this.hooks.crosshair(state.crossX, state.crossY, state.axialZ + slices);
    }, {passive: false});
    $("axial-canvas").addEventListener("click", (e) => {
      const [x, y] = canvasPoint(e.currentTarget, e).map(Math.floor);
      this.hooks.crosshair(x, y, state.axialZ);
    });
    $("axial-canvas").addEventListener("pointermove", (e) => {
      this.pointed.point(...canvasPoint(e.currentTarget, e), state.axialZ);
    });
    $("axial-canvas").addEventListener("pointerleave", () => this.pointed.clear());
    for (const plane of ["coronal", "sagittal"]) {
      const canvas = $(`${plane}-canvas`);
      let dragging = null;
      const zAt = (e) => this.yToZ(this.geometry(plane), e.offsetY);
      canvas.addEventListener("pointerdown", (e) => {
        if (e.button !== 0) return; // the left button drags, as on NiiVue: middle (pan) or right left the line
        const line = this.lineNear(plane, e.offsetY);
        if (line < 0) { // as NiiVue's crosshair: that axial slice is shown, the lines stay
          this.hooks.crosshair(state.crossX, state.crossY, zAt(e));
          return;
        }
        dragging = line;
        canvas.setPointerCapture(e.pointerId);
        canvas.classList.add("over-line");
        this.hooks.lineAt(line);
      });
      const drop = () => {
        if (dragging === null) return;
        this.hooks.dropLine(dragging);
        dragging = null;
      };
      canvas.addEventListener("pointermove", (e) => {
        if (dragging === null) {
          if (!e.buttons) canvas.classList.toggle("over-line", this.lineNear(plane, e.offsetY) >= 0);
          return;
        }
        // the button is up, its release lost (let go over another window): the line stays where it was
        if (!(e.buttons & 1)) drop();
        else this.hooks.dragLine(dragging, zAt(e));
      });
      canvas.addEventListener("pointerup", drop);
      canvas.addEventListener("lostpointercapture", drop);
      const wheel = new WheelSlices();
      canvas.addEventListener("wheel", (e) => {
        e.preventDefault();
        const s = state.study;
        const d = -wheel.take(e); // (as before: down, a higher row or column)
        if (plane === "coronal") this.hooks.crosshair(state.crossX, Math.max(0, Math.min(s.rows - 1, state.crossY + d)), state.axialZ);
        else this.hooks.crosshair(Math.max(0, Math.min(s.cols - 1, state.crossX + d)), state.crossY, state.axialZ);
      }, {passive: false});
      // the box follows the window (CSS sizes): the image is drawn again at the box's new size
      new ResizeObserver(() => {
        const box = canvas.parentElement;
        if (state.study && state.study.n_slices > 1 && box.clientWidth && box.clientHeight) this.drawRecon(plane);
      }).observe(canvas.parentElement);
    }
  }
}
