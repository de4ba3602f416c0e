// What is under the pointer on an axial image, as a CT viewer says it: the pixel, the slice (with its DICOM
// image number), the CT's value in HU and, in the label editor, the label there. The HU are the stored CT's
// (GET .../hu/z: the slice's int16 values, fetched once per slice and kept while the study is open), never
// the windowed image's grey. NiiVue (mpr.js) reads them from the volume it holds and words them here too.
import {sliceData} from "./brush.js";
import {imageText, state, stillOpen} from "./state.js";

/** "x 82 · y 48 · slice 5 · image 6: 47 HU", then " · MUSCLE" (or " · no label") when `label` is given (a
 * segmentation is shown); a label whose overlay is hidden is named so. */
export function pointerText(x, y, z, hu, label = null) {
  let text = `x ${x} · y ${y} · slice ${z}${imageText(state.study, [z])}: ${Math.round(hu)} HU`;
  if (label === null) return text;
  const tissue = state.config.tissues.find((t) => t.label === label);
  if (!tissue) return `${text} · no label`;
  text += ` · ${tissue.name.toUpperCase()}`;
  return state.visible[label] ? text : `${text} (hidden)`;
}

/** The readout of one view: shown in `el`, at the pixel last pointed at, again when the image under it
 * changes (another slice, an edit of the labels). */
export class PointerReadout {
  /** `el`: where the text goes; `labelAt(x, y, z)`: the label there, or null when none is shown. */
  constructor(el, labelAt = () => null) {
    this.el = el;
    this.labelAt = labelAt;
    this.at = null; // [x, y, z] pointed at (null: the pointer is elsewhere)
  }

  /** The pointer is over pixel (x, y) of axial slice z (fractions are of the pixel they fall in), or off the
   * image (x null). */
  async point(x, y, z) {
    const [nx, ny] = [state.study.cols, state.study.rows];
    const at = x === null ? null : [Math.floor(x), Math.floor(y), z];
    if (!at || at[0] < 0 || at[1] < 0 || at[0] >= nx || at[1] >= ny) {
      this.clear();
      return;
    }
    this.at = at;
    this.el.dataset.at = at.join(",");
    const id = state.study.id;
    let hu;
    try { hu = await sliceData("hu", z); } catch (_) { // the HU could not be read: no value is made up
      if (this.at === at) this.show("");
      return;
    }
    // the pointer moved on (or another study was opened) while the slice's HU came: that point's text stands
    if (this.at !== at || !stillOpen(id)) return;
    const [px, py] = at;
    this.show(pointerText(px, py, z, hu[py * nx + px], this.labelAt(px, py, z)));
  }

  /** Say again what is under the pointer, now on slice z (the image under it changed). */
  refresh(z) {
    if (this.at) this.point(this.at[0], this.at[1], z);
  }

  clear() {
    this.at = null;
    this.el.dataset.at = "";
    this.show("");
  }

  show(text) { this.el.textContent = text; }
}
