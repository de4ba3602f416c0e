// The PACS panel, shown only when the server was started with --dicomweb-url: search the PACS (patient name
// or ID, accession, study date), list a study's series and import a CT series; in a study's labeling view,
// push the SEG, SR and QC capture of the label version shown, as saved, back into the study on the PACS.
// Self-contained: it adds its own cards to the page, so app.js and index.html need only load it.

import {$, api, getJSON, sendJSON, toast} from "./api.js";
import {state} from "./state.js";

const FIELDS = [
  ["patient_name", "Patient name", "text", "DOE^J* (wildcards * ?)"],
  ["patient_id", "Patient ID", "text", ""],
  ["accession_number", "Accession", "text", ""],
  ["date_from", "Study date from", "date", ""],
  ["date_to", "to", "date", ""],
];

function el(tag, props = {}, children = []) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

const dicomDate = (d) => (d && d.length === 8 ? `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6)}` : d || "—");

function searchCard() {
  const inputs = FIELDS.map(([name, title, type, placeholder]) =>
    el("label", {}, [title, " ", el("input", {id: `pacs-${name}`, name, type, placeholder, maxLength: 64})]));
  const form = el("form", {id: "pacs-form", className: "patient-form"},
    [...inputs, el("button", {type: "submit", className: "primary", textContent: "Search PACS"})]);
  const card = el("div", {className: "card", id: "pacs-card"}, [
    el("h2", {textContent: "Import from the PACS"}),
    form,
    el("p", {id: "pacs-error", className: "error", role: "alert"}),
    el("table", {className: "studies", id: "pacs-results", hidden: true}, [
      el("thead", {innerHTML: "<tr><th>Patient</th><th>ID</th><th>Date</th><th>Accession</th>" +
        "<th>Description</th><th>Modalities</th><th>Series</th></tr>"}),
      el("tbody", {id: "pacs-rows"}),
    ]),
    el("p", {id: "pacs-more", className: "muted small", hidden: true,
      textContent: "More studies match: narrow the search."}),
  ]);
  form.addEventListener("submit", (e) => { e.preventDefault(); search(); });
  return card;
}

async function search() {
  const criteria = {};
  for (const [name] of FIELDS) {
    const value = $(`pacs-${name}`).value.trim();
    if (value) criteria[name] = value;
  }
  $("pacs-error").textContent = "";
  try {
    // in the body: a URL's query string (the patient's name or ID) lands in proxies' logs
    const found = await sendJSON("/api/pacs/search", "POST", criteria);
    const rows = $("pacs-rows");
    rows.innerHTML = "";
    for (const s of found.studies) {
      const tr = el("tr", {title: "Show this study's series"});
      for (const text of [s.patient_name, s.patient_id, dicomDate(s.study_date), s.accession_number,
        s.description, s.modalities.join(" "), s.n_series]) tr.append(el("td", {textContent: text ?? "—"}));
      tr.addEventListener("click", () => showSeries(s.study_uid, tr));
      rows.append(tr);
    }
    $("pacs-results").hidden = false;
    $("pacs-more").hidden = !found.more;
    if (!found.studies.length) $("pacs-error").textContent = "No study on the PACS matches.";
  } catch (err) { $("pacs-error").textContent = err.message; }
}

async function showSeries(studyUid, row) {
  const open = row.nextElementSibling;
  if (open && open.classList.contains("pacs-series")) { open.remove(); return; }
  try {
    const series = await getJSON(`/api/pacs/studies/${encodeURIComponent(studyUid)}/series`);
    const list = el("ul", {className: "versions"});
    for (const s of series) {
      const text = `${s.modality || "?"} · ${s.description || "(no description)"} · ${s.n_instances ?? "?"} images`;
      const button = el("button", {type: "button", className: "mini"});
      if (s.imported_as) {
        button.textContent = "Open";
        button.addEventListener("click", () => { location.hash = `#/study/${s.imported_as}`; });
      } else {
        button.textContent = "Import";
        button.disabled = s.modality !== "CT";
        button.title = button.disabled ? "Only CT series can be analysed" : "Retrieve this series and open it";
        button.dataset.needs = "change"; // an editor's (session.js turns it off for a viewer, saying so)
        button.addEventListener("click", () => importSeries(studyUid, s.series_uid, button));
      }
      list.append(el("li", {}, [button, " ", text]));
    }
    const cell = el("td", {colSpan: 7}, [list]);
    row.after(el("tr", {className: "pacs-series"}, [cell]));
  } catch (err) { $("pacs-error").textContent = err.message; }
}

async function importSeries(studyUid, seriesUid, button) {
  button.disabled = true;
  button.textContent = "Importing…";
  try {
    const study = await (await api(
      `/api/pacs/studies/${encodeURIComponent(studyUid)}/series/${encodeURIComponent(seriesUid)}/import`,
      {method: "POST"})).json();
    if ($("view-studies").hidden) { // the user went on (a study being labelled): left there, told
      button.textContent = "Imported";
      toast(`The import of ${study.patient_id || "the series"} is done: open it from the study list.`, "info");
      return;
    }
    location.hash = `#/study/${study.id}`;
  } catch (err) {
    button.disabled = false;
    button.textContent = "Import";
    $("pacs-error").textContent = err.message;
  }
}

function pushCard() {
  const button = el("button", {type: "button", id: "pacs-push",
    textContent: "Push SEG, SR and QC to the PACS",
    title: "Store the results of the label version shown, as saved, in this study on the PACS (a new series)"});
  button.dataset.needs = "change";
  const status = el("p", {id: "pacs-push-status", className: "muted small", role: "status"});
  const push = async (repeat) => {
    const id = state.study.id;
    // the version on screen, as saved: not one saved since by a colleague (unseen), nor the edit unsaved
    const version = state.viewing ?? state.version;
    if (!repeat && state.dirty && !confirm(`Your unsaved edit is not pushed: version ${version}, as saved, ` +
      `is. Push version ${version} anyway? (Cancel, then Save, to push your edit.)`)) return;
    button.disabled = true;
    status.textContent = "Pushing…";
    try {
      const q = new URLSearchParams(version ? {version} : {}); // none yet: the server says so
      if (repeat) q.set("repeat", "true");
      const done = await (await api(`/api/studies/${id}/pacs/push?${q}`, {method: "POST"})).json();
      const held = done.already_stored ? ` (${done.already_stored} of them were there already and not ` +
        "sent again)" : "";
      status.textContent = `Stored ${done.objects.map((o) => o.modality).join(", ")} of label version ` +
        `${done.version} in the study on the PACS${held}.`;
      for (const warning of done.warnings) toast(warning);
    } catch (err) {
      status.textContent = "";
      const again = err.status === 409 && /pushed to the PACS before/.test(err.message);
      if (again && confirm(`${err.message}\n\nPush it again?`)) return await push(true);
      toast(`Push refused: ${err.message}`);
    } finally { button.disabled = false; }
  };
  button.addEventListener("click", () => push(false));
  return el("div", {className: "card", id: "pacs-push-card"}, [el("h3", {textContent: "PACS"}), button, status]);
}

async function init() {
  let configured = false;
  try { configured = (await (await fetch("/api/pacs", {credentials: "same-origin"})).json()).configured; }
  catch (_) { return; }
  if (!configured) return;
  const upload = document.querySelector("#view-studies > .card");
  if (upload) upload.after(searchCard());
  const exports = $("exports");
  if (exports) exports.closest(".card").after(pushCard());
}

init();
