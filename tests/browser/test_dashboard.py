"""The dashboard in a real browser against a real `devpush up`: signing in by emailed link, a
team with an invited member, a project from a local git repository deployed and watched live,
an env var, a rollback, a log search, and a member refused by the settings forms."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.browser.conftest import ADMIN, Mailbox, new_context, screenshot, sign_in
from tests.e2e.apps import commit, make_repo
from tests.e2e.platform import RunningPlatform

pytestmark = pytest.mark.e2e
MEMBER = "dana@example.com"


@dataclass
class Session:
    context: BrowserContext
    page: Page


@pytest.fixture(scope="module")
def admin(browser: Browser, dashboard: str, mailbox: Mailbox) -> Iterator[Session]:
    context = new_context(browser)
    page = context.new_page()
    sign_in(page, dashboard, mailbox, ADMIN)
    yield Session(context, page)
    context.close()


@pytest.fixture(scope="module")
def member(browser: Browser) -> Iterator[Session]:
    context = new_context(browser)
    yield Session(context, context.new_page())
    context.close()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo(tmp_path_factory.mktemp("repos") / "shop", body="A")


def served(platform: RunningPlatform, url: str, expected: str, timeout: float = 20) -> None:
    """The deployment URL answers `expected` (through Traefik, by Host header)."""
    parsed = httpx.URL(url)
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        try:
            last = httpx.get(
                f"{platform.proxy_url}{parsed.raw_path.decode()}",
                headers={"Host": parsed.host},
                timeout=5,
            ).text
            if last == expected:
                return
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise AssertionError(f"{url} served {last!r}, not {expected!r}")


def wait_ready(page: Page) -> None:
    expect(page.locator("#status-badge")).to_have_text("Ready", timeout=90_000)


# ---- 1. signing in ------------------------------------------------------------------------------
def test_sign_in_by_magic_link(
    browser: Browser, dashboard: str, mailbox: Mailbox, admin: Session
) -> None:
    page = admin.page
    expect(page).to_have_url(re.compile(r"/t/[\w-]+$"))
    expect(page.locator("h1")).to_contain_text("admin")
    # the sign-in page itself, for the screenshots
    anonymous = new_context(browser)
    sign_in_page = anonymous.new_page()
    sign_in_page.goto(f"{dashboard}/auth/sign-in")
    expect(sign_in_page.locator("h1")).to_have_text("Sign in to devpush")
    screenshot(sign_in_page, "sign-in")
    # a link works once
    sign_in_page.goto(mailbox.wait_link(ADMIN))
    expect(sign_in_page.locator("h1")).to_have_text("This link does not work")
    anonymous.close()


# ---- 2. a team and an invited member ------------------------------------------------------------
def test_create_team_and_invite_member(
    admin: Session, member: Session, dashboard: str, mailbox: Mailbox
) -> None:
    page = admin.page
    page.goto(f"{dashboard}/teams/new")
    page.fill("input[name=name]", "Acme")
    page.click("button:has-text('Create team')")
    expect(page).to_have_url(re.compile(r"/t/acme$"))
    page.goto(f"{dashboard}/t/acme/settings")
    page.fill("#members input[name=email]", MEMBER)
    page.click("#members button:has-text('Send invite')")
    expect(page.locator(f"tr[data-invite='{MEMBER}']")).to_be_visible()
    screenshot(page, "team-settings")

    invite_link = mailbox.wait_link(MEMBER)
    other = member.page
    other.goto(invite_link)
    expect(other.locator("h1")).to_have_text("Join Acme")
    other.click("text=Sign in to accept")
    expect(other.locator("input[name=email]")).to_have_value(MEMBER)
    other.click("button[type=submit]")
    expect(other.locator("text=Check your email")).to_be_visible()
    sign_up = mailbox.wait_link(MEMBER, after=1)  # after the invitation
    assert "/auth/sign-up/" in sign_up  # dana has no account yet: the invitation lets her in
    other.goto(sign_up)
    expect(other.locator("h1")).to_have_text("Join Acme")
    other.click("button:has-text('Accept invitation')")
    expect(other).to_have_url(re.compile(r"/t/acme$"))
    expect(other.locator("h1")).to_have_text("Acme")
    other.click("[data-testid=team-switcher]")
    expect(other.locator(".menu-panel a:has-text('Acme')")).to_be_visible()

    page.reload()
    expect(page.locator(f"tr[data-member='{MEMBER}']")).to_be_visible()
    expect(page.locator(f"tr[data-invite='{MEMBER}']")).to_have_count(0)


# ---- 3 + 4. a project from a local repository, deployed, watched live ---------------------------
def test_create_project_and_watch_it_deploy(admin: Session, dashboard: str, repo: Path) -> None:
    page = admin.page
    page.goto(f"{dashboard}/t/acme")
    screenshot(page, "team-overview-empty")
    page.click("text=New project")
    page.fill("input[name=repo_url]", f"file://{repo}")
    page.press("input[name=repo_url]", "Tab")  # a change event: the page detects the preset
    expect(page.locator("[data-detected]")).to_have_text("Detected: python")
    expect(page.locator("input[name=start_command]")).to_have_value("python3 app.py")
    page.fill("input[name=name]", "shop")
    # the output differs from the command, which the plan quotes first in the log
    build = "echo building the shop; sleep 2; echo compiled $((40 + 2)) files"
    page.fill("input[name=build_command]", build)
    screenshot(page, "new-project")
    page.click("button:has-text('Create project')")

    expect(page).to_have_url(re.compile(r"/deployments/\w+$"))
    log = page.locator("[data-log-lines]")
    badge = page.locator("#status-badge")
    expect(log).to_contain_text("Fetching main", timeout=30_000)
    # live: the build's first line and the "Building" status arrive while it still runs
    expect(log).to_contain_text("building the shop", timeout=60_000)
    expect(badge).to_have_text("Building")
    expect(log).not_to_contain_text("compiled 42 files", timeout=1000)
    expect(log).to_contain_text("compiled 42 files")
    wait_ready(page)
    expect(log).to_contain_text("listening on", timeout=30_000)
    expect(log).to_contain_text("Deployment is live")
    expect(page.locator("[data-url-kind=environment]")).to_be_visible()
    # docs/deployment-page.png (the README's picture) is a copy of this one; tests never
    # write into the tracked tree.
    screenshot(page, "deployment")

    url = page.locator("[data-url-kind=environment]").get_attribute("href")
    assert url is not None and url.startswith("http://shop.localhost:")
    visit = page.context.new_page()
    visit.goto(url)
    expect(visit.locator("body")).to_have_text("A")
    visit.close()


# ---- 5. an env var, a redeploy ------------------------------------------------------------------
def test_env_var_then_redeploy(
    admin: Session, dashboard: str, web_platform: RunningPlatform
) -> None:
    page = admin.page
    page.goto(f"{dashboard}/t/acme")
    page.click("[data-project=shop]")
    production = page.locator("[data-testid=production-url]").get_attribute("href") or ""
    screenshot(page, "project-overview")
    page.click(".subnav >> text=Settings")
    form = page.locator("#sec-env form[x-ref=form]")
    form.locator("input[name=key]").fill("GREETING")
    form.locator("textarea[name=value]").fill(" from devpush")
    form.locator("button:has-text('Save variable')").click()
    expect(page.locator("#sec-env tr[data-var=GREETING]")).to_be_visible()
    assert "from devpush" not in page.content()  # values stay on the server until revealed
    page.locator("#sec-env tr[data-var=GREETING] button:has-text('Reveal')").click()
    expect(page.locator("#sec-env tr[data-var=GREETING] [data-revealed]")).to_have_text(
        " from devpush"
    )
    screenshot(page, "project-settings")

    page.click(".subnav >> text=Deployments")
    page.locator("tr[data-deployment]").first.click()
    page.click("button:has-text('Redeploy')")
    wait_ready(page)
    served(web_platform, production, "A from devpush")


# ---- 6. roll back from the deployment page ------------------------------------------------------
def test_rollback_from_deployment_page(
    admin: Session, dashboard: str, repo: Path, web_platform: RunningPlatform
) -> None:
    page = admin.page
    commit(repo, "B")
    page.goto(f"{dashboard}/t/acme")
    page.click("[data-project=shop]")
    production = page.locator("[data-testid=production-url]").get_attribute("href") or ""
    page.click("button:has-text('Deploy')")
    wait_ready(page)
    served(web_platform, production, "B from devpush")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('Roll back')")
    expect(page.locator("h1")).to_contain_text("Deployment")
    served(web_platform, production, "A from devpush")

    page.click(".subnav >> text=Deployments")
    rows = page.locator("tr[data-deployment]")
    expect(rows).to_have_count(3)
    expect(rows.nth(1).locator(".pill")).to_have_text("current")  # the one rolled back to
    screenshot(page, "deployments")


# ---- 7. log search ------------------------------------------------------------------------------
def test_search_logs(admin: Session, dashboard: str) -> None:
    page = admin.page
    page.goto(f"{dashboard}/t/acme")
    page.click("[data-project=shop]")
    page.click(".subnav >> text=Logs")
    page.fill("input[name=q]", "compiled")
    page.click("button:has-text('Search')")
    results = page.locator("#results .line")
    expect(results.first).to_contain_text("compiled 42 files")
    expect(page.locator("#results mark").first).to_have_text("compiled")
    assert all("compiled" in text.lower() for text in results.all_inner_texts())
    screenshot(page, "logs")


# ---- 8. a plain member cannot change settings ---------------------------------------------------
def test_member_cannot_change_settings(member: Session, dashboard: str) -> None:
    page = member.page
    page.goto(f"{dashboard}/t/acme")
    page.click("[data-project=shop]")
    page.click(".subnav >> text=Settings")
    expect(page.locator("[data-testid=read-only]")).to_be_visible()
    expect(page.locator("#sec-build input[name=start_command]")).to_be_disabled()
    expect(page.locator("#sec-build button[type=submit]")).to_be_disabled()
    expect(page.locator("#sec-env button:has-text('Reveal')")).to_have_count(0)
    # the form posted anyway (as a crafted request would be) is refused, and changes nothing
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    project_url = page.url.removesuffix("/settings")
    refused = page.request.post(
        f"{project_url}/settings/build",
        form={"csrf_token": token or "", "start_command": "rm -rf /"},
    )
    assert refused.status == 403
    assert "Not allowed" in refused.text()
    page.reload()
    expect(page.locator("#sec-build input[name=start_command]")).to_have_value("python3 app.py")
    forbidden = page.request.post(
        f"{project_url}/env", form={"csrf_token": token or "", "key": "X", "value": "1"}
    )
    assert forbidden.status == 403


def test_admin_and_account_pages(
    admin: Session, dashboard: str, web_platform: RunningPlatform
) -> None:
    page = admin.page
    page.goto(f"{dashboard}/admin")
    expect(page.locator("h1")).to_have_text("Platform admin")
    expect(page.locator(f"tr[data-user='{MEMBER}']")).to_be_visible()
    page.fill("#allowlist input[name=value]", "example.org")
    page.select_option("#allowlist select[name=kind]", "domain")
    page.click("#allowlist button:has-text('Add')")
    expect(page.locator("tr[data-rule='example.org']")).to_be_visible()
    screenshot(page, "admin")
    page.goto(f"{dashboard}/account")
    screenshot(page, "account")
    page.goto(f"{dashboard}/t/acme")
    screenshot(page, "team-overview")
    page.emulate_media(color_scheme="dark")
    screenshot(page, "team-overview-dark")
    page.click("[data-project=shop]")
    page.locator("tr[data-deployment]").first.click()
    expect(page.locator("#status-badge")).to_be_visible()
    screenshot(page, "deployment-dark")
    page.emulate_media(color_scheme="light")
    assert web_platform.proc.poll() is None
