"""Fixtures for the git-source tests: a GitHub App configuration with a fresh RSA key, the
GitHub double mounted with respx (only api.github.com; loopback passes), and a connected project.

How the GitHub source fetches in tests: DEVPUSH_GITHUB_URL is a file:// directory here, so the
clone URL `<github_url>/Codertocat/Hello-World.git` is a local bare repository the test fills
with commits; the installation token from the double is still requested and handed to git.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import respx
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import text

from devpush.platform import Platform
from devpush.settings import Settings
from tests.factories.auth import Account
from tests.integration.github.helpers import (
    API,
    REPO,
    REPO_ID,
    SECRET,
    Connected,
    GithubDouble,
    connect_project,
    github_settings,
    repo_json,
)


@pytest.fixture(scope="session")
def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def settings(settings: Settings, app_key: rsa.RSAPrivateKey, tmp_path: Path) -> Settings:
    return github_settings(settings, app_key, tmp_path, SECRET)


@pytest.fixture(autouse=True)
async def _clean_deliveries(platform: Platform) -> None:
    """The shared truncation list predates this table."""
    async with platform.engine.begin() as conn:
        await conn.execute(text("TRUNCATE github_deliveries"))


@pytest.fixture
def github(app_key: rsa.RSAPrivateKey) -> Iterator[GithubDouble]:
    """GitHub's API as documented, answering only what devpush calls; loopback passes."""
    double = GithubDouble(public_key=app_key.public_key(), repos=[repo_json(REPO_ID, REPO)])
    with respx.mock(base_url=API, assert_all_called=False) as mock:
        mock.post(path__regex=r"^/app/installations/(?P<installation_id>\d+)/access_tokens$").mock(
            side_effect=double.access_tokens
        )
        mock.get(path__regex=r"^/app/installations/(?P<installation_id>\d+)$").mock(
            side_effect=double.installation
        )
        mock.get("/installation/repositories").mock(side_effect=double.list_repos)
        owner_repo = r"(?P<owner>[^/]+)/(?P<repo>[^/]+)"
        mock.get(path__regex=rf"^/repos/{owner_repo}$").mock(side_effect=double.get_repo)
        mock.post(path__regex=rf"^/repos/{owner_repo}/statuses/(?P<sha>[0-9a-f]+)$").mock(
            side_effect=double.set_status
        )
        mock.post(path__regex=rf"^/repos/{owner_repo}/issues/(?P<number>\d+)/comments$").mock(
            side_effect=double.create_comment
        )
        mock.patch(path__regex=rf"^/repos/{owner_repo}/issues/comments/(?P<comment_id>\d+)$").mock(
            side_effect=double.update_comment
        )
        mock.route(host="127.0.0.1").pass_through()
        yield double


@pytest.fixture
async def connected(platform: Platform, alice: Account) -> AsyncIterator[Connected]:
    yield await connect_project(platform, alice)
