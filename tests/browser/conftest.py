"""A real `devpush up` (process runtime, mail to a local aiosmtpd server) and Debian's Chromium
driven by playwright, for the browser tests. Everything is module-scoped: one platform and one
browser serve a whole test module."""

from __future__ import annotations

import email
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.conftest import free_port
from tests.e2e.platform import RunningPlatform, platform_env, start_platform, wait_health

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
LINK = re.compile(r"(https?://\S+/(?:auth/link|auth/sign-up|invites|account/email)/[\w-]+)")
ADMIN = "admin@example.com"


@dataclass
class Mailbox:
    """A local SMTP server's received messages."""

    host: str
    port: int
    messages: list[Message] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        with self.lock:
            self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def count(self, address: str) -> int:
        with self.lock:
            return sum(1 for m in self.messages if address in str(m["To"]))

    def wait_link(self, address: str, after: int = 0, timeout: float = 20) -> str:
        """The link in the first message to `address` after the first `after` ones."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                mine = [m for m in self.messages if address in str(m["To"])]
            if len(mine) > after:
                body = mine[after].get_payload(decode=True)
                assert isinstance(body, bytes)
                match = LINK.search(body.decode())
                assert match, body
                return match.group(1)
            time.sleep(0.1)
        raise AssertionError(f"no mail to {address} within {timeout}s")


@pytest.fixture(scope="module")
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox(host="127.0.0.1", port=free_port())
    controller = Controller(box, hostname=box.host, port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


def browser_platform(
    tmp_path_factory: pytest.TempPathFactory, mailbox: Mailbox, name: str, **extra: str
) -> Iterator[RunningPlatform]:
    """A real `devpush up` whose mail goes to `mailbox`, for a module of browser tests; its
    containers (docker runtime) go with it."""
    data = tmp_path_factory.mktemp(name)
    env = platform_env(
        data,
        DEVPUSH_VERIFY_DOMAINS="false",
        DEVPUSH_ADMIN_EMAIL=ADMIN,
        DEVPUSH_SMTP_URL=f"smtp://{mailbox.host}:{mailbox.port}",
        **extra,
    )
    running = start_platform(data, env=env)
    wait_health(running.app_url)
    yield running
    code = running.stop()
    if extra.get("DEVPUSH_RUNTIME") == "docker":
        running.remove_containers()
    assert code == 0, running.text()[-3000:]


@pytest.fixture(scope="module")
def web_platform(
    tmp_path_factory: pytest.TempPathFactory, mailbox: Mailbox
) -> Iterator[RunningPlatform]:
    yield from browser_platform(
        tmp_path_factory,
        mailbox,
        "browser-platform",
        DEVPUSH_RUNTIME="process",
        DEVPUSH_DEPLOY_TIMEOUT="30",
    )


@pytest.fixture(scope="module")
def dashboard(web_platform: RunningPlatform) -> str:
    """The dashboard's address through Traefik (as the mailed links have it)."""
    return f"http://localhost:{web_platform.env['DEVPUSH_HTTP_PORT']}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def new_context(browser: Browser) -> BrowserContext:
    context = browser.new_context(viewport={"width": 1360, "height": 900}, color_scheme="light")
    context.set_default_timeout(20_000)
    return context


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.evaluate("window.scrollTo(0, 0)")  # the sticky header belongs at the top
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page: Page, dashboard: str, mailbox: Mailbox, address: str) -> None:
    """Ask for a link on the sign-in page, then open the one that arrives by mail."""
    before = mailbox.count(address)
    page.goto(f"{dashboard}/auth/sign-in")
    page.fill("input[name=email]", address)
    page.click("button[type=submit]")
    page.wait_for_selector("text=Check your email")
    page.goto(mailbox.wait_link(address, after=before))


@pytest.fixture(scope="module")
def docker_web_platform(
    tmp_path_factory: pytest.TempPathFactory, mailbox: Mailbox
) -> Iterator[RunningPlatform]:
    """Like `web_platform`, on the docker runtime (Podman, set up as the e2e tests do)."""
    from tests.e2e.conftest import PODMAN_SOCKET, _podman_ready

    _podman_ready()
    yield from browser_platform(
        tmp_path_factory,
        mailbox,
        "browser-docker-platform",
        DEVPUSH_RUNTIME="docker",
        DEVPUSH_DOCKER_HOST=PODMAN_SOCKET,
        DEVPUSH_RUNNER_IMAGE="localhost/devpush-runner-python:3.11",
        DEVPUSH_DEPLOY_TIMEOUT="60",
    )
