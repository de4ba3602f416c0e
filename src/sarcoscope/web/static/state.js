// What the UI shows and edits, shared by its modules, and small helpers they all use.

export const state = {
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
    img.ready = new Promise((resolve, reject) => { img.onload = resolve; img.onerror = reject; });
    state.images.set(key, img);
    if (state.images.size > 400) state.images.delete(state.images.keys().next().value);
  }
  return state.images.get(key);
}

/** The image pixel (x, y) under a pointer event, whatever the canvas' zoom and pan. */
export function canvasPoint(canvas, e) {
  const r = canvas.getBoundingClientRect();
  return [((e.clientX - r.left) * canvas.width) / r.width, ((e.clientY - r.top) * canvas.height) / r.height];
}
