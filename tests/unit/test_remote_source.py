"""Where a deployment's code is fetched from (deployments/remote.py). GitHub's installation
tokens reach this layer only through `Platform.installation_token`, which bootstrap plugs in."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from devpush.deployments import remote
from devpush.deployments.models import Deployment
from devpush.errors import NotConfigured
from devpush.platform import Platform
from devpush.projects.models import Project
from devpush.settings import Settings


def platform(tmp_path: Path, tokens: Any) -> Platform:
    settings = Settings(data_dir=tmp_path)  # type: ignore[call-arg]
    return cast(Platform, SimpleNamespace(settings=settings, installation_token=tokens))


def github_project() -> Project:
    return Project(id="p1", github_installation_id=42, github_repo_full_name="acme/shop")


async def test_a_github_source_uses_the_plugged_in_installation_token(tmp_path: Path) -> None:
    asked: list[int] = []

    async def tokens(*, p: Platform, installation_id: int) -> str:
        asked.append(installation_id)
        return "ghs_example"

    deployment = Deployment(branch="feature/x", pr_number=7)
    source = await remote.for_deployment(platform(tmp_path, tokens), github_project(), deployment)
    assert asked == [42]
    assert source.url.endswith("/acme/shop.git") and source.ref == "refs/pull/7/head"
    assert source.credentials is not None and source.credentials.token == "ghs_example"


async def test_without_a_github_app_wired_in_the_fetch_says_so(tmp_path: Path) -> None:
    deployment = Deployment(branch="main", pr_number=None)
    with pytest.raises(NotConfigured, match="no GitHub App"):
        await remote.for_deployment(platform(tmp_path, None), github_project(), deployment)


async def test_the_push_remote_needs_no_token(tmp_path: Path) -> None:
    source = await remote.for_deployment(
        platform(tmp_path, None), Project(id="p2"), Deployment(branch="main", pr_number=None)
    )
    assert source.url == str(tmp_path / "repos" / "p2.git") and source.credentials is None
