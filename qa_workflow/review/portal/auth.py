"""Reviewer credentials: one-time login tokens, session tokens, CSRF tokens. Pure functions, no I/O.

- A login token is printed once by ``segqa review add-reviewer``; only its SHA-256 is stored, it expires, and
  the first successful login consumes it.
- A session token lives in an HttpOnly, SameSite=Strict cookie; only its SHA-256 is stored, so a copy of the
  portal database does not let anyone log in.
- Every state-changing request carries the session's CSRF token (form field or ``X-CSRF-Token`` header),
  compared in constant time; the login form uses a double-submit token instead (there is no session yet).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from qa_workflow.contract import SegqaError

__all__ = ["new_token", "token_hash", "tokens_match", "check_reviewer_name", "worker_id_for",
           "SESSION_COOKIE", "PRELOGIN_COOKIE", "CSRF_HEADER", "CSRF_FIELD"]

SESSION_COOKIE = "segqa_session"
PRELOGIN_COOKIE = "segqa_prelogin"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def new_token(nbytes: int = 32) -> str:
    """A random URL-safe token (256 bits by default)."""
    return secrets.token_urlsafe(nbytes)


def token_hash(token: str) -> str:
    """What the database stores instead of a login or session token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def tokens_match(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison; a missing value never matches."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


def check_reviewer_name(name: str) -> str:
    """Reviewer names become worker ids in the store: 1-64 letters, digits, '.', '_' or '-'."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SegqaError(f"invalid reviewer name {name!r}: expected 1-64 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    return name


def worker_id_for(name: str) -> str:
    """The ``workerId`` a reviewer's answers carry (Ground Truth private workers look like
    ``private.<region>.<id>``)."""
    return f"private.local.{check_reviewer_name(name)}"
