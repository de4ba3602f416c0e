// The analysis panel: areas, HU, ratios, SMI and the cutoff classifications of one label version.
// What the numbers are (one slice or an average over a range) is said first; a reason a value could not
// be computed (e.g. the height is unknown) is said once, however many values it affects.
import {$, api, escapeHtml, message, oneAtATime} from "./api.js";
import {stillOpen} from "./state.js";

const fmt = (v, d = 1) => (v === null || v === undefined ? "—" : Number(v).toFixed(d));

/** Collects the distinct "not computed" reasons of one rendering, numbered in order of appearance. */
class Reasons {
  constructor() { this.list = []; }
  mark(reason) {
    // A reason may join several ("sex unknown: …; BMI unknown (height unknown: …; weight unknown: …)"):
    // each missing fact is listed once and referred to by its number.
    const text = reason || "not computed";
    const parts = text.replace(/BMI unknown \((.*)\)/, "$1").split("; ").filter(Boolean);
    const numbers = [...new Set(parts.map((part) => { // "height unknown" can come twice (SMI and BMI)
      if (!this.list.includes(part)) this.list.push(part);
      return this.list.indexOf(part) + 1;
    }))];
    return `<span class="muted not-computed" title="${escapeHtml(text)}">not computed` +
      `<sup>${numbers.join(",")}</sup></span>`;
  }
  html() {
    if (!this.list.length) return "";
    return `<ol class="reasons small" id="analysis-reasons">` +
      this.list.map((r) => `<li>${escapeHtml(r)}</li>`).join("") + "</ol>";
  }
}

function quantity(q, reasons, d = 1) {
  if (!q) return "—";
  return q.status === "computed" ? `${fmt(q.value, d)} ${escapeHtml(q.unit || "")}` : reasons.mark(q.reason);
}

function classification(c, reasons) {
  if (!c) return "";
  if (c.status !== "computed") return reasons.mark(c.reason);
  const cls = c.flagged ? "flag" : "noflag";
  return `<span class="${cls}">${c.flagged ? "below cutoff" : "not below cutoff"}</span> ` +
    `(${fmt(c.value)} vs ${fmt(c.cutoff)} ${escapeHtml(c.unit || "")}, ${escapeHtml(c.rule || "")})`;
}

const flagMark = (q) => (q.flagged ? ` <span class="flag" title="Below ${q.threshold}: the engines disagree or the network is unsure; check the labels slice by slice before using the numbers">review</span>` : "");

/** The segmentation quality line: the version's score; or why it has none, with the score of the engine's
 * version an edit started from (or a restore copies), said as that version's, and a button that scores a
 * segmented version with none stored (POST .../quality: segmented before scores were stored, or it failed). */
function qualityHtml(q) {
  if (!q) return "";
  if (q.status === "computed" && q.score !== null) { // its scale and its review mark said: "0.62" alone read as a good mark
    return `<div id="quality">Segmentation quality: <b>${escapeHtml(q.score_text)}</b> ` +
      `<span class="muted">of 1 (review below ${q.threshold})</span>${flagMark(q)}</div>`;
  }
  const e = q.engine_version;
  const origin = !e ? "" : `<div id="quality-origin">${e.same_labels ? "Its labels are" : "It started from"} ` +
    `the engine's version ${e.version}, scored <b>${escapeHtml(e.score_text)}</b> ` +
    `<span class="muted">of 1 (review below ${e.threshold})</span>${flagMark(e)}</div>`;
  const button = q.can_score ? ` <button type="button" id="quality-score" data-needs="change">` +
    `${q.reason.startsWith("the quality score failed") ? "Try again" : "Score it"}</button>` : "";
  return `<div id="quality" class="small">Segmentation quality: <span class="muted" id="quality-reason">` +
    `not scored: ${escapeHtml(q.reason)}</span>${button}${origin}</div>`;
}

/** Score the version shown (its engine run again on its slices: seconds), then show the answer. */
async function scoreShown(a, tissues, studyId) {
  await oneAtATime($("quality-score"), async () => {
    try {
      const r = await api(`/api/studies/${studyId}/versions/${a.version}/quality`, {method: "POST"});
      const quality = await r.json();
      if (stillOpen(studyId) && $("analysis-version").textContent === `· version ${a.version}`) {
        renderAnalysis({...a, quality}, tissues, studyId);
      }
    } catch (err) { message(err.message, true); }
  });
}

export function renderAnalysis(a, tissues, studyId) {
  $("analysis-version").textContent = `· version ${a.version}`;
  const reasons = new Reasons();
  const titles = {};
  for (const t of tissues) titles[t.name] = t.name.toUpperCase();
  const rows = Object.entries(a.average.tissues).map(([name, t]) =>
    `<tr data-tissue="${name}"><td>${titles[name] || name}</td><td class="area">${fmt(t.area_cm2, 2)}</td>` +
    `<td>${fmt(t.mean_hu)}</td><td>${fmt(t.sd_hu)}</td></tr>`).join("");
  const ratios = Object.values(a.average.ratios).map((r) =>
    `<tr><td>${escapeHtml(r.title)}</td><td colspan="3">${quantity(r, reasons, 2)}</td></tr>`).join("");
  const as = a.assessment;
  const selected = as.sarcopenia.find((c) => c.selected);
  const smi = quantity(as.smi, reasons);
  const bmi = quantity(as.bmi, reasons);
  const sarcopenia = classification(selected, reasons);
  const myo = as.myosteatosis.map((c) => `<div>${escapeHtml(c.title)}: ${classification(c, reasons)}</div>`).join("");
  const single = a.indices.length === 1;
  // The verdicts come before the table, and each warning shows its first line (a click reads it whole): a
  // long warning (coarse pixels: 13 lines) pushed them below the fold.
  const warning = (w) => `<li><details><summary>${escapeHtml(w)}</summary></details></li>`;
  $("analysis").innerHTML =
    `<div class="mode ${single ? "single" : "range"}" id="analysis-mode">` +
    `${escapeHtml(a.mode.charAt(0).toUpperCase() + a.mode.slice(1))}</div>` + // "Single slice 5", "Average of…"
    (a.warnings.length
      ? `<ul class="warn small" id="analysis-warnings">${a.warnings.map(warning).join("")}</ul>`
      : "") +
    `<div class="result"><div>SMI: <b id="smi">${smi}</b> · BMI: ${bmi}</div>` +
    `<div>Sarcopenia (${escapeHtml(selected ? selected.title : as.cutoff_set)}): ${sarcopenia}</div>` +
    `<div class="small">Myosteatosis: ${myo}</div>` +
    qualityHtml(a.quality) +
    `</div>` +
    `<table class="metrics" id="metrics"><thead><tr><th>Tissue</th><th>cm²</th><th>mean HU</th><th>SD HU</th></tr></thead>` +
    `<tbody>${rows}<tr><td>Total adipose</td><td>${fmt(a.average.total_adipose_cm2, 2)}</td><td></td><td></td></tr>` +
    `${ratios}</tbody></table>` +
    reasons.html();
  const score = $("quality-score");
  if (score) score.addEventListener("click", () => scoreShown(a, tissues, studyId));
}
