// The label editor's painting tools on one slice's labels (a Uint8Array, row-major nx * ny), and what they
// stay within: the slice's HU and body from the server. `allows(i)` says whether pixel i may take the new
// value (the "HU range only" constraint, the body for fill).
import {api} from "./api.js";
import {state, stillOpen} from "./state.js";

/** A round brush of diameter `size` centred at (cx, cy) in pixel coordinates (a pixel's centre is +0.5). */
export function paintDisc(labels, nx, ny, cx, cy, size, value, allows) {
  const r = size / 2;
  const x0 = Math.max(0, Math.floor(cx - r));
  const x1 = Math.min(nx - 1, Math.ceil(cx + r));
  const y0 = Math.max(0, Math.floor(cy - r));
  const y1 = Math.min(ny - 1, Math.ceil(cy + r));
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      const dx = x + 0.5 - cx;
      const dy = y + 0.5 - cy;
      if (dx * dx + dy * dy > r * r && !(r < 1 && x === Math.floor(cx) && y === Math.floor(cy))) continue;
      const i = y * nx + x;
      if (allows(i)) labels[i] = value;
    }
  }
}

/** Give `value` to the 4-connected region of equal labels around pixel (x, y) that `allows`: the region
 * grows only through allowed pixels, so it stops at the body's edge and at pixels outside the HU range
 * (instead of flooding across them into air or an organ). */
export function fillRegion(labels, nx, ny, x, y, value, allows) {
  const start = y * nx + x;
  const from = labels[start];
  if (from === value || !allows(start)) return 0;
  const stack = [start];
  const seen = new Uint8Array(labels.length);
  seen[start] = 1;
  let filled = 0;
  while (stack.length) {
    const i = stack.pop();
    labels[i] = value;
    filled += 1;
    const px = i % nx;
    const py = (i - px) / nx;
    const next = [px > 0 ? i - 1 : -1, px < nx - 1 ? i + 1 : -1, py > 0 ? i - nx : -1, py < ny - 1 ? i + nx : -1];
    for (const j of next) {
      if (j >= 0 && !seen[j] && labels[j] === from && allows(j)) { seen[j] = 1; stack.push(j); }
    }
  }
  return filled;
}

const asked = new Map(); // "study/kind/z" -> the request on its way: one per slice, however often it is asked

/** Slice z's HU (`kind` "hu": GET .../hu/z, int16) or body ("body": GET .../body/z, uint8, 1 inside: fill
 * stays in it), kept while its study is open (not for another opened meanwhile). Asked again before the
 * answer came (the pointer's readout asks at every move), the same request is awaited. */
export async function sliceData(kind, z) {
  const id = state.study.id;
  if (state[kind].has(z)) return state[kind].get(z);
  const key = `${id}/${kind}/${z}`;
  if (!asked.has(key)) {
    const request = (async () => {
      const response = await api(`/api/studies/${id}/${kind}/${z}`);
      const data = new (kind === "hu" ? Int16Array : Uint8Array)(await response.arrayBuffer());
      if (stillOpen(id)) state[kind].set(z, data);
      return data;
    })();
    asked.set(key, request);
    request.then(() => asked.delete(key), () => asked.delete(key)); // failed: asked again next time
  }
  return asked.get(key);
}

/** True when pixel i of a slice whose HU are `hu` is in the HU range of tissue `label` (no HU: any). */
export function huAllows(hu, i, label) {
  if (!hu || !label) return true;
  const name = state.config.tissues.find((t) => t.label === label).name;
  const [lo, hi] = state.config.hu_ranges[name];
  return hu[i] >= lo && hu[i] <= hi;
}
