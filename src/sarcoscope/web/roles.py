"""What each role may do in the web app: the one table every API request is checked against.

An account has a role (`sarcoscope users role NAME ROLE`): viewers read studies, images, results and label
versions, one study at a time; editors also change them (upload, L3 selection, segmentation, labels,
patient facts, the PACS) and download every study at once (the training-data export); admins also delete
studies and read the audit log. Without accounts (a token or the open loopback mode) the one who holds the
access is the admin.

The check is made where the request's user is (api.common.current_user, which every route that needs a
login takes), from the request's method and path: a GET is a read unless this table says otherwise, and any
other method counts as a change unless it says otherwise (tests/web/test_roles.py checks that every route of
the API is either a GET or in the table, and every route of the table in the API).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from fastapi import HTTPException, Request

from sarcoscope.store import ROLES, Role

Action = Literal["read", "export-all", "change", "delete", "audit"]

#: What each role may do. A viewer reads the studies one by one (each one's images, results and downloads
#: audited with it); taking every patient's images off the server in one download is not a viewer's.
ALLOWED: dict[Role, frozenset[Action]] = {
    "admin": frozenset({"read", "export-all", "change", "delete", "audit"}),
    "editor": frozenset({"read", "export-all", "change"}),
    "viewer": frozenset({"read"}),
}

#: Each action as a refusal names it when the route is not named.
ACTION_TEXT: dict[Action, str] = {
    "read": "read studies",
    "export-all": "download every study at once (the training-data export)",
    "change": "change studies (upload, select L3, segment, save or import labels, patient facts, PACS)",
    "delete": "delete studies (or restore deleted ones)",
    "audit": "read the audit log",
}

#: (method, path) -> the action the route is and what it does, in a refusal. A GET not listed is a read.
ROUTES: dict[tuple[str, str], tuple[Action, str]] = {
    ("POST", "/api/studies/search"): ("read", "search studies"),
    ("GET", "/api/training-data"): ("export-all", "download the training data of every study"),
    ("POST", "/api/pacs/search"): ("read", "search the PACS"),
    ("POST", "/api/studies"): ("change", "upload studies"),
    ("POST", "/api/studies/{study_id}/series"): ("change", "open another series of an upload as a study"),
    ("POST", "/api/studies/{study_id}/localize"): ("change", "locate L3 (it places the L3 selection)"),
    ("PUT", "/api/studies/{study_id}/selection"): ("change", "select L3"),
    ("POST", "/api/studies/{study_id}/segment"): ("change", "segment"),
    ("POST", "/api/studies/{study_id}/labels"): ("change", "save labels"),
    ("POST", "/api/studies/{study_id}/labels/import"): ("change", "import labels"),
    ("POST", "/api/studies/{study_id}/versions/{version}/restore"): ("change", "restore label versions"),
    ("POST", "/api/studies/{study_id}/versions/{version}/quality"): ("change", "score label versions"),
    ("PUT", "/api/studies/{study_id}/patient"): ("change", "change patient facts"),
    ("POST", "/api/pacs/studies/{study_uid}/series/{series_uid}/import"): ("change", "import from the PACS"),
    ("POST", "/api/studies/{study_id}/pacs/push"): ("change", "push results to the PACS"),
    ("DELETE", "/api/studies/{study_id}"): ("delete", "delete studies"),
    ("GET", "/api/deleted-studies"): ("delete", "see deleted studies"),
    ("POST", "/api/deleted-studies/{study_id}/restore"): ("delete", "restore deleted studies"),
    ("DELETE", "/api/deleted-studies/{study_id}"): ("delete", "erase deleted studies"),
    ("GET", "/api/studies/{study_id}/audit"): ("audit", "read a study's audit log"),
    ("GET", "/api/audit"): ("audit", "read the audit log"),
}


def _pattern(path: str) -> re.Pattern[str]:
    """The request paths a route's path matches: each {parameter} is one path segment."""
    return re.compile("^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(path)) + "/?$")


_MATCHERS = [(method, _pattern(path), rule) for (method, path), rule in ROUTES.items()]


def rule_of(method: str, path: str) -> tuple[Action, str]:
    """The action a request (its method and path) is: a GET not in the table is a read, and any other
    method not in it counts as a change."""
    for listed, pattern, rule in _MATCHERS:
        if listed == method and pattern.match(path):
            return rule
    return ("read", ACTION_TEXT["read"]) if method in ("GET", "HEAD") else ("change", ACTION_TEXT["change"])


def _who_may(action: Action) -> str:
    return " and ".join(f"{r}s" for r in reversed(ROLES) if action in ALLOWED[r])


def refusal(role: Role, action: Action, what: str) -> str:
    """Why `role` may not do `what`, for the 403 and for the page's disabled controls."""
    return f"Not allowed: your role ({role}) may not {what}; only {_who_may(action)} may."


def check(role: Role, request: Request) -> None:
    """403, naming the role and what it may not do, when `role` may not make this request."""
    # the path as the app routes it: behind a proxy that serves the app under a path (root_path) the
    # request's path starts with that prefix, which the table's do not (as Starlette's routing strips it)
    path, root = request.url.path, request.scope.get("root_path", "")
    action, what = rule_of(request.method, path.removeprefix(root) if root else path)
    if action not in ALLOWED[role]:
        raise HTTPException(403, refusal(role, action, what))


def permissions(role: Role) -> dict[str, Any]:
    """The role and, for each action it may not take, why: the page disables those controls, saying so."""
    denied = {a: refusal(role, a, ACTION_TEXT[a]) for a in ACTION_TEXT if a not in ALLOWED[role]}
    return {"role": role, "denied": denied}
