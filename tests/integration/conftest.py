from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from devpush.app import create_app
from devpush.platform import Platform
from tests.factories.auth import Account, make_account


@pytest.fixture
async def client(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    """The ASGI app on the test platform (its lifespan is replaced by the fixture's)."""
    app = create_app(platform.settings)
    app.state.platform = platform
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        yield c


@pytest.fixture
async def alice(platform: Platform) -> Account:
    return await make_account(platform, "alice@example.com")


@pytest.fixture
async def bob(platform: Platform) -> Account:
    return await make_account(platform, "bob@example.com")
