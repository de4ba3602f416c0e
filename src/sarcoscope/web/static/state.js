// What the UI shows and edits, shared by its modules, and small helpers they all use.

export const state = {
  config: null,
  study: null,
  // L3 view
  preset: "soft_tissue",
  mode: "slice",
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
  saved: null, // the labels as loaded or last saved: undone back to them, nothing is unsaved
  shape: null, // [n, y, x]
  indices: [],
  current: 0, // index into indices
  hu: new Map(), // slice index -> Int16Array
  body: new Map(), // slice index -> Uint8Array (1: body), for fill
  tool: "brush",
  paintLabel: 1,
  brush: 6,
  opacity: 0.45,
  visible: {1: true, 2: true, 3: true, 4: true},
  undo: [],
  redo: [],
  dirty: false,
  edits: 0, // counts changes to the labels: a save clears `dirty` only if none came while it ran
  lastHash: "#/",
};

/** True while study `id` is the one open. An answer that comes after the user opened another study (a slow
 * server) is not applied to the page, whose state is the open study's. */
export const stillOpen = (id) => Boolean(state.study) && state.study.id === id;

/** True while study `id` is open and on screen: not when the user went back to the study list, where the page
 * keeps the study left. An action that ends by going somewhere (its label view, another series) leaves a
 * user who went elsewhere meanwhile where they are. */
export const stillShown = (id) => stillOpen(id) && !document.getElementById("view-study").hidden;

export function localTime(iso) {
  return iso ? new Date(iso).toLocaleString([], {dateStyle: "short", timeStyle: "short"}) : "—";
}

export function formatDate(d) {
  return d && d.length === 8 ? `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6)}` : d || "—";
}

export function image(plane, index, preset = state.preset) {
  const key = `${plane}/${index}/${preset}`;
  if (!state.images.has(key)) {
    const img = new Image();
    img.decoding = "async";
    img.src = `/api/studies/${state.study.id}/image/${plane}/${index}?preset=${preset}`;
    img.ready = new Promise((resolve, reject) => {
      img.onload = resolve;
      img.onerror = (e) => { // not kept: the next request for this image tries the server again
        if (state.images.get(key) === img) state.images.delete(key);
        reject(e);
      };
    });
    state.images.set(key, img);
    if (state.images.size > 400) state.images.delete(state.images.keys().next().value);
  }
  return state.images.get(key);
}

/** Show toggle button `el` on or off: by its look (class "active") and to a screen reader (aria-pressed). */
export function showPressed(el, on) {
  el.classList.toggle("active", on);
  el.setAttribute("aria-pressed", String(on));
}

/** The zoom factor of a ctrl+wheel event: 1.25 for a mouse wheel's notch (100 px), less for a trackpad's
 * pinch (many events of a few pixels each), so that the zoom follows how far the wheel or the fingers move. */
export function wheelZoom(e) {
  const px = e.deltaY * (e.deltaMode === 1 ? 33 : e.deltaMode === 2 ? 100 : 1); // lines, pages: a notch
  return 1.25 ** Math.max(-1, Math.min(1, -px / 100));
}

/** The slices a wheel moves by, event after event (+: up, a more superior slice), as far as the wheel or the
 * fingers went: a mouse's notch (50 to 150 px; 3 lines) one slice, notches the browser sent as one event (a
 * fast wheel, a busy page) as many; a trackpad's stream of small events a slice per 50 px (half a notch),
 * the first after a pause at once, so that a wheel whose notches are a few pixels (macOS) still moves a slice
 * a notch when turned slowly. Sideways (a trackpad swiped left or right, Shift+wheel): none. One per view. */
export class WheelSlices {
  constructor() {
    this.rest = 0; // px towards the next slice
    this.last = -Infinity; // when the last event came (ms)
  }

  take(e) {
    const now = performance.now();
    const pause = now - this.last > WHEEL_PAUSE_MS;
    this.last = now;
    if (!e.deltaY || Math.abs(e.deltaX) > Math.abs(e.deltaY)) return 0;
    const px = -e.deltaY * (e.deltaMode === 1 ? 33 : e.deltaMode === 2 ? 100 : 1); // lines, pages: a notch
    if (pause || Math.sign(px) !== Math.sign(this.rest)) this.rest = 0; // turned back: from there
    if (Math.abs(px) >= 50) return Math.sign(px) * Math.max(1, Math.round(Math.abs(px) / 100));
    if (pause) return Math.sign(px);
    this.rest += px;
    const slices = Math.trunc(this.rest / 50);
    this.rest -= slices * 50;
    return slices;
  }
}

const WHEEL_PAUSE_MS = 120; // longer between two events: the wheel was turned again (a trackpad's come every ~16)

/** True for a control whose keys are its own (a text or number field, a list): shortcuts leave them alone. */
export function ownsKeys(el) {
  return el.matches("input[type=number], input[type=text], input[type=search], select");
}

/** The image pixel (x, y) under a pointer event, whatever the canvas' zoom and pan. */
export function canvasPoint(canvas, e) {
  const r = canvas.getBoundingClientRect();
  return [((e.clientX - r.left) * canvas.width) / r.width, ((e.clientY - r.top) * canvas.height) / r.height];
}

