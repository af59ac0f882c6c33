"""Text a sandboxed program controls (stderr, exception messages, header strings), made safe to show a model.

Such text can carry prompt injections and, in the weak mode, secrets the program read from the host (process
environments through ``/proc``). Before it enters feedback, a prompt or a record it is cleaned of control
characters, stripped of the values of the harness's secret-looking environment variables and of the value in any
``NAME=value`` whose name looks like a credential, truncated, and labelled as untrusted program output, so a reader
(human or Feedback-Agent) can tell it from the harness's own words. Redaction is defence in depth, not a boundary:
a program that encodes a secret (base64, split, ...) gets it through, which is why the weak mode is opt-in only.
"""

from __future__ import annotations

import os
import re

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|COOKIE|SESSION", re.I)
MIN_SECRET_LENGTH = 6
_ASSIGNED_SECRET = re.compile(r"(\b[A-Za-z0-9_.-]*(?:KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|COOKIE)[A-Za-z0-9_.-]*"
                              r"[\"']?\s*[=:]\s*[\"']?)([^\s\"',;&]{4,})", re.I)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
LABEL = "program output (untrusted, not from the harness)"


def secret_values(environ: dict[str, str] | None = None) -> list[str]:
    """Values of the harness's environment variables whose names look like credentials, longest first."""
    env = os.environ if environ is None else environ
    found = {v for k, v in env.items() if SECRET_NAME.search(k) and len(v) >= MIN_SECRET_LENGTH}
    return sorted(found, key=len, reverse=True)


def clean(text: object, limit: int = 300, environ: dict[str, str] | None = None) -> str:
    """One line of program text: no control characters, no harness secrets, at most ``limit`` characters."""
    s = text.decode("utf-8", "replace") if isinstance(text, (bytes, bytearray)) else str(text)
    for value in secret_values(environ):
        s = s.replace(value, "[redacted]")
    s = _ASSIGNED_SECRET.sub(lambda m: m.group(1) + "[redacted]", s)  # NAME=value of any secret-looking name
    s = _CONTROL.sub(" ", s.replace("\r", " ").replace("\n", " | ")).strip()
    if len(s) > limit:
        s = s[:max(0, limit - 24)] + f" [... {len(s) - limit + 24} chars cut]"
    return s


def quote(text: object, limit: int = 300, environ: dict[str, str] | None = None) -> str:
    """``clean`` text inside a labelled quotation, e.g. for the Feedback-Agent's prompt; '' for empty text."""
    body = clean(text, limit, environ)
    if not body:
        return ""
    return f"[{LABEL}] <<<{body.replace('<<<', '< < <').replace('>>>', '> > >')}>>>"
