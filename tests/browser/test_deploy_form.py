"""The project page's deploy form in a real browser against a real `devpush up`: pick a branch
(its commits load over HTMX), an older commit and the environment, deploy, and land on the
deployment page of that commit."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.browser.conftest import ADMIN, Mailbox, new_context, screenshot, sign_in
from tests.e2e.apps import commit, make_repo
from tests.e2e.platform import RunningPlatform

pytestmark = pytest.mark.e2e


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def test_deploy_an_older_commit_from_the_project_page(
    browser: Browser,
    dashboard: str,
    mailbox: Mailbox,
    web_platform: RunningPlatform,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    repo = make_repo(tmp_path_factory.mktemp("repos") / "pick", body="A")
    older = git(repo, "rev-parse", "HEAD")
    commit(repo, "B", "second change")
    commit(repo, "C", "third change")
    git(repo, "checkout", "-q", "-b", "next")
    commit(repo, "N", "next thing")
    git(repo, "checkout", "-q", "main")

    context = new_context(browser)
    page = context.new_page()
    sign_in(page, dashboard, mailbox, ADMIN)
    page.click("text=New project")
    page.fill("input[name=repo_url]", f"file://{repo}")
    page.fill("input[name=name]", "pick")
    page.uncheck("input[name=deploy_now]")
    page.click("button:has-text('Create project')")
    expect(page).to_have_url(re.compile(r"/projects/\w+$"))
    project_id = page.url.rsplit("/", 1)[1]

    form = page.locator("[data-testid=deploy-form]")
    branch, commits = form.locator("select[name=branch]"), form.locator("select[name=commit_sha]")
    environment = form.locator("select[name=environment]")
    expect(branch).to_have_value("main")
    expect(commits).to_contain_text("third change")
    # another branch: its own commits, and no environment takes it (a preview)
    branch.select_option("next")
    expect(commits).to_contain_text("next thing")
    expect(environment).to_have_value("")
    # back to main, an older commit, production
    branch.select_option("main")
    expect(commits).not_to_contain_text("next thing")
    commits.select_option(older)
    production_option = environment.locator("option:not([disabled])")
    expect(production_option).to_have_count(1)
    environment.select_option(production_option.get_attribute("value") or "")
    screenshot(page, "deploy-form")
    form.locator("[data-testid=deploy-commit]").click()

    expect(page).to_have_url(re.compile(r"/deployments/\w+$"))
    expect(page.locator("main")).to_contain_text(older[:7])
    deployment_id = page.url.rsplit("/", 1)[1]
    context.close()

    token = web_platform.token(ADMIN)
    row = httpx.get(
        f"{web_platform.app_url}/api/v1/deployments/{deployment_id}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ).json()
    environments = httpx.get(
        f"{web_platform.app_url}/api/v1/projects/{project_id}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ).json()
    assert row["commit_sha"] == older
    assert row["branch"] == "main" and row["trigger"] == "ui"
    production = next(e for e in environments["environments"] if e["is_production"])
    assert row["environment_id"] == production["id"]
