"""Security headers on every response of the app: pages, API, errors, static files, git.

The pages' Content-Security-Policy allows only the app's own origin, with two exceptions the
templates need today: inline scripts and handlers (`<script>` blocks in base.html, `onclick`
attributes) and Alpine.js, which compiles its `x-data`/`@click` expressions with
`new Function` ('unsafe-eval'); and inline styles (`style=` attributes, htmx's indicator
styles). Framing is refused everywhere. The API docs page (Swagger UI) loads its script and
sheet from jsDelivr, so that one path gets a policy that allows them.

A header a route set itself is kept.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGE_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline' 'unsafe-eval'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
DOCS_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net",
        "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net",
        "img-src 'self' data: https://fastapi.tiangolo.com",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "frame-ancestors 'none'",
    )
)
DOCS_PATHS = ("/api/v1/docs", "/docs/oauth2-redirect")
HSTS = "max-age=31536000"


def headers_for(path: str, *, https: bool) -> dict[str, str]:
    headers = {
        "Content-Security-Policy": DOCS_POLICY if path in DOCS_PATHS else PAGE_POLICY,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "strict-origin-when-cross-origin",
        "Cross-Origin-Opener-Policy": "same-origin",
    }
    if https:
        # Not includeSubDomains: deployments live under their own domain, on their own terms.
        headers["Strict-Transport-Security"] = HSTS
    return headers


class SecurityHeaders:
    """ASGI middleware: adds the headers to each HTTP response's start message."""

    def __init__(self, app: ASGIApp, *, https: bool = False) -> None:
        self.app = app
        self.https = https
        # encoded once: every response of the app gets one of these two sets
        self._raw = {
            docs: [
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in headers_for(DOCS_PATHS[0] if docs else "/", https=https).items()
            ]
            for docs in (False, True)
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self._raw[scope["path"] in DOCS_PATHS]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in extra if name not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
