"""The team's notifications page in a real browser against a real `devpush up`: a webhook
channel added on the page with its secret shown once, a test sent to a local receiver, and the
delivery in the log; then a receiver that answers 500, shown as a failed delivery."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import (
    ADMIN,
    Mailbox,
    browser_platform,
    new_context,
    screenshot,
    sign_in,
)
from tests.e2e.platform import RunningPlatform
from tests.integration.notifications.receiver import Receiver, receiving, verify

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def notify_platform(
    tmp_path_factory: pytest.TempPathFactory, mailbox: Mailbox
) -> Iterator[RunningPlatform]:
    yield from browser_platform(
        tmp_path_factory,
        mailbox,
        "notifications-page",
        DEVPUSH_RUNTIME="process",
        DEVPUSH_NOTIFICATIONS_ALLOW_PRIVATE="true",  # the receiver is on loopback
    )


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with receiving() as r:
        yield r


@pytest.fixture(scope="module")
def page(browser: Browser, notify_platform: RunningPlatform, mailbox: Mailbox) -> Iterator[Page]:
    context = new_context(browser)
    page = context.new_page()
    sign_in(page, f"http://localhost:{notify_platform.env['DEVPUSH_HTTP_PORT']}", mailbox, ADMIN)
    expect(page).to_have_url(re.compile(r"/t/[\w-]+$"))
    yield page
    context.close()


def test_add_a_webhook_see_its_secret_once_and_send_a_test(page: Page, receiver: Receiver) -> None:
    page.get_by_role("link", name="Notifications").click()
    expect(page.locator("h1")).to_have_text("Notifications")
    expect(page.locator("text=No channels yet.")).to_be_visible()

    page.select_option("#f-channel", "webhook")
    page.fill("#f-target", "ftp://nowhere.example")
    page.check("input[name=events][value='deployment.failed']")
    page.click("#add-channel button[type=submit]")
    expect(page.locator(".alert.error")).to_contain_text("https://")

    page.fill("#f-target", receiver.url("/page-hook"))
    page.click("#add-channel button[type=submit]")
    secret = page.locator("[data-secret]").inner_text().strip()
    assert secret.startswith("whsec_")
    row = page.locator("#channels tr[data-channel]")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("deployment.failed")
    expect(row).to_contain_text(f"http://127.0.0.1:{receiver.port}/…")
    assert "/page-hook" not in row.inner_text()
    screenshot(page, "notifications-added")

    page.goto(page.url)  # a GET again: the secret is gone for good
    expect(page.locator("[data-secret]")).to_have_count(0)
    assert secret not in page.content()

    page.locator("#channels").get_by_role("button", name="Send test").click()
    expect(page.locator("text=The test notification was delivered.")).to_be_visible()
    (hook,) = receiver.at("/page-hook")
    assert verify(secret, hook) and hook.json()["event"] == "test"
    delivery = page.locator("#deliveries tr[data-delivery]")
    expect(delivery).to_have_count(1)
    expect(delivery.locator("[data-status]")).to_have_text("succeeded")
    screenshot(page, "notifications-log")


def test_a_failing_receiver_shows_in_the_log(page: Page, receiver: Receiver) -> None:
    receiver.status["/broken"] = 500
    page.select_option("#f-channel", "slack")
    page.fill("#f-target", receiver.url("/broken"))
    page.check("input[name=events][value='deployment.live']")
    page.click("#add-channel button[type=submit]")
    expect(page.locator(".alert.ok")).to_contain_text("slack channel is added")
    expect(page.locator("[data-secret]")).to_have_count(0)  # only webhooks have one
    slack = page.locator("#channels tr[data-channel]", has_text="slack")
    slack.get_by_role("button", name="Send test").click()
    expect(page.locator("text=was not delivered")).to_contain_text("HTTP 500")
    failed = page.locator("#deliveries tr[data-delivery]").first
    expect(failed.locator("[data-status]")).to_have_text("failed")
    expect(failed).to_contain_text("HTTP 500")
    assert "text" in receiver.at("/broken")[0].json()

    page.once("dialog", lambda dialog: dialog.accept())
    slack.get_by_role("button", name="Remove").click()
    expect(page.locator("#channels tr[data-channel]")).to_have_count(1)
