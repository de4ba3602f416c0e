// Zoom and pan of one image view: ctrl+wheel zooms around the cursor, a drag with the middle button (or
// with the space bar held) pans, reset() fits the image again. The view's box never changes size, so
// zooming cannot push the panels beside it away; the image moves inside the box (overflow hidden).
import {wheelZoom} from "./state.js";

const MAX_ZOOM = 8;
let spaceHeld = false;
let hovered = null; // the view's box under the pointer
// Space held pans, except in a field that types it or a list. On a button or checkbox (the focus stays on
// the one clicked last: Undo, a tool, "HU range only") it pans while the pointer is over a view, and the
// control is not pressed; elsewhere Space presses it, as always.
const TYPES = "input[type=text], input[type=number], input[type=search], input[type=password], input:not([type])";
const CONTROL = "button, input";
window.addEventListener("keydown", (e) => {
  if (e.code !== "Space" || e.target.matches(`${TYPES}, select, textarea`)) return;
  const control = e.target.matches(CONTROL);
  if (control && !hovered) return;
  spaceHeld = true;
  if (control || e.target === document.body || e.target.matches("canvas")) e.preventDefault(); // no scroll
});
window.addEventListener("keyup", (e) => {
  if (e.code !== "Space") return;
  if (spaceHeld && e.target.matches(CONTROL)) e.preventDefault();
  spaceHeld = false;
});
window.addEventListener("blur", () => { spaceHeld = false; });

export class Viewport {
  /** box: the fixed-size element; target: the element moved and scaled in it; onChange: redraw. */
  constructor(box, target, onChange) {
    this.box = box;
    this.target = target;
    this.onChange = onChange;
    this.zoom = 1;
    this.panX = 0;
    this.panY = 0;
    this.width = 1; // displayed size at zoom 1 (CSS px), set by layout()
    this.height = 1;
    this.bind();
  }

  /** Fit the image again; `redraw` false when the caller draws anyway (e.g. opening another study). */
  reset(redraw = true) {
    this.zoom = 1;
    this.panX = 0;
    this.panY = 0;
    if (redraw) this.onChange();
  }

  /** Place the target: an image of `w` x `h` physical units, fitted into the box, then zoomed and panned. */
  layout(w, h) {
    const bw = this.box.clientWidth;
    const bh = this.box.clientHeight;
    const fit = Math.min(bw / w, bh / h);
    this.width = w * fit;
    this.height = h * fit;
    const [left, top] = this.corner();
    const style = this.target.style;
    style.width = `${this.width * this.zoom}px`;
    style.height = `${this.height * this.zoom}px`;
    style.left = `${left}px`;
    style.top = `${top}px`;
  }

  /** Top-left corner of the zoomed image in the box, after keeping every part of it reachable. */
  corner() {
    const bw = this.box.clientWidth;
    const bh = this.box.clientHeight;
    const w = this.width * this.zoom;
    const h = this.height * this.zoom;
    const clamp = (v, room) => Math.max(Math.min(0, room), Math.min(Math.max(0, room), v));
    const left = clamp((bw - w) / 2 + this.panX, bw - w);
    const top = clamp((bh - h) / 2 + this.panY, bh - h);
    this.panX = left - (bw - w) / 2; // remember the clamped pan, so dragging back starts at once
    this.panY = top - (bh - h) / 2;
    return [left, top];
  }

  /** Zoom by `factor` keeping the image point under (cx, cy) (box coordinates) where it is. */
  zoomAt(factor, cx, cy) {
    const next = Math.max(1, Math.min(MAX_ZOOM, this.zoom * factor));
    const [left, top] = this.corner();
    const u = (cx - left) / (this.width * this.zoom);
    const v = (cy - top) / (this.height * this.zoom);
    const bw = this.box.clientWidth;
    const bh = this.box.clientHeight;
    this.zoom = next;
    this.panX = cx - u * this.width * next - (bw - this.width * next) / 2;
    this.panY = cy - v * this.height * next - (bh - this.height * next) / 2;
    this.onChange();
  }

  /** True for a pointer event that pans rather than acts on the image (middle button, or space held). */
  static pans(e) {
    return e.button === 1 || (e.button === 0 && spaceHeld);
  }

  bind() {
    this.box.addEventListener("wheel", (e) => {
      if (!e.ctrlKey) return; // plain wheel: the view's own meaning (slice scrolling)
      e.preventDefault();
      e.stopImmediatePropagation();
      const r = this.box.getBoundingClientRect();
      this.zoomAt(wheelZoom(e), e.clientX - r.left, e.clientY - r.top);
    }, {passive: false, capture: true});
    let drag = null;
    this.box.addEventListener("pointerdown", (e) => {
      if (!Viewport.pans(e)) return;
      e.preventDefault();
      e.stopImmediatePropagation();
      drag = {x: e.clientX, y: e.clientY, panX: this.panX, panY: this.panY};
      this.box.setPointerCapture(e.pointerId);
      this.box.classList.add("panning");
    }, {capture: true});
    this.box.addEventListener("pointermove", (e) => {
      if (!drag) return;
      e.stopImmediatePropagation();
      this.panX = drag.panX + e.clientX - drag.x;
      this.panY = drag.panY + e.clientY - drag.y;
      this.onChange();
    }, {capture: true});
    let panned = false; // the click that ends a pan is not a click on the image
    const end = (e) => {
      if (!drag) return;
      e.stopImmediatePropagation();
      drag = null;
      panned = true;
      setTimeout(() => { panned = false; }, 0);
      this.box.classList.remove("panning");
    };
    this.box.addEventListener("click", (e) => { if (panned) e.stopImmediatePropagation(); }, {capture: true});
    this.box.addEventListener("pointerup", end, {capture: true});
    this.box.addEventListener("pointercancel", end, {capture: true});
    this.box.addEventListener("auxclick", (e) => { if (e.button === 1) e.preventDefault(); });
    this.box.addEventListener("mousedown", (e) => { if (e.button === 1) e.preventDefault(); }); // no autoscroll
    this.box.addEventListener("pointerenter", () => { hovered = this.box; });
    this.box.addEventListener("pointerleave", () => { if (hovered === this.box) hovered = null; });
    // the box follows the window (CSS sizes): fit the image to the box's new size
    new ResizeObserver(() => this.onChange()).observe(this.box);
  }
}
