"""Fixtures for the page tests: a local SMTP server (aiosmtpd) that keeps every message, the
app with mail going to it, and browser-like clients (own cookie jar each) signed in through
the real sign-in link flow."""

from __future__ import annotations

import email
import re
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from fastapi import FastAPI

from devpush.app import create_app
from devpush.auth import service as auth
from devpush.db import session_scope
from devpush.platform import Platform
from devpush.settings import Settings
from tests.conftest import free_port

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
LINK = re.compile(r"(http://\S+/(?:auth/link|auth/sign-up|invites|account/email)/[\w-]+)")


@dataclass
class Mailbox:
    """Messages a local SMTP server received."""

    host: str
    port: int
    messages: list[Message] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        with self.lock:
            self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def to(self, address: str) -> list[Message]:
        with self.lock:
            return [m for m in self.messages if address in str(m["To"])]

    def last_link(self, address: str) -> str:
        messages = self.to(address)
        assert messages, f"no mail to {address}"
        body = messages[-1].get_payload(decode=True)
        assert isinstance(body, bytes)
        match = LINK.search(body.decode())
        assert match, body
        return match.group(1)


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox(host="127.0.0.1", port=free_port())
    controller = Controller(box, hostname=box.host, port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@pytest.fixture
def settings(settings: Settings, mailbox: Mailbox) -> Settings:
    return settings.model_copy(update={"smtp_url": mailbox.url, "verify_domains": False})


@pytest.fixture
def app(platform: Platform) -> FastAPI:
    app = create_app(platform.settings)
    app.state.platform = platform
    return app


class Browser:
    """An httpx client with its own cookies, speaking to the pages like a browser would."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.http.get(path, **kwargs)

    async def csrf(self) -> str:
        response = await self.http.get("/auth/sign-in", follow_redirects=True)
        match = CSRF.search(response.text)
        assert match, response.text[:500]
        return match.group(1)

    async def post(
        self,
        path: str,
        data: dict[str, Any] | None = None,
        *,
        htmx: bool = False,
        csrf: bool = True,
    ) -> httpx.Response:
        form = dict(data or {})
        headers = {}
        if csrf:
            token = await self.csrf()
            if htmx:
                headers["X-CSRF-Token"] = token
            else:
                form["csrf_token"] = token
        if htmx:
            headers["HX-Request"] = "true"
        return await self.http.post(path, data=form, headers=headers)

    async def open_link(self, url: str) -> httpx.Response:
        parsed = httpx.URL(url)
        return await self.http.get(parsed.raw_path.decode())


@pytest.fixture
async def browsers(app: FastAPI) -> AsyncIterator[Any]:
    """`await browsers()` makes a fresh browser (cookie jar) on the app."""
    async with AsyncExitStack() as stack:

        async def make() -> Browser:
            http = await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://localhost"
                )
            )
            return Browser(http)

        yield make


async def sign_in(platform: Platform, browser: Browser, user_id: str) -> None:
    async with session_scope(platform.sessions) as session:
        token = await auth.create_sign_in_link(session=session, user_id=user_id)
    response = await browser.get(f"/auth/link/{token}")
    assert response.status_code == 303, response.text


@pytest.fixture
async def alice_web(platform: Platform, alice: Any, browsers: Any) -> Browser:
    browser = await browsers()
    await sign_in(platform, browser, alice.user_id)
    return browser


@pytest.fixture
async def bob_web(platform: Platform, bob: Any, browsers: Any) -> Browser:
    browser = await browsers()
    await sign_in(platform, browser, bob.user_id)
    return browser