/** How much a coronal or sagittal reconstruction `width` by `height` mm is stretched along z: 1 (true
 * proportions) unless it would be thinner than a quarter of its width, as a short series is (a strip whose
 * lines cannot be seen or dragged). */
export const reconStretch = (width, height) => Math.max(1, width / 4 / height);

/** "slice 5" or "slices 4–6" for the ordered slice indices `zs`: the words of the server's messages and the
 * report (imaging.volume.slices_text), whose slice numbers are the indices from 0, as the CLI's --slice. */
export const slicesText = (zs) => zs.length === 1 ? `slice ${zs[0]}` : `slices ${zs[0]}–${zs[zs.length - 1]}`;

/** Slice z of a series of n, numbered as slicesText: "slice 74 (0–111)" ("74 / 111" read as the 74th of 111). */
export const slicePosition = (z, n) => (n > 1 ? `slice ${z} (0–${n - 1})` : `slice ${z}`);

/** " · image 38" or " · images 35–42": the DICOM Instance Numbers of slices `zs`, the numbers a PACS viewer
 * shows for them (slice numbers count from 0 from the feet; a head-first series' image 1 is its top slice),
 * to find the chosen slice there; "" for a study without them (NIfTI, a series without Instance Numbers). */
export const imageText = (study, zs, lead = " · ") => {
  const numbers = study && study.image_numbers ? zs.map((z) => study.image_numbers[z]) : [];
  if (!numbers.length || numbers.some((n) => typeof n !== "number")) return "";
  const [lo, hi] = [Math.min(...numbers), Math.max(...numbers)];
  return lo === hi ? `${lead}image ${lo}` : `${lead}images ${lo}–${hi}`;
};

/** The caption's note on a stretched reconstruction, after `lead` (none at true proportions). */
export const stretchNote = (stretch, lead = " · ") =>
  (stretch > 1 ? `${lead}not to scale: height ×${stretch.toFixed(1)}` : "");

/** "oblique 25°: letters approximate" for a study whose voxels' grid is turned beyond a few degrees from the
 * body's axes (the server's orientation: render.orientation), else "": its images are lettered by the nearest
 * body axes. `short`: "oblique 25°", for an image too small for the rest (l3png.js). */
export const obliqueNote = (study, short = false) => {
  const o = study.orientation;
  if (!o || !o.oblique) return "";
  return `oblique ${Math.round(o.tilt_degrees)}°${short ? "" : ": letters approximate"}`;
};

/** The body plane the server's `plane` image of the open study shows, as its caption names it (a
 * quarter-turned series' "coronal" reconstruction is a sagittal image: render.orientation's planes); `plane`
 * when the server could not tell. */
export const shownPlane = (plane) => state.study.orientation?.planes[plane] ?? plane;

/** The server's letters for its images of `plane` (the body side at each edge: they follow the series' stored
 * layout, quarter-turned or mirrored too) on `box`'s .orient spans, and its .oblique-note; none when the
 * server could not tell them. The caption of `box`'s figure names the body plane the image shows
 * (shownPlane). */
export function showOrientation(box, plane) {
  const o = state.study.orientation;
  const caption = box.closest("figure")?.querySelector(".plane-name");
  if (caption) {
    const shown = shownPlane(plane);
    caption.textContent = shown[0].toUpperCase() + shown.slice(1);
  }
  for (const span of box.querySelectorAll(".orient")) {
    const edge = ["left", "right", "top", "bottom"].find((name) => span.classList.contains(name));
    span.textContent = o ? o.letters[plane][edge] : "";
  }
  const note = box.querySelector(".oblique-note");
  note.textContent = obliqueNote(state.study);
  note.hidden = !note.textContent;
}

/** A label on a dark backing box (readable over bone, small enough not to hide anatomy); returns that box
 * ({left, top, right, bottom}, in ctx's units), which notes over the canvas keep clear of (l3png.js). It is
 * moved sideways clear of the boxes `kept` (the orientation letters at the image's edges): a vertebra's name
 * or a line's label at mid-height covered the letter there ("L4" over the sagittal's "P"). `text` may be its
 * wordings, longest first: the first whose box covers none of the boxes `avoid` is drawn (else the last), so
 * that "L3 · 6 · image 7" on a narrow band is "L3 · 6" where it would cover the top letter. */
export function tag(ctx, text, x, y, color, align, kept = [], avoid = []) {
  const hits = (k, x0, w) => y - 7 < k.bottom && k.top < y + 7 && x0 < k.right && k.left < x0 + w;
  const wordings = Array.isArray(text) ? text : [text];
  let shown, x0, w;
  for (shown of wordings) {
    w = ctx.measureText(shown).width + 6;
    x0 = align === "right" ? x - w : x;
    for (const k of kept) if (hits(k, x0, w)) x0 = align === "right" ? k.left - 2 - w : k.right + 2;
    if (!avoid.some((k) => hits(k, x0, w))) break;
  }
  ctx.fillStyle = "rgba(0,0,0,0.55)";
  ctx.fillRect(x0, y - 7, w, 14);
  ctx.fillStyle = color;
  ctx.textAlign = "left";
  ctx.fillText(shown, x0 + 3, y);
  return {left: x0, top: y - 7, right: x0 + w, bottom: y + 7};
}
