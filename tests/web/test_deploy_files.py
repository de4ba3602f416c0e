"""The reverse-proxy examples in deploy/ keep patient data out of the proxy's log, as `serve` keeps it out
of its own: no query strings (search criteria: names, IDs, accession numbers), no DICOM UIDs in paths.
(The files were tried with Debian's nginx 1.22 in front of `serve`; see docs/deployment.md.)"""

from __future__ import annotations

import re
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_the_nginx_example_logs_requests_without_query_strings_or_uids() -> None:
    conf = (DEPLOY / "nginx.conf").read_text()
    logs = re.findall(r"^\s*access_log\s+(\S+)\s+(\S+);", conf, re.M)
    # nginx's default ("combined") logs "$request", the request line with its query string
    assert len(logs) == conf.count("server {") and {fmt for _, fmt in logs} == {"sarcoscope"}
    (fields,) = re.findall(r"log_format sarcoscope (.*?);", conf, re.S)
    assert "$sarcoscope_path" in fields
    assert not re.search(r"\$(request|request_uri|uri|args|query_string|arg_\w+|http_referer)\b", fields)
    assert re.search(r"map \$sarcoscope_path_1 \$sarcoscope_path \{", conf)  # the second UID of a path too


def test_the_caddy_example_keeps_no_access_log() -> None:
    # Caddy logs no requests unless told to; its access log would record each URI with its query string
    conf = (DEPLOY / "Caddyfile").read_text()
    assert not re.search(r"^\s*log\b", conf, re.M)
