"""The FastAPI application: lifespan-built services, the /api/v1 router, pages, errors."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from starlette.middleware.sessions import SessionMiddleware
from starlette.staticfiles import StaticFiles

from devpush.api.errors import ERROR_RESPONSES, install_error_handlers
from devpush.api.middleware import ApiConventions, HostScoped
from devpush.api.security import SecurityHeaders
from devpush.bootstrap import build_platform
from devpush.logsetup import configure_logging
from devpush.settings import Settings, get_settings
from devpush.signing import secret_key

# Connections to PostgreSQL and to Redis the app opens before it serves (Platform.warm): a few
# concurrent requests right after a start or a blue-green swap need no new connection.
WARM_CONNECTIONS = 4
# A pooled PostgreSQL connection is tested before use once it sat idle this long (seconds);
# under load every connection comes back within milliseconds and goes out untested
# (db.ping_when_idle).
PING_IDLE_AFTER = 1.0

log = logging.getLogger("devpush.app")


def api_router() -> APIRouter:
    from devpush.accounts.routes import router as auth_router
    from devpush.deployments.domain_routes import router as domains_router
    from devpush.deployments.log_routes import router as logs_router
    from devpush.deployments.routes import router as deployments_router
    from devpush.deployments.scale_routes import router as scale_router
    from devpush.deployments.volume_routes import router as volumes_router
    from devpush.notifications.routes import router as notifications_router
    from devpush.projects.env_routes import router as env_router
    from devpush.projects.routes import router as projects_router
    from devpush.teams.audit_routes import router as audit_router
    from devpush.teams.routes import router as teams_router

    router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)
    # Deployments first: a request is matched against the routes in order, and the list and
    # the single view (polled by CI and the CLI) are the busiest; behind 36 other routes,
    # matching cost more than building the list's page. No two API routes take the same
    # method and path (tests/unit/test_api_routes.py), so the order decides nothing else.
    for sub in (
        deployments_router,
        teams_router,
        auth_router,
        projects_router,
        env_router,
        volumes_router,
        scale_router,
        domains_router,
        audit_router,
        notifications_router,
    ):
        router.include_router(sub)
    router.include_router(logs_router)
    from devpush.cron.routes import router as cron_router

    router.include_router(cron_router)
    from devpush.metrics.routes import router as metrics_router

    router.include_router(metrics_router)
    from devpush.databases.backup_routes import router as database_backups_router
    from devpush.databases.console_routes import router as database_console_router
    from devpush.databases.routes import router as databases_router

    router.include_router(databases_router)
    router.include_router(database_backups_router)
    router.include_router(database_console_router)
    from devpush.github.routes import router as github_router
    from devpush.sources.routes import router as sources_router

    router.include_router(github_router)
    router.include_router(sources_router)
    from devpush.accounts.signup import router as signup_router

    router.include_router(signup_router)
    return router


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings)
        # One pooled connection per concurrent request: past the pool, each request opened
        # and closed its own connection (a PostgreSQL fork + SCRAM), the largest cost of the
        # deployments list under load (bench/control_plane.py).
        app.state.platform = await build_platform(
            settings, pool_size=settings.app_db_pool_size, ping_idle_after=PING_IDLE_AFTER
        )
        await app.state.platform.warm(min(WARM_CONNECTIONS, settings.app_db_pool_size))
        # Everything loaded so far lives as long as the process: keep it out of the cyclic
        # GC's full collections, whose pauses over it were the tail of request latency.
        gc.freeze()
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
    from devpush.auth.token_cache import TokenCache

    # API tokens this process resolved, trusted while the credentials generation holds
    app.state.token_cache = TokenCache()
    from devpush.api.health import router as health_router
    from devpush.metrics.platform import router as platform_metrics_router
    from devpush.web.pages import is_deployment_host, unknown_host_middleware
    from devpush.web.pages import router as pages_router

    app.include_router(health_router)
    app.include_router(platform_metrics_router)  # /metrics, behind DEVPUSH_METRICS_TOKEN
    app.include_router(api_router())
    from devpush.git_remote.routes import router as git_remote_router
    from devpush.github.routes import webhook_router as github_webhook_router
    from devpush.sources.routes import hooks_router as deploy_hooks_router
    from devpush.web.github_pages import router as github_pages_router

    for outside in (github_webhook_router, git_remote_router, deploy_hooks_router):
        app.include_router(outside, responses=ERROR_RESPONSES)
    app.include_router(github_pages_router)
    from devpush.web.pages import STATIC_DIR

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(pages_router)  # last: it ends with the catch-all "page not found"
    app.add_middleware(HostScoped, dispatch=unknown_host_middleware, matches=is_deployment_host)
    app.add_middleware(ApiConventions)
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret_key(settings),
        session_cookie="devpush_session",
        same_site="lax",
        https_only=settings.url_scheme == "https",
        max_age=14 * 24 * 3600,
    )
    app.add_middleware(SecurityHeaders, https=settings.url_scheme == "https")  # outermost
    return app
