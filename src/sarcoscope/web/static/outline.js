// The label editor's pointer: the brush's (or eraser's) outline, or the fill's cross, drawn on a canvas the
// size of the editor's box at the screen's pixel density, so that it is one sharp pixel wide at any zoom.
// Drawn on a canvas of the image's pixels (scaled with the image), it was a blurred band several image
// pixels wide once zoomed in or on a high-DPI screen, hiding the edge being painted.
import {$} from "./api.js";
import {state} from "./state.js";

let pointer = null; // the last pointer event over the image (null: elsewhere), to draw the outline again

/** Draw the outline at pointer event `e` (null: the pointer left the image), or again at the last one (the
 * tool, the brush size, the zoom or the box changed). */
export function drawOutline(e = pointer) {
  pointer = e;
  const box = $("editor-box");
  const c = $("edit-outline");
  const dpr = window.devicePixelRatio || 1;
  const [w, h] = [box.clientWidth, box.clientHeight];
  if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
    c.width = Math.round(w * dpr);
    c.height = Math.round(h * dpr);
  }
  const ctx = c.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  if (!e || !state.shape) return;
  // the image's CSS pixels per image pixel, across and down (pixels need not be square)
  const image = $("edit-cursor").getBoundingClientRect();
  const [sx, sy] = [image.width / state.shape[2], image.height / state.shape[1]];
  const b = box.getBoundingClientRect();
  const x = e.clientX - b.left - box.clientLeft;
  const y = e.clientY - b.top - box.clientTop;
  ctx.strokeStyle = state.tool === "eraser" ? "#fff" : "#ffd23f";
  ctx.lineWidth = 1;
  ctx.beginPath();
  if (state.tool === "fill") {
    const [ax, ay] = [Math.max(6, 4 * sx), Math.max(6, 4 * sy)];
    ctx.moveTo(x - ax, y); ctx.lineTo(x + ax, y); ctx.moveTo(x, y - ay); ctx.lineTo(x, y + ay);
  } else { // the disc paintDisc paints: the pixels whose centres are within brush / 2 of the pointer
    const r = Math.max(0.5, state.brush / 2);
    ctx.ellipse(x, y, r * sx, r * sy, 0, 0, 2 * Math.PI);
  }
  ctx.stroke();
}
