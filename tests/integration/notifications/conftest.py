from __future__ import annotations

from collections.abc import Iterator

import pytest

from devpush.platform import Platform
from tests.integration.notifications.receiver import Receiver, receiving

# The pages' test browser (cookies, CSRF), as the web tests have it.
from tests.integration.web.conftest import app, browsers  # noqa: F401


@pytest.fixture
def receiver(platform: Platform) -> Iterator[Receiver]:
    """A local receiver; the platform may notify private addresses (it is on loopback)."""
    platform.settings.notifications_allow_private = True
    with receiving() as r:
        yield r
