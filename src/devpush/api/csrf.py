"""CSRF protection for the pages: one random token per session, sent back by every form (the
hidden `csrf_token` field) and every HTMX request (the `X-CSRF-Token` header, set once with
`hx-headers` on <body>). `verify_csrf` runs on every page route and refuses any non-GET
request without the right token.

SameSite=Lax cookies alone are not enough here: deployed apps are served from sibling
hostnames, which browsers treat as the same site as the dashboard.
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import Request

from devpush.errors import Forbidden

SESSION_KEY = "csrf"
FIELD = "csrf_token"
HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CsrfRefused(Forbidden):
    code = "csrf"


def csrf_token(request: Request) -> str:
    """This session's token (made on first use)."""
    token = request.session.get(SESSION_KEY)
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        request.session[SESSION_KEY] = token
    return token


async def submitted_token(request: Request) -> str:
    header = request.headers.get(HEADER)
    if header:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()  # cached by Starlette: the route reads the same form
        value = form.get(FIELD)
        return value if isinstance(value, str) else ""
    return ""


async def verify_csrf(request: Request) -> None:
    """Dependency of every page route: non-GET requests must carry the session's token."""
    if request.method in SAFE_METHODS:
        return
    expected = request.session.get(SESSION_KEY)
    given = await submitted_token(request)
    if not isinstance(expected, str) or not given or not hmac.compare_digest(expected, given):
        raise CsrfRefused(
            "this form has expired or did not come from devpush; reload the page and try again"
        )


def check_session_api_request(request: Request) -> None:
    """For /api/v1 calls authenticated by the session cookie (not a bearer token): unsafe
    methods must send the session's token in X-CSRF-Token. Meant for `api.deps.get_principal`,
    so that a sibling deployment's page cannot drive the API with a signed-in user's cookie."""
    if request.method in SAFE_METHODS:
        return
    expected = request.session.get(SESSION_KEY)
    given = request.headers.get(HEADER, "")
    if not isinstance(expected, str) or not given or not hmac.compare_digest(expected, given):
        raise CsrfRefused(
            "cookie-authenticated API calls need the X-CSRF-Token header; "
            "scripts should send an API token instead"
        )
