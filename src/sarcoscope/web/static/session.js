// Who is signed in: the user box in the top bar and the sign-in form (accounts or one access token).
import {$, api, getJSON, sendJSON, toast} from "./api.js";
import {state} from "./state.js";
import {showPatient} from "./versions.js";

/** The page starts again (signed out, or another user): its unsaved edit and patient facts typed and not
 * applied go with it, without the browser's "Leave site?" for them. */
function dropUnsaved() {
  state.dirty = false;
  if (state.study) showPatient(state.study);
}

/** Why the signed-in user's role may not take `action` ("change", "delete", "audit": the server's own words),
 * or "" when it may. The server refuses such a request (403) whatever the page shows. */
export function denied(action) {
  return (state.config && state.config.denied && state.config.denied[action]) || "";
}

/** Controls marked data-needs="change" or "delete" that the role may not use are off and say why; kept off
 * whatever else turns them on (a control's busy and ready states), and so are the controls added later. */
function applyRole() {
  for (const el of document.querySelectorAll("[data-needs]")) {
    const why = denied(el.dataset.needs);
    if (!why) continue;
    if ("disabled" in el && !el.disabled) el.disabled = true; // (set only when on: each set is a mutation)
    for (const shown of [el, el.closest("label")]) {
      if (shown && shown.title !== why) shown.title = why;
    }
    if (!el.classList.contains("denied")) el.classList.add("denied");
  }
}

let guarding = null;
function guardControls() {
  applyRole();
  if (guarding || !Object.keys(state.config.denied || {}).length) return;
  guarding = new MutationObserver(applyRole);
  guarding.observe(document.body,
    {subtree: true, childList: true, attributes: true, attributeFilter: ["disabled", "title"]});
}

/** The role as the server says it now (GET /api/session): changed meanwhile (`sarcoscope users role`), it is
 * shown at once, and what it no longer allows is off; what it allows now comes with a reload of the page. */
export function showRole(now) {
  if (!now.role || now.role === state.config.role) return;
  const regained = Object.keys(state.config.denied || {}).some((a) => !(a in (now.denied || {})));
  state.config.role = now.role;
  state.config.denied = now.denied || {};
  renderUser();
  toast(`Your role is now ${now.role}${regained ? ": reload the page to use what it allows." : "."}`, "info");
}

/** The signed-in user's name and role with Sign out (accounts) or Change name (open mode). */
export function renderUser() {
  const box = $("user-box");
  const user = state.config.user;
  box.innerHTML = "";
  if (!user) return;
  guardControls();
  const name = document.createElement("span");
  name.textContent = `Signed in as ${user}`;
  const role = document.createElement("span");
  role.id = "user-role";
  role.className = "role";
  role.textContent = state.config.role || "";
  role.title = Object.values(state.config.denied || {}).join("\n") || "Your role may do everything here.";
  const change = document.createElement("button");
  change.textContent = state.config.auth_required ? "Sign out" : "Change name";
  change.addEventListener("click", async () => {
    if (state.config.auth_required) {
      if (state.dirty && !confirm("Discard your unsaved label edits and sign out?")) return;
      await api("/api/session", {method: "DELETE"});
      // The page starts again, empty: the next person at this browser finds the sign-in form, not the
      // patients' data of the page (the study list, images, unsaved edits they would save as their own).
      dropUnsaved();
      location.replace(location.pathname);
      return;
    }
    const next = prompt("Your name (recorded with every change):", user);
    if (!next) return;
    try {
      await sendJSON("/api/session", "POST", {user: next});
      state.config.user = next;
      renderUser();
    } catch (err) { toast(err.message); }
  });
  box.append(name, role, change);
}

/** Show the sign-in form; `onSignedIn` continues (e.g. routes) after a successful sign-in. */
export function showLogin(onSignedIn) {
  for (const v of document.querySelectorAll(".view")) v.hidden = true;
  $("view-login").hidden = false;
  const tokenMode = state.config.auth_mode === "token";  // one user, named by the server
  $("login-user-field").hidden = tokenMode;
  $("login-user").required = !tokenMode;
  $("login-secret-name").textContent = tokenMode ? "Access token" : "Password";
  $("login-form").onsubmit = async (e) => {
    e.preventDefault();
    const secret = $("login-token").value;
    try {
      await sendJSON("/api/session", "POST",
        tokenMode ? {token: secret} : {user: $("login-user").value.trim(), password: secret});
      $("login-token").value = "";
      $("login-error").textContent = "";
      const before = state.config.user;  // whose session ended (expired, or signed out elsewhere)
      state.config = await getJSON("/api/config");
      if (before && before !== state.config.user) {
        // someone else: the page starts again from the saved data, so that nothing they save (an unsaved
        // edit on screen) is recorded under their name for another's work
        dropUnsaved();
        location.reload();
        return;
      }
      renderUser();
      onSignedIn();
    } catch (err) { $("login-error").textContent = err.message; }
  };
}
