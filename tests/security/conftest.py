"""Fixtures of the security suite: the platform configured with a GitHub App (its API served by
the GitHub double of the integration tests), the app on an ASGI client, and the matrix world."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import respx
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI

from devpush.app import create_app
from devpush.platform import Platform
from devpush.settings import Settings
from tests.integration.github.helpers import (
    API,
    REPO,
    REPO_ID,
    GithubDouble,
    github_settings,
    repo_json,
)
from tests.security.world import WEBHOOK_SECRET, World


@pytest.fixture(scope="session")
def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def settings(settings: Settings, app_key: rsa.RSAPrivateKey, tmp_path: Path) -> Settings:
    return github_settings(settings, app_key, tmp_path, WEBHOOK_SECRET, verify_domains=False)


@pytest.fixture
def github(app_key: rsa.RSAPrivateKey) -> Iterator[GithubDouble]:
    """GitHub's API (the integration tests' double); loopback passes through."""
    double = GithubDouble(public_key=app_key.public_key(), repos=[repo_json(REPO_ID, REPO)])
    with respx.mock(base_url=API, assert_all_called=False) as mock:
        mock.post(path__regex=r"^/app/installations/(?P<installation_id>\d+)/access_tokens$").mock(
            side_effect=double.access_tokens
        )
        mock.get("/installation/repositories").mock(side_effect=double.list_repos)
        mock.get(path__regex=r"^/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)$").mock(
            side_effect=double.get_repo
        )
        mock.route(host="127.0.0.1").pass_through()
        yield double


@pytest.fixture
def app(platform: Platform) -> FastAPI:
    app = create_app(platform.settings)
    app.state.platform = platform
    return app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        yield c


@pytest.fixture
async def world(platform: Platform, app: FastAPI, github: GithubDouble) -> AsyncIterator[World]:
    built = World(platform=platform, app=app)
    try:
        await built.build()
        yield built
    finally:
        await built.close()
