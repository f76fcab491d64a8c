"""The FastAPI application: lifespan-built services, the /api/v1 router, pages, errors."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from starlette.middleware.sessions import SessionMiddleware

from devpush.api.errors import ERROR_RESPONSES, install_error_handlers
from devpush.logsetup import configure_logging
from devpush.platform import build_platform
from devpush.settings import Settings, get_settings
from devpush.signing import secret_key

log = logging.getLogger("devpush.app")


def api_router() -> APIRouter:
    from devpush.auth.routes import router as auth_router
    from devpush.deployments.routes import router as deployments_router
    from devpush.projects.routes import router as projects_router
    from devpush.teams.routes import router as teams_router

    router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)
    for sub in (teams_router, auth_router, projects_router, deployments_router):
        router.include_router(sub)
    return router


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings)
        app.state.platform = await build_platform(settings)
        try:
            yield
        finally:
            await app.state.platform.close()

    app = FastAPI(
        title="devpush",
        version="0.1.0",
        description="git push to a running web app on your own server.",
        lifespan=lifespan,
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    install_error_handlers(app)
    from devpush.api.health import router as health_router
    from devpush.web.pages import router as pages_router
    from devpush.web.pages import unknown_host_middleware

    app.include_router(health_router)
    app.include_router(api_router())
    app.include_router(pages_router)
    app.middleware("http")(unknown_host_middleware)
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret_key(settings),
        session_cookie="devpush_session",
        same_site="lax",
        https_only=settings.url_scheme == "https",
        max_age=14 * 24 * 3600,
    )
    return app
