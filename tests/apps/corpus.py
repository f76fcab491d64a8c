"""The sample-app corpus: realistic apps deployed with no devpush.toml and no commands.

Each directory next to this module is an app shaped like the ones people push to Render, Heroku
or Vercel. The platform must detect how to build and start every one of them on its own. This
module describes what a user sees once each app is live, so end-to-end tests can deploy an app
and then run its checks against the deployment's URL.

Every app answers ``GET /`` with a body containing ``corpus:<app-name>`` (see :func:`marker`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

APPS_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Check:
    """One HTTP request against a live deployment and what its response must show.

    ``contains`` must be a substring of the response body. ``header`` is ``(name, value)``:
    the header ``name`` (case-insensitive) must be present and its value must contain ``value``
    (case-insensitive), e.g. ``("content-type", "text/css")``.
    """

    path: str
    status: int = 200
    contains: str | None = None
    header: tuple[str, str] | None = None


@dataclass(frozen=True)
class SampleApp:
    """An app of the corpus.

    ``expect_failure`` is set for apps whose deployment must fail: the build log (or the
    deployment's error) must contain that text. Such apps have no checks.
    """

    name: str
    path: Path
    checks: tuple[Check, ...]
    expect_failure: str | None = None


def marker(name: str) -> str:
    """The unique string an app's home page contains."""
    return f"corpus:{name}"


_ASSET_RE = re.compile(r"""\b(?:src|href)\s*=\s*["'](/assets/[^"'?#]+)(?:[?#][^"']*)?["']""")


def asset_paths(html: str) -> list[str]:
    """The ``/assets/...`` URLs an HTML page references in ``src`` or ``href``, in order.

    Vite writes content-hashed bundles (``/assets/index-<hash>.js``) into ``dist/index.html``;
    a test fetches the page, takes these paths and requests each one to check that the hashed
    assets are served (200, right content type) and not answered by the SPA fallback.
    """
    seen: dict[str, None] = {}
    for match in _ASSET_RE.finditer(html):
        seen.setdefault(match.group(1), None)
    return list(seen)


def _app(name: str, *checks: Check, expect_failure: str | None = None) -> SampleApp:
    return SampleApp(name=name, path=APPS_DIR / name, checks=checks, expect_failure=expect_failure)


def _home(name: str) -> Check:
    return Check("/", contains=marker(name))


APPS: tuple[SampleApp, ...] = (
    # Flask + gunicorn from a pinned requirements.txt.
    _app(
        "flask-gunicorn",
        _home("flask-gunicorn"),
        Check("/health", contains="ok"),
        Check("/missing", status=404),
    ),
    # FastAPI package app/main.py, locked with uv.lock, started with uvicorn.
    _app(
        "fastapi-uv",
        _home("fastapi-uv"),
        Check("/", header=("content-type", "application/json")),
        Check("/items/1", contains="apple"),
    ),
    # Django 5.2: migrations must have run (the page counts rows of pages.Visit) and
    # collectstatic must have run (WhiteNoise serves STATIC_ROOT only; the CSS is 404 otherwise).
    _app(
        "django-site",
        _home("django-site"),
        Check("/", contains="visits:"),
        Check("/", contains="/static/pages/site.css"),
        Check(
            "/static/pages/site.css",
            contains="corpus:django-site css",
            header=("content-type", "text/css"),
        ),
        Check("/health/", contains="ok"),
    ),
    # Poetry 2 (package-mode = false) with poetry.lock; gunicorn wsgi:app.
    _app(
        "poetry-app",
        _home("poetry-app"),
        Check("/health", contains="ok"),
    ),
    # The Procfile's web: line is the only place naming the entry point (hello:application).
    _app(
        "procfile-app",
        _home("procfile-app"),
        Check("/health", contains="ok"),
        Check("/nope", status=404),
    ),
    # .python-version asks for 3.11, which the platform has.
    _app(
        "python-version-present",
        _home("python-version-present"),
        Check("/", contains="python: 3.11."),
    ),
    # .python-version asks for 3.9, which the platform lacks: the build fails and says so.
    _app("python-version-missing", expect_failure="3.9"),
    # Express 5 started with `npm start`; NODE_ENV must be production.
    _app(
        "express-api",
        _home("express-api"),
        Check("/health", contains="ok"),
        Check("/env", contains="production"),
        Check("/api/todos", contains="Push to deploy", header=("content-type", "json")),
    ),
    # Express 5 installed by pnpm (through corepack) from pnpm-lock.yaml.
    _app(
        "pnpm-express",
        _home("pnpm-express"),
        Check("/health", contains="ok"),
        Check("/env", contains="production"),
    ),
    # .nvmrc pins Node 22: fetched for the process runtime, the node:22 image on docker.
    _app("node22-api", _home("node22-api"), Check("/version", contains="v22.")),
    # TypeScript compiled by tsc, a devDependency: the build needs devDependencies installed.
    _app(
        "typescript-server",
        _home("typescript-server"),
        Check("/health", contains="ok"),
        Check("/status", contains='"node":"v'),
    ),
    # Vite SPA: static output in dist/, no start script. Unknown paths fall back to index.html.
    # Hashed bundles are checked separately: fetch "/", then every path from asset_paths().
    _app(
        "vite-spa",
        _home("vite-spa"),
        Check("/", header=("content-type", "text/html")),
        Check("/some/deep/link", contains=marker("vite-spa")),
        Check("/favicon.svg", contains="<svg"),
    ),
    # Next.js 15 App Router: `next build` then `next start` on $PORT.
    _app(
        "nextjs-app",
        _home("nextjs-app"),
        Check("/api/health", contains="ok"),
        Check("/missing-page", status=404),
    ),
    # Nuxt 4 SSR, no start script: `nuxt build` then `node .output/server/index.mjs` on $PORT.
    _app("nuxt-app", _home("nuxt-app"), Check("/api/health", contains="ok")),
    # Astro 5 static site, no adapter: dist/about/index.html served at /about/ (/about redirects).
    _app(
        "astro-site",
        _home("astro-site"),
        Check("/about/", contains="corpus:astro-site about"),
        Check("/about", status=301, header=("location", "/about/")),
    ),
    # Plain files, no package.json and no build.
    _app(
        "static-site",
        _home("static-site"),
        Check("/about.html", contains="corpus:static-site about"),
        Check("/css/style.css", contains="corpus:static-site css", header=("content-type", "css")),
    ),
)


def get(name: str) -> SampleApp:
    """The app called ``name``; raises KeyError for an unknown name."""
    for app in APPS:
        if app.name == name:
            return app
    raise KeyError(name)
