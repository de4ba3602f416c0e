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

/** The signed-in user's name with Sign out (accounts) or Change name (open mode). */
export function renderUser() {
  const box = $("user-box");
  const user = state.config.user;
  box.innerHTML = "";
  if (!user) return;
  const name = document.createElement("span");
  name.textContent = `Signed in as ${user}`;
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
  box.append(name, change);
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
